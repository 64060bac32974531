import Kernels

/// A lookup table.
///
///     forward:  out[N, C] = W[ids[n], :]       W: [V, C]
///     backward: dW[ids[n], :] += dout[n, :]     (trainable only; ids have no gradient)
public final class Embedding: Module {
    public let count: Int
    public let dimension: Int
    public private(set) var weight: Parameter
    public let output = Tensor(shape: [0])
    private var ids: [Int] = []

    public init(count: Int, dimension: Int, trainable: Bool = false) {
        self.count = count
        self.dimension = dimension
        weight = Parameter("weight", Tensor(shape: [count, dimension]), trainable: trainable)
    }

    public func shareWeights(of other: any Module) {
        guard let o = other as? Embedding else { preconditionFailure("\(type(of: other)) is not a Embedding") }
        weight = o.weight
    }

    public var ownParameters: [(name: String, parameter: Parameter)] { [("weight", weight)] }
    public var ownBuffers: [WorkBuffer] { [WorkBuffer(output, .activation) { [dimension] in $0.rows * dimension }] }

    /// `ids` must already be validated to lie in 0..<count (models check user input and throw).
    public func forward(ids: [Int], shape: [Int]) -> Tensor {
        precondition(shape.reduce(1, *) == ids.count)
        self.ids = ids
        output.resize(shape + [dimension])
        for (n, id) in ids.enumerated() {
            precondition(id >= 0 && id < count, "token id \(id) outside 0..<\(count)")
            weight.copyRow(id, into: output.data + n * dimension)
        }
        return output
    }

    public func backward(_ dy: Tensor) {
        guard let dW = weight.grad else { return }
        precondition(dy.count == ids.count * dimension, "Embedding backward: dy \(dy.shape) for \(ids.count) ids")
        for (n, id) in ids.enumerated() {
            let src = dy.data + n * dimension, dst = dW.data + id * dimension
            for c in 0..<dimension { dst[c] += src[c] }
        }
    }
}
