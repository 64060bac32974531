import Foundation
import Kernels
#if canImport(Glibc)
import Glibc
#endif

/// The gated activation of an MLP: h = f(gate) ⊙ up.
///
///     gate, up, h: [N, I]
///     silu (Llama):      f(g) = g · σ(g)
///                        dgate = dh ⊙ up ⊙ σ(g) · (1 + g · (1 − σ(g))),   dup = dh ⊙ f(g)
///     tanh GELU (Gemma): f(g) = ½ g (1 + tanh(u)),  u = √(2/π) (g + 0.044715 g³)
///                        dgate = dh ⊙ up ⊙ (½ (1 + tanh u) + ½ g (1 − tanh² u) √(2/π) (1 + 3·0.044715 g²)),  dup = dh ⊙ f(g)
public final class GatedActivation: Module {
    /// silu (SwiGLU: Llama) or gelu_pytorch_tanh (GeGLU with the tanh GELU: Gemma).
    public enum Function: Sendable { case silu, geluTanh }
    public let function: Function
    /// I, the row length of gate, up and h.
    public let width: Int
    public let output = Tensor(shape: [0])
    public let gateGradient = Tensor(shape: [0])
    public let upGradient = Tensor(shape: [0])
    private var saved: (gate: Tensor, up: Tensor)?

    public init(_ function: Function = .silu, width: Int) {
        self.function = function
        self.width = width
    }

    public var ownBuffers: [WorkBuffer] {
        let i = width
        return [WorkBuffer(output, .activation) { $0.rows * i }, WorkBuffer(gateGradient, .gradient) { $0.rows * i },
                WorkBuffer(upGradient, .gradient) { $0.rows * i }]
    }

    /// √(2/π) and the cubic coefficient of the tanh GELU.
    static let c = Float((2 / Double.pi).squareRoot()), cubic: Float = 0.044715

    public func forward(gate: Tensor, up: Tensor) -> Tensor {
        precondition(gate.shape == up.shape)
        saved = (gate, up)
        output.resize(gate.shape)
        let gs = gate.data, us = up.data, ys = output.data, function = function
        parallelChunks(gate.count) { range in
            switch function {
            case .silu:
                for i in range {
                    let g = gs[i]
                    ys[i] = g / (1 + fastExp(-g)) * us[i]
                }
            case .geluTanh:
                for i in range {
                    let g = gs[i]
                    ys[i] = 0.5 * g * (1 + Foundation.tanh(Self.c * (g + Self.cubic * g * g * g))) * us[i]
                }
            }
        }
        return output
    }

    public func backward(_ dh: Tensor) -> (dGate: Tensor, dUp: Tensor) {
        guard let (gate, up) = saved else { preconditionFailure("gated activation backward before forward") }
        precondition(dh.count == gate.count, "gated activation backward: dh \(dh.shape) for \(gate.shape)")
        gateGradient.resize(gate.shape)
        upGradient.resize(up.shape)
        let gs = gate.data, us = up.data, ds = dh.data, dg = gateGradient.data, du = upGradient.data, function = function
        parallelChunks(gate.count) { range in
            switch function {
            case .silu:
                for i in range {
                    let g = gs[i], s = 1 / (1 + fastExp(-g))
                    du[i] = ds[i] * g * s
                    dg[i] = ds[i] * us[i] * s * (1 + g * (1 - s))
                }
            case .geluTanh:
                for i in range {
                    let g = gs[i], t = Foundation.tanh(Self.c * (g + Self.cubic * g * g * g))
                    let value = 0.5 * g * (1 + t)
                    let slope = 0.5 * (1 + t) + 0.5 * g * (1 - t * t) * Self.c * (1 + 3 * Self.cubic * g * g)
                    du[i] = ds[i] * value
                    dg[i] = ds[i] * us[i] * slope
                }
            }
        }
        return (gateGradient, upGradient)
    }
}

/// Exact GELU, as BERT uses it: y = x · Φ(x) = ½ x (1 + erf(x / √2)).
///
///     backward: dx = dy · (Φ(x) + x · φ(x)),  φ(x) = exp(−x²/2) / √(2π)
///
/// The backward pass recovers Φ(x) as y / x from the kept output (Φ(0) = ½) instead of a second
/// erf or a saved [N, C] copy, φ(x) uses the call-free `fastExp` so that loop vectorises, and
/// both passes are split across the cores: at BERT's sizes this layer was most of the non-GEMM
/// time.
public final class GELU: Module {
    /// The row length of x.
    public let width: Int
    public let output = Tensor(shape: [0])
    public let inputGradient = Tensor(shape: [0])
    private var input: Tensor?

    public init(width: Int) { self.width = width }

    public var ownBuffers: [WorkBuffer] {
        let c = width
        return [WorkBuffer(output, .activation) { $0.rows * c }, WorkBuffer(inputGradient, .gradient) { $0.rows * c }]
    }

    public func forward(_ x: Tensor) -> Tensor {
        input = x
        output.resize(x.shape)
        let xs = x.data, ys = output.data
        parallelChunks(x.count) { range in
            for i in range {
                let v = xs[i]
                ys[i] = v * (0.5 * (1 + erff(v * 0.70710678118654752)))
            }
        }
        return output
    }

    /// Needs `output` as the forward pass left it (callers read it, never write it).
    public func backward(_ dy: Tensor) -> Tensor {
        guard let x = input else { preconditionFailure("GELU backward before forward") }
        precondition(dy.count == x.count && output.count == x.count, "GELU backward: dy \(dy.shape) for \(x.shape)")
        inputGradient.resize(x.shape)
        let xs = x.data, ys = output.data, dys = dy.data, dxs = inputGradient.data
        parallelChunks(x.count) { range in
            for i in range {
                let v = xs[i], y = ys[i]   // both loaded unconditionally, so the loop vectorises
                let cdf: Float = v == 0 ? 0.5 : y / v
                let pdf = fastExp(-0.5 * v * v) * 0.39894228040143268
                dxs[i] = dys[i] * (cdf + v * pdf)
            }
        }
        return inputGradient
    }
}

/// y = tanh(x) (BERT's pooler).   backward: dx = dy · (1 − y²)
public final class Tanh: Module {
    /// The row length of x.
    public let width: Int
    public let output = Tensor(shape: [0])
    public let inputGradient = Tensor(shape: [0])

    public init(width: Int) { self.width = width }

    public var ownBuffers: [WorkBuffer] {
        let c = width
        return [WorkBuffer(output, .activation) { $0.rows * c }, WorkBuffer(inputGradient, .gradient) { $0.rows * c }]
    }

    public func forward(_ x: Tensor) -> Tensor {
        output.resize(x.shape)
        for i in 0..<x.count { output.data[i] = tanhf(x.data[i]) }
        return output
    }

    public func backward(_ dy: Tensor) -> Tensor {
        precondition(dy.count == output.count, "Tanh backward: dy \(dy.shape) for \(output.shape)")
        inputGradient.resize(output.shape)
        for i in 0..<output.count {
            let y = output.data[i]
            inputGradient.data[i] = dy.data[i] * (1 - y * y)
        }
        return inputGradient
    }
}
