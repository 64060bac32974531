import Foundation
import Formats
import Kernels
import OrderedJSON
import Tokenizers

/// Writing a (merged) model as a Hugging Face directory that transformers loads.
public enum HuggingFaceExport {
    public enum StorageType: String, Sendable, CaseIterable {
        case f32, f16, bf16
        var safetensors: SafeTensorsWriter.StorageType { switch self { case .f32: .f32; case .f16: .f16; case .bf16: .bf16 } }
        var torchName: String { switch self { case .f32: "float32"; case .f16: "float16"; case .bf16: "bfloat16" } }
    }

    /// `config.json` for the model, with the keys transformers needs to rebuild it.
    public static func configJSON(_ model: any PretrainedModel, tokenizer: (any Tokenizer)?, storage: StorageType) throws -> Data {
        var members = try model.huggingFaceConfig(tokenizer: tokenizer)
        members.append(("torch_dtype", .string(storage.torchName)))
        members.sort { $0.key < $1.key }
        return Data((JSON.object(members).serialized() + "\n").utf8)
    }

    /// Writes `config.json`, `model.safetensors` (every parameter in `storage`) and the given
    /// tokenizer files into `directory` (created if needed), each file atomically.
    public static func write(_ model: any PretrainedModel, tokenizerFiles: [String: Data], tokenizer: (any Tokenizer)?,
                             storage: StorageType, to directory: URL) throws {
        try FileManager.default.createDirectory(at: directory, withIntermediateDirectories: true)
        var tensors: [String: Tensor] = [:]
        for (name, p) in model.namedParameters { tensors[name] = p.value }
        try SafeTensorsWriter.write(tensors, to: directory.appendingPathComponent("model.safetensors"),
                                    as: storage.safetensors, metadata: ["format": "pt"])
        try atomicWrite(configJSON(model, tokenizer: tokenizer, storage: storage), to: directory.appendingPathComponent("config.json"))
        for (file, data) in tokenizerFiles { try atomicWrite(data, to: directory.appendingPathComponent(file)) }
    }
}
