import Kernels
import Layers
import LoRA

/// A Llama-family configuration; field names are those of Hugging Face `config.json`.
public struct LlamaConfiguration: Codable, Sendable, Equatable {
    public var vocabSize: Int
    public var hiddenSize: Int
    public var intermediateSize: Int
    public var numHiddenLayers: Int
    public var numAttentionHeads: Int
    public var numKeyValueHeads: Int
    public var headDim: Int
    public var rmsNormEps: Float
    public var ropeTheta: Float
    public var maxPositionEmbeddings: Int
    public var tieWordEmbeddings: Bool
    public var attentionBias: Bool
    public var mlpBias: Bool

    enum CodingKeys: String, CodingKey {
        case vocabSize = "vocab_size", hiddenSize = "hidden_size", intermediateSize = "intermediate_size"
        case numHiddenLayers = "num_hidden_layers", numAttentionHeads = "num_attention_heads"
        case numKeyValueHeads = "num_key_value_heads", headDim = "head_dim", rmsNormEps = "rms_norm_eps"
        case ropeTheta = "rope_theta", ropeParameters = "rope_parameters", ropeScaling = "rope_scaling"
        case maxPositionEmbeddings = "max_position_embeddings", tieWordEmbeddings = "tie_word_embeddings"
        case attentionBias = "attention_bias", mlpBias = "mlp_bias", hiddenAct = "hidden_act"
    }

    /// transformers ≥ 5 writes `rope_parameters`, earlier versions `rope_theta` + `rope_scaling`.
    struct RopeParameters: Codable, Equatable {
        var ropeTheta: Float?
        var ropeType: String?
        enum CodingKeys: String, CodingKey { case ropeTheta = "rope_theta", ropeType = "rope_type", type }
        init(from decoder: any Decoder) throws {
            let c = try decoder.container(keyedBy: CodingKeys.self)
            ropeTheta = try c.decodeIfPresent(Float.self, forKey: .ropeTheta)
            ropeType = try c.decodeIfPresent(String.self, forKey: .ropeType) ?? c.decodeIfPresent(String.self, forKey: .type)
        }
        func encode(to encoder: any Encoder) throws {
            var c = encoder.container(keyedBy: CodingKeys.self)
            try c.encodeIfPresent(ropeTheta, forKey: .ropeTheta)
            try c.encodeIfPresent(ropeType, forKey: .ropeType)
        }
    }

    public init(vocabSize: Int, hiddenSize: Int, intermediateSize: Int, numHiddenLayers: Int,
                numAttentionHeads: Int, numKeyValueHeads: Int, headDim: Int? = nil, rmsNormEps: Float = 1e-6,
                ropeTheta: Float = 10000, maxPositionEmbeddings: Int = 2048, tieWordEmbeddings: Bool = false,
                attentionBias: Bool = false, mlpBias: Bool = false) throws(ModelError) {
        self.vocabSize = vocabSize
        self.hiddenSize = hiddenSize
        self.intermediateSize = intermediateSize
        self.numHiddenLayers = numHiddenLayers
        self.numAttentionHeads = numAttentionHeads
        self.numKeyValueHeads = numKeyValueHeads
        self.headDim = headDim ?? (numAttentionHeads > 0 ? hiddenSize / numAttentionHeads : 0)
        self.rmsNormEps = rmsNormEps
        self.ropeTheta = ropeTheta
        self.maxPositionEmbeddings = maxPositionEmbeddings
        self.tieWordEmbeddings = tieWordEmbeddings
        self.attentionBias = attentionBias
        self.mlpBias = mlpBias
        try validate()
    }

