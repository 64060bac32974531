import Foundation
import Kernels
import Layers

/// AdamW (Loshchilov & Hutter), as `torch.optim.AdamW`: decoupled weight decay and bias
/// correction. State (m, v) exists only for trainable parameters — frozen ones have none.
///
///     θ ← θ − lr·λ·θ
///     m ← β₁m + (1−β₁)g,   v ← β₂v + (1−β₂)g²
///     θ ← θ − lr · (m / (1−β₁ᵗ)) / (√(v / (1−β₂ᵗ)) + ε)
public final class AdamW {
    public var learningRate: Float
    public let beta1: Float
    public let beta2: Float
    public let epsilon: Float
    public let weightDecay: Float
    public private(set) var step = 0
    public let parameters: [Parameter]
    private let firstMoments: [Tensor]
    private let secondMoments: [Tensor]

    /// Only the parameters that are trainable *now* are kept (frozen ones get no state): build
    /// the optimizer after injecting LoRA or choosing what to train.
    public init(parameters: [Parameter], learningRate: Float, beta1: Float = 0.9, beta2: Float = 0.999,
                epsilon: Float = 1e-8, weightDecay: Float = 0.01) {
        var seen = Set<ObjectIdentifier>()
        self.parameters = parameters.filter { $0.isTrainable && seen.insert(ObjectIdentifier($0)).inserted }
        self.learningRate = learningRate
        self.beta1 = beta1
        self.beta2 = beta2
        self.epsilon = epsilon
        self.weightDecay = weightDecay
        firstMoments = self.parameters.map { Tensor(shape: $0.shape) }
        secondMoments = self.parameters.map { Tensor(shape: $0.shape) }
    }

    /// Number of Float32 values of optimizer state (2 per trainable weight).
    public var stateCount: Int { firstMoments.reduce(0) { $0 + $1.count } * 2 }

    public func update() {
        step += 1
        let correction1 = 1 - Float(pow(Double(beta1), Double(step))), correction2 = 1 - Float(pow(Double(beta2), Double(step)))
        let lr = learningRate, decay = 1 - learningRate * weightDecay
        for (i, p) in parameters.enumerated() {
            guard let g = p.grad else { continue }
            let w = p.value.data, m = firstMoments[i].data, v = secondMoments[i].data, gs = g.data
            let beta1 = beta1, beta2 = beta2, epsilon = epsilon
            // Elementwise, so splitting across the cores changes no result.
            parallelChunks(p.value.count, minimumChunk: 65_536) { range in
                for j in range {
                    let gj = gs[j]
                    w[j] *= decay
                    m[j] = beta1 * m[j] + (1 - beta1) * gj
                    v[j] = beta2 * v[j] + (1 - beta2) * gj * gj
                    w[j] -= lr * (m[j] / correction1) / ((v[j] / correction2).squareRoot() + epsilon)
                }
            }
        }
    }

    /// The first and second moments of every parameter (for checkpoints).
    public var moments: [(first: Tensor, second: Tensor)] { Array(zip(firstMoments, secondMoments)) }

    /// Restores the step count and moments saved from an optimizer over the same parameters.
    public func restore(step: Int, moments: [(first: Tensor, second: Tensor)]) -> Bool {
        guard moments.count == parameters.count,
              zip(moments, parameters).allSatisfy({ $0.0.first.shape == $0.1.shape && $0.0.second.shape == $0.1.shape }) else { return false }
        self.step = step
        for (i, m) in moments.enumerated() {
            firstMoments[i].copy(from: m.first)
            secondMoments[i].copy(from: m.second)
        }
        return true
    }

    public func zeroGradients() {
        for p in parameters { p.zeroGrad() }
    }
}
