/// Small elementwise kernels shared by the model assemblies (residual connections).

/// out = a + b, into a reused buffer.
public func add(_ a: Tensor, _ b: Tensor, into out: Tensor) {
    precondition(a.count == b.count, "add: \(a.shape) + \(b.shape)")
    out.resize(a.shape)
    for i in 0..<a.count { out.data[i] = a.data[i] + b.data[i] }
}

/// a += b.
public func addInPlace(_ a: Tensor, _ b: Tensor) {
    precondition(a.count == b.count, "addInPlace: \(a.shape) += \(b.shape)")
    for i in 0..<a.count { a.data[i] += b.data[i] }
}

extension Array where Element == Int {
    /// A shape with its last dimension replaced: [..., in] → [..., out].
    public func replacingLast(with last: Int) -> [Int] {
        var s = self
        s[s.count - 1] = last
        return s
    }
}