    public init(from decoder: any Decoder) throws {
        let c = try decoder.container(keyedBy: CodingKeys.self)
        let heads = try c.decode(Int.self, forKey: .numAttentionHeads)
        let hidden = try c.decode(Int.self, forKey: .hiddenSize)
        var theta = try c.decodeIfPresent(Float.self, forKey: .ropeTheta)
        for key in [CodingKeys.ropeParameters, .ropeScaling] {
            guard let rope = try c.decodeIfPresent(RopeParameters.self, forKey: key) else { continue }
            if let type = rope.ropeType, type != "default" {
                throw ModelError.invalidConfiguration("rope type '\(type)' is not supported yet (only 'default')")
            }
            theta = rope.ropeTheta ?? theta
        }
        if let act = try c.decodeIfPresent(String.self, forKey: .hiddenAct), act != "silu" {
            throw ModelError.invalidConfiguration("hidden_act '\(act)' is not supported for Llama (only 'silu')")
        }
        try self.init(
            vocabSize: c.decode(Int.self, forKey: .vocabSize), hiddenSize: hidden,
            intermediateSize: c.decode(Int.self, forKey: .intermediateSize),
            numHiddenLayers: c.decode(Int.self, forKey: .numHiddenLayers), numAttentionHeads: heads,
            numKeyValueHeads: c.decodeIfPresent(Int.self, forKey: .numKeyValueHeads) ?? heads,
            headDim: c.decodeIfPresent(Int.self, forKey: .headDim),
            rmsNormEps: c.decodeIfPresent(Float.self, forKey: .rmsNormEps) ?? 1e-6,
            ropeTheta: theta ?? 10000,
            maxPositionEmbeddings: c.decodeIfPresent(Int.self, forKey: .maxPositionEmbeddings) ?? 2048,
            tieWordEmbeddings: c.decodeIfPresent(Bool.self, forKey: .tieWordEmbeddings) ?? false,
            attentionBias: c.decodeIfPresent(Bool.self, forKey: .attentionBias) ?? false,
            mlpBias: c.decodeIfPresent(Bool.self, forKey: .mlpBias) ?? false)
    }

    public func encode(to encoder: any Encoder) throws {
        var c = encoder.container(keyedBy: CodingKeys.self)
        try c.encode(vocabSize, forKey: .vocabSize)
        try c.encode(hiddenSize, forKey: .hiddenSize)
        try c.encode(intermediateSize, forKey: .intermediateSize)
        try c.encode(numHiddenLayers, forKey: .numHiddenLayers)
        try c.encode(numAttentionHeads, forKey: .numAttentionHeads)
        try c.encode(numKeyValueHeads, forKey: .numKeyValueHeads)
        try c.encode(headDim, forKey: .headDim)
        try c.encode(rmsNormEps, forKey: .rmsNormEps)
        try c.encode(ropeTheta, forKey: .ropeTheta)
        try c.encode(maxPositionEmbeddings, forKey: .maxPositionEmbeddings)
        try c.encode(tieWordEmbeddings, forKey: .tieWordEmbeddings)
        try c.encode(attentionBias, forKey: .attentionBias)
        try c.encode(mlpBias, forKey: .mlpBias)
        try c.encode("silu", forKey: .hiddenAct)
    }

    public func validate() throws(ModelError) {
        let positive = [("vocab_size", vocabSize), ("hidden_size", hiddenSize), ("intermediate_size", intermediateSize),
                        ("num_hidden_layers", numHiddenLayers), ("num_attention_heads", numAttentionHeads),
                        ("num_key_value_heads", numKeyValueHeads), ("head_dim", headDim)]
        for (name, v) in positive where v <= 0 { throw .invalidConfiguration("\(name) must be positive, got \(v)") }
        guard numAttentionHeads % numKeyValueHeads == 0 else {
            throw .invalidConfiguration("num_attention_heads (\(numAttentionHeads)) must be a multiple of num_key_value_heads (\(numKeyValueHeads))")
        }
        guard headDim % 2 == 0 else { throw .invalidConfiguration("head_dim must be even for rotary embeddings, got \(headDim)") }
        guard ropeTheta > 0, rmsNormEps > 0 else { throw .invalidConfiguration("rope_theta and rms_norm_eps must be positive") }
        // Refuse sizes that cannot be allocated, before anything is (checked arithmetic).
        try checkParameterCount(matrixShapes)
    }

