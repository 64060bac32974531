import Kernels
import Layers
import LoRA

/// The gated MLP of the decoders: out = down(f(gate(x)) ⊙ up(x)), f = silu (Llama's SwiGLU) or
/// the tanh GELU (Gemma).   x, out: [N, C], hidden: [N, I]
public final class GatedMLP: Module {
    public let gateProj, upProj, downProj: LoRALinear
    let activation: GatedActivation
    let hiddenGradient = Tensor(shape: [0])
    let inputGradient = Tensor(shape: [0])

    init(hidden c: Int, intermediate i: Int, bias: Bool, activation: GatedActivation.Function) {
        gateProj = LoRALinear(name: "", inFeatures: c, outFeatures: i, bias: bias)
        upProj = LoRALinear(name: "", inFeatures: c, outFeatures: i, bias: bias)
        downProj = LoRALinear(name: "", inFeatures: i, outFeatures: c, bias: bias)
        self.activation = GatedActivation(activation, width: i)
    }

    public var children: [(name: String, module: any Module)] {
        [("gate_proj", gateProj), ("up_proj", upProj), ("down_proj", downProj), ("act_fn", activation)]
    }

    public var ownBuffers: [WorkBuffer] {
        let c = gateProj.inFeatures, i = gateProj.outFeatures
        return [WorkBuffer(hiddenGradient, .gradient) { $0.rows * i }, WorkBuffer(inputGradient, .gradient) { $0.rows * c }]
    }

    func forward(_ x: Tensor, pass: ForwardPass) -> Tensor {
        let h = activation.forward(gate: gateProj.forward(x, in: pass), up: upProj.forward(x, in: pass))
        return downProj.forward(h, in: pass)
    }

    func backward(_ dOut: Tensor) -> Tensor {
        hiddenGradient.resize(activation.output.shape)
        downProj.backward(dOut, dx: hiddenGradient)
        let (dGate, dUp) = activation.backward(hiddenGradient)
        inputGradient.resize(dOut.shape)
        gateProj.backward(dGate, dx: inputGradient)
        upProj.backward(dUp, dx: inputGradient, accumulate: true)
        return inputGradient
    }
}
