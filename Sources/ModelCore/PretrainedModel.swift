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

extension PretrainedModel {
    /// The activation, gradient and head buffers of a training step on a `batch × length` batch,
    /// from the module tree: every module's `WorkBuffer`s at the pass shape it sees. The blocks of
    /// a stack (`RecomputableBlock`) lend each other their work buffers, so their gradient buffers
    /// count once, and with `recompute` their activation buffers once too; each block's retained
    /// buffers count per block; everything outside the blocks counts as it is, the modules of
    /// `headModules` as the output head.
    public func activationEstimate(batch: Int, length: Int, recompute: Bool) -> ActivationEstimate {
        let heads = Set(headModules.map { ObjectIdentifier($0) })
        var blockActivations: [Int] = [], blockGradients: [Int] = [], retained = 0, outside = 0, head = 0
        func visit(_ module: any Module, _ shape: PassShape) {
            if heads.contains(ObjectIdentifier(module)) {
                head += module.bufferElements(shape)
                return
            }
            if module is any RecomputableBlock {
                blockActivations.append(module.bufferElements(shape, roles: [.activation]))
                blockGradients.append(module.bufferElements(shape, roles: [.gradient]))
                retained += module.bufferElements(shape, roles: [.retained])
                return
            }
            outside += module.ownBuffers.reduce(0) { $0 + $1.elements(shape) }
            for (name, child) in module.children { visit(child, module.shape(ofChild: name, in: shape)) }
        }
        visit(self, PassShape(batch: batch, length: length))
        let blocks = blockActivations.count, perBlock = blockActivations.max() ?? 0
        let kept = recompute ? perBlock : blockActivations.reduce(0, +)
        let detail = blocks == 0 ? "every module keeps its own buffers"
            : recompute ? "\(blocks) blocks, one shared set of activations (--recompute)"
            : "\(blocks) blocks × \(mib(4 * perBlock)) each"
        return ActivationEstimate(activationBytes: 4 * (kept + (blockGradients.max() ?? 0) + retained + outside), activationDetail: detail,
                                  headBytes: 4 * head, headDetail: headDescription(batch: batch, length: length),
                                  recomputeApplies: blocks > 0)
    }
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
    /// The modules that make the output head (a chunked LM loss; a pooler and classifier), whose
    /// buffers the memory estimate reports apart.
    var headModules: [any Module] { get }
    /// What the head's buffers hold, for the estimate's breakdown.
    func headDescription(batch: Int, length: Int) -> String
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
    /// Whether the tree has a stack of blocks (`RecomputableBlock`) to recompute.
    public var supportsActivationRecomputation: Bool { !modules(of: (any RecomputableBlock).self).isEmpty }
    public func setActivationRecomputation(_ on: Bool) {}
    public var hardPositionLimit: Int? { nil }
    public func extraStepFLOPs(tokens n: Double) -> Double { 0 }

    /// The weights of the linear modules outside the output head, and the vocabulary-sized
    /// tables (the token embedding, an LM head), found in the module tree. Norms, biases, other
    /// embeddings (BERT's positions and token types) and a classifier's pooler and head stay fp32
    /// (a classification run trains the head).
    public var packableParameterNames: Set<String> {
        let heads = Set(headModules.flatMap { $0.namedModules() }.map { ObjectIdentifier($0.module) })
        var packable = Set<ObjectIdentifier>()
        for (_, module) in namedModules() where !heads.contains(ObjectIdentifier(module)) {
            switch module {
            case let m as LoRALinear: packable.insert(ObjectIdentifier(m.base.weight))
            case let m as Embedding where m.count == vocabularySize: packable.insert(ObjectIdentifier(m.weight))
            case let m as WeightModule where m.weight.shape.first == vocabularySize: packable.insert(ObjectIdentifier(m.weight))
            default: break
            }
        }
        return Set(namedParameters.filter { packable.contains(ObjectIdentifier($0.parameter)) }.map(\.name))
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

/// A model whose weights can serve several runs at once.
public protocol ReplicableModel: PretrainedModel {
    /// A model of the same configuration with fresh weights (zero-filled pages that are never
    /// touched, so never resident): what `replica()` builds on.
    func emptyCopy() -> Self
}

extension ReplicableModel {
    /// Another instance of this model over the same weights: every base parameter (packed or
    /// not) and every attached adapter is the same object, so the weights are in memory once and
    /// loading, attaching, merging or training through either instance is seen by both. What one
    /// run needs for itself is the replica's own: activations and work buffers, KV caches made by
    /// it, the active adapters (starting as this instance's), LoRA dropout state and activation
    /// recomputation. Two instances may run forward passes on two threads at once; changing the
    /// weights or the adapter pool (load, remove, merge, train) must not overlap a pass.
    public func replica() -> Self {
        let copy = emptyCopy()
        copy.shareTreeWeights(of: self)
        copy.adapterRegistry.pool = adapterRegistry.pool
        copy.adapterRegistry.active = adapterRegistry.active
        copy.adapterRegistry.isReplica = true
        return copy
    }
}
