import Foundation
import Formats
import Kernels

/// Loading llama.cpp's GGUF files into the Hugging Face–layout Llama assembly.
extension ModelLoader {
    /// GGUF tensor name for a Hugging Face parameter name of `LlamaForCausalLM`.
    public static func ggufName(forLlama name: String) -> String? {
        switch name {
        case "model.embed_tokens.weight": return "token_embd.weight"
        case "model.norm.weight": return "output_norm.weight"
        case "lm_head.weight": return "output.weight"
        default: break
        }
        let parts = name.split(separator: ".")
        guard parts.count >= 5, parts[0] == "model", parts[1] == "layers", let layer = Int(parts[2]) else { return nil }
        let module = parts[3...].joined(separator: ".")
        let map = [
            "input_layernorm.weight": "attn_norm.weight", "post_attention_layernorm.weight": "ffn_norm.weight",
            "self_attn.q_proj.weight": "attn_q.weight", "self_attn.k_proj.weight": "attn_k.weight",
            "self_attn.v_proj.weight": "attn_v.weight", "self_attn.o_proj.weight": "attn_output.weight",
            "mlp.gate_proj.weight": "ffn_gate.weight", "mlp.up_proj.weight": "ffn_up.weight",
            "mlp.down_proj.weight": "ffn_down.weight",
        ]
        return map[module].map { "blk.\(layer).\($0)" }
    }

    /// The Llama configuration a GGUF file's `llama.*` metadata describes.
    public static func llamaConfiguration(_ gguf: GGUFFile, path: String) throws(ModelError) -> LlamaConfiguration {
        func value(_ key: String) -> GGUFValue? { gguf.metadata["llama." + key] }
        func required(_ key: String) throws(ModelError) -> Int {
            guard let v = value(key)?.int else { throw .invalidFile(path: path, reason: "missing metadata llama.\(key)") }
            return v
        }
        let heads = try required("attention.head_count")
        let hidden = try required("embedding_length")
        let vocabulary = value("vocab_size")?.int ?? gguf.metadata["tokenizer.ggml.tokens"]?.array?.count
        guard let vocabulary else { throw .invalidFile(path: path, reason: "no llama.vocab_size and no tokenizer.ggml.tokens") }
        if let scaling = value("rope.scaling.type")?.string, scaling != "none" {
            throw .unsupportedArchitecture("rope scaling '\(scaling)' in \(path)")
        }
        let tied = !gguf.tensorInfos.contains { $0.name == "output.weight" }
        return try LlamaConfiguration(
            vocabSize: vocabulary, hiddenSize: hidden, intermediateSize: try required("feed_forward_length"),
            numHiddenLayers: try required("block_count"), numAttentionHeads: heads,
            numKeyValueHeads: value("attention.head_count_kv")?.int ?? heads,
            headDim: value("rope.dimension_count")?.int ?? value("attention.key_length")?.int,
            rmsNormEps: Float(value("attention.layer_norm_rms_epsilon")?.double ?? 1e-5),
            ropeTheta: Float(value("rope.freq_base")?.double ?? 10000),
            maxPositionEmbeddings: value("context_length")?.int ?? 2048, tieWordEmbeddings: tied)
    }

    /// Loads a GGUF Llama, dequantising every tensor to Float32 and undoing llama.cpp's Q/K row
    /// permutation, so the model is in Hugging Face layout and PEFT adapters apply unchanged.
    public static func loadGGUF(_ url: URL, frozen: FrozenPrecision = .fp32) throws(ModelError) -> (PretrainedModel, LoadReport) {
        let gguf: GGUFFile
        do { gguf = try GGUFFile(url: url) } catch { throw .file(url, error) }
        return try loadGGUF(gguf, url: url, frozen: frozen)
    }

