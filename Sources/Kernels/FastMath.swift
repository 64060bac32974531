/// A call-free float32 exp, so that loops over it vectorise (a libm call per element does not).
///
/// Measured, not assumed: a call-free erf (series + Abramowitz & Stegun, both computed and one
/// selected) was slower than glibc's `erff` in GELU's forward pass on this SSE2 baseline build,
/// so GELU keeps `erff` and uses this only for φ(x) in its backward pass.

/// e^x with about 1 ulp of relative error for x in [−87, 88] (clamped outside): x = n·ln2 + r
/// (Cody–Waite split of ln2), e^r by Cephes' degree-6 minimax polynomial, 2^n built in the
/// exponent bits. No calls, no branches, no checked conversions.
@inlinable @inline(__always)
public func fastExp(_ x: Float) -> Float {
    let clamped = min(max(x, -87.33), 88.0)
    // Adding 1.5·2²³ rounds to an integer n, which then sits in the low mantissa bits: n as a
    // float and as wrapping integer bits, with no conversion (conversions check, and stop the
    // loop from vectorising).
    let magic: Float = 12_582_912
    let shifted = clamped * 1.442_695_04 + magic
    let n = shifted - magic
    let nBits = shifted.bitPattern &- magic.bitPattern
    let r = clamped - n * 0.693_359_375 + n * 2.121_944_4e-4
    var p: Float = 1.987_569_15e-4
    p = p * r + 1.398_199_95e-3
    p = p * r + 8.333_451_9e-3
    p = p * r + 4.166_579_59e-2
    p = p * r + 1.666_666_55e-1
    p = p * r + 5.000_000_12e-1
    let er = p * r * r + r + 1
    return er * Float(bitPattern: (nBits &+ 127) &<< 23)
}
