/// How an architecture's Hugging Face parameter names map to llama.cpp's GGUF tensor names: whole
/// names outside the blocks, and names within a block under `model.layers.N.` ↔ `blk.N.`. Each
/// architecture keeps its table beside its model; the shared GGUF loader reads through it.
public struct GGUFTensorNames: Sendable {
    /// Hugging Face name → GGUF name, outside the blocks ("model.norm.weight": "output_norm.weight").
    public let global: [String: String]
    /// Within a block ("self_attn.q_proj.weight": "attn_q.weight").
    public let block: [String: String]
    private let globalReverse: [String: String]
    private let blockReverse: [String: String]

    public init(global: [String: String], block: [String: String]) {
        self.global = global
        self.block = block
        globalReverse = Dictionary(global.map { ($0.value, $0.key) }, uniquingKeysWith: { a, _ in a })
        blockReverse = Dictionary(block.map { ($0.value, $0.key) }, uniquingKeysWith: { a, _ in a })
    }

    /// The GGUF name of a Hugging Face parameter name, nil for a name the table does not know.
    public func gguf(_ name: String) -> String? {
        if let g = global[name] { return g }
        guard let (layer, rest) = Self.split(name, prefix: "model.layers."), let g = block[rest] else { return nil }
        return "blk.\(layer).\(g)"
    }

    /// The Hugging Face name of a GGUF tensor name, nil for a name the table does not know.
    public func huggingFace(_ name: String) -> String? {
        if let h = globalReverse[name] { return h }
        guard let (layer, rest) = Self.split(name, prefix: "blk."), let h = blockReverse[rest] else { return nil }
        return "model.layers.\(layer).\(h)"
    }

    /// "model.layers.3.mlp.up_proj.weight" with prefix "model.layers." → (3, "mlp.up_proj.weight").
    private static func split(_ name: String, prefix: String) -> (Int, String)? {
        guard name.hasPrefix(prefix) else { return nil }
        let tail = name.dropFirst(prefix.count)
        guard let dot = tail.firstIndex(of: "."), let layer = Int(tail[..<dot]), layer >= 0 else { return nil }
        return (layer, String(tail[tail.index(after: dot)...]))
    }
}
