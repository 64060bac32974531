import Foundation
import Kernels
import Layers
import LoRA
import OrderedJSON
import Tokenizers

/// What a model is trained for, as PEFT's `task_type` names it.
public enum ModelTask: String, Sendable, Codable {
    /// Next-token prediction (a decoder: Llama, Gemma 3).
    case causalLM = "CAUSAL_LM"
    /// One label per sequence (an encoder with a classification head: BERT).
    case sequenceClassification = "SEQ_CLS"
}

/// The per-architecture part of a training-memory estimate (`MemoryEstimate`): the activation and
/// gradient buffers a training step keeps, and the output head's. Bytes.
public struct ActivationEstimate: Sendable, Equatable {
    public var activationBytes: Int
    public var activationDetail: String
    public var headBytes: Int
    public var headDetail: String
    /// Whether `--recompute` changes anything for this architecture.
    public var recomputeApplies: Bool

    public init(activationBytes: Int, activationDetail: String, headBytes: Int, headDetail: String, recomputeApplies: Bool) {
        self.activationBytes = activationBytes
        self.activationDetail = activationDetail
        self.headBytes = headBytes
        self.headDetail = headDetail
        self.recomputeApplies = recomputeApplies
    }
}

extension ActivationEstimate {
    /// A decoder's, from element counts: `layers` blocks each keeping `blockActivations` (one set
    /// in all with `recompute`), one set of `sharedGradients` lent from block to block, each
    /// block's own output and input gradient (`ownedPerBlock`), the model-level buffers, and the
    /// chunked LM-head loss over `vocabularySize` ([256, V] is reserved, but only the rows of
    /// counted targets are ever touched).
    public static func decoder(layers: Int, tokens n: Int, hiddenSize c: Int, vocabularySize: Int, blockActivations: Int,
                               sharedGradients: Int, ownedPerBlock: Int, modelLevel: Int, recompute: Bool) -> ActivationEstimate {
        let kept = recompute ? blockActivations : layers * blockActivations
        let chunk = min(256, n)
        return ActivationEstimate(
            activationBytes: 4 * (kept + sharedGradients + layers * ownedPerBlock + modelLevel),
            activationDetail: recompute ? "\(layers) blocks, one shared set of activations (--recompute)"
                : "\(layers) blocks × \(mib(4 * blockActivations)) each",
            headBytes: 4 * chunk * (vocabularySize + 2 * c),
            headDetail: "chunked loss: [\(chunk), \(vocabularySize)] logits", recomputeApplies: true)
    }
}

/// The adapter buffers of a training step summed over every adapted module (element counts, not
/// bytes), which an architecture's `ActivationEstimate` spreads over its blocks.
public struct AdapterBufferCounts: Sendable, Equatable {
    public var activations = 0
    public var gradients = 0
    public var modules = 0
    public init() {}
}

/// A pretrained model of any architecture: what loading, training, evaluation, merging, export and
/// the reports need, so none of them switches on the architecture. An architecture plugs in by
/// conforming its model class and adding its `ModelArchitecture` to `ModelRegistry.architectures`.
public protocol PretrainedModel: AdaptableModel {
    /// Shown by `lora inspect` and kept in checkpoints: "llama (LlamaForCausalLM)".
    var architecture: String { get }
    var task: ModelTask { get }
    /// The modules LoRA adapts unless told otherwise (the attention projections).
    var defaultLoRATargets: [String] { get }
    var vocabularySize: Int { get }
    /// Positions the model was trained for (the tokenizer's `model_max_length` on export).
    var maxPositionEmbeddings: Int { get }
    /// Positions the model can take at all: nil when only memory limits it (RoPE), the learned
    /// position table's size otherwise (BERT).
    var hardPositionLimit: Int? { get }
    /// The configuration as JSON with sorted keys (checkpoints' fingerprint, `lora inspect`).
    func configurationJSON() throws -> Data
    /// Mean loss of one batch (next-token cross-entropy, or class cross-entropy); with `backward`,
    /// accumulates the gradients of every trainable parameter.
    func loss(_ batch: TokenBatch, labels: [Int], backward: Bool) throws(ModelError) -> Float
    /// Layers, query heads and head dimension of the attention (for FLOP counts).
    var attentionShape: (layers: Int, heads: Int, headDimension: Int) { get }
    /// Matrix-product FLOPs of one training step outside the linear modules and attention (an LM
    /// head), for `n` tokens.
    func extraStepFLOPs(tokens n: Double) -> Double
    /// The activation, gradient and head buffers of a training step on a `batch × length` batch.
    func activationEstimate(batch: Int, length: Int, recompute: Bool, adapters: AdapterBufferCounts) -> ActivationEstimate
    /// Whether `setActivationRecomputation` does anything.
    var supportsActivationRecomputation: Bool { get }
    /// Keep only each block's input in the forward pass and recompute the block before its backward.
    func setActivationRecomputation(_ on: Bool)
    /// The members of a Hugging Face `config.json` that rebuilds this model in transformers (less
    /// `torch_dtype`, which the writer adds).
    func huggingFaceConfig(tokenizer: (any Tokenizer)?) throws -> [(key: String, value: JSON)]
    /// Names of the parameters that may be stored packed (`FrozenPrecision`).
    var packableParameterNames: Set<String> { get }
}

