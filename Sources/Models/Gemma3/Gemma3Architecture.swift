import Foundation
import Formats
import Kernels
import Layers
import OrderedJSON
import Tokenizers

/// Gemma 3 text decoders (gemma-3-270m and up, text only): a GGUF whose `general.architecture` is
/// gemma3, or a Hugging Face `gemma3_text` directory (what `lora merge` writes, with the
/// SentencePiece `tokenizer.json` transformers builds from the GGUF).
public enum Gemma3Architecture: ModelArchitecture {
    public static let name = "gemma3"
    public static let task = ModelTask.causalLM
    public static let huggingFaceModelTypes = ["gemma3_text"]
    public static let ggufArchitectures = ["gemma3"]

    public static func loadHuggingFace(config data: Data, configURL: URL, weights: [String: Tensor], options: LoadOptions,
                                       report: inout LoadReport) throws(ModelError) -> any PretrainedModel {
        let config = try Gemma3Configuration(huggingFace: data, path: configURL.path)
        let fileValues = weights.values.reduce(0) { $0 + $1.count }
        try checkFileHoldsWeights(described: try checkParameterCount(config.matrixShapes), fileValues: fileValues,
                                  path: configURL.deletingLastPathComponent().path)
        let model = Gemma3ForCausalLM(config)
        try model.loadWeights(weights)
        return model
    }

    public static func loadGGUF(_ gguf: GGUFFile, url: URL, frozen: FrozenPrecision) throws(ModelError) -> (any PretrainedModel, LoadReport) {
        try loadGemma3(gguf, url: url, frozen: frozen)
    }

    /// Gemma 3's Hugging Face ↔ GGUF tensor names (llama.cpp's `LLM_ARCH_GEMMA3` tensors); a
    /// file's `output.weight` is a copy of the tied head, allowed and not read.
    static let tensorNames = GGUFTensorNames(
        global: ["model.embed_tokens.weight": "token_embd.weight", "model.norm.weight": "output_norm.weight", "lm_head.weight": "output.weight"],
        block: ["input_layernorm.weight": "attn_norm.weight", "post_attention_layernorm.weight": "post_attention_norm.weight",
                "pre_feedforward_layernorm.weight": "ffn_norm.weight", "post_feedforward_layernorm.weight": "post_ffw_norm.weight",
                "self_attn.q_norm.weight": "attn_q_norm.weight", "self_attn.k_norm.weight": "attn_k_norm.weight",
                "self_attn.q_proj.weight": "attn_q.weight", "self_attn.k_proj.weight": "attn_k.weight",
                "self_attn.v_proj.weight": "attn_v.weight", "self_attn.o_proj.weight": "attn_output.weight",
                "mlp.gate_proj.weight": "ffn_gate.weight", "mlp.up_proj.weight": "ffn_up.weight", "mlp.down_proj.weight": "ffn_down.weight"])

    /// Every tensor must be there with its shape, and nothing else (an `output.weight` copy of the
    /// tied head is allowed). Gemma has no Q/K row permutation, so packed blocks keep the file's
    /// row order; the norms' 1 + w folded into the file is undone.
    static func loadGemma3(_ gguf: GGUFFile, url: URL, frozen: FrozenPrecision) throws(ModelError) -> (Gemma3ForCausalLM, LoadReport) {
        let config = try Gemma3Configuration(gguf: gguf, path: url.path)
        let fileValues = gguf.tensorInfos.reduce(0) { $0 + $1.elementCount }
        try checkFileHoldsWeights(described: try checkParameterCount(config.matrixShapes), fileValues: fileValues, path: url.path)
        let model = Gemma3ForCausalLM(config)
        let storedTypes = try ModelLoader.loadGGUFWeights(gguf, url: url, into: model, frozen: frozen, hfName: tensorNames.huggingFace,
                                                          ggufName: tensorNames.gguf,
                                                          rowOrder: { _, _ -> ((Int) -> Int)? in nil }) { name, tensor in
            // The GGUF folds Gemma's 1 + w into its norm weights; the model adds the 1 itself.
            if name.hasSuffix("norm.weight") { for i in 0..<tensor.count { tensor[i] -= 1 } }
        }
        return (model, LoadReport(source: url.path, storedTypes: storedTypes, newlyInitialized: [], metadata: [:]))
    }
}

