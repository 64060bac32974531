import Foundation
import Formats
import Kernels
import Layers
import LoRA

/// A Gemma 3 text configuration (transformers' `Gemma3TextConfig`), read from a GGUF's
/// `gemma3.*` metadata with llama.cpp's hard-coded Gemma 3 facts (`llama_load_hparams`, case
/// LLM_ARCH_GEMMA3): every 6th layer global, the others sliding-window; local RoPE θ 10,000.
public struct Gemma3Configuration: Sendable, Equatable {
    public var vocabSize: Int
    public var hiddenSize: Int
    public var intermediateSize: Int
    public var numHiddenLayers: Int
    public var numAttentionHeads: Int
    public var numKeyValueHeads: Int
    public var headDim: Int
    public var rmsNormEps: Float
    /// RoPE θ of the global (full-attention) layers and of the sliding ones.
    public var ropeTheta: Float
    public var ropeLocalTheta: Float = 10_000
    public var slidingWindow: Int
    /// Layer i is global when (i + 1) is a multiple of this.
    public var slidingWindowPattern = 6
    /// The attention scale is queryPreAttnScalar^−½ (transformers: query_pre_attn_scalar = head_dim for 270M).
    public var queryPreAttnScalar: Float
    public var maxPositionEmbeddings: Int

    public func isSliding(_ layer: Int) -> Bool { (layer + 1) % slidingWindowPattern != 0 }

    /// A configuration given directly (tests build tiny random Gemmas this way).
    public init(vocabSize: Int, hiddenSize: Int, intermediateSize: Int, numHiddenLayers: Int, numAttentionHeads: Int,
                numKeyValueHeads: Int, headDim: Int, slidingWindow: Int, slidingWindowPattern: Int = 6, rmsNormEps: Float = 1e-6,
                ropeTheta: Float = 1_000_000, ropeLocalTheta: Float = 10_000, maxPositionEmbeddings: Int = 32_768) throws(ModelError) {
        self.vocabSize = vocabSize
        self.hiddenSize = hiddenSize
        self.intermediateSize = intermediateSize
        self.numHiddenLayers = numHiddenLayers
        self.numAttentionHeads = numAttentionHeads
        self.numKeyValueHeads = numKeyValueHeads
        self.headDim = headDim
        self.slidingWindow = slidingWindow
        self.slidingWindowPattern = slidingWindowPattern
        self.rmsNormEps = rmsNormEps
        self.ropeTheta = ropeTheta
        self.ropeLocalTheta = ropeLocalTheta
        self.queryPreAttnScalar = Float(headDim)
        self.maxPositionEmbeddings = maxPositionEmbeddings
        guard numKeyValueHeads > 0, numAttentionHeads % numKeyValueHeads == 0, headDim % 2 == 0, slidingWindow > 0, slidingWindowPattern > 0 else {
            throw .invalidConfiguration("gemma3: heads must be a multiple of key/value heads, the head dimension even, the window positive")
        }
        try checkParameterCount(matrixShapes)
    }