    /// The same, from a file already opened (its metadata also holds the tokenizer). With
    /// `frozen` other than fp32, the block and embedding weights are stored packed straight from
    /// the file: their Float32 copies are never resident.
    public static func loadGGUF(_ gguf: GGUFFile, url: URL, frozen: FrozenPrecision = .fp32) throws(ModelError) -> (PretrainedModel, LoadReport) {
        let architecture = gguf.metadata["general.architecture"]?.string ?? "(none)"
        guard architecture == "llama" else {
            if architecture == "gemma3" {
                throw .unsupportedArchitecture("general.architecture 'gemma3' in \(url.path): Gemma 3 runs in lora tokenize, score and generate "
                    + "(with adapters); train, eval, merge, convert, inspect and bench do not take it yet")
            }
            throw .unsupportedArchitecture("general.architecture '\(architecture)' in \(url.path) (supported: llama, and gemma3 in tokenize, score and generate)")
        }
        let config = try llamaConfiguration(gguf, path: url.path)
        // Tensor sizes are bounded by the file (GGUFFile checked them), so this sum cannot overflow.
        let fileValues = gguf.tensorInfos.reduce(0) { $0 + $1.elementCount }
        try checkFileHoldsWeights(described: config.matrixParameterCount, fileValues: fileValues, path: url.path)
        let model = try LlamaForCausalLM(config)
        // Check every name and shape from the tensor infos first, then dequantise one tensor at
        // a time straight into its parameter (no second copy of the whole model in memory).
        let infos = Dictionary(gguf.tensorInfos.map { ($0.name, $0) }, uniquingKeysWith: { a, _ in a })
        let hfNames = Dictionary(model.namedParameters.compactMap { p in ggufName(forLlama: p.name).map { ($0, p.name) } },
                                 uniquingKeysWith: { a, _ in a })
        var shapes: [String: [Int]] = [:]
        var sources: [String: String] = [:]
        for info in gguf.tensorInfos {
            let hfName = hfNames[info.name]
            shapes[hfName ?? info.name] = info.shape
            if let hfName { sources[hfName] = info.name }
        }
        try model.checkWeightShapes(shapes)
        var storedTypes: [String: String] = [:]
        let packable = frozen == .fp32 ? [] : Set(PretrainedModel.llama(model).packableParameters.map(\.name))
        for (name, parameter) in model.namedParameters {
            guard let source = sources[name], let info = infos[source] else { continue }
            storedTypes[source] = info.type.name
            if frozen == .q && packable.contains(name) {
                var order: (Int) -> Int = { $0 }
                if name.hasSuffix("self_attn.q_proj.weight") {
                    order = rotaryRowOrder(rows: info.rowCount, heads: config.numAttentionHeads)
                } else if name.hasSuffix("self_attn.k_proj.weight") {
                    order = rotaryRowOrder(rows: info.rowCount, heads: config.numKeyValueHeads)
                }
                do { parameter.pack(try packedBlocks(gguf, info, rowOrder: order)) } catch { throw .file(url, error) }
                continue
            }
            var tensor: Tensor
            do { tensor = try gguf.tensor(source) } catch { throw .file(url, error) }
            if name.hasSuffix("self_attn.q_proj.weight") {
                tensor = unpermuteRotaryRows(tensor, heads: config.numAttentionHeads)
            } else if name.hasSuffix("self_attn.k_proj.weight") {
                tensor = unpermuteRotaryRows(tensor, heads: config.numKeyValueHeads)
            }
            if frozen == .bf16 && packable.contains(name) {
                parameter.pack(.bf16(tensor))
            } else {
                parameter.value.copy(from: tensor)
            }
        }
        var metadata: [String: String] = [:]
        for key in ["general.name", "general.architecture", "general.file_type", "tokenizer.ggml.model", "tokenizer.ggml.pre"] {
            if let v = gguf.metadata[key] { metadata[key] = v.string ?? v.int.map(String.init) ?? "\(v)" }
        }
        return (.llama(model), LoadReport(source: url.path, storedTypes: storedTypes, newlyInitialized: [], metadata: metadata))
    }

    /// llama.cpp's converter permutes the rows of Wq and Wk within each head, from Hugging Face's
    /// "rotate half" pairing (i, i + D/2) to interleaved pairs (2i, 2i + 1):
    /// GGUF row h·D + 2j + k  holds  HF row h·D + k·D/2 + j  (k ∈ {0, 1}, j < D/2).
    /// This puts them back.
    public static func unpermuteRotaryRows(_ w: Tensor, heads: Int) -> Tensor {
        let rows = w.shape[0], columns = w.count / max(rows, 1)
        let d = rows / heads, half = d / 2
        let out = Tensor(shape: w.shape)
        for h in 0..<heads {
            for j in 0..<half {
                for k in 0..<2 {
                    let source = w.data + (h * d + 2 * j + k) * columns
                    (out.data + (h * d + k * half + j) * columns).update(from: source, count: columns)
                }
            }
        }
        return out
    }
}
