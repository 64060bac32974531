/// The product of `dimensions`, or nil when a dimension is negative or the product of the
/// non-zero ones overflows. Checking the non-zero product (not just the running product, which
/// a zero keeps at 0) means every later product of any subset of the dimensions — rows, row
/// length, a shape reversed — fits in Int too: `[0, 2^40, 2^40]` is refused, never a trap.
public func checkedElementCount(_ dimensions: [Int]) -> Int? {
    var nonZero = 1
    var hasZero = false
    for d in dimensions {
        guard d >= 0 else { return nil }
        if d == 0 { hasZero = true; continue }
        let (product, overflow) = nonZero.multipliedReportingOverflow(by: d)
        guard !overflow else { return nil }
        nonZero = product
    }
    return hasZero ? 0 : nonZero
}
