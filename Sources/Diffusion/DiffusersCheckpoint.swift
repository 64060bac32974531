import Foundation
import Formats
import Kernels

/// A diffusers pipeline folder (`model_index.json`; `unet/`, `text_encoder/`, `text_encoder_2/`,
/// `vae/`, … each with its `config.json` and safetensors weights, sharded or not) seen as weight
/// files: which tensors each component holds, where, in which dtype and shape. Nothing is read
/// into memory but the headers.
public struct DiffusersCheckpoint {
    public struct WeightFile {
        /// Relative to the pipeline folder ("unet/diffusion_pytorch_model.safetensors").
        public let relativePath: String
        public let file: SafeTensorsFile
    }

    public struct Component {
        public let name: String
        public let weightFiles: [WeightFile]
        /// The shard index beside sharded weights, relative to the pipeline folder.
        public let index: String?
    }

    public let folder: URL
    /// The components with weights, by name.
    public let components: [String: Component]
    /// The UNet's `layers_per_block` (its config.json), for SAI/SGM names.
    public let unetLayersPerBlock: Int?

    /// Whether `url` is a diffusers pipeline folder.
    public static func isPipelineFolder(_ url: URL) -> Bool {
        FileManager.default.fileExists(atPath: url.appendingPathComponent("model_index.json").path)
    }

    public init(folder: URL) throws(DiffusionError) {
        self.folder = folder
        let fm = FileManager.default
        guard Self.isPipelineFolder(folder) else {
            throw .invalid(path: folder.path, reason: "no model_index.json: not a diffusers pipeline folder")
        }
        // The components are those model_index.json names with a library and class ("unet":
        // ["diffusers", "UNet2DConditionModel"]); other folders beside them are not the pipeline's.
        let indexURL = folder.appendingPathComponent("model_index.json")
        guard let index = Self.config(indexURL) else { throw .invalid(path: indexURL.path, reason: "not a JSON object") }
        let entries = index.filter { key, value in
            !key.hasPrefix("_") && !key.contains("/") && !key.hasPrefix(".") && ((value as? [Any])?.compactMap { $0 as? String }.count == 2)
        }.keys.sorted()
        var components: [String: Component] = [:]
        for name in entries {
            let dir = folder.appendingPathComponent(name)
            var isDirectory: ObjCBool = false
            guard fm.fileExists(atPath: dir.path, isDirectory: &isDirectory), isDirectory.boolValue,
                  let files = try? fm.contentsOfDirectory(atPath: dir.path) else { continue }
            if let component = try Self.component(name, dir: dir, files: files) { components[name] = component }
        }
        guard components["unet"] != nil || components["text_encoder"] != nil else {
            throw .invalid(path: folder.path, reason: "no unet/ or text_encoder/ with safetensors weights")
        }
        self.components = components
        unetLayersPerBlock = Self.config(folder.appendingPathComponent("unet/config.json"))?["layers_per_block"] as? Int
    }

    /// A component's weights: a shard index (`*.safetensors.index.json`) or one safetensors file
    /// (the plain name preferred over variants such as `.fp16.safetensors`).
    static func component(_ name: String, dir: URL, files: [String]) throws(DiffusionError) -> Component? {
        let relative = { (file: String) in name + "/" + file }
        if let index = files.filter({ $0.hasSuffix(".safetensors.index.json") }).sorted().first {
            let url = dir.appendingPathComponent(index)
            guard let json = try? JSONSerialization.jsonObject(with: Data(contentsOf: url)) as? [String: Any],
                  let map = json["weight_map"] as? [String: String] else {
                throw .invalid(path: url.path, reason: "no weight_map of tensor names to shard files")
            }
            var shards: [WeightFile] = []
            for shard in Set(map.values).sorted() {
                guard !shard.contains("/"), !shard.hasPrefix(".") else {
                    throw .invalid(path: url.path, reason: "shard name '\(shard)' must be a file in the same folder")
                }
                shards.append(WeightFile(relativePath: relative(shard), file: try open(dir.appendingPathComponent(shard))))
            }
            for (tensor, shard) in map where !shards.contains(where: { $0.relativePath == relative(shard) && $0.file.entries[tensor] != nil }) {
                throw .invalid(path: url.path, reason: "tensor '\(tensor)' is not in \(shard)")
            }
            return Component(name: name, weightFiles: shards, index: relative(index))
        }
        let candidates = files.filter { $0.hasSuffix(".safetensors") }.sorted { a, b in
            (a.split(separator: ".").count, a) < (b.split(separator: ".").count, b)
        }
        guard let file = candidates.first else { return nil }
        return Component(name: name, weightFiles: [WeightFile(relativePath: relative(file), file: try open(dir.appendingPathComponent(file)))], index: nil)
    }

    static func open(_ url: URL) throws(DiffusionError) -> SafeTensorsFile {
        do { return try SafeTensorsFile(url: url) } catch { throw .invalid(path: url.path, reason: "\(error)") }
    }

    static func config(_ url: URL) -> [String: Any]? {
        (try? Data(contentsOf: url)).flatMap { try? JSONSerialization.jsonObject(with: $0) as? [String: Any] }
    }

    /// A component's tensor as Float32 (read from whichever of its files holds it).
    public func tensor(component: String, name: String) throws(DiffusionError) -> Tensor {
        guard let c = components[component], let file = c.weightFiles.first(where: { $0.file.entries[name] != nil })?.file else {
            throw .invalid(path: folder.path, reason: "\(component) has no tensor \(name)")
        }
        do { return try file.tensor(name) } catch { throw .invalid(path: folder.path, reason: "\(error)") }
    }

    /// The components adapters change: the UNet and the text encoders.
    public static let adaptableComponents: Set<String> = ["unet", "text_encoder", "text_encoder_2"]

    /// Per adaptable component, every tensor's name and shape.
    public var tensorShapes: [String: [String: [Int]]] {
        components.filter { Self.adaptableComponents.contains($0.key) }.mapValues { c in
            var shapes: [String: [Int]] = [:]
            for w in c.weightFiles { for (name, e) in w.file.entries { shapes[name] = e.shape } }
            return shapes
        }
    }
}

public enum DiffusionError: Error, Equatable, CustomStringConvertible {
    case invalid(path: String, reason: String)
    case refused(String)

    public var description: String {
        switch self {
        case let .invalid(path, reason): reason.hasPrefix(path) ? reason : "\(path): \(reason)"
        case .refused(let why): why
        }
    }
}
