import Synchronization
#if canImport(Glibc)
import Glibc
#endif

/// Zero-filled storage for `count` floats from `calloc`: large blocks come straight from the
/// kernel as zero pages, so memory that is never written (a weight that is loaded packed, a
/// buffer sized for the longest batch) is never resident.
@inline(__always)
func zeroedFloats(_ count: Int) -> UnsafeMutablePointer<Float> {
    guard let raw = calloc(max(count, 1), MemoryLayout<Float>.stride) else {
        fatalError("out of memory allocating \(count) floats")
    }
    return raw.assumingMemoryBound(to: Float.self)
}

/// Counts the tensor buffers allocated while it is installed (see `Tensor.allocationTracker`).
/// Training code is expected to allocate none in steady state; tests assert it structurally.
public final class AllocationTracker: Sendable {
    private let counter = Atomic<Int>(0)
    public init() {}
    public var count: Int { counter.load(ordering: .relaxed) }
    func record() { counter.add(1, ordering: .relaxed) }

    /// Runs `body` with this tracker counting the tensor allocations of the current task.
    public func counting<R>(_ body: () throws -> R) rethrows -> R {
        try Tensor.$allocationTracker.withValue(self, operation: body)
    }
}

/// A contiguous, row-major Float32 buffer with an explicit shape.
///
/// Reference semantics: layers own their output and gradient tensors and hand out references,
/// so a training step reuses the same memory every time. `resize` keeps the allocation whenever
/// the new shape fits in the existing capacity.
public final class Tensor {
    /// Set for a task (via `AllocationTracker.counting`) to count its buffer allocations.
    @TaskLocal public static var allocationTracker: AllocationTracker?

    public private(set) var shape: [Int]
    public private(set) var count: Int
    public private(set) var capacity: Int
    public private(set) var data: UnsafeMutablePointer<Float>

    /// A zero-filled tensor.
    public init(shape: [Int]) {
        precondition(shape.allSatisfy { $0 >= 0 }, "negative dimension in \(shape)")
        let count = shape.reduce(1, *)
        self.shape = shape
        self.count = count
        self.capacity = max(count, 1)
        self.data = zeroedFloats(capacity)
        Self.allocationTracker?.record()
    }

    public convenience init(shape: [Int], values: [Float]) {
        self.init(shape: shape)
        precondition(values.count == count, "\(values.count) values for shape \(shape)")
        values.withUnsafeBufferPointer { data.update(from: $0.baseAddress!, count: count) }
    }

    public convenience init(shape: [Int], generator: () -> Float) {
        self.init(shape: shape)
        for i in 0..<count { data[i] = generator() }
    }

    deinit { free(data) }

    /// Changes the shape; reallocates (contents lost) only when the capacity is too small.
    /// Elements are left as they were — callers overwrite or call `zero()`.
    public func resize(_ newShape: [Int]) {
        if newShape == shape { return }
        let newCount = newShape.reduce(1, *)
        if newCount > capacity {
            free(data)
            capacity = newCount
            data = zeroedFloats(capacity)
            Self.allocationTracker?.record()
        }
        shape = newShape
        count = newCount
    }

    /// Exchanges the storage (and shape) of two tensors without copying: how blocks lend each
    /// other their work buffers (`BufferPool`), so that only one block's worth exists at a time.
    public func swapStorage(with other: Tensor) {
        swap(&shape, &other.shape)
        swap(&count, &other.count)
        swap(&capacity, &other.capacity)
        swap(&data, &other.data)
    }

    /// Gives the storage back (the tensor becomes empty): a weight that now lives packed.
    public func releaseStorage() {
        free(data)
        shape = [0]
        count = 0
        capacity = 1
        data = zeroedFloats(1)
    }

    /// Reinterprets the same elements with another shape of equal element count.
    public func reshape(_ newShape: [Int]) {
        precondition(newShape.reduce(1, *) == count, "cannot reshape \(shape) to \(newShape)")
        shape = newShape
    }

    public func zero() { data.update(repeating: 0, count: count) }

    public func copy(from other: Tensor) {
        precondition(other.count == count, "copy of \(other.shape) into \(shape)")
        data.update(from: other.data, count: count)
    }

    /// A new tensor with the same shape and contents.
    public func clone() -> Tensor {
        let t = Tensor(shape: shape)
        t.copy(from: self)
        return t
    }

    public subscript(i: Int) -> Float {
        get { data[i] }
        set { data[i] = newValue }
    }

    public var scalars: [Float] { Array(UnsafeBufferPointer(start: data, count: count)) }

    public var buffer: UnsafeMutableBufferPointer<Float> { .init(start: data, count: count) }

    /// Rows × columns view of a tensor: the last dimension is the row length.
    public var rowLength: Int { shape.last ?? 1 }
    public var rowCount: Int { rowLength == 0 ? 0 : count / rowLength }

    public var isFinite: Bool {
        for i in 0..<count where !data[i].isFinite { return false }
        return true
    }

    /// Bitwise equality of shape and every element (distinguishes -0 and +0, NaN payloads).
    public func isBitIdentical(to other: Tensor) -> Bool {
        guard shape == other.shape else { return false }
        for i in 0..<count where data[i].bitPattern != other.data[i].bitPattern { return false }
        return true
    }
}
