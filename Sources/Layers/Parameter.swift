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

    public var isTrainable: Bool { grad != nil }
    public var shape: [Int] { value.shape }

    /// Makes the parameter trainable (allocating its gradient) or frozen (releasing it).
    public func setTrainable(_ trainable: Bool) {
        if trainable {
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