extension Gemma3ForCausalLM: ReplicableModel {
    public func emptyCopy() -> Gemma3ForCausalLM { Gemma3ForCausalLM(config) }

    public var architecture: String { "gemma3 (Gemma3ForCausalLM)" }
    public var task: ModelTask { .causalLM }
    public var defaultLoRATargets: [String] { ["q_proj", "k_proj", "v_proj", "o_proj"] }
    public var maxPositionEmbeddings: Int { config.maxPositionEmbeddings }
    public var attentionShape: (layers: Int, heads: Int, headDimension: Int) {
        (config.numHiddenLayers, config.numAttentionHeads, config.headDim)
    }

    public func configurationJSON() throws -> Data {
        Data(JSON.object(try configurationMembers().sorted { $0.key < $1.key }).serialized().utf8)
    }

    /// The tied LM head, as a linear module of [V, C] (frozen with LoRA).
    public func extraStepFLOPs(tokens n: Double) -> Double {
        let head = Double(config.vocabSize * config.hiddenSize)
        return 4 * n * head + (embedTokens.weight.isTrainable ? 2 * n * head : 0)
    }

    public func setActivationRecomputation(_ on: Bool) { recomputesActivations = on }

    public var headModules: [any Module] { [lossHead] }
    public func headDescription(batch: Int, length: Int) -> String {
        "chunked loss: [\(min(lossHead.chunkRows, batch * length)), \(config.vocabSize)] logits"
    }

    /// transformers' `Gemma3TextConfig` keys (5.x: `rope_parameters` and `layer_types`).
    func configurationMembers() throws -> [(key: String, value: JSON)] {
        func int(_ v: Int) -> JSON { .number(Double(v)) }
        func float(_ v: Float) -> JSON { .number(Double("\(v)") ?? Double(v)) }   // 1e-06, not 9.99999997e-07
        let layerTypes = (0..<config.numHiddenLayers).map { JSON.string(config.isSliding($0) ? "sliding_attention" : "full_attention") }
        func rope(_ theta: Float) -> JSON { .object([("rope_theta", float(theta)), ("rope_type", .string("default"))]) }
        return [
            ("vocab_size", int(config.vocabSize)), ("hidden_size", int(config.hiddenSize)),
            ("intermediate_size", int(config.intermediateSize)), ("num_hidden_layers", int(config.numHiddenLayers)),
            ("num_attention_heads", int(config.numAttentionHeads)), ("num_key_value_heads", int(config.numKeyValueHeads)),
            ("head_dim", int(config.headDim)), ("rms_norm_eps", float(config.rmsNormEps)),
            ("sliding_window", int(config.slidingWindow)), ("layer_types", .array(layerTypes)),
            ("rope_parameters", .object([("full_attention", rope(config.ropeTheta)), ("sliding_attention", rope(config.ropeLocalTheta))])),
            ("query_pre_attn_scalar", float(config.queryPreAttnScalar)),
            ("max_position_embeddings", int(config.maxPositionEmbeddings)),
            ("hidden_activation", .string("gelu_pytorch_tanh")), ("tie_word_embeddings", .bool(true)),
            ("attention_bias", .bool(false)), ("attn_logit_softcapping", .null), ("final_logit_softcapping", .null),
            ("use_bidirectional_attention", .bool(false)),
        ]
    }

    public func huggingFaceConfig(tokenizer: (any Tokenizer)?) throws -> [(key: String, value: JSON)] {
        var members = try configurationMembers()
        members += [("model_type", .string("gemma3_text")), ("architectures", .array([.string("Gemma3ForCausalLM")]))]
        members += specialTokenIdMembers(tokenizer)
        return members
    }
}