    /// The weight matrices' sizes as products of dimensions (norms left out).
    var matrixShapes: [[Int]] {
        [
            [vocabSize, hiddenSize, tieWordEmbeddings ? 1 : 2],
            [numHiddenLayers, hiddenSize, numAttentionHeads, headDim, 2],   // q, o
            [numHiddenLayers, hiddenSize, numKeyValueHeads, headDim, 2],    // k, v
            [numHiddenLayers, 3, hiddenSize, intermediateSize],
        ]
    }

    /// Parameters in the weight matrices: a lower bound on the model's size, from the
    /// configuration alone (a valid configuration's count never overflows).
    public var matrixParameterCount: Int { (try? checkParameterCount(matrixShapes)) ?? .max }
}

/// Self-attention of a Llama block: projections, RoPE on q and k, grouped-query attention.
///
///     x: [B, T, C] → q [B, T, H·D], k, v [B, T, KV·D] → context [B, T, H·D] → out [B, T, C]
public final class LlamaAttention: Module {
    public let qProj, kProj, vProj, oProj: LoRALinear
    let rope: RotaryEmbedding
    let attention: ScaledDotProductAttention
    let contextGradient = Tensor(shape: [0])
    let inputGradient = Tensor(shape: [0])
    let layer: Int
    private var positions: [Int] = []

    init(_ cfg: LlamaConfiguration, layer: Int) {
        self.layer = layer
        let c = cfg.hiddenSize, q = cfg.numAttentionHeads * cfg.headDim, kv = cfg.numKeyValueHeads * cfg.headDim
        qProj = LoRALinear(name: "", inFeatures: c, outFeatures: q, bias: cfg.attentionBias)
        kProj = LoRALinear(name: "", inFeatures: c, outFeatures: kv, bias: cfg.attentionBias)
        vProj = LoRALinear(name: "", inFeatures: c, outFeatures: kv, bias: cfg.attentionBias)
        oProj = LoRALinear(name: "", inFeatures: q, outFeatures: c, bias: cfg.attentionBias)
        rope = RotaryEmbedding(headDimension: cfg.headDim, base: cfg.ropeTheta)
        attention = ScaledDotProductAttention(heads: cfg.numAttentionHeads, kvHeads: cfg.numKeyValueHeads, headDimension: cfg.headDim)
    }

    public var children: [(name: String, module: any Module)] {
        [("q_proj", qProj), ("k_proj", kProj), ("v_proj", vProj), ("o_proj", oProj), ("attention", attention)]
    }

    public var ownBuffers: [WorkBuffer] {
        let q = qProj.outFeatures, c = qProj.inFeatures
        return [WorkBuffer(contextGradient, .gradient) { $0.rows * q }, WorkBuffer(inputGradient, .gradient) { $0.rows * c }]
    }

    /// The one forward pass: over a batch (training, scoring) or over caches (decoding).
    func forward(_ x: Tensor, pass: ForwardPass) -> Tensor {
        positions = pass.positions
        let q = qProj.forward(x, in: pass), k = kProj.forward(x, in: pass), v = vProj.forward(x, in: pass)
        rope.apply(q, positions: positions)   // in place: the projections keep only their inputs
        rope.apply(k, positions: positions)
        let context = pass.selfAttention(attention, q: q, k: k, v: v, layer: layer, slidingWindow: nil)
        return oProj.forward(context, in: pass)
    }

    func backward(_ dOut: Tensor) -> Tensor {
        contextGradient.resize(attention.output.shape)
        oProj.backward(dOut, dx: contextGradient)
        let (dq, dk, dv) = attention.backward(contextGradient)
        rope.apply(dq, positions: positions, inverse: true)
        rope.apply(dk, positions: positions, inverse: true)
        inputGradient.resize(dOut.shape.replacingLast(with: qProj.inFeatures))
        qProj.backward(dq, dx: inputGradient)
        kProj.backward(dk, dx: inputGradient, accumulate: true)
        vProj.backward(dv, dx: inputGradient, accumulate: true)
        return inputGradient
    }
}

