import Kernels

/// A fully connected layer in Hugging Face layout.
///
///     forward:  y[N, out] = x[N, in] · Wᵀ + b        W: [out, in], b: [out]
///     backward: dx[N, in] = dy · W
///               dW[out, in] += dyᵀ · x     (trainable only)
///               db[out]     += Σₙ dy[n]     (trainable only)
///
/// `N` is every leading dimension flattened (batch × time). A frozen weight gets no dW:
/// the gradient is never computed, not merely discarded.
///
/// Like every layer here, it keeps a reference to its last input and reuses one output buffer:
/// call each instance once per forward pass, and run backward before the next forward.
public final class Linear: Module {
    public let inFeatures: Int
    public let outFeatures: Int
    public private(set) var weight: Parameter
    public private(set) var bias: Parameter?
    /// The layer's output, reused by every forward call.
    public let output = Tensor(shape: [0])
    /// Input of the last forward, kept by reference for dW.
    private var input: Tensor?

    public init(inFeatures: Int, outFeatures: Int, bias: Bool, trainable: Bool = false) {
        self.inFeatures = inFeatures
        self.outFeatures = outFeatures
        weight = Parameter("weight", Tensor(shape: [outFeatures, inFeatures]), trainable: trainable)
        self.bias = bias ? Parameter("bias", Tensor(shape: [outFeatures]), trainable: trainable) : nil
    }

    /// A layer over `other`'s weight and bias (the same parameters, not copies) with its own
    /// output buffer and saved input: another run of the same weights.
    public init(sharing other: Linear) {
        inFeatures = other.inFeatures
        outFeatures = other.outFeatures
        weight = other.weight
        bias = other.bias
    }

    public var parameters: [Parameter] { [weight] + (bias.map { [$0] } ?? []) }
    public var ownParameters: [(name: String, parameter: Parameter)] { [("weight", weight)] + (bias.map { [("bias", $0)] } ?? []) }
    public func shareWeights(of other: any Module) {
        guard let o = other as? Linear, o.inFeatures == inFeatures, o.outFeatures == outFeatures else {
            preconditionFailure("\(type(of: other)) is not a Linear(\(inFeatures)→\(outFeatures))")
        }
        weight = o.weight
        bias = o.bias
    }

    public var ownBuffers: [WorkBuffer] { [WorkBuffer(output, .activation) { [outFeatures] in $0.rows * outFeatures }] }

    public func forward(_ x: Tensor) -> Tensor {
        precondition(x.rowLength == inFeatures, "Linear(\(inFeatures)→\(outFeatures)) got \(x.shape)")
        input = x
        output.resize(x.shape.replacingLast(with: outFeatures))
        if let bias {
            for n in 0..<x.rowCount { (output.data + n * outFeatures).update(from: bias.value.data, count: outFeatures) }
        }
        weight.multiplyTransposed(x.data, ldx: inFeatures, rows: x.rowCount, beta: bias == nil ? 0 : 1,
                                  into: output.data, ldy: outFeatures)
        return output
    }

    /// Writes (or with `accumulate`, adds) the input gradient into `dx`; accumulates parameter
    /// gradients for trainable parameters only. `dx == nil` skips the input gradient.
    public func backward(_ dy: Tensor, dx: Tensor?, accumulate: Bool = false) {
        let n = dy.rowCount
        precondition(dy.rowLength == outFeatures, "Linear backward got \(dy.shape)")
        precondition(input?.rowCount == n, "Linear backward: dy has \(n) rows, the forward input \(input?.rowCount ?? 0)")
        if let dx {
            precondition(dx.count == n * inFeatures, "dx \(dx.shape) for \(n)×\(inFeatures)")
            weight.multiply(dy.data, lddy: outFeatures, rows: n, beta: accumulate ? 1 : 0, into: dx.data, lddx: inFeatures)
        }
        if let dW = weight.grad {
            guard let x = input else { preconditionFailure("Linear backward before forward") }
            matmul(transposeA: true, m: outFeatures, n: inFeatures, k: n, dy.data, lda: outFeatures,
                   x.data, ldb: inFeatures, beta: 1, dW.data, ldc: inFeatures)
        }
        if let db = bias?.grad {
            for row in 0..<n {
                let d = dy.data + row * outFeatures
                for j in 0..<outFeatures { db.data[j] += d[j] }
            }
        }
    }
}