    /// From the metadata of a GGUF whose `general.architecture` is gemma3.
    public init(gguf: GGUFFile, path: String) throws(ModelError) {
        func value(_ key: String) -> GGUFValue? { gguf.metadata["gemma3." + key] }
        func required(_ key: String) throws(ModelError) -> Int {
            guard let v = value(key)?.int, v > 0 else { throw .invalidFile(path: path, reason: "gemma3.\(key) is missing or not a positive integer") }
            return v
        }
        hiddenSize = try required("embedding_length")
        intermediateSize = try required("feed_forward_length")
        numHiddenLayers = try required("block_count")
        numAttentionHeads = try required("attention.head_count")
        numKeyValueHeads = try required("attention.head_count_kv")
        headDim = try required("attention.key_length")
        guard value("attention.value_length")?.int ?? headDim == headDim else {
            throw .invalidFile(path: path, reason: "gemma3.attention.value_length differs from key_length")
        }
        slidingWindow = try required("attention.sliding_window")
        maxPositionEmbeddings = value("context_length")?.int ?? 32_768
        rmsNormEps = Float(value("attention.layer_norm_rms_epsilon")?.double ?? 1e-6)
        ropeTheta = Float(value("rope.freq_base")?.double ?? 1_000_000)
        queryPreAttnScalar = Float(headDim)
        // The vocabulary is the embedding's row count ([V, C]).
        guard let tokens = gguf.tensorInfos.first(where: { $0.name == "token_embd.weight" })?.shape.first, tokens > 0
        else { throw .invalidFile(path: path, reason: "no token_embd.weight") }
        vocabSize = tokens
        guard numAttentionHeads % numKeyValueHeads == 0 else {
            throw .invalidConfiguration("gemma3: \(numAttentionHeads) heads are not a multiple of \(numKeyValueHeads) key/value heads")
        }
        guard headDim % 2 == 0 else { throw .invalidConfiguration("gemma3: head dimension \(headDim) is odd (RoPE needs pairs)") }
        try checkParameterCount(matrixShapes)
    }

    var matrixShapes: [[Int]] {
        let q = numAttentionHeads * headDim, kv = numKeyValueHeads * headDim
        return [[vocabSize, hiddenSize], [numHiddenLayers, hiddenSize, 2 * q + 2 * kv], [numHiddenLayers, 3, hiddenSize, intermediateSize]]
    }
}

/// Gemma 3 self-attention: q/k/v projections, RMSNorm over each head of q and k, RoPE (θ by
/// layer type), grouped-query attention scaled by queryPreAttnScalar^−½ with a sliding window
/// on local layers, then the output projection.
///
///     x [N, C] → q [N, H·D], k, v [N, KV·D] → q̂ = rms(q per head), k̂ = rms(k per head) → rope → attn → o [N, C]
public final class Gemma3Attention: Module {
    public let qProj, kProj, vProj, oProj: LoRALinear
    public let qNorm, kNorm: RMSNorm
    let rope: RotaryEmbedding
    let attention: ScaledDotProductAttention
    let heads: Int, kvHeads: Int, headDim: Int
    let window: Int?
    let layer: Int

    init(_ cfg: Gemma3Configuration, layer: Int) {
        self.layer = layer
        let c = cfg.hiddenSize, q = cfg.numAttentionHeads * cfg.headDim, kv = cfg.numKeyValueHeads * cfg.headDim
        qProj = LoRALinear(name: "", inFeatures: c, outFeatures: q, bias: false)
        kProj = LoRALinear(name: "", inFeatures: c, outFeatures: kv, bias: false)
        vProj = LoRALinear(name: "", inFeatures: c, outFeatures: kv, bias: false)
        oProj = LoRALinear(name: "", inFeatures: q, outFeatures: c, bias: false)
        qNorm = RMSNorm(dimension: cfg.headDim, epsilon: cfg.rmsNormEps, weightOffset: 1, vectorsPerRow: cfg.numAttentionHeads)
        kNorm = RMSNorm(dimension: cfg.headDim, epsilon: cfg.rmsNormEps, weightOffset: 1, vectorsPerRow: cfg.numKeyValueHeads)
        let sliding = cfg.isSliding(layer)
        rope = RotaryEmbedding(headDimension: cfg.headDim, base: sliding ? cfg.ropeLocalTheta : cfg.ropeTheta)
        attention = ScaledDotProductAttention(heads: cfg.numAttentionHeads, kvHeads: cfg.numKeyValueHeads, headDimension: cfg.headDim,
                                              scale: 1 / cfg.queryPreAttnScalar.squareRoot())
        heads = cfg.numAttentionHeads
        kvHeads = cfg.numKeyValueHeads
        headDim = cfg.headDim
        window = sliding ? cfg.slidingWindow : nil
    }

