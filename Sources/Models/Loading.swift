import Foundation
import Formats
import Kernels
import Layers

/// What loading found, for `lora inspect` and for warnings.
public struct LoadReport: Sendable {
    public var source: String
    /// Stored dtype of each tensor, by its name in the file.
    public var storedTypes: [String: String]
    /// Parameters the checkpoint did not hold and that were freshly initialised (e.g. a
    /// classification head on top of a plain `BertModel` checkpoint).
    public var newlyInitialized: [String]
    public var metadata: [String: String]
}

extension ModelError {
    /// A failure reading `url`, its reason in plain words, the path said once.
    static func file(_ url: URL, _ error: any Error) -> ModelError {
        var reason = plainFileReason(error)
        for prefix in [url.path + ": ", url.lastPathComponent + ": "] where reason.hasPrefix(prefix) { reason.removeFirst(prefix.count) }
        return .invalidFile(path: url.path, reason: reason)
    }
}

/// One architecture, plugged into loading: the names it answers to in Hugging Face's `config.json`
/// (`model_type`) and in GGUF files (`general.architecture`), and how to build it from either.
/// Adding an architecture is one conformance and one line in `ModelRegistry.architectures`.
public protocol ModelArchitecture: Sendable {
    /// The short name users see ("llama").
    static var name: String { get }
    /// What its models do (a decoder or a classifier).
    static var task: ModelTask { get }
    /// `model_type` values of the Hugging Face directories it loads (empty: none yet).
    static var huggingFaceModelTypes: [String] { get }
    /// `general.architecture` values of the GGUF files it loads (empty: none).
    static var ggufArchitectures: [String] { get }
    /// Why a Hugging Face directory's tokenizer files are not read for this architecture (nil:
    /// they are): the model then loads alone, through `ModelLoader`, never with a misread tokenizer.
    static var huggingFaceTokenizerRefusal: String? { get }
    /// From a Hugging Face directory's `config.json` and its safetensors weights (by state-dict
    /// name; the loader may add a fresh head, which it lists in `report.newlyInitialized`).
    static func loadHuggingFace(config: Data, configURL: URL, weights: [String: Tensor], options: LoadOptions,
                                report: inout LoadReport) throws(ModelError) -> any PretrainedModel
    /// From an opened GGUF file, its frozen weights stored at `frozen`.
    static func loadGGUF(_ gguf: GGUFFile, url: URL, frozen: FrozenPrecision) throws(ModelError) -> (any PretrainedModel, LoadReport)
}

extension ModelArchitecture {
    public static var huggingFaceTokenizerRefusal: String? { nil }
    public static func loadHuggingFace(config: Data, configURL: URL, weights: [String: Tensor], options: LoadOptions,
                                       report: inout LoadReport) throws(ModelError) -> any PretrainedModel {
        throw .unsupportedArchitecture("\(name) loads from .gguf files only (\(configURL.path))")
    }
    public static func loadGGUF(_ gguf: GGUFFile, url: URL, frozen: FrozenPrecision) throws(ModelError) -> (any PretrainedModel, LoadReport) {
        throw .unsupportedArchitecture("\(name) loads from Hugging Face directories only (\(url.path))")
    }
}

/// What a load may be asked beyond the file: the seed of a freshly initialised head and, for a
/// classifier, its labels.
public struct LoadOptions: Sendable {
    public var seed: UInt64 = 0
    /// A classifier's classes (a head of another size is freshly initialised).
    public var labels: [String]? = nil
    public init(seed: UInt64 = 0, labels: [String]? = nil) {
        self.seed = seed
        self.labels = labels
    }
}

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

public enum ModelLoader {
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

    static func decode<C: Decodable>(_ type: C.Type, _ data: Data, _ url: URL) throws(ModelError) -> C {
        do {
            return try JSONDecoder().decode(type, from: data)
        } catch let error as ModelError {
            throw error
        } catch {
            throw .invalidFile(path: url.path, reason: "\(error)")
        }
    }
}
