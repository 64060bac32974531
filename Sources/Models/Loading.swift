import Foundation
import Formats
import Kernels
import Layers

/// A pretrained model of one of the supported families.
public enum PretrainedModel {
    case llama(LlamaForCausalLM)
    case bert(BertForSequenceClassification)

    public var adaptable: any AdaptableModel {
        switch self {
        case .llama(let m): m
        case .bert(let m): m
        }
    }

    /// A sequence classifier (BERT) rather than a causal language model.
    public var isClassifier: Bool { if case .bert = self { true } else { false } }

    /// The modules LoRA adapts unless told otherwise: the attention projections (q, k, v, o).
    public var defaultLoRATargets: [String] {
        isClassifier ? ["query", "key", "value", "attention.output.dense"] : ["q_proj", "k_proj", "v_proj", "o_proj"]
    }

    /// PEFT's `task_type` for this model.
    public var peftTaskType: String { isClassifier ? "SEQ_CLS" : "CAUSAL_LM" }

    public var architecture: String {
        switch self {
        case .llama: "llama (LlamaForCausalLM)"
        case .bert: "bert (BertForSequenceClassification)"
        }
    }
}

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

public enum ModelLoader {
    /// A Hugging Face directory (`config.json` + safetensors) or a `.gguf` file.
    /// `labels`, for a BERT classifier, sets the classes (a head of another size is freshly
    /// initialised).
    public static func load(_ url: URL, seed: UInt64 = 0, labels: [String]? = nil) throws(ModelError) -> (PretrainedModel, LoadReport) {
        var isDirectory: ObjCBool = false
        guard FileManager.default.fileExists(atPath: url.path, isDirectory: &isDirectory) else {
            throw .invalidFile(path: url.path, reason: "no such file or directory")
        }
        if isDirectory.boolValue { return try loadHuggingFace(directory: url, seed: seed, labels: labels) }
        return try loadGGUF(url)
    }

    // MARK: Hugging Face directories

    public static func loadHuggingFace(directory: URL, seed: UInt64 = 0, labels: [String]? = nil) throws(ModelError) -> (PretrainedModel, LoadReport) {
        let configURL = directory.appendingPathComponent("config.json")
        let configData: Data
        do { configData = try Data(contentsOf: configURL) } catch { throw .file(configURL, error) }
        let modelType: String
        do {
            let json = try JSONSerialization.jsonObject(with: configData) as? [String: Any]
            guard let type = json?["model_type"] as? String else {
                throw ModelError.invalidFile(path: configURL.path, reason: "no model_type")
            }
            modelType = type
        } catch let error as ModelError {
            throw error
        } catch {
            throw .file(configURL, error)
        }
        guard ["llama", "bert"].contains(modelType) else {
            throw .unsupportedArchitecture("model_type '\(modelType)' in \(configURL.path) (supported: llama, bert)")
        }
        let checkpoint: SafeTensorsCheckpoint
        var weights: [String: Tensor]
        do {
            checkpoint = try SafeTensorsCheckpoint(directory: directory)
            weights = try checkpoint.floatTensors()
        } catch {
            throw .invalidFile(path: directory.path, reason: "\(error)")
        }
        var report = LoadReport(source: directory.path, storedTypes: checkpoint.dtypes, newlyInitialized: [], metadata: [:])
        let fileValues = weights.values.reduce(0) { $0 + $1.count }
        switch modelType {
        case "llama":
            let config = try decode(LlamaConfiguration.self, configData, configURL)
            try checkFileHoldsWeights(described: config.matrixParameterCount, fileValues: fileValues, path: directory.path)
            let model = try LlamaForCausalLM(config)
            try model.loadWeights(weights)
            return (.llama(model), report)
        case "bert":
            var config = try decode(BertConfiguration.self, configData, configURL)
            if let labels {
                guard labels.count >= 2 else { throw .invalidInput("a classifier needs at least 2 labels, got \(labels)") }
                let sameSize = labels.count == config.numLabels
                config.id2label = Dictionary(uniqueKeysWithValues: labels.enumerated().map { ($0.offset, $0.element) })
                if !sameSize { weights["classifier.weight"] = nil; weights["classifier.bias"] = nil }
            }
            try checkFileHoldsWeights(described: config.encoderMatrixParameterCount, fileValues: fileValues, path: directory.path)
            let model = try BertForSequenceClassification(config)
            // A plain `BertModel` checkpoint has no `bert.` prefix and no classifier.
            if weights.keys.contains(where: { $0.hasPrefix("embeddings.") }) {
                weights = Dictionary(uniqueKeysWithValues: weights.map { ("bert." + $0.key, $0.value) })
            }
            var generator = SplitMix64(seed: seed)
            for (name, p) in model.namedParameters where name.hasPrefix("classifier.") && weights[name] == nil {
                // transformers' init for a new head: N(0, 0.02²) weights, zero bias.
                weights[name] = name.hasSuffix(".bias")
                    ? Tensor(shape: p.shape)
                    : Tensor(shape: p.shape, generator: { generator.nextGaussian() * 0.02 })
                report.newlyInitialized.append(name)
            }
            try model.loadWeights(weights)
            return (.bert(model), report)
        default:
            throw .unsupportedArchitecture("model_type '\(modelType)' in \(configURL.path) (supported: llama, bert)")
        }
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
