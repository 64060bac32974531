import Kernels
#if canImport(Glibc)
import Glibc
#endif

/// Which keys each query may attend to.
public struct AttentionMask: Sendable {
    /// Query i sees only keys j ≤ i (decoders).
    public var causal: Bool
    /// [B·T], 1 = real token, 0 = padding (never attended to); nil = no padding.
    public var keyPadding: [Int]?
    /// With `causal`: query i sees only the last `slidingWindow` keys, i − window < j ≤ i
    /// (transformers' sliding-window causal mask, Gemma's local layers); nil = every earlier key.
    public var slidingWindow: Int?

    public init(causal: Bool, keyPadding: [Int]? = nil, slidingWindow: Int? = nil) {
        precondition(slidingWindow.map { $0 > 0 && causal } ?? true, "a sliding window is positive and causal")
        self.causal = causal
        self.keyPadding = keyPadding
        self.slidingWindow = slidingWindow
    }

    /// The first key query i may see.
    @inline(__always)
    func firstKey(_ i: Int) -> Int { slidingWindow.map { max(0, i - $0 + 1) } ?? 0 }
}

/// Scaled dot-product attention over heads, with grouped-query heads (kvHeads divides heads;
/// query head h reads key/value head h / (heads / kvHeads)).
///
///     q: [B, T, H·D], k, v: [B, T, KV·D]  →  out: [B, T, H·D]
///     S = c · q·kᵀ  (c = 1/√D unless given),  masked entries −∞,  P = softmax(S) (saved, [B, H, T, T]),  out = P·v
///
///     backward: dP = dout·vᵀ
///               dS = P ⊙ (dP − rowsum(dP ⊙ P))
///               dq = c · dS·k,  dk += c · dSᵀ·q,  dv += Pᵀ·dout   (summed over a group's heads)
///
/// A query row whose keys are all masked gets zero output and zero gradient.
public final class ScaledDotProductAttention {
    public let heads: Int
    public let kvHeads: Int
    public let headDimension: Int
    /// The factor on q·kᵀ: 1/√D by default (Gemma uses query_pre_attn_scalar^−½).
    public let scale: Float
    public let output = Tensor(shape: [0])
    public let queryGradient = Tensor(shape: [0])
    public let keyGradient = Tensor(shape: [0])
    public let valueGradient = Tensor(shape: [0])
    private let probabilities = Tensor(shape: [0])   // [B, H, T, T]
    private let scratch = Tensor(shape: [0])          // [B, T, T] for dP, one per sequence
    private var saved: (q: Tensor, k: Tensor, v: Tensor, batch: Int, length: Int)?

    public var activationBuffers: [Tensor] { [output, probabilities] }
    public var gradientBuffers: [Tensor] { [queryGradient, keyGradient, valueGradient, scratch] }

    public init(heads: Int, kvHeads: Int, headDimension: Int, scale: Float? = nil) {
        precondition(kvHeads > 0 && heads % kvHeads == 0, "heads (\(heads)) must be a multiple of kv heads (\(kvHeads))")
        self.heads = heads
        self.kvHeads = kvHeads
        self.headDimension = headDimension
        self.scale = scale ?? 1 / Float(headDimension).squareRoot()
    }

    public func forward(q: Tensor, k: Tensor, v: Tensor, batch: Int, length: Int, mask: AttentionMask) -> Tensor {
        let h = heads, g = heads / kvHeads, d = headDimension, t = length
        let qStride = h * d, kvStride = kvHeads * d
        precondition(q.count == batch * t * qStride && k.count == batch * t * kvStride && v.count == k.count)
        if let pad = mask.keyPadding { precondition(pad.count == batch * t) }
        saved = (q, k, v, batch, t)
        output.resize([batch, t, qStride])
        probabilities.resize([batch, h, t, t])
        let scale = self.scale
        let qs = q.data, ks = k.data, vs = v.data, ps = probabilities.data, out = output.data
        parallelChunks(batch, minimumChunk: sequencesPerChunk(length: t)) { sequences in
            for b in sequences {
                for head in 0..<h {
                    let qp = qs + b * t * qStride + head * d
                    let kp = ks + b * t * kvStride + (head / g) * d
                    let vp = vs + b * t * kvStride + (head / g) * d
                    let p = ps + (b * h + head) * t * t
                    matmul(transposeB: true, m: t, n: t, k: d, alpha: scale, qp, lda: qStride, kp, ldb: kvStride, p, ldc: t)
                    for i in 0..<t {
                        softmaxRow(p + i * t, query: i, length: t, mask: mask, paddingOffset: b * t)
                    }
                    matmul(m: t, n: d, k: t, p, lda: t, vp, ldb: kvStride, out + b * t * qStride + head * d, ldc: qStride)
                }
            }
        }
        return output
    }

    /// Sequences run concurrently only while each head's products are small enough that
    /// OpenBLAS runs them on one thread (its threshold: m·n·k ≤ 262,144); larger ones are
    /// threaded by OpenBLAS itself, and two threaded calls at once would only contend.
    private func sequencesPerChunk(length t: Int) -> Int {
        t * t * headDimension <= 262_144 ? 1 : Int.max
    }

