import CBLAS

/// The thin singular value decomposition of a row-major [m, n] matrix, A = U · diag(S) · Vᵀ,
/// k = min(m, n): U [m, k], S [k] (descending), Vt [k, n]; LAPACK's `sgesdd` (OpenBLAS), float32.
/// Nil when LAPACK reports failure (it does not converge, or the input holds NaN).
public func singularValueDecomposition(_ a: Tensor) -> (u: Tensor, s: [Float], vt: Tensor)? {
    precondition(a.shape.count == 2, "SVD of a \(a.shape) tensor")
    let m = a.shape[0], n = a.shape[1], k = min(m, n)
    guard k > 0 else { return nil }
    // Row-major A is column-major X = Aᵀ [n, m]: X = Ux Σ Vxᵀ, so A = Vx Σ Uxᵀ. LAPACK writes Ux
    // column-major [n, k], whose memory is A's Vt row-major [k, n], and Vxᵀ column-major [k, m],
    // whose memory is A's U row-major [m, k].
    let x = a.clone()
    let u = Tensor(shape: [m, k]), vt = Tensor(shape: [k, n])
    var s = [Float](repeating: 0, count: k)
    var rows = Int32(n), cols = Int32(m), lda = Int32(n), ldu = Int32(n), ldvt = Int32(k), info: Int32 = 0
    var jobz = CChar(UInt8(ascii: "S"))
    var iwork = [Int32](repeating: 0, count: 8 * k)
    var query: Float = 0, lwork: Int32 = -1
    sgesdd_(&jobz, &rows, &cols, x.data, &lda, &s, vt.data, &ldu, u.data, &ldvt, &query, &lwork, &iwork, &info, 1)
    guard info == 0 else { return nil }
    lwork = Int32(query)
    var work = [Float](repeating: 0, count: max(Int(lwork), 1))
    sgesdd_(&jobz, &rows, &cols, x.data, &lda, &s, vt.data, &ldu, u.data, &ldvt, &work, &lwork, &iwork, &info, 1)
    guard info == 0 else { return nil }
    return (u, s, vt)
}
