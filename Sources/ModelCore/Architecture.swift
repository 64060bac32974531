import Foundation
import Formats
import Kernels

/// What loading found, for `lora inspect` and for warnings.
public struct LoadReport: Sendable {
    public var source: String
    /// Stored dtype of each tensor, by its name in the file.
    public var storedTypes: [String: String]
    /// Parameters the checkpoint did not hold and that were freshly initialised (e.g. a
    /// classification head on top of a plain `BertModel` checkpoint).
    public var newlyInitialized: [String]
    public var metadata: [String: String]

    public init(source: String, storedTypes: [String: String], newlyInitialized: [String], metadata: [String: String]) {
        self.source = source
        self.storedTypes = storedTypes
        self.newlyInitialized = newlyInitialized
        self.metadata = metadata
    }
}

extension ModelError {
    /// A failure reading `url`, its reason in plain words, the path said once.
    package static func file(_ url: URL, _ error: any Error) -> ModelError {
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
    /// From a Hugging Face directory's `config.json` and its safetensors weights (by state-dict
    /// name; the loader may add a fresh head, which it lists in `report.newlyInitialized`).
    static func loadHuggingFace(config: Data, configURL: URL, weights: [String: Tensor], options: LoadOptions,
                                report: inout LoadReport) throws(ModelError) -> any PretrainedModel
    /// From an opened GGUF file, its frozen weights stored at `frozen`.
    static func loadGGUF(_ gguf: GGUFFile, url: URL, frozen: FrozenPrecision) throws(ModelError) -> (any PretrainedModel, LoadReport)
}

extension ModelArchitecture {
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

/// Loading models from files: the shared mechanisms here; the entry points that choose the
/// architecture (`load`, `loadHuggingFace`, `loadGGUF`) are in Models, beside the registry.
public enum ModelLoader {
    package static func decode<C: Decodable>(_ type: C.Type, _ data: Data, _ url: URL) throws(ModelError) -> C {
        do {
            return try JSONDecoder().decode(type, from: data)
        } catch let error as ModelError {
            throw error
        } catch {
            throw .invalidFile(path: url.path, reason: "\(error)")
        }
    }
}
