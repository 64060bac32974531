import Kernels

/// Work buffers lent from block to block.
///
/// Every block of a model owns the same set of work buffers (outputs, saved activations,
/// gradients), but a gradient buffer is only needed while its block runs backward, and with
/// activation recomputation an activation buffer only while its block runs. The pool holds one
/// block's worth of storage; `lend(to:)` swaps it into the given tensors (the block's own
/// storage goes into the pool) and `takeBack(from:)` swaps it out again. Swapping moves no data
/// and allocates nothing, so steady-state training still allocates no buffers.
///
/// The lists passed to `lend` and `takeBack` must be the same tensors in the same order.
public final class BufferPool {
    private var slots: [Tensor] = []

    public init() {}

    public func lend(to buffers: [Tensor]) {
        while slots.count < buffers.count { slots.append(Tensor(shape: [0])) }
        for (buffer, slot) in zip(buffers, slots) { buffer.swapStorage(with: slot) }
    }

    public func takeBack(from buffers: [Tensor]) { lend(to: buffers) }

    /// Elements the pool holds (for tests and memory reports).
    public var elementCapacity: Int { slots.reduce(0) { $0 + $1.capacity } }
}
