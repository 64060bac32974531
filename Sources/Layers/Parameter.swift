import Kernels

/// A named weight. A trainable parameter owns a gradient buffer of the same shape; a frozen
/// one has none at all (`grad == nil`), so frozen weights cost no gradient or optimizer memory
/// and no code path can accumulate into them by accident.
public final class Parameter {
    /// The name within its layer ("weight", "bias", "lora_A"); models prefix module paths.
    public let name: String
    public internal(set) var value: Tensor
    public private(set) var grad: Tensor?

    public init(_ name: String, _ value: Tensor, trainable: Bool = false) {
        self.name = name
        self.value = value
        if trainable { grad = Tensor(shape: value.shape) }
    }

    /// A frozen weight stored compactly (bf16 or quantised blocks); `value` is then empty and
    /// every product goes through `multiplyTransposed` / `multiply` / `copyRow`.
    public private(set) var packed: PackedMatrix?

    public var isTrainable: Bool { grad != nil }
    public var shape: [Int] { packed?.shape ?? value.shape }
    /// Elements of the weight, however it is stored.
    public var count: Int { shape.reduce(1, *) }

    /// Stores the (frozen) weight packed and releases its Float32 value.
    public func pack(_ matrix: PackedMatrix) {
        precondition(!isTrainable, "parameter \(name): a trainable weight cannot be packed")
        precondition(matrix.shape == shape, "parameter \(name): packed \(matrix.shape) for \(shape)")
        packed = matrix
        value.releaseStorage()
    }

    /// Makes the parameter trainable (allocating its gradient) or frozen (releasing it).
    public func setTrainable(_ trainable: Bool) {
        if trainable {
            precondition(packed == nil, "parameter \(name): a packed weight cannot be trained")
            if grad == nil { grad = Tensor(shape: value.shape) }
        } else {
            grad = nil
        }
    }

    public func zeroGrad() { grad?.zero() }

    /// Replaces the stored value with a tensor of the same shape (merge and unmerge swap the
    /// weight this way). The gradient buffer, if any, stays.
    public func replaceValue(_ newValue: Tensor) {
        precondition(newValue.shape == value.shape, "parameter \(name): \(newValue.shape) for \(value.shape)")
        value = newValue
    }
}

extension Parameter {
    /// `y[n, out] = x[n, in] · Wᵀ + beta · y` for this [out, in] weight, packed or not.
    public func multiplyTransposed(_ x: UnsafePointer<Float>, ldx: Int, rows n: Int, beta: Float = 0,
                                   into y: UnsafeMutablePointer<Float>, ldy: Int) {
        if let packed {
            matmul(x, ldx: ldx, rows: n, transposedPacked: packed, beta: beta, into: y, ldy: ldy)
        } else {
            matmul(transposeB: true, m: n, n: shape[0], k: shape[1], x, lda: ldx, value.data, ldb: shape[1],
                   beta: beta, y, ldc: ldy)
        }
    }

    /// `dx[n, in] = dy[n, out] · W + beta · dx` for this [out, in] weight, packed or not.
    public func multiply(_ dy: UnsafePointer<Float>, lddy: Int, rows n: Int, beta: Float = 0,
                         into dx: UnsafeMutablePointer<Float>, lddx: Int) {
        if let packed {
            matmul(dy, lddy: lddy, rows: n, packed: packed, beta: beta, into: dx, lddx: lddx)
        } else {
            matmul(m: n, n: shape[1], k: shape[0], dy, lda: lddy, value.data, ldb: shape[1], beta: beta, dx, ldc: lddx)
        }
    }

    /// Row `r` of this matrix into `destination` (an embedding lookup).
    public func copyRow(_ r: Int, into destination: UnsafeMutablePointer<Float>) {
        if let packed {
            packed.decodeRow(r, into: destination)
        } else {
            destination.update(from: value.data + r * shape[1], count: shape[1])
        }
    }
}
