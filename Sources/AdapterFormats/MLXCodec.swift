import Foundation
import Formats
import Kernels
import LoRA
import OrderedJSON

/// mlx-lm's adapter folder: `adapter_config.json` `{fine_tune_type: "lora", num_layers,
/// lora_parameters: {rank, scale, dropout, keys}}` and `adapters.safetensors` with
/// `<module>.lora_a` [in, r] and `<module>.lora_b` [r, out] (PEFT's A and B transposed), one rank
/// and one absolute `scale` for all modules, applied to the last `num_layers` blocks. Read and
/// written preserving every module's ΔW exactly.
public enum MLXCodec: AdapterCodec {
    public static let name = "mlx-lm"
    public static let layout = "mlx-lm's adapter_config.json + adapters.safetensors"

    /// mlx-lm's file and no PEFT one beside it.
    public static func recognises(_ folder: URL) -> Bool {
        let fm = FileManager.default
        return fm.fileExists(atPath: folder.appendingPathComponent("adapters.safetensors").path)
            && !fm.fileExists(atPath: folder.appendingPathComponent("adapter_model.safetensors").path)
    }

    @Sendable static func key(_ name: String) -> String {
        name.hasSuffix(".lora_A") ? String(name.dropLast(7)) + ".lora_a" : name.hasSuffix(".lora_B") ? String(name.dropLast(7)) + ".lora_b" : name
    }

    /// A = lora_aᵀ, B = lora_bᵀ, r = rank, lora_alpha = scale·r (so α/r = scale), `target_modules`
    /// the exact module paths present.
    public static func read(_ folder: URL) throws(AdapterFormatError) -> AdapterFile {
        let configURL = folder.appendingPathComponent("adapter_config.json")
        let weightsURL = folder.appendingPathComponent("adapters.safetensors")
        let root: JSON
        do { root = try JSON.parse(Data(contentsOf: configURL)) } catch {
            throw .invalid(path: configURL.path, reason: FileManager.default.fileExists(atPath: configURL.path)
                ? "not valid JSON: \(plainFileReason(error))" : "no adapter_config.json beside adapters.safetensors")
        }
        let type = root["fine_tune_type"]?.string ?? "lora"
        guard type == "lora" else { throw .unsupported("\(configURL.path): fine_tune_type '\(type)' is not supported (only lora)") }
        guard let parameters = root["lora_parameters"], let rank = parameters["rank"]?.int, rank > 0, rank <= LoRASettings.maximumRank else {
            throw .invalid(path: configURL.path, reason: "lora_parameters.rank is missing or not in 1...\(LoRASettings.maximumRank)")
        }
        let scale = parameters["scale"]?.number ?? 20   // mlx-lm's default
        guard scale.isFinite else { throw .invalid(path: configURL.path, reason: "lora_parameters.scale is not finite") }
        let (tensors, types, bytes) = try AdapterFormats.floatTensors(weightsURL)
        var a: [String: Tensor] = [:], b: [String: Tensor] = [:], other: [String] = []
        for (k, loraA) in tensors where k.hasSuffix(".lora_a") {
            let path = String(k.dropLast(".lora_a".count))
            guard let loraB = tensors[path + ".lora_b"], loraA.shape.count == 2, loraB.shape.count == 2,
                  loraA.shape[1] == rank, loraB.shape[0] == rank else {
                throw .invalid(path: weightsURL.path, reason: "\(path): lora_a/lora_b missing or not of rank \(rank)")
            }
            let inF = loraA.shape[0], outF = loraB.shape[1]
            let at = Tensor(shape: [rank, inF]), bt = Tensor(shape: [outF, rank])
            for c in 0..<inF { for i in 0..<rank { at.data[i * inF + c] = loraA.data[c * rank + i] } }
            for i in 0..<rank { for o in 0..<outF { bt.data[o * rank + i] = loraB.data[i * outF + o] } }
            a[path] = at
            b[path] = bt
        }
        for k in tensors.keys where !k.hasSuffix(".lora_a") && !(k.hasSuffix(".lora_b") && a[String(k.dropLast(7))] != nil) { other.append(k) }
        guard !a.isEmpty else { throw .invalid(path: weightsURL.path, reason: "no lora_a tensors") }
        let dropout = parameters["dropout"]?.number ?? 0
        guard dropout >= 0 && dropout < 1 else { throw .invalid(path: configURL.path, reason: "lora_parameters.dropout must be in [0, 1)") }
        var config = LoRAConfig(rank: rank, alpha: scale * Double(rank), dropout: dropout, targets: .names(a.keys.sorted()), taskType: "CAUSAL_LM")
        config.initialization = .kaimingUniform
        return AdapterFile(format: name, config: config, loraA: a, loraB: b, unrecognised: other.sorted(), folder: folder,
                           weightsFile: weightsURL, fileKey: key, storedTypes: types, fileBytes: bytes)
    }

