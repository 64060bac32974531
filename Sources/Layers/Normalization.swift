import Kernels

/// Root-mean-square normalisation (Llama; Gemma with `weightOffset` 1, its `1 + w`), computed in
/// fp32 as Hugging Face does.
///
///     forward:  r[n] = 1 / √(mean(x[n]²) + ε),  x̂ = x · r,  y = (o + w) ⊙ x̂      x, y: [N, C], w: [C], o = weightOffset
///     backward: dx̂ = dy ⊙ (o + w)
///               dx = r · (dx̂ − x̂ · mean(dx̂ ⊙ x̂))
///               dw += Σₙ dy ⊙ x̂                                             (trainable only)
public final class RMSNorm: Module {
    public let dimension: Int
    public let epsilon: Float
    /// Added to the weight (Gemma stores w with y = (1 + w) ⊙ x̂); 0 for Llama.
    public let weightOffset: Float
    /// Vectors normalised per row of the model (Gemma's per-head q/k norms: one per head), for
    /// the buffers' sizes.
    public let vectorsPerRow: Int
    public private(set) var weight: Parameter
    public let output = Tensor(shape: [0])
    public let inputGradient = Tensor(shape: [0])
    private var input: Tensor?
    private let rstd = Tensor(shape: [0])   // [N]

    public func shareWeights(of other: any Module) {
        guard let o = other as? RMSNorm else { preconditionFailure("\(type(of: other)) is not a RMSNorm") }
        weight = o.weight
    }

    public var ownParameters: [(name: String, parameter: Parameter)] { [("weight", weight)] }
    public var ownBuffers: [WorkBuffer] {
        let vectors = vectorsPerRow, c = dimension
        return [WorkBuffer(output, .activation) { $0.rows * vectors * c }, WorkBuffer(rstd, .activation) { $0.rows * vectors },
                WorkBuffer(inputGradient, .gradient) { $0.rows * vectors * c }]
    }

    /// The weight starts as the identity (o + w = 1).
    public init(dimension: Int, epsilon: Float, trainable: Bool = false, weightOffset: Float = 0, vectorsPerRow: Int = 1) {
        self.dimension = dimension
        self.epsilon = epsilon
        self.weightOffset = weightOffset
        self.vectorsPerRow = vectorsPerRow
        weight = Parameter("weight", Tensor(shape: [dimension], generator: { 1 - weightOffset }), trainable: trainable)
    }

    public func forward(_ x: Tensor) -> Tensor {
        precondition(x.rowLength == dimension)
        input = x
        let n = x.rowCount, c = dimension
        output.resize(x.shape)
        rstd.resize([n])
        let w = weight.value.data, xs = x.data, ys = output.data, rs = rstd.data, eps = epsilon, o = weightOffset
        parallelRows(n, rowLength: c) { rows in
            for row in rows {
                let xr = xs + row * c, yr = ys + row * c
                var ss: Float = 0
                for j in 0..<c { ss += xr[j] * xr[j] }
                let r = 1 / (ss / Float(c) + eps).squareRoot()
                rs[row] = r
                for j in 0..<c { yr[j] = (o + w[j]) * (xr[j] * r) }
            }
        }
        return output
    }

    public func backward(_ dy: Tensor) -> Tensor {
        guard let x = input else { preconditionFailure("RMSNorm backward before forward") }
        precondition(dy.count == x.count, "RMSNorm backward: dy \(dy.shape) for input \(x.shape)")
        let n = x.rowCount, c = dimension
        inputGradient.resize(x.shape)
        let w = weight.value.data, xs = x.data, dys = dy.data, dxs = inputGradient.data, rs = rstd.data, o = weightOffset
        parallelRows(n, rowLength: c) { rows in
            for row in rows {
                let xr = xs + row * c, dyr = dys + row * c, dxr = dxs + row * c
                let r = rs[row]
                var dot: Float = 0   // Σ dx̂ ⊙ x̂
                for j in 0..<c { dot += dyr[j] * (o + w[j]) * xr[j] * r }
                let meanDot = dot / Float(c)
                for j in 0..<c { dxr[j] = r * (dyr[j] * (o + w[j]) - xr[j] * r * meanDot) }
            }
        }
        // The weight gradient sums over rows: one pass, in row order.
        if let dw = weight.grad?.data {
            for row in 0..<n {
                let xr = xs + row * c, dyr = dys + row * c, r = rs[row]
                for j in 0..<c { dw[j] += dyr[j] * (xr[j] * r) }
            }
        }
        return inputGradient
    }
}