    let contextGradient = Tensor(shape: [0])
    let inputGradient = Tensor(shape: [0])
    private var positions: [Int] = []

    /// The per-head norms first: the order of a checkpoint's parameters.
    public var children: [(name: String, module: any Module)] {
        [("q_norm", qNorm), ("k_norm", kNorm), ("q_proj", qProj), ("k_proj", kProj), ("v_proj", vProj), ("o_proj", oProj),
         ("attention", attention)]
    }

    public var ownBuffers: [WorkBuffer] {
        let q = qProj.outFeatures, c = qProj.inFeatures
        return [WorkBuffer(contextGradient, .gradient) { $0.rows * q }, WorkBuffer(inputGradient, .gradient) { $0.rows * c }]
    }

    /// RMSNorm over each head's D values of `x` [N, heads·D]: the norm's own output, viewed as
    /// [N, heads·D] (RoPE then rotates it in place; the norm's backward does not read it).
    private func perHead(_ norm: RMSNorm, _ x: Tensor, heads: Int) -> Tensor {
        let n = x.rowCount
        x.reshape([n * heads, headDim])
        let y = norm.forward(x)
        x.reshape([n, heads * headDim])
        y.reshape([n, heads * headDim])
        return y
    }

    /// The per-head norm's backward: dy [N, heads·D] → dx [N, heads·D] (the norm's own gradient
    /// buffer). `input` is the tensor the norm saw (the projection's output), viewed per head for the call.
    private func perHeadBackward(_ norm: RMSNorm, _ dy: Tensor, input: Tensor, heads: Int) -> Tensor {
        let n = input.rowCount
        input.reshape([n * heads, headDim])
        dy.reshape([n * heads, headDim])
        let dx = norm.backward(dy)
        input.reshape([n, heads * headDim])
        dy.reshape([n, heads * headDim])
        dx.reshape([n, heads * headDim])
        return dx
    }

    /// The one forward pass: q and k normalised per head and rotated, v, attention within the
    /// batch or over the caches (`pass`), the output projection.
    func forward(_ x: Tensor, pass: ForwardPass) -> Tensor {
        positions = pass.positions
        let q = perHead(qNorm, qProj.forward(x, in: pass), heads: heads)
        let k = perHead(kNorm, kProj.forward(x, in: pass), heads: kvHeads)
        rope.apply(q, positions: positions)
        rope.apply(k, positions: positions)
        let context = pass.selfAttention(attention, q: q, k: k, v: vProj.forward(x, in: pass), layer: layer, slidingWindow: window)
        return oProj.forward(context, in: pass)
    }

    /// dOut [N, C] → dx [N, C]: oProj, attention, RoPE⁻¹, the per-head norms, then q/k/v.
    func backward(_ dOut: Tensor) -> Tensor {
        contextGradient.resize(attention.output.shape)
        oProj.backward(dOut, dx: contextGradient)
        let (dq, dk, dv) = attention.backward(contextGradient)
        rope.apply(dq, positions: positions, inverse: true)
        rope.apply(dk, positions: positions, inverse: true)
        let dqRaw = perHeadBackward(qNorm, dq, input: qProj.output, heads: heads)
        let dkRaw = perHeadBackward(kNorm, dk, input: kProj.output, heads: kvHeads)
        inputGradient.resize(dOut.shape.replacingLast(with: qProj.inFeatures))
        qProj.backward(dqRaw, dx: inputGradient)
        kProj.backward(dkRaw, dx: inputGradient, accumulate: true)
        vProj.backward(dv, dx: inputGradient, accumulate: true)
        return inputGradient
    }
}