/// One pre-norm decoder block:
///
///     h   = x + attn(rms₁(x))
///     out = h + mlp(rms₂(h))
public final class LlamaDecoderLayer: RecomputableBlock {
    public let inputLayernorm: RMSNorm
    public let selfAttn: LlamaAttention
    public let postAttentionLayernorm: RMSNorm
    public let mlp: GatedMLP
    let hidden = Tensor(shape: [0])
    let output = Tensor(shape: [0])
    let hiddenGradient = Tensor(shape: [0])
    let inputGradient = Tensor(shape: [0])

    init(_ cfg: LlamaConfiguration, index: Int) {
        inputLayernorm = RMSNorm(dimension: cfg.hiddenSize, epsilon: cfg.rmsNormEps)
        selfAttn = LlamaAttention(cfg, layer: index)
        postAttentionLayernorm = RMSNorm(dimension: cfg.hiddenSize, epsilon: cfg.rmsNormEps)
        mlp = GatedMLP(hidden: cfg.hiddenSize, intermediate: cfg.intermediateSize, bias: cfg.mlpBias, activation: .silu)
    }

    /// The norms first: the order of a checkpoint's parameters (and of optimizer states).
    public var children: [(name: String, module: any Module)] {
        [("input_layernorm", inputLayernorm), ("post_attention_layernorm", postAttentionLayernorm), ("self_attn", selfAttn), ("mlp", mlp)]
    }

    public var ownBuffers: [WorkBuffer] {
        let c = inputLayernorm.dimension
        return [WorkBuffer(hidden, .activation) { $0.rows * c }, WorkBuffer(output, .retained) { $0.rows * c },
                WorkBuffer(hiddenGradient, .gradient) { $0.rows * c }, WorkBuffer(inputGradient, .retained) { $0.rows * c }]
    }

    func forward(_ x: Tensor, pass: ForwardPass) -> Tensor {
        add(x, selfAttn.forward(inputLayernorm.forward(x), pass: pass), into: hidden)
        add(hidden, mlp.forward(postAttentionLayernorm.forward(hidden), pass: pass), into: output)
        return output
    }

    public func backward(_ dOut: Tensor) -> Tensor {
        hiddenGradient.resize(dOut.shape)
        hiddenGradient.copy(from: dOut)
        addInPlace(hiddenGradient, postAttentionLayernorm.backward(mlp.backward(dOut)))
        inputGradient.resize(dOut.shape)
        inputGradient.copy(from: hiddenGradient)
        addInPlace(inputGradient, inputLayernorm.backward(selfAttn.backward(hiddenGradient)))
        return inputGradient
    }
}

/// `LlamaForCausalLM`: embeddings → decoder blocks → RMSNorm → LM head (tied or untied).
public final class LlamaForCausalLM: AdaptableModel {
    public let adapterRegistry = AdapterRegistry()
    public let config: LlamaConfiguration
    public let embedTokens: Embedding
    public let layers: [LlamaDecoderLayer]
    public let norm: RMSNorm
    /// `lm_head`: the embedding's own weight when tied.
    let head: WeightModule
    let lossHead: ChunkedLMHeadLoss
    /// Logits of the last `logits(_:)` call, [B, T, V].
    public let logitsOutput = Tensor(shape: [0])
    let cachedPassBuffers = CachedPassBuffers()
    /// The blocks' shared work buffers and activation recomputation.
    let blockRuns = BlockRecomputation<LlamaDecoderLayer>()
    /// Keep only each block's input in the forward pass of a training step and recompute the
    /// block (same dropout masks) just before its backward pass (`BlockRecomputation`).
    public var recomputesActivations: Bool {
        get { blockRuns.enabled }
        set { blockRuns.enabled = newValue }
    }

    public init(_ config: LlamaConfiguration) throws(ModelError) {
        try config.validate()
        self.config = config
        embedTokens = Embedding(count: config.vocabSize, dimension: config.hiddenSize)
        layers = (0..<config.numHiddenLayers).map { LlamaDecoderLayer(config, index: $0) }
        norm = RMSNorm(dimension: config.hiddenSize, epsilon: config.rmsNormEps)
        head = WeightModule(config.tieWordEmbeddings
            ? embedTokens.weight
            : Parameter("weight", Tensor(shape: [config.vocabSize, config.hiddenSize])))
        lossHead = ChunkedLMHeadLoss(vocabularySize: config.vocabSize, hiddenSize: config.hiddenSize)
        nameModules()
    }