extension PretrainedModel {
    public var supportsActivationRecomputation: Bool { false }
    public func setActivationRecomputation(_ on: Bool) {}
    public var hardPositionLimit: Int? { nil }
    public func extraStepFLOPs(tokens n: Double) -> Double { 0 }

    /// Every weight of the blocks' linear modules and the token embedding (with an LM head).
    /// Norms, biases and a classifier's pooler and head stay fp32 (a classification run trains the head).
    public var packableParameterNames: Set<String> {
        let linear = Set(linearModules.filter { !$0.name.hasPrefix("classifier") && !$0.name.contains("pooler") }
            .map { ObjectIdentifier($0.base.weight) })
        return Set(namedParameters.filter { name, p in
            linear.contains(ObjectIdentifier(p)) || name.hasSuffix("embed_tokens.weight") || name == "lm_head.weight"
                || name.hasSuffix("word_embeddings.weight")
        }.map(\.name))
    }

    /// A JSON encoding of `configuration` with sorted keys.
    package func sortedJSON<C: Encodable>(_ configuration: C) throws -> Data {
        let encoder = JSONEncoder()
        encoder.outputFormatting = .sortedKeys
        return try encoder.encode(configuration)
    }

    /// `bos_token_id`, `eos_token_id`, `pad_token_id` of a decoder's config.json, those the tokenizer has.
    package func specialTokenIdMembers(_ tokenizer: (any Tokenizer)?) -> [(key: String, value: JSON)] {
        [("bos_token_id", tokenizer?.bosTokenId), ("eos_token_id", tokenizer?.eosTokenId), ("pad_token_id", tokenizer?.padTokenId)]
            .compactMap { key, id in id.map { (key: key, value: JSON.number(Double($0))) } }
    }

    /// The members of `configuration`'s own encoding, for `huggingFaceConfig`.
    package func jsonMembers<C: Encodable>(_ configuration: C) throws -> [(key: String, value: JSON)] {
        try JSON.parse(JSONEncoder().encode(configuration)).object ?? []
    }
}

/// A model that puts one label on each sequence.
public protocol SequenceClassifier: PretrainedModel {
    /// Class names by index (`id2label`).
    var labelNames: [String] { get }
    /// Class logits [B, K].
    func logits(_ input: TokenBatch) throws(ModelError) -> Tensor
    /// The logits [B, K] of the last forward pass (what `loss` just scored).
    var lastLogits: Tensor { get }
    /// The head's modules, which a LoRA run trains in full (PEFT's `modules_to_save`).
    var headModuleNames: [String] { get }
}

/// A model that turns a text into one embedding vector (sentence-transformers' pipeline).
public protocol SentenceEncoder: PretrainedModel {
    func sentenceEmbeddings(_ input: TokenBatch, pooling: SentencePooling) throws(ModelError) -> [[Float]]
}

/// "12.5 MiB", for memory reports.
public func mib(_ bytes: Int) -> String { String(format: "%.1f MiB", Double(bytes) / 1_048_576) }