/// Layer normalisation (BERT).
///
///     forward:  μ = mean(x[n]),  r = 1 / √(var(x[n]) + ε),  x̂ = (x − μ) · r,  y = w ⊙ x̂ + b
///     backward: dx̂ = dy ⊙ w
///               dx = r · (dx̂ − mean(dx̂) − x̂ · mean(dx̂ ⊙ x̂))
///               dw += Σₙ dy ⊙ x̂,  db += Σₙ dy                                  (trainable only)
public final class LayerNorm: Module {
    public let dimension: Int
    public let epsilon: Float
    public private(set) var weight: Parameter
    public private(set) var bias: Parameter
    public let output = Tensor(shape: [0])
    public let inputGradient = Tensor(shape: [0])
    private var input: Tensor?
    private let mean = Tensor(shape: [0])   // [N]
    private let rstd = Tensor(shape: [0])   // [N]

    public init(dimension: Int, epsilon: Float, trainable: Bool = false) {
        self.dimension = dimension
        self.epsilon = epsilon
        weight = Parameter("weight", Tensor(shape: [dimension], generator: { 1 }), trainable: trainable)
        bias = Parameter("bias", Tensor(shape: [dimension]), trainable: trainable)
    }

    public var parameters: [Parameter] { [weight, bias] }
    public func shareWeights(of other: any Module) {
        guard let o = other as? LayerNorm else { preconditionFailure("\(type(of: other)) is not a LayerNorm") }
        weight = o.weight
        bias = o.bias
    }

    public var ownParameters: [(name: String, parameter: Parameter)] { [("weight", weight), ("bias", bias)] }
    public var ownBuffers: [WorkBuffer] {
        let c = dimension
        return [WorkBuffer(output, .activation) { $0.rows * c }, WorkBuffer(mean, .activation) { $0.rows },
                WorkBuffer(rstd, .activation) { $0.rows }, WorkBuffer(inputGradient, .gradient) { $0.rows * c }]
    }

    public func forward(_ x: Tensor) -> Tensor {
        precondition(x.rowLength == dimension)
        input = x
        let n = x.rowCount, c = dimension
        output.resize(x.shape)
        mean.resize([n])
        rstd.resize([n])
        let w = weight.value.data, b = bias.value.data, xs = x.data, ys = output.data
        let means = mean.data, rs = rstd.data, eps = epsilon
        parallelRows(n, rowLength: c) { rows in
            for row in rows {
                let xr = xs + row * c, yr = ys + row * c
                var sum: Float = 0
                for j in 0..<c { sum += xr[j] }
                let mu = sum / Float(c)
                var v: Float = 0
                for j in 0..<c { let d = xr[j] - mu; v += d * d }
                let r = 1 / (v / Float(c) + eps).squareRoot()
                means[row] = mu
                rs[row] = r
                for j in 0..<c { yr[j] = (xr[j] - mu) * r * w[j] + b[j] }
            }
        }
        return output
    }

    public func backward(_ dy: Tensor) -> Tensor {
        guard let x = input else { preconditionFailure("LayerNorm backward before forward") }
        precondition(dy.count == x.count, "LayerNorm backward: dy \(dy.shape) for input \(x.shape)")
        let n = x.rowCount, c = dimension
        inputGradient.resize(x.shape)
        let w = weight.value.data, xs = x.data, dys = dy.data, dxs = inputGradient.data
        let means = mean.data, rs = rstd.data
        parallelRows(n, rowLength: c) { rows in
            for row in rows {
                let xr = xs + row * c, dyr = dys + row * c, dxr = dxs + row * c
                let mu = means[row], r = rs[row]
                var sumD: Float = 0, sumDX: Float = 0
                for j in 0..<c {
                    let dxhat = dyr[j] * w[j]
                    sumD += dxhat
                    sumDX += dxhat * (xr[j] - mu) * r
                }
                let meanD = sumD / Float(c), meanDX = sumDX / Float(c)
                for j in 0..<c { dxr[j] = r * (dyr[j] * w[j] - meanD - (xr[j] - mu) * r * meanDX) }
            }
        }
        // The parameter gradients sum over rows: one pass, in row order.
        let dw = weight.grad?.data, db = bias.grad?.data
        if dw != nil || db != nil {
            for row in 0..<n {
                let xr = xs + row * c, dyr = dys + row * c, mu = means[row], r = rs[row]
                for j in 0..<c {
                    dw?[j] += dyr[j] * ((xr[j] - mu) * r)
                    db?[j] += dyr[j]
                }
            }
        }
        return inputGradient
    }
}