/// One Gemma 3 block: pre- and post-norms around both sublayers.
///
///     h   = x + post_attn_norm(attn(input_norm(x)))
///     out = h + post_ffw_norm(mlp(pre_ffw_norm(h)))
///
/// Gemma's RMSNorm multiplies by 1 + w: the weights are transformers' (the GGUF stores 1 + w,
/// so loading subtracts 1, as transformers' GGUF loader does).
public final class Gemma3DecoderLayer: RecomputableBlock {
    public let inputLayernorm, postAttentionLayernorm, preFeedforwardLayernorm, postFeedforwardLayernorm: RMSNorm
    public let selfAttn: Gemma3Attention
    public let mlp: GatedMLP
    let hidden = Tensor(shape: [0])
    let output = Tensor(shape: [0])
    let hiddenGradient = Tensor(shape: [0])
    let inputGradient = Tensor(shape: [0])

    init(_ cfg: Gemma3Configuration, index: Int) {
        func norm() -> RMSNorm { RMSNorm(dimension: cfg.hiddenSize, epsilon: cfg.rmsNormEps, weightOffset: 1) }
        inputLayernorm = norm()
        postAttentionLayernorm = norm()
        preFeedforwardLayernorm = norm()
        postFeedforwardLayernorm = norm()
        selfAttn = Gemma3Attention(cfg, layer: index)
        mlp = GatedMLP(hidden: cfg.hiddenSize, intermediate: cfg.intermediateSize, bias: false, activation: .geluTanh)
    }

    /// The four norms first: the order of a checkpoint's parameters.
    public var children: [(name: String, module: any Module)] {
        [("input_layernorm", inputLayernorm), ("post_attention_layernorm", postAttentionLayernorm),
         ("pre_feedforward_layernorm", preFeedforwardLayernorm), ("post_feedforward_layernorm", postFeedforwardLayernorm),
         ("self_attn", selfAttn), ("mlp", mlp)]
    }

    public var ownBuffers: [WorkBuffer] {
        let c = inputLayernorm.dimension
        return [WorkBuffer(hidden, .activation) { $0.rows * c }, WorkBuffer(output, .retained) { $0.rows * c },
                WorkBuffer(hiddenGradient, .gradient) { $0.rows * c }, WorkBuffer(inputGradient, .retained) { $0.rows * c }]
    }

    func forward(_ x: Tensor, pass: ForwardPass) -> Tensor {
        add(x, postAttentionLayernorm.forward(selfAttn.forward(inputLayernorm.forward(x), pass: pass)), into: hidden)
        add(hidden, postFeedforwardLayernorm.forward(mlp.forward(preFeedforwardLayernorm.forward(hidden), pass: pass)), into: output)
        return output
    }

    /// dh = dOut + pre_ffw′(mlp′(post_ffw′(dOut))),  dx = dh + input_norm′(attn′(post_attn′(dh))).
    public func backward(_ dOut: Tensor) -> Tensor {
        hiddenGradient.resize(dOut.shape)
        hiddenGradient.copy(from: dOut)
        addInPlace(hiddenGradient, preFeedforwardLayernorm.backward(mlp.backward(postFeedforwardLayernorm.backward(dOut))))
        inputGradient.resize(dOut.shape)
        inputGradient.copy(from: hiddenGradient)
        addInPlace(inputGradient, inputLayernorm.backward(selfAttn.backward(postAttentionLayernorm.backward(hiddenGradient))))
        return inputGradient
    }
}

/// `Gemma3ForCausalLM` (text): embeddings × √C → blocks → RMSNorm → the tied LM head.
///
/// The forward pass (batched, and cached for generation) and the backward pass, checked against
/// transformers on the same GGUF and against finite differences; plugged in by `Gemma3Architecture`.
public final class Gemma3ForCausalLM: CausalLanguageModel, AdaptableModel {
    public let adapterRegistry = AdapterRegistry()
    public let config: Gemma3Configuration
    public let embedTokens: Embedding
    public let layers: [Gemma3DecoderLayer]
    public let norm: RMSNorm
    let scaled = Tensor(shape: [0])
    let logitsOutput = Tensor(shape: [0])
    let cachedPassBuffers = CachedPassBuffers()
    let lossHead: ChunkedLMHeadLoss
    let embeddingGradient = Tensor(shape: [0])
    /// The blocks' shared work buffers and activation recomputation, as Llama's.
    let blockRuns = BlockRecomputation<Gemma3DecoderLayer>()
    /// Keep only each block's input in a training step's forward pass and recompute the block
    /// (same dropout masks) just before its backward pass (`BlockRecomputation`).
    public var recomputesActivations: Bool {
        get { blockRuns.enabled }
        set { blockRuns.enabled = newValue }
    }

