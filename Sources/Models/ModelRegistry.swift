import Foundation
import Formats
import Kernels
@_exported import ModelCore

/// The supported architectures, one line each.
public enum ModelRegistry {
    public static let architectures: [any ModelArchitecture.Type] = [LlamaArchitecture.self, BertArchitecture.self, Gemma3Architecture.self]

    public static func huggingFace(modelType: String) -> (any ModelArchitecture.Type)? {
        architectures.first { $0.huggingFaceModelTypes.contains(modelType) }
    }

    public static func gguf(architecture: String) -> (any ModelArchitecture.Type)? {
        architectures.first { $0.ggufArchitectures.contains(architecture) }
    }

    /// "llama, bert" — for errors.
    static var supportedModelTypes: String { architectures.flatMap { $0.huggingFaceModelTypes }.joined(separator: ", ") }
    static var supportedGGUFArchitectures: String { architectures.flatMap { $0.ggufArchitectures }.joined(separator: ", ") }
}

extension ModelLoader {
    /// A Hugging Face directory (`config.json` + safetensors) or a `.gguf` file.
    /// `labels`, for a classifier, sets the classes (a head of another size is freshly
    /// initialised).
    public static func load(_ url: URL, seed: UInt64 = 0, labels: [String]? = nil) throws(ModelError) -> (any PretrainedModel, LoadReport) {
        var isDirectory: ObjCBool = false
        guard FileManager.default.fileExists(atPath: url.path, isDirectory: &isDirectory) else {
            throw .invalidFile(path: url.path, reason: "no such file or directory")
        }
        if isDirectory.boolValue { return try loadHuggingFace(directory: url, seed: seed, labels: labels) }
        return try loadGGUF(url)
    }

    /// The `model_type` of a Hugging Face directory's `config.json`, with the file's bytes.
    public static func huggingFaceModelType(directory: URL) throws(ModelError) -> (type: String, config: Data, url: URL) {
        let configURL = directory.appendingPathComponent("config.json")
        let configData: Data
        do { configData = try Data(contentsOf: configURL) } catch { throw .file(configURL, error) }
        do {
            let json = try JSONSerialization.jsonObject(with: configData) as? [String: Any]
            guard let type = json?["model_type"] as? String else {
                throw ModelError.invalidFile(path: configURL.path, reason: "no model_type")
            }
            return (type, configData, configURL)
        } catch let error as ModelError {
            throw error
        } catch {
            throw .file(configURL, error)
        }
    }

    // MARK: Hugging Face directories

    public static func loadHuggingFace(directory: URL, seed: UInt64 = 0, labels: [String]? = nil) throws(ModelError) -> (any PretrainedModel, LoadReport) {
        let (modelType, configData, configURL) = try huggingFaceModelType(directory: directory)
        guard let architecture = ModelRegistry.huggingFace(modelType: modelType) else {
            throw .unsupportedArchitecture("model_type '\(modelType)' in \(configURL.path) (supported: \(ModelRegistry.supportedModelTypes))")
        }
        let checkpoint: SafeTensorsCheckpoint
        let weights: [String: Tensor]
        do {
            checkpoint = try SafeTensorsCheckpoint(directory: directory)
            weights = try checkpoint.floatTensors()
        } catch {
            throw .invalidFile(path: directory.path, reason: "\(error)")
        }
        var report = LoadReport(source: directory.path, storedTypes: checkpoint.dtypes, newlyInitialized: [], metadata: [:])
        let model = try architecture.loadHuggingFace(config: configData, configURL: configURL, weights: weights,
                                                     options: LoadOptions(seed: seed, labels: labels), report: &report)
        return (model, report)
    }

    // MARK: GGUF files

    public static func loadGGUF(_ url: URL, frozen: FrozenPrecision = .fp32) throws(ModelError) -> (any PretrainedModel, LoadReport) {
        let gguf: GGUFFile
        do { gguf = try GGUFFile(url: url) } catch { throw .file(url, error) }
        return try loadGGUF(gguf, url: url, frozen: frozen)
    }

    /// The same, from a file already opened (its metadata also holds the tokenizer). With
    /// `frozen` other than fp32, the packable weights are stored packed straight from the file:
    /// their Float32 copies are never resident.
    public static func loadGGUF(_ gguf: GGUFFile, url: URL, frozen: FrozenPrecision = .fp32) throws(ModelError) -> (any PretrainedModel, LoadReport) {
        let name = gguf.metadata["general.architecture"]?.string ?? "(none)"
        guard let architecture = ModelRegistry.gguf(architecture: name) else {
            throw .unsupportedArchitecture("general.architecture '\(name)' in \(url.path) (supported: \(ModelRegistry.supportedGGUFArchitectures))")
        }
        let (model, loaded) = try architecture.loadGGUF(gguf, url: url, frozen: frozen)
        var report = loaded
        for key in ["general.name", "general.architecture", "general.file_type", "tokenizer.ggml.model", "tokenizer.ggml.pre"] {
            if let v = gguf.metadata[key] { report.metadata[key] = v.string ?? v.int.map(String.init) ?? "\(v)" }
        }
        return (model, report)
    }
}
