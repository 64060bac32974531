/// Small elementwise kernels shared by the model assemblies (residual connections).

/// out = a + b, into a reused buffer.
public func add(_ a: Tensor, _ b: Tensor, into out: Tensor) {
    precondition(a.count == b.count, "add: \(a.shape) + \(b.shape)")
    out.resize(a.shape)
    let x = a.data, y = b.data, z = out.data
    parallelChunks(a.count) { range in for i in range { z[i] = x[i] + y[i] } }
}

/// a += b.
public func addInPlace(_ a: Tensor, _ b: Tensor) {
    precondition(a.count == b.count, "addInPlace: \(a.shape) += \(b.shape)")
    let x = a.data, y = b.data
    parallelChunks(a.count) { range in for i in range { x[i] += y[i] } }
}

/// t *= s.
public func scaleInPlace(_ t: Tensor, by s: Float) {
    let x = t.data
    parallelChunks(t.count, minimumChunk: 65_536) { range in for i in range { x[i] *= s } }
}

/// Σ t², accumulated in Double over fixed blocks of 65,536 elements that are then added in
/// order, so the result does not depend on how many cores computed the blocks.
public func sumOfSquares(_ t: Tensor) -> Double {
    let block = 65_536, blocks = (t.count + block - 1) / block
    if blocks <= 1 { return sumOfSquares(t.data, 0..<t.count) }
    let partial = UnsafeMutableBufferPointer<Double>.allocate(capacity: blocks)
    defer { partial.deallocate() }
    let x = t.data, sums = partial.baseAddress!, count = t.count
    parallelChunks(blocks, minimumChunk: 1) { range in
        for b in range { sums[b] = sumOfSquares(x, b * block..<min((b + 1) * block, count)) }
    }
    return partial.reduce(0, +)
}

@inline(__always)
private func sumOfSquares(_ x: UnsafeMutablePointer<Float>, _ range: Range<Int>) -> Double {
    var s = 0.0
    for i in range { s += Double(x[i]) * Double(x[i]) }
    return s
}

extension Array where Element == Int {
    /// A shape with its last dimension replaced: [..., in] → [..., out].
    public func replacingLast(with last: Int) -> [Int] {
        var s = self
        s[s.count - 1] = last
        return s
    }
}
