import Foundation
import Formats
import Kernels
import Layers
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

extension LlamaForCausalLM: ReplicableModel {
    public func emptyCopy() -> LlamaForCausalLM {
        do { return try LlamaForCausalLM(config) } catch { preconditionFailure("a loaded model's configuration is valid: \(error)") }
    }

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

    public func setActivationRecomputation(_ on: Bool) { recomputesActivations = on }

    public var headModules: [any Module] { [lossHead] }
    public func headDescription(batch: Int, length: Int) -> String {
        "chunked loss: [\(min(lossHead.chunkRows, batch * length)), \(config.vocabSize)] logits"
    }

    public func huggingFaceConfig(tokenizer: (any Tokenizer)?) throws -> [(key: String, value: JSON)] {
        var members = try jsonMembers(config)
        members += [("model_type", .string("llama")), ("architectures", .array([.string("LlamaForCausalLM")]))]
        members += specialTokenIdMembers(tokenizer)
        return members
    }
}