    /// "model.layers.3.self_attn.q_proj" → (3, "self_attn.q_proj").
    static func moduleParts(_ path: String) -> (layer: Int, key: String)? {
        let parts = path.split(separator: ".")
        guard parts.count >= 4, parts[0] == "model", parts[1] == "layers", let layer = Int(parts[2]) else { return nil }
        return (layer, parts[3...].joined(separator: "."))
    }

    /// Modules with a smaller rank are zero-padded to the largest; per-module scales (rsLoRA,
    /// `alpha_pattern`) are folded into B, so ΔW is unchanged. Layers below the lowest adapted
    /// one stay unadapted; missing (layer, key) pairs get zero matrices. Needs the base model's
    /// number of layers.
    public static func write(_ adapter: AdapterFile, to folder: URL, base: AdapterBase) throws(AdapterFormatError) {
        guard let numHiddenLayers = base.numHiddenLayers else {
            throw .unsupported("an mlx-lm adapter needs the base model's number of layers (mlx-lm counts adapted layers from the end)")
        }
        if !adapter.savedModules.isEmpty || !(adapter.config.modulesToSave ?? []).isEmpty {
            throw .unsupported("mlx-lm adapters cannot hold modules_to_save (\((adapter.config.modulesToSave ?? Array(adapter.savedModules.keys)).sorted()))")
        }
        guard adapter.unrecognised.isEmpty else { throw .unsupported("tensors mlx-lm cannot hold: \(adapter.unrecognised)") }
        var modules: [String: (a: Tensor, b: Tensor, scale: Float)] = [:]
        for path in adapter.modulePaths {
            guard moduleParts(path) != nil else { throw .unsupported("module '\(path)' is not in a decoder block (model.layers.N.…); mlx-lm cannot hold it") }
            guard let a = adapter.loraA[path], let b = adapter.loraB[path] else {
                throw .invalid(path: adapter.weightsFile.path, reason: "no lora_A or lora_B for \(path)")
            }
            modules[path] = (a, b, adapter.config.settings(for: path).scale)
        }
        guard !modules.isEmpty else { throw .invalid(path: adapter.weightsFile.path, reason: "no LoRA matrices") }
        let rank = modules.values.map { $0.a.shape[0] }.max() ?? 1
        let scale = modules.values.map(\.scale).max { abs($0) < abs($1) } ?? 1
        let layers = modules.keys.compactMap { moduleParts($0)?.layer }
        guard let first = layers.min(), (layers.max() ?? 0) < numHiddenLayers else {
            throw .invalid(path: adapter.folder.path, reason: "adapted layers \(Set(layers).sorted()) do not fit a \(numHiddenLayers)-layer model")
        }
        let keys = Array(Set(modules.keys.compactMap { moduleParts($0)?.key })).sorted()
        var shapes: [String: (inF: Int, outF: Int)] = [:]
        for (path, m) in modules { if let key = moduleParts(path)?.key { shapes[key] = (m.a.shape[1], m.b.shape[0]) } }
        var out: [String: Tensor] = [:]
        for layer in first..<numHiddenLayers {
            for key in keys {
                guard let (inF, outF) = shapes[key] else { continue }
                let path = "model.layers.\(layer).\(key)"
                let loraA = Tensor(shape: [inF, rank]), loraB = Tensor(shape: [rank, outF])
                if let m = modules[path] {
                    let r = m.a.shape[0], factor = scale == 0 ? 0 : m.scale / scale
                    for i in 0..<r { for c in 0..<inF { loraA.data[c * rank + i] = m.a.data[i * inF + c] } }
                    for o in 0..<outF { for i in 0..<r { loraB.data[i * outF + o] = m.b.data[o * r + i] * factor } }
                }
                out[path + ".lora_a"] = loraA
                out[path + ".lora_b"] = loraB
            }
        }
        let json = JSON.object([
            ("fine_tune_type", .string("lora")), ("num_layers", .number(Double(numHiddenLayers - first))),
            ("lora_parameters", .object([("rank", .number(Double(rank))), ("scale", .number(Double(scale))),
                                         ("dropout", .number(adapter.config.dropout)), ("keys", .array(keys.map(JSON.string)))])),
        ])
        try AdapterFormats.writeFiles(out, weights: "adapters.safetensors", metadata: ["format": "mlx"], config: json.serialized() + "\n", to: folder)
    }
}