extension Gemma3Configuration {
    /// From transformers' `config.json` of a `gemma3_text` model: 5.x keys (`rope_parameters`,
    /// `layer_types`) or 4.x ones (`rope_theta`, `rope_local_base_freq`, `sliding_window_pattern`).
    /// What this implementation does not compute (logit soft-capping, RoPE scaling, bidirectional
    /// attention, untied heads, another activation) is refused by name.
    public init(huggingFace data: Data, path: String) throws(ModelError) {
        guard let json = try? JSONSerialization.jsonObject(with: data) as? [String: Any] else {
            throw .invalidFile(path: path, reason: "not a JSON object")
        }
        func int(_ key: String) throws(ModelError) -> Int {
            guard let v = json[key] as? Int, v > 0 else { throw .invalidFile(path: path, reason: "\(key) is missing or not a positive integer") }
            return v
        }
        func number(_ key: String, in object: [String: Any]? = nil) -> Double? { ((object ?? json)[key] as? NSNumber)?.doubleValue }
        for key in ["attn_logit_softcapping", "final_logit_softcapping", "rope_scaling"] {
            if let v = json[key], !(v is NSNull) { throw .unsupportedArchitecture("gemma3_text with \(key) \(v) in \(path)") }
        }
        if json["use_bidirectional_attention"] as? Bool == true { throw .unsupportedArchitecture("gemma3_text with bidirectional attention in \(path)") }
        if json["tie_word_embeddings"] as? Bool == false { throw .unsupportedArchitecture("gemma3_text with an untied LM head in \(path)") }
        if let activation = json["hidden_activation"] as? String, activation != "gelu_pytorch_tanh" {
            throw .unsupportedArchitecture("gemma3_text with hidden_activation '\(activation)' in \(path) (supported: gelu_pytorch_tanh)")
        }
        let layers = try int("num_hidden_layers"), headDim = try int("head_dim")
        var pattern = json["sliding_window_pattern"] as? Int ?? json["_sliding_window_pattern"] as? Int ?? 6
        if let types = json["layer_types"] as? [String] {
            guard types.count == layers, let firstFull = types.firstIndex(of: "full_attention") else {
                throw .invalidFile(path: path, reason: "layer_types must name \(layers) layers, at least one full_attention")
            }
            pattern = firstFull + 1
            let expected = (0..<layers).map { ($0 + 1) % pattern == 0 ? "full_attention" : "sliding_attention" }
            guard types == expected else {
                throw .unsupportedArchitecture("gemma3_text layer_types other than every \(pattern)th layer global in \(path)")
            }
        }
        var theta = number("rope_theta") ?? 1_000_000, localTheta = number("rope_local_base_freq") ?? 10_000
        if let rope = json["rope_parameters"] as? [String: Any] {
            for (kind, value) in rope {
                guard let parameters = value as? [String: Any], (parameters["rope_type"] as? String ?? "default") == "default",
                      let t = number("rope_theta", in: parameters) else {
                    throw .unsupportedArchitecture("gemma3_text rope_parameters.\(kind) other than default RoPE with a rope_theta in \(path)")
                }
                if kind == "full_attention" { theta = t } else if kind == "sliding_attention" { localTheta = t }
            }
        }
        try self.init(vocabSize: try int("vocab_size"), hiddenSize: try int("hidden_size"), intermediateSize: try int("intermediate_size"),
                      numHiddenLayers: layers, numAttentionHeads: try int("num_attention_heads"),
                      numKeyValueHeads: try int("num_key_value_heads"), headDim: headDim, slidingWindow: try int("sliding_window"),
                      slidingWindowPattern: pattern, rmsNormEps: Float(number("rms_norm_eps") ?? 1e-6), ropeTheta: Float(theta),
                      ropeLocalTheta: Float(localTheta), maxPositionEmbeddings: json["max_position_embeddings"] as? Int ?? 32_768)
        queryPreAttnScalar = Float(number("query_pre_attn_scalar") ?? Double(headDim))
    }
}
