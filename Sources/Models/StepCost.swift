import LoRA

extension PretrainedModel {
    /// Mean loss of one batch (next-token cross-entropy for a decoder, class cross-entropy for a
    /// classifier); with `backward`, accumulates the gradients of every trainable parameter.
    public func loss(_ batch: TokenBatch, labels: [Int], backward: Bool) throws(ModelError) -> Float {
        switch self {
        case .llama(let m): try m.loss(batch, labels: labels, backward: backward)
        case .bert(let m): try m.loss(batch, labels: labels, backward: backward)
        }
    }

    /// The matrix-product FLOPs of one training step on a `batch × length` batch, as computed
    /// (elementwise work is not counted):
    ///
    ///     every linear module   forward 2·N·in·out, input gradient 2·N·in·out,
    ///                           weight gradient 2·N·in·out only when W is trainable
    ///     every active adapter  6·N·r·(in + out)  (forward 2, backward 4: dB, dh, dA, dx)
    ///     attention per layer   6 products of 2·B·H·T²·D (QKᵀ, PV; four in the backward pass)
    ///     Llama LM head         as a linear module of [V, C] (the tied embedding is frozen with LoRA)
    ///
    /// `gemm_gflops_achieved` in `lora bench train` is this divided by the step time.
    public func trainingStepFLOPs(batch: Int, length: Int) -> Double {
        let n = Double(batch * length)
        var flops = 0.0
        for m in adaptable.linearModules {
            let w = Double(m.inFeatures * m.outFeatures)
            flops += 4 * n * w + (m.base.weight.isTrainable ? 2 * n * w : 0)
            if !m.isMerged, let a = m.adapter { flops += 6 * n * Double(a.rank * (m.inFeatures + m.outFeatures)) }
        }
        let (layers, heads, headDim): (Int, Int, Int)
        switch self {
        case .llama(let m):
            (layers, heads, headDim) = (m.config.numHiddenLayers, m.config.numAttentionHeads, m.config.headDim)
            let head = Double(m.config.vocabSize * m.config.hiddenSize)
            flops += 4 * n * head + (m.lmHead.isTrainable ? 2 * n * head : 0)
        case .bert(let m):
            (layers, heads, headDim) = (m.config.numHiddenLayers, m.config.numAttentionHeads, m.config.headDim)
        }
        flops += Double(layers) * 6 * 2 * Double(batch * heads * length * length * headDim)
        return flops
    }
}