    /// The LM head's weight [V, C]; the embedding's own weight when tied.
    public var lmHead: Parameter { head.weight }

    public var children: [(name: String, module: any Module)] {
        [("model.embed_tokens", embedTokens)] + layers.enumerated().map { ("model.layers.\($0.offset)", $0.element) }
            + [("model.norm", norm), ("lm_head", head), ("loss", lossHead)]
    }

    /// A tied checkpoint may still carry a copy of the head.
    public var ignorableWeightNames: Set<String> { config.tieWordEmbeddings ? ["lm_head.weight"] : [] }

    /// Every linear module of the blocks (the LM head is not a linear module here, as PEFT
    /// excludes the output layer).
    public func allLinearModulePaths(taskType: String?) -> Set<String> { Set(linearModules.map(\.name)) }

    /// The final hidden states [B, T, C] after the last norm. `forBackward` with
    /// `recomputesActivations` keeps what the backward pass needs to recompute each block;
    /// `sequenceAdapters` runs each sequence with its own adapter (nil = the base model;
    /// inference only) instead of the active ones.
    public func hiddenStates(_ input: TokenBatch, forBackward: Bool = false, sequenceAdapters: [String?]? = nil) throws(ModelError) -> Tensor {
        let pass = try ForwardPass(input, vocabularySize: config.vocabSize, sequenceAdapters: sequenceAdapters, model: self)
        return norm.forward(run(pass, embedTokens.forward(ids: input.inputIds, shape: [input.batch, input.length]), forBackward: forBackward))
    }

    /// The blocks over `x`, the one path of every pass.
    private func run(_ pass: ForwardPass, _ x: Tensor, forBackward: Bool = false) -> Tensor {
        blockRuns.forward(layers, x, forBackward: forBackward) { layer, x in layer.forward(x, pass: pass) }
    }

    /// Several sequences' new tokens through their caches (`CausalLanguageModel`).
    public func forwardCached(_ steps: [CachedStep], adapters: AdapterSelection, allLogits: Bool) throws(ModelError) -> Tensor {
        let pass = try ForwardPass(steps, adapters: adapters, vocabularySize: config.vocabSize, model: self, buffers: cachedPassBuffers)
        let h = norm.forward(run(pass, embedTokens.forward(ids: pass.tokens, shape: [pass.rows])))
        return pass.finish(h, head: lmHead, allLogits: allLogits, into: logitsOutput)
    }

    /// Full logits [B, T, V] (inference; training uses the chunked loss instead), with each
    /// sequence's own adapter when `sequenceAdapters` is given (PEFT's `adapter_names`).
    public func logits(_ input: TokenBatch, sequenceAdapters: [String?]? = nil) throws(ModelError) -> Tensor {
        let h = try hiddenStates(input, sequenceAdapters: sequenceAdapters)
        logitsOutput.resize([input.batch, input.length, config.vocabSize])
        lmHead.multiplyTransposed(h.data, ldx: config.hiddenSize, rows: h.rowCount, into: logitsOutput.data, ldy: config.vocabSize)
        return logitsOutput
    }

    /// Mean next-token cross-entropy; with `backward`, also accumulates the gradients of every
    /// trainable parameter (call `zeroGradients()` between steps).
    public func loss(_ input: TokenBatch, labels: [Int], backward: Bool) throws(ModelError) -> Float {
        if backward { try requireUnmerged("training") }
        try input.validate(vocabularySize: config.vocabSize, maxPositions: nil)
        let targets = try nextTokenTargets(labels: labels, input: input, vocabularySize: config.vocabSize)
        let h = try hiddenStates(input, forBackward: backward)
        let (loss, _) = lossHead(h, head: lmHead, targets: targets, computeGradients: backward)
        if backward { backwardFromHidden(lossHead.inputGradient) }
        return loss
    }

    private func backwardFromHidden(_ dHidden: Tensor) {
        let d = blockRuns.backward(layers, norm.backward(dHidden))
        embedTokens.backward(d)
    }
}