    public var vocabularySize: Int { config.vocabSize }

    public init(_ config: Gemma3Configuration) {
        self.config = config
        embedTokens = Embedding(count: config.vocabSize, dimension: config.hiddenSize)
        layers = (0..<config.numHiddenLayers).map { Gemma3DecoderLayer(config, index: $0) }
        norm = RMSNorm(dimension: config.hiddenSize, epsilon: config.rmsNormEps, weightOffset: 1)
        lossHead = ChunkedLMHeadLoss(vocabularySize: config.vocabSize, hiddenSize: config.hiddenSize)
        nameModules()
    }

    /// The LM head is the embedding (tied): no module of its own.
    public var children: [(name: String, module: any Module)] {
        [("model.embed_tokens", embedTokens)] + layers.enumerated().map { ("model.layers.\($0.offset)", $0.element) }
            + [("model.norm", norm), ("loss", lossHead)]
    }

    /// The √C-scaled embeddings and their gradient.
    public var ownBuffers: [WorkBuffer] {
        let c = config.hiddenSize
        return [WorkBuffer(scaled, .activation) { $0.rows * c }, WorkBuffer(embeddingGradient, .gradient) { $0.rows * c }]
    }

    /// Every linear module of the blocks (PEFT excludes the output layer).
    public func allLinearModulePaths(taskType: String?) -> Set<String> { Set(linearModules.map(\.name)) }
    /// A tied checkpoint may carry a copy of the head.
    public var ignorableWeightNames: Set<String> { ["lm_head.weight"] }

    /// Loads a gemma3 GGUF in fp32 (`Gemma3Architecture.loadGGUF` for packed frozen weights).
    public static func load(_ gguf: GGUFFile, path: String) throws(ModelError) -> Gemma3ForCausalLM {
        let architecture = gguf.metadata["general.architecture"]?.string ?? "(none)"
        guard architecture == "gemma3" else { throw .unsupportedArchitecture("general.architecture '\(architecture)' is not gemma3") }
        return try Gemma3Architecture.loadGemma3(gguf, url: URL(fileURLWithPath: path), frozen: .fp32).0
    }

    /// embed(ids) · √C, as transformers scales them (the factor rounded to fp32).
    func embed(_ ids: [Int], shape: [Int]) -> Tensor {
        let e = embedTokens.forward(ids: ids, shape: shape)
        scaled.resize(e.shape)
        let factor = Float(config.hiddenSize).squareRoot()
        for i in 0..<e.count { scaled[i] = e[i] * factor }
        return scaled
    }

    /// The final hidden states [B, T, C] after the last norm; `sequenceAdapters` runs each
    /// sequence with its own adapter (nil = the base model; inference only).
    public func hiddenStates(_ input: TokenBatch, forBackward: Bool = false, sequenceAdapters: [String?]? = nil) throws(ModelError) -> Tensor {
        let pass = try ForwardPass(input, vocabularySize: config.vocabSize, sequenceAdapters: sequenceAdapters, model: self)
        return norm.forward(run(pass, embed(input.inputIds, shape: [input.batch, input.length]), forBackward: forBackward))
    }

