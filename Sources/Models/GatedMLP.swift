import Kernels
import Layers
import LoRA

/// The gated MLP of the decoders: out = down(f(gate(x)) ⊙ up(x)), f = silu (Llama's SwiGLU) or
/// the tanh GELU (Gemma).   x, out: [N, C], hidden: [N, I]
public final class GatedMLP {
    public let gateProj, upProj, downProj: LoRALinear
    let activation: GatedActivation
    let hiddenGradient = Tensor(shape: [0])
    let inputGradient = Tensor(shape: [0])

    init(hidden c: Int, intermediate i: Int, bias: Bool, activation: GatedActivation.Function, prefix: String) {
        gateProj = LoRALinear(name: prefix + "gate_proj", inFeatures: c, outFeatures: i, bias: bias)
        upProj = LoRALinear(name: prefix + "up_proj", inFeatures: c, outFeatures: i, bias: bias)
        downProj = LoRALinear(name: prefix + "down_proj", inFeatures: i, outFeatures: c, bias: bias)
        self.activation = GatedActivation(activation)
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

    var linearModules: [LoRALinear] { [gateProj, upProj, downProj] }
    var activationBuffers: [Tensor] { linearModules.flatMap(\.activationBuffers) + activation.activationBuffers }
    var gradientBuffers: [Tensor] {
        [hiddenGradient, inputGradient] + activation.gradientBuffers + linearModules.flatMap(\.gradientBuffers)
    }
}
