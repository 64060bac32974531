import CBLAS

/// The one matrix-product entry point of swift-lora; every layer goes through it.
///
///     C[m, n] = alpha · op(A)[m, k] · op(B)[k, n] + beta · C[m, n]
///
/// Row-major. `op(X)` is `X` or `Xᵀ`. `lda`, `ldb`, `ldc` are the row strides of the
/// matrices as stored (so a head's slice of a [T, H·D] buffer is a matrix with ld = H·D).
/// `beta = 1` accumulates into C, which is how gradients of shared inputs are summed.
@inline(__always)
public func matmul(
    transposeA: Bool = false, transposeB: Bool = false,
    m: Int, n: Int, k: Int,
    alpha: Float = 1,
    _ a: UnsafePointer<Float>, lda: Int,
    _ b: UnsafePointer<Float>, ldb: Int,
    beta: Float = 0,
    _ c: UnsafeMutablePointer<Float>, ldc: Int
) {
    if m == 0 || n == 0 { return }
    if k == 0 {
        // BLAS leaves C untouched for k = 0 only when beta = 1; make the empty sum explicit.
        scaleInPlace(c, rows: m, columns: n, ld: ldc, by: beta)
        return
    }
    cblas_sgemm(
        CblasRowMajor,
        transposeA ? CblasTrans : CblasNoTrans,
        transposeB ? CblasTrans : CblasNoTrans,
        blasint(m), blasint(n), blasint(k),
        alpha, a, blasint(lda), b, blasint(ldb),
        beta, c, blasint(ldc)
    )
}

/// The naive triple loop with the same contract as `matmul`, accumulated in Double.
/// Kept as the reference the fast path is tested against, and as documentation of the contract.
public func matmulReference(
    transposeA: Bool = false, transposeB: Bool = false,
    m: Int, n: Int, k: Int,
    alpha: Float = 1,
    _ a: UnsafePointer<Float>, lda: Int,
    _ b: UnsafePointer<Float>, ldb: Int,
    beta: Float = 0,
    _ c: UnsafeMutablePointer<Float>, ldc: Int
) {
    for i in 0..<m {
        for j in 0..<n {
            var sum = 0.0
            for p in 0..<k {
                let aip = transposeA ? a[p * lda + i] : a[i * lda + p]
                let bpj = transposeB ? b[j * ldb + p] : b[p * ldb + j]
                sum += Double(aip) * Double(bpj)
            }
            let old = beta == 0 ? 0 : beta * c[i * ldc + j]  // beta = 0 ignores NaN in C, as BLAS does
            c[i * ldc + j] = alpha * Float(sum) + old
        }
    }
}

@inline(__always)
func scaleInPlace(_ c: UnsafeMutablePointer<Float>, rows: Int, columns: Int, ld: Int, by beta: Float) {
    for i in 0..<rows {
        for j in 0..<columns { c[i * ld + j] = beta == 0 ? 0 : beta * c[i * ld + j] }
    }
}

/// Threads OpenBLAS may use (it defaults to one per core).
public func setMatmulThreads(_ n: Int) { openblas_set_num_threads(Int32(n)) }
public var matmulThreads: Int { Int(openblas_get_num_threads()) }
/// OpenBLAS's build description (version, target, threading) and the kernels it runs, for reports.
public var blasConfiguration: String { "\(String(cString: openblas_get_config())), \(String(cString: openblas_get_corename())) kernels" }

/// Tensor-level convenience: `y[N, out] = x[N, in] · Wᵀ` (+ beta·y), the shape of every Linear.
public func matmul(_ x: Tensor, transposedWeight w: Tensor, into y: Tensor, alpha: Float = 1, beta: Float = 0) {
    let n = x.rowCount, inF = x.rowLength, outF = w.shape[0]
    precondition(w.shape == [outF, inF] && y.count == n * outF, "matmul shapes \(x.shape) · \(w.shape)ᵀ → \(y.shape)")
    matmul(transposeB: true, m: n, n: outF, k: inF, alpha: alpha, x.data, lda: inF, w.data, ldb: inF, beta: beta, y.data, ldc: outF)
}
