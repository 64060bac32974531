import Foundation
import Formats
import Kernels

/// What goes wrong reading or writing an adapter file.
public enum AdapterFormatError: Error, Equatable, CustomStringConvertible {
    /// The file is broken or not what its format says (`path` names the file).
    case invalid(path: String, reason: String)
    /// The file is fine but asks for something the target format or this program cannot hold.
    case unsupported(String)

    public var description: String {
        switch self {
        case let .invalid(path, reason): reason.hasPrefix(path) ? reason : "\(path): \(reason)"
        case .unsupported(let why): why
        }
    }
}

/// An adapter as a file holds it, in no format's terms: its configuration (PEFT's vocabulary:
/// ranks, alphas, patterns, targets, `modules_to_save`), its LoRA matrices by module path in
/// PEFT's orientation (A: [r, in], B: [out, r]), and its trained copies of whole modules by
/// parameter name. Codecs map a format's keys to these paths (`AdapterCodec`); models attach
/// an `AdapterFile` without knowing where it came from.
public struct AdapterFile {
    /// The codec's name ("peft", "mlx-lm").
    public var format: String
    public var config: LoRAConfig
    /// Module path → A [r, in].
    public var loraA: [String: Tensor]
    /// Module path → B [out, r].
    public var loraB: [String: Tensor]
    /// Parameter name → its trained copy (`modules_to_save`).
    public var savedModules: [String: Tensor]
    /// Keys of the file that are none of the above (a model reports them as unexpected).
    public var unrecognised: [String]
    /// The folder, and the file that holds the tensors (for messages).
    public var folder: URL
    public var weightsFile: URL
    /// The key a tensor has in the file, from its neutral name: "<path>.lora_A", "<path>.lora_B",
    /// or a saved module's parameter name.
    public var fileKey: @Sendable (String) -> String
    /// How many tensors of each stored dtype the file holds, and its size (for reports).
    public var storedTypes: [String: Int]
    public var fileBytes: Int

    public init(format: String, config: LoRAConfig, loraA: [String: Tensor], loraB: [String: Tensor], savedModules: [String: Tensor] = [:],
                unrecognised: [String] = [], folder: URL, weightsFile: URL, fileKey: @escaping @Sendable (String) -> String,
                storedTypes: [String: Int] = [:], fileBytes: Int = 0) {
        self.format = format
        self.config = config
        self.loraA = loraA
        self.loraB = loraB
        self.savedModules = savedModules
        self.unrecognised = unrecognised
        self.folder = folder
        self.weightsFile = weightsFile
        self.fileKey = fileKey
        self.storedTypes = storedTypes
        self.fileBytes = fileBytes
    }

    /// Every value the file's tensors hold (what a configuration may ask for at most).
    public var heldValues: Int {
        (Array(loraA.values) + Array(loraB.values) + Array(savedModules.values)).reduce(0) { $0 + $1.count }
    }

    /// The adapted module paths, sorted.
    public var modulePaths: [String] { Set(loraA.keys).union(loraB.keys).sorted() }
}

/// One adapter file format: how to recognise a folder of it, read it into an `AdapterFile` and
/// write one. PEFT and mlx-lm now; kohya, diffusers and GGUF-LoRA plug in the same way.
public protocol AdapterCodec {
    /// The name users give (`--to peft`) and reports show.
    static var name: String { get }
    /// The files that make a folder of this format, for help and errors.
    static var layout: String { get }
    /// Whether `folder` holds an adapter of this format.
    static func recognises(_ folder: URL) -> Bool
    static func read(_ folder: URL) throws(AdapterFormatError) -> AdapterFile
    /// Writes `adapter` into `folder` (created if needed), each file atomically.
    static func write(_ adapter: AdapterFile, to folder: URL, base: AdapterBase) throws(AdapterFormatError)
}

/// What a format may need to know of the base model to write an adapter for it.
public struct AdapterBase: Sendable {
    /// The base model's number of blocks (mlx-lm counts adapted layers from the end).
    public var numHiddenLayers: Int?
    public init(numHiddenLayers: Int? = nil) { self.numHiddenLayers = numHiddenLayers }
}

/// The adapter file formats, and reading a folder in whichever it is.
public enum AdapterFormats {
    nonisolated(unsafe) public static let codecs: [any AdapterCodec.Type] = [PEFTCodec.self, MLXCodec.self]

    public static func codec(named name: String) -> (any AdapterCodec.Type)? { codecs.first { $0.name == name } }

    /// The format of `folder`: the first that recognises it, else PEFT (whose reader says what is missing).
    public static func detect(_ folder: URL) -> any AdapterCodec.Type {
        codecs.first { $0.recognises(folder) } ?? PEFTCodec.self
    }

    /// Reads an adapter folder of any supported format.
    public static func read(_ folder: URL) throws(AdapterFormatError) -> AdapterFile {
        var isDirectory: ObjCBool = false
        guard FileManager.default.fileExists(atPath: folder.path, isDirectory: &isDirectory) else {
            throw .invalid(path: folder.path, reason: "no such folder")
        }
        guard isDirectory.boolValue else {
            throw .invalid(path: folder.path, reason: "is a file; give the adapter's folder (" + codecs.map { $0.layout }.joined(separator: ", or ") + ")")
        }
        return try detect(folder).read(folder)
    }

    /// The LoRA tensors of a safetensors file as Float32: floating point and finite, or refused
    /// with the tensor named (a NaN would poison every output, merged or not). Also the count of
    /// each stored dtype and the file's size.
    static func floatTensors(_ url: URL) throws(AdapterFormatError) -> (tensors: [String: Tensor], types: [String: Int], bytes: Int) {
        do {
            let file = try SafeTensorsFile(url: url)
            if let (tensor, entry) = file.entries.sorted(by: { $0.key < $1.key }).first(where: { ![.f32, .f16, .bf16].contains($0.value.dtype) }) {
                throw AdapterFormatError.invalid(path: url.path, reason: "tensor '\(tensor)' has dtype \(entry.dtype.rawValue); LoRA weights must be F32, F16 or BF16 (nothing was loaded)")
            }
            let tensors = try file.floatTensors()
            if let bad = tensors.keys.sorted().first(where: { tensors[$0]?.isFinite == false }) {
                throw AdapterFormatError.invalid(path: url.path, reason: "tensor '\(bad)' holds NaN or infinite values (nothing was loaded)")
            }
            var types: [String: Int] = [:]
            for e in file.entries.values { types[e.dtype.rawValue, default: 0] += 1 }
            let bytes = (try? FileManager.default.attributesOfItem(atPath: url.path)[.size] as? Int) ?? 0
            return (tensors, types, bytes ?? 0)
        } catch let error as AdapterFormatError {
            throw error
        } catch {
            throw .invalid(path: url.path, reason: plainFileReason(error))
        }
    }

    /// Writes tensors and a JSON config into `folder`, each atomically.
    static func writeFiles(_ tensors: [String: Tensor], weights: String, metadata: [String: String], config: String, to folder: URL) throws(AdapterFormatError) {
        do {
            try FileManager.default.createDirectory(at: folder, withIntermediateDirectories: true)
            try SafeTensorsWriter.write(tensors, to: folder.appendingPathComponent(weights), metadata: metadata)
            try atomicWrite(Data(config.utf8), to: folder.appendingPathComponent("adapter_config.json"))
        } catch {
            throw .invalid(path: folder.path, reason: plainFileReason(error))
        }
    }
}
