import Foundation
import Formats
import Kernels

/// Hugging Face PEFT's adapter folder: `adapter_config.json` (`LoRAConfig`) and
/// `adapter_model.safetensors` with keys `base_model.model.<module>.lora_A.weight` / `.lora_B.weight`
/// and, for `modules_to_save`, `base_model.model.<parameter>` (what `save_pretrained` writes).
public enum PEFTCodec: AdapterCodec {
    public static let name = "peft"
    public static let layout = "PEFT's adapter_config.json + adapter_model.safetensors"
    static let prefix = "base_model.model."

    public static func recognises(_ folder: URL) -> Bool {
        FileManager.default.fileExists(atPath: folder.appendingPathComponent("adapter_model.safetensors").path)
    }

    /// The key of a neutral tensor name in a PEFT file.
    @Sendable static func key(_ name: String) -> String {
        name.hasSuffix(".lora_A") || name.hasSuffix(".lora_B") ? prefix + name + ".weight" : prefix + name
    }

    /// A missing config is an error — an adapter is never silently created fresh — and so are
    /// PyTorch pickles, non-float or non-finite tensors.
    public static func read(_ folder: URL) throws(AdapterFormatError) -> AdapterFile {
        let configURL = folder.appendingPathComponent("adapter_config.json")
        let weightsURL = folder.appendingPathComponent("adapter_model.safetensors")
        let fm = FileManager.default
        guard fm.fileExists(atPath: configURL.path) else {
            throw .invalid(path: folder.path, reason: "no adapter_config.json: not a PEFT adapter directory (nothing was loaded)")
        }
        guard fm.fileExists(atPath: weightsURL.path) else {
            let legacy = fm.fileExists(atPath: folder.appendingPathComponent("adapter_model.bin").path)
            throw .invalid(path: folder.path, reason: legacy
                ? "only adapter_model.bin (a PyTorch pickle) is present; convert it to adapter_model.safetensors with PEFT"
                : "no adapter_model.safetensors")
        }
        let config: LoRAConfig
        do { config = try LoRAConfig(json: Data(contentsOf: configURL), file: configURL.path) } catch let error as LoRAConfigError {
            throw .invalid(path: configURL.path, reason: error.description)
        } catch {
            throw .invalid(path: configURL.path, reason: plainFileReason(error))
        }
        let (tensors, types, bytes) = try AdapterFormats.floatTensors(weightsURL)
        var a: [String: Tensor] = [:], b: [String: Tensor] = [:], saved: [String: Tensor] = [:], other: [String] = []
        for (key, tensor) in tensors {
            guard key.hasPrefix(prefix) else { other.append(key); continue }
            let name = String(key.dropFirst(prefix.count))
            if name.hasSuffix(".lora_A.weight") {
                a[String(name.dropLast(".lora_A.weight".count))] = tensor
            } else if name.hasSuffix(".lora_B.weight") {
                b[String(name.dropLast(".lora_B.weight".count))] = tensor
            } else {
                saved[name] = tensor
            }
        }
        return AdapterFile(format: name, config: config, loraA: a, loraB: b, savedModules: saved, unrecognised: other.sorted(),
                           folder: folder, weightsFile: weightsURL, fileKey: key, storedTypes: types, fileBytes: bytes)
    }

    public static func write(_ adapter: AdapterFile, to folder: URL, base: AdapterBase = AdapterBase()) throws(AdapterFormatError) {
        var tensors: [String: Tensor] = [:]
        for (path, t) in adapter.loraA { tensors[key(path + ".lora_A")] = t }
        for (path, t) in adapter.loraB { tensors[key(path + ".lora_B")] = t }
        for (name, t) in adapter.savedModules { tensors[key(name)] = t }
        try AdapterFormats.writeFiles(tensors, weights: "adapter_model.safetensors", metadata: ["format": "pt"],
                                      config: adapter.config.jsonText(), to: folder)
    }
}