    /// Softmax over the keys query i may see; every other entry becomes exactly 0.
    @inline(__always)
    private func softmaxRow(_ row: UnsafeMutablePointer<Float>, query i: Int, length t: Int, mask: AttentionMask, paddingOffset: Int) {
        let last = mask.causal ? i : t - 1, first = mask.firstKey(i)
        var maxValue = -Float.infinity
        for j in first...last where isVisible(j, mask, paddingOffset) { maxValue = max(maxValue, row[j]) }
        if maxValue == -.infinity {   // nothing visible
            row.update(repeating: 0, count: t)
            return
        }
        var sum: Float = 0
        for j in 0..<t {
            if j >= first && j <= last && isVisible(j, mask, paddingOffset) {
                let e = fastExp(row[j] - maxValue)
                row[j] = e
                sum += e
            } else {
                row[j] = 0
            }
        }
        let inv = 1 / sum
        for j in 0...last { row[j] *= inv }
    }

    @inline(__always)
    private func isVisible(_ j: Int, _ mask: AttentionMask, _ offset: Int) -> Bool {
        guard let pad = mask.keyPadding else { return true }
        return pad[offset + j] != 0
    }

    /// Returns (dq, dk, dv) in the layouts of q, k, v.
    public func backward(_ dOut: Tensor) -> (dq: Tensor, dk: Tensor, dv: Tensor) {
        guard let (q, k, v, batch, t) = saved else { preconditionFailure("attention backward before forward") }
        precondition(dOut.count == q.count, "attention backward: dOut \(dOut.shape) for q \(q.shape)")
        let h = heads, g = heads / kvHeads, d = headDimension
        let qStride = h * d, kvStride = kvHeads * d
        queryGradient.resize(q.shape)
        keyGradient.resize(k.shape)
        valueGradient.resize(v.shape)
        keyGradient.zero()
        valueGradient.zero()
        scratch.resize([batch, t, t])
        let scale = self.scale
        let qs = q.data, ks = k.data, vs = v.data, ps = probabilities.data, dOuts = dOut.data
        let dq = queryGradient.data, dk = keyGradient.data, dv = valueGradient.data, dPs = scratch.data
        // Sequences are independent (each writes only its own rows), so they run concurrently.
        parallelChunks(batch, minimumChunk: sequencesPerChunk(length: t)) { sequences in
            for b in sequences {
                let dP = dPs + b * t * t
                for head in 0..<h {
                    let qOff = b * t * qStride + head * d
                    let kvOff = b * t * kvStride + (head / g) * d
                    let p = ps + (b * h + head) * t * t
                    let dO = dOuts + qOff
                    // dv += Pᵀ · dout
                    matmul(transposeA: true, m: t, n: d, k: t, p, lda: t, dO, ldb: qStride, beta: 1, dv + kvOff, ldc: kvStride)
                    // dP = dout · vᵀ
                    matmul(transposeB: true, m: t, n: t, k: d, dO, lda: qStride, vs + kvOff, ldb: kvStride, dP, ldc: t)
                    // dS = P ⊙ (dP − rowsum(dP ⊙ P)), in place in dP
                    for i in 0..<t {
                        let pr = p + i * t, dr = dP + i * t
                        var dot: Float = 0
                        for j in 0..<t { dot += pr[j] * dr[j] }
                        for j in 0..<t { dr[j] = pr[j] * (dr[j] - dot) }
                    }
                    // dq = dS · k / √D ;  dk += dSᵀ · q / √D
                    matmul(m: t, n: d, k: t, alpha: scale, dP, lda: t, ks + kvOff, ldb: kvStride, dq + qOff, ldc: qStride)
                    matmul(transposeA: true, m: t, n: d, k: t, alpha: scale, dP, lda: t, qs + qOff, ldb: qStride, beta: 1,
                           dk + kvOff, ldc: kvStride)
                }
            }
        }
        return (queryGradient, keyGradient, valueGradient)
    }
}

/// Inference-time causal attention of T new queries over a key/value cache (one sequence):
/// query i sits at absolute position `offset + i` and sees cached keys 0...offset + i (the last
/// `slidingWindow` of them when given). `scale` defaults to 1/√D.
///
///     q: [T, H·D], keys/values: [≥ offset + T, KV·D] (row stride KV·D)  →  out: [T, H·D]
///
/// `scores` is scratch space, resized to [T, offset + T].
public func cachedCausalAttention(
    q: Tensor, keys: UnsafePointer<Float>, values: UnsafePointer<Float>, offset: Int,
    heads: Int, kvHeads: Int, headDimension d: Int, scale given: Float? = nil, slidingWindow: Int? = nil,
    scores: Tensor, into out: Tensor
) {
    let t = q.rowCount, length = offset + t, g = heads / kvHeads
    let qStride = heads * d, kvStride = kvHeads * d
    precondition(q.rowLength == qStride && out.count == q.count)
    scores.resize([t, length])
    let scale = given ?? 1 / Float(d).squareRoot()
    for head in 0..<heads {
        let kv = (head / g) * d
        matmul(transposeB: true, m: t, n: length, k: d, alpha: scale, q.data + head * d, lda: qStride,
               keys + kv, ldb: kvStride, scores.data, ldc: length)
        for i in 0..<t {
            let row = scores.data + i * length, visible = offset + i + 1
            let first = slidingWindow.map { max(0, visible - $0) } ?? 0
            var maxValue = -Float.infinity
            for j in first..<visible { maxValue = max(maxValue, row[j]) }
            var sum: Float = 0
            for j in first..<visible { let e = fastExp(row[j] - maxValue); row[j] = e; sum += e }
            let inv = 1 / sum
            for j in first..<visible { row[j] *= inv }
            for j in 0..<first { row[j] = 0 }
            for j in visible..<length { row[j] = 0 }
        }
        matmul(m: t, n: d, k: length, scores.data, lda: length, values + kv, ldb: kvStride,
               out.data + head * d, ldc: qStride)
    }
}
