import Foundation
import Kernels
import Layers
import OrderedJSON
import Tokenizers

/// BERT-family encoders (all-MiniLM-L6-v2, bert-base…) with a sequence-classification head:
/// Hugging Face `model_type: bert`. A plain `BertModel` checkpoint gets a fresh head.
public enum BertArchitecture: ModelArchitecture {
    public static let name = "bert"
    public static let task = ModelTask.sequenceClassification
    public static let huggingFaceModelTypes = ["bert"]
    public static let ggufArchitectures: [String] = []

    public static func loadHuggingFace(config data: Data, configURL: URL, weights: [String: Tensor], options: LoadOptions,
                                       report: inout LoadReport) throws(ModelError) -> any PretrainedModel {
        var weights = weights
        var config = try ModelLoader.decode(BertConfiguration.self, data, configURL)
        if let labels = options.labels {
            guard labels.count >= 2 else { throw .invalidInput("a classifier needs at least 2 labels, got \(labels)") }
            let sameSize = labels.count == config.numLabels
            config.id2label = Dictionary(uniqueKeysWithValues: labels.enumerated().map { ($0.offset, $0.element) })
            if !sameSize { weights["classifier.weight"] = nil; weights["classifier.bias"] = nil }
        }
        let fileValues = weights.values.reduce(0) { $0 + $1.count }
        try checkFileHoldsWeights(described: config.encoderMatrixParameterCount, fileValues: fileValues,
                                  path: configURL.deletingLastPathComponent().path)
        let model = try BertForSequenceClassification(config)
        // A plain `BertModel` checkpoint has no `bert.` prefix and no classifier.
        if weights.keys.contains(where: { $0.hasPrefix("embeddings.") }) {
            weights = Dictionary(uniqueKeysWithValues: weights.map { ("bert." + $0.key, $0.value) })
        }
        var generator = SplitMix64(seed: options.seed)
        for (name, p) in model.namedParameters where name.hasPrefix("classifier.") && weights[name] == nil {
            // transformers' init for a new head: N(0, 0.02²) weights, zero bias.
            weights[name] = name.hasSuffix(".bias")
                ? Tensor(shape: p.shape)
                : Tensor(shape: p.shape, generator: { generator.nextGaussian() * 0.02 })
            report.newlyInitialized.append(name)
        }
        try model.loadWeights(weights)
        return model
    }
}

extension BertForSequenceClassification: SequenceClassifier, SentenceEncoder, ReplicableModel {
    public func emptyCopy() -> BertForSequenceClassification {
        do { return try BertForSequenceClassification(config) } catch { preconditionFailure("a loaded model's configuration is valid: \(error)") }
    }

    public var architecture: String { "bert (BertForSequenceClassification)" }
    public var task: ModelTask { .sequenceClassification }
    public var defaultLoRATargets: [String] { ["query", "key", "value", "attention.output.dense"] }
    public var vocabularySize: Int { config.vocabSize }
    public var maxPositionEmbeddings: Int { config.maxPositionEmbeddings }
    public var hardPositionLimit: Int? { config.maxPositionEmbeddings }
    public func configurationJSON() throws -> Data { try sortedJSON(config) }
    public var attentionShape: (layers: Int, heads: Int, headDimension: Int) {
        (config.numHiddenLayers, config.numAttentionHeads, config.headDim)
    }
    public var labelNames: [String] { (0..<config.numLabels).map { config.id2label[$0] ?? String($0) } }
    public var lastLogits: Tensor { classifier.output }
    public var headModuleNames: [String] { ["classifier"] }

    public var headModules: [any Module] { [pooler, poolerActivation, classifier, lossFunction] }
    public func headDescription(batch: Int, length: Int) -> String {
        "pooler and classifier, [\(batch), \(config.numLabels)] logits"
    }

    public func huggingFaceConfig(tokenizer: (any Tokenizer)?) throws -> [(key: String, value: JSON)] {
        let labels = config.id2label.sorted { $0.key < $1.key }
        var members = try jsonMembers(config)
        members += [("model_type", .string("bert")), ("architectures", .array([.string("BertForSequenceClassification")])),
                    ("label2id", .object(labels.map { ($0.value, .number(Double($0.key))) })),
                    ("hidden_dropout_prob", .number(0.1)), ("attention_probs_dropout_prob", .number(0.1)),
                    ("position_embedding_type", .string("absolute"))]
        if let pad = tokenizer?.padTokenId { members.append(("pad_token_id", .number(Double(pad)))) }
        return members
    }
}
