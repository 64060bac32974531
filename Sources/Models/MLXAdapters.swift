import Foundation
import Formats
import Kernels
import LoRA
import OrderedJSON

/// Conversion between PEFT adapters and mlx-lm's layout, preserving every module's ΔW exactly.
///
/// mlx-lm: `adapter_config.json` `{fine_tune_type: "lora", num_layers, lora_parameters: {rank,
/// scale, dropout, keys}}` + `adapters.safetensors` with `<module>.lora_a` [in, r] and
/// `<module>.lora_b` [r, out] (PEFT's A and B transposed), one rank and one absolute `scale`
/// for all modules, applied to the last `num_layers` blocks.
public enum MLXAdapterConversion {
    public enum Error: Swift.Error, CustomStringConvertible {
        case unsupported(String)
        case invalid(path: String, reason: String)
        public var description: String {
            switch self {
            case .unsupported(let why): "cannot convert: \(why)"
            case let .invalid(path, reason): "\(path): \(reason)"
            }
        }
    }

    static func moduleParts(_ path: String) -> (layer: Int, key: String)? {
        let parts = path.split(separator: ".")
        guard parts.count >= 4, parts[0] == "model", parts[1] == "layers", let layer = Int(parts[2]) else { return nil }
        return (layer, parts[3...].joined(separator: "."))
    }

    /// PEFT → mlx-lm. Modules with a smaller rank are zero-padded to the largest; per-module
    /// scales (rsLoRA, `alpha_pattern`) are folded into B, so ΔW is unchanged. Layers below the
    /// lowest adapted one stay unadapted; missing (layer, key) pairs get zero matrices.
    public static func peftToMLX(_ input: URL, numHiddenLayers: Int, output: URL) throws {
        let configURL = input.appendingPathComponent("adapter_config.json")
        guard FileManager.default.fileExists(atPath: configURL.path) else {
            throw Error.invalid(path: input.path, reason: "no adapter_config.json (not a PEFT adapter)")
        }
        let config = try LoRAConfig(json: Data(contentsOf: configURL), file: configURL.path)
        if let save = config.modulesToSave, !save.isEmpty { throw Error.unsupported("mlx-lm adapters cannot hold modules_to_save (\(save))") }
        let tensors = try SafeTensorsFile(url: input.appendingPathComponent("adapter_model.safetensors")).floatTensors()
        var modules: [String: (a: Tensor, b: Tensor, scale: Float)] = [:]
        for (key, a) in tensors where key.hasSuffix(".lora_A.weight") {
            let path = String(key.dropFirst("base_model.model.".count).dropLast(".lora_A.weight".count))
            guard key.hasPrefix("base_model.model."), moduleParts(path) != nil else {
                throw Error.unsupported("module '\(path)' is not in a Llama block (model.layers.N.…)")
            }
            guard let b = tensors["base_model.model.\(path).lora_B.weight"] else {
                throw Error.invalid(path: input.path, reason: "no lora_B for \(path)")
            }
            modules[path] = (a, b, config.settings(for: path).scale)
        }
        let unknown = tensors.keys.filter { !$0.hasSuffix(".lora_A.weight") && !$0.hasSuffix(".lora_B.weight") }
        guard unknown.isEmpty else { throw Error.unsupported("tensors mlx-lm cannot hold: \(unknown.sorted())") }
        guard !modules.isEmpty else { throw Error.invalid(path: input.path, reason: "no LoRA matrices") }
        let rank = modules.values.map { $0.a.shape[0] }.max() ?? 1
        let scale = modules.values.map(\.scale).max { abs($0) < abs($1) } ?? 1
        let layers = modules.keys.compactMap { moduleParts($0)?.layer }
        guard let first = layers.min(), (layers.max() ?? 0) < numHiddenLayers else {
            throw Error.invalid(path: input.path, reason: "adapted layers \(Set(layers).sorted()) do not fit a \(numHiddenLayers)-layer model")
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
        try FileManager.default.createDirectory(at: output, withIntermediateDirectories: true)
        try SafeTensorsWriter.write(out, to: output.appendingPathComponent("adapters.safetensors"), metadata: ["format": "mlx"])
        let json = JSON.object([
            ("fine_tune_type", .string("lora")), ("num_layers", .number(Double(numHiddenLayers - first))),
            ("lora_parameters", .object([("rank", .number(Double(rank))), ("scale", .number(Double(scale))),
                                         ("dropout", .number(config.dropout)), ("keys", .array(keys.map(JSON.string)))])),
        ])
        try atomicWrite(Data((json.serialized() + "\n").utf8), to: output.appendingPathComponent("adapter_config.json"))
    }

    /// mlx-lm → PEFT: A = lora_aᵀ, B = lora_bᵀ, r = rank, lora_alpha = scale·r (so α/r = scale),
    /// `target_modules` the exact module paths present.
    public static func mlxToPEFT(_ input: URL, output: URL) throws {
        let configURL = input.appendingPathComponent("adapter_config.json")
        let root = try JSON.parse(Data(contentsOf: configURL))
        let type = root["fine_tune_type"]?.string ?? "lora"
        guard type == "lora" else { throw Error.unsupported("fine_tune_type '\(type)' (only lora)") }
        guard let parameters = root["lora_parameters"], let rank = parameters["rank"]?.int, rank > 0 else {
            throw Error.invalid(path: configURL.path, reason: "lora_parameters.rank is missing")
        }
        let scale = parameters["scale"]?.number ?? 20   // mlx-lm's default
        let tensors = try SafeTensorsFile(url: input.appendingPathComponent("adapters.safetensors")).floatTensors()
        var out: [String: Tensor] = [:]
        var paths: [String] = []
        for (key, loraA) in tensors where key.hasSuffix(".lora_a") {
            let path = String(key.dropLast(".lora_a".count))
            guard let loraB = tensors[path + ".lora_b"], loraA.shape.count == 2, loraB.shape.count == 2,
                  loraA.shape[1] == rank, loraB.shape[0] == rank else {
                throw Error.invalid(path: input.path, reason: "\(path): lora_a/lora_b missing or not of rank \(rank)")
            }
            let inF = loraA.shape[0], outF = loraB.shape[1]
            let a = Tensor(shape: [rank, inF]), b = Tensor(shape: [outF, rank])
            for c in 0..<inF { for i in 0..<rank { a.data[i * inF + c] = loraA.data[c * rank + i] } }
            for i in 0..<rank { for o in 0..<outF { b.data[o * rank + i] = loraB.data[i * outF + o] } }
            out["base_model.model.\(path).lora_A.weight"] = a
            out["base_model.model.\(path).lora_B.weight"] = b
            paths.append(path)
        }
        guard !paths.isEmpty else { throw Error.invalid(path: input.path, reason: "no lora_a tensors") }
        var config = LoRAConfig(rank: rank, alpha: scale * Double(rank), dropout: parameters["dropout"]?.number ?? 0,
                                targets: .names(paths.sorted()), taskType: "CAUSAL_LM")
        config.initialization = .kaimingUniform
        try FileManager.default.createDirectory(at: output, withIntermediateDirectories: true)
        try SafeTensorsWriter.write(out, to: output.appendingPathComponent("adapter_model.safetensors"), metadata: ["format": "pt"])
        try atomicWrite(Data(config.jsonText().utf8), to: output.appendingPathComponent("adapter_config.json"))
    }
}
