import Foundation
import Formats
import Kernels
import OrderedJSON
import Tokenizers

/// Llama-family decoders (SmolLM2, Llama 2/3, TinyLlama…): Hugging Face `model_type: llama` or a
/// GGUF whose `general.architecture` is llama.
public enum LlamaArchitecture: ModelArchitecture {
    public static let name = "llama"
    public static let task = ModelTask.causalLM
    public static let huggingFaceModelTypes = ["llama"]
    public static let ggufArchitectures = ["llama"]

    public static func loadHuggingFace(config: Data, configURL: URL, weights: [String: Tensor], options: LoadOptions,
                                       report: inout LoadReport) throws(ModelError) -> any PretrainedModel {
        let config = try ModelLoader.decode(LlamaConfiguration.self, config, configURL)
        let fileValues = weights.values.reduce(0) { $0 + $1.count }
        try checkFileHoldsWeights(described: config.matrixParameterCount, fileValues: fileValues, path: configURL.deletingLastPathComponent().path)
        let model = try LlamaForCausalLM(config)
        try model.loadWeights(weights)
        return model
    }

    public static func loadGGUF(_ gguf: GGUFFile, url: URL, frozen: FrozenPrecision) throws(ModelError) -> (any PretrainedModel, LoadReport) {
        try ModelLoader.loadLlama(gguf, url: url, frozen: frozen)
    }
}

extension LlamaForCausalLM: PretrainedModel {
    public var architecture: String { "llama (LlamaForCausalLM)" }
    public var task: ModelTask { .causalLM }
    public var defaultLoRATargets: [String] { ["q_proj", "k_proj", "v_proj", "o_proj"] }
    public var maxPositionEmbeddings: Int { config.maxPositionEmbeddings }
    public func configurationJSON() throws -> Data { try sortedJSON(config) }
    public var attentionShape: (layers: Int, heads: Int, headDimension: Int) {
        (config.numHiddenLayers, config.numAttentionHeads, config.headDim)
    }

    /// The LM head, as a linear module of [V, C] (the tied embedding is frozen with LoRA).
    public func extraStepFLOPs(tokens n: Double) -> Double {
        let head = Double(config.vocabSize * config.hiddenSize)
        return 4 * n * head + (lmHead.isTrainable ? 2 * n * head : 0)
    }

    public var supportsActivationRecomputation: Bool { true }
    public func setActivationRecomputation(_ on: Bool) { recomputesActivations = on }

    public func activationEstimate(batch: Int, length: Int, recompute: Bool, adapters: AdapterBufferCounts) -> ActivationEstimate {
        let n = batch * length
        let c = config.hiddenSize, i = config.intermediateSize, layers = config.numHiddenLayers
        let q = config.numAttentionHeads * config.headDim, kv = config.numKeyValueHeads * config.headDim
        let probabilities = batch * config.numAttentionHeads * length * length
        // One block's saved activations (see LlamaDecoderLayer.activationBuffers).
        let blockActivations = n * c                   // hidden (residual after attention)
            + 2 * (n * c + n)                           // input and post-attention RMSNorm outputs, 1/rms
            + n * (q + 2 * kv + c)                      // q, k, v, o outputs
            + n * q + probabilities                     // attention output, probabilities
            + n * (3 * i + c)                           // gate, up, SwiGLU output, down
            + adapters.activations / max(layers, 1)
        // One set of gradient buffers, shared by the blocks (BufferPool).
        let gradients = n * c * 3                       // block hidden gradient, two norm input gradients
            + n * (2 * q + c) + 2 * n * kv + batch * length * length   // context, dq, input; dk, dv; dP scratch
            + n * (3 * i + c)                           // MLP hidden, gate, up gradients; MLP input gradient
            + adapters.gradients / max(layers, 1)
        let ownedPerBlock = 2 * n * c                   // each block's output and input gradient
        let modelLevel = 4 * n * c + n                 // embedding output, final norm output and 1/rms, its gradient, the head's input gradient
        return .decoder(layers: layers, tokens: n, hiddenSize: c, vocabularySize: config.vocabSize, blockActivations: blockActivations,
                        sharedGradients: gradients, ownedPerBlock: ownedPerBlock, modelLevel: modelLevel, recompute: recompute)
    }

    public func huggingFaceConfig(tokenizer: (any Tokenizer)?) throws -> [(key: String, value: JSON)] {
        var members = try jsonMembers(config)
        members += [("model_type", .string("llama")), ("architectures", .array([.string("LlamaForCausalLM")]))]
        members += specialTokenIdMembers(tokenizer)
        return members
    }
}
