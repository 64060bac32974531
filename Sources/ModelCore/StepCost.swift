import LoRA

extension PretrainedModel {
    /// The matrix-product FLOPs of one training step on a `batch × length` batch, as computed
    /// (elementwise work is not counted):
    ///
    ///     every linear module   forward 2·N·in·out, input gradient 2·N·in·out,
    ///                           weight gradient 2·N·in·out only when W is trainable
    ///     every active adapter  6·N·r·(in + out)  (forward 2, backward 4: dB, dh, dA, dx)
    ///     attention per layer   6 products of 2·B·H·T²·D (QKᵀ, PV; four in the backward pass)
    ///     a decoder's LM head   as a linear module of [V, C] (a tied embedding is frozen with LoRA)
    ///
    /// `gemm_gflops_achieved` in `lora bench train` is this divided by the step time.
    public func trainingStepFLOPs(batch: Int, length: Int) -> Double {
        let n = Double(batch * length)
        var flops = 0.0
        for m in linearModules {
            let w = Double(m.inFeatures * m.outFeatures)
            flops += 4 * n * w + (m.base.weight.isTrainable ? 2 * n * w : 0)
            if !m.isMerged, let a = m.adapter { flops += 6 * n * Double(a.rank * (m.inFeatures + m.outFeatures)) }
        }
        flops += extraStepFLOPs(tokens: n)
        let (layers, heads, headDim) = attentionShape
        flops += Double(layers) * 6 * 2 * Double(batch * heads * length * length * headDim)
        return flops
    }
}