    /// Full logits [B, T, V] (the batched pass; scoring long texts uses `tokenLogProbabilities`,
    /// which never holds them all), with each sequence's own adapter when `sequenceAdapters` is given.
    public func logits(_ input: TokenBatch, sequenceAdapters: [String?]? = nil) throws(ModelError) -> Tensor {
        let h = try hiddenStates(input, sequenceAdapters: sequenceAdapters)
        logitsOutput.resize([input.batch, input.length, config.vocabSize])
        embedTokens.weight.multiplyTransposed(h.data, ldx: config.hiddenSize, rows: h.rowCount, into: logitsOutput.data, ldy: config.vocabSize)
        return logitsOutput
    }

    /// The blocks over `x`, the one path of every pass.
    private func run(_ pass: ForwardPass, _ x: Tensor, forBackward: Bool = false) -> Tensor {
        blockRuns.forward(layers, x, forBackward: forBackward) { layer, x in layer.forward(x, pass: pass) }
    }

    /// Mean next-token cross-entropy (targets as Hugging Face shifts them: position t predicts
    /// labels[t + 1]; -100 ignored); with `backward`, accumulates the gradients of every
    /// trainable parameter through the blocks (each block's activations kept from the forward).
    public func loss(_ input: TokenBatch, labels: [Int], backward: Bool) throws(ModelError) -> Float {
        if backward { try requireUnmerged("training") }
        let targets = try nextTokenTargets(labels: labels, input: input, vocabularySize: config.vocabSize)
        let h = try hiddenStates(input, forBackward: backward)
        let (loss, _) = lossHead(h, head: embedTokens.weight, targets: targets, computeGradients: backward)
        guard backward else { return loss }
        let d = blockRuns.backward(layers, norm.backward(lossHead.inputGradient))
        // x = e · √C
        embeddingGradient.resize(d.shape)
        let factor = Float(config.hiddenSize).squareRoot()
        for i in 0..<d.count { embeddingGradient[i] = d[i] * factor }
        embedTokens.backward(embeddingGradient)
        return loss
    }

    /// log p(ids[i+1] | ids[...i]) for one sequence: the batched forward pass, then the tied head
    /// in chunks of rows (the 262,144-wide logits of a long text are never all resident).
    public func tokenLogProbabilities(_ ids: [Int]) throws(ModelError) -> [Double] {
        guard ids.count >= 2 else { return [] }
        let h = try hiddenStates(TokenBatch(batch: 1, length: ids.count, inputIds: ids))
        let v = config.vocabSize, c = config.hiddenSize, chunk = 32
        let logits = Tensor(shape: [chunk, v])
        var result: [Double] = []
        var start = 0
        while start < ids.count - 1 {
            let rows = min(chunk, ids.count - 1 - start)
            embedTokens.weight.multiplyTransposed(h.data + start * c, ldx: c, rows: rows, into: logits.data, ldy: v)
            for r in 0..<rows { result.append(logProbability(of: ids[start + r + 1], in: logits.data + r * v, count: v)) }
            start += rows
        }
        return result
    }

    /// A standard cache on the global layers and a sliding-window one (about 2 × 512 positions,
    /// however long the text) on the local layers.
    public func makeCache(capacity: Int) -> KVCache {
        let width = config.numKeyValueHeads * config.headDim
        return KVCache(layers: (0..<config.numHiddenLayers).map { layer -> any LayerKVCache in
            config.isSliding(layer) ? SlidingWindowKVCache(width: width, window: config.slidingWindow)
                : StandardKVCache(width: width, capacity: capacity)
        }, capacity: capacity)
    }

    /// Several sequences' new tokens through their caches (`CausalLanguageModel`).
    public func forwardCached(_ steps: [CachedStep], adapters: AdapterSelection, allLogits: Bool) throws(ModelError) -> Tensor {
        let pass = try ForwardPass(steps, adapters: adapters, vocabularySize: config.vocabSize, model: self, buffers: cachedPassBuffers)
        let h = norm.forward(run(pass, embed(pass.tokens, shape: [pass.rows])))
        return pass.finish(h, head: embedTokens.weight, allLogits: allLogits, into: logitsOutput)
    }
}
