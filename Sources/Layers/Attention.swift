import Kernels
#if canImport(Glibc)
import Glibc
#endif

/// Which keys each query may attend to.
///
/// Keys are indexed 0..<Tk and queries 0..<Tq; query i sits at key index i + `queryOffset`
/// (0 when queries and keys are the same tokens; the number of cached keys before the new ones
/// in decoding — the bottom-right alignment of PyTorch's `causal_lower_right`).
public struct AttentionMask: Sendable {
    /// Query i sees only keys j ≤ i + queryOffset (decoders).
    public var causal: Bool
    /// [B·Tk], 1 = real token, 0 = padding (never attended to); nil = no padding.
    public var keyPadding: [Int]?
    /// With `causal`: query i sees only the last `slidingWindow` keys up to its own,
    /// i + queryOffset − window < j ≤ i + queryOffset (transformers' sliding-window causal mask,
    /// Gemma's local layers); nil = every earlier key.
    public var slidingWindow: Int?
    /// Where query 0 sits among the keys (causal masks only).
    public var queryOffset: Int

    public init(causal: Bool, keyPadding: [Int]? = nil, slidingWindow: Int? = nil, queryOffset: Int = 0) {
        precondition(slidingWindow.map { $0 > 0 && causal } ?? true, "a sliding window is positive and causal")
        precondition(queryOffset >= 0 && (causal || queryOffset == 0), "a query offset is non-negative and causal")
        self.causal = causal
        self.keyPadding = keyPadding
        self.slidingWindow = slidingWindow
        self.queryOffset = queryOffset
    }

    /// The keys query i may see (before padding), within 0..<keys; empty when none.
    @inline(__always)
    func visibleKeys(_ i: Int, keys: Int) -> (first: Int, last: Int) {
        guard causal else { return (0, keys - 1) }
        let at = i + queryOffset
        return (slidingWindow.map { max(0, at - $0 + 1) } ?? 0, min(at, keys - 1))
    }
}

/// Scaled dot-product attention over heads, with grouped-query heads (kvHeads divides heads;
/// query head h reads key/value head h / (heads / kvHeads)). The one attention of every model:
/// self-attention in training and scoring (`forward`/`backward`), cross-attention (Tq ≠ Tk), and
/// decoding over a key/value cache (`attend`, the same kernel without saving anything).
///
///     q: [B, Tq, H·D], k, v: [B, Tk, KV·D]  →  out: [B, Tq, H·D]
///     S = c · q·kᵀ  (c = 1/√D unless given),  masked entries −∞,  P = softmax(S) (saved, [B, H, Tq, Tk]),  out = P·v
///
///     backward: dP = dout·vᵀ
///               dS = P ⊙ (dP − rowsum(dP ⊙ P))
///               dq = c · dS·k,  dk += c · dSᵀ·q,  dv += Pᵀ·dout   (summed over a group's heads)
///
/// A query row whose keys are all masked gets zero output and zero gradient.
public final class ScaledDotProductAttention: Module {
    public let heads: Int
    public let kvHeads: Int
    public let headDimension: Int
    /// The factor on q·kᵀ: 1/√D by default (Gemma uses query_pre_attn_scalar^−½).
    public let scale: Float
    public let output = Tensor(shape: [0])
    public let queryGradient = Tensor(shape: [0])
    public let keyGradient = Tensor(shape: [0])
    public let valueGradient = Tensor(shape: [0])
    private let probabilities = Tensor(shape: [0])   // [B, H, Tq, Tk]
    private let scratch = Tensor(shape: [0])          // [B, Tq, Tk] for dP, one per sequence
    private var saved: (q: Tensor, k: Tensor, v: Tensor, batch: Int, queries: Int, keys: Int)?

    /// Sizes for self-attention over the pass (Tq = Tk = length).
    public var ownBuffers: [WorkBuffer] {
        let q = heads * headDimension, kv = kvHeads * headDimension, h = heads
        return [WorkBuffer(output, .activation) { $0.rows * q },
                WorkBuffer(probabilities, .activation) { $0.batch * h * $0.length * $0.length },
                WorkBuffer(queryGradient, .gradient) { $0.rows * q }, WorkBuffer(keyGradient, .gradient) { $0.rows * kv },
                WorkBuffer(valueGradient, .gradient) { $0.rows * kv },
                WorkBuffer(scratch, .gradient) { $0.batch * $0.length * $0.length }]
    }

    public init(heads: Int, kvHeads: Int, headDimension: Int, scale: Float? = nil) {
        precondition(kvHeads > 0 && heads % kvHeads == 0, "heads (\(heads)) must be a multiple of kv heads (\(kvHeads))")
        self.heads = heads
        self.kvHeads = kvHeads
        self.headDimension = headDimension
        self.scale = scale ?? 1 / Float(headDimension).squareRoot()
    }

    /// Self-attention: queries and keys are the same T tokens.
    public func forward(q: Tensor, k: Tensor, v: Tensor, batch: Int, length: Int, mask: AttentionMask) -> Tensor {
        forward(q: q, k: k, v: v, batch: batch, queryLength: length, keyLength: length, mask: mask)
    }

    public func forward(q: Tensor, k: Tensor, v: Tensor, batch: Int, queryLength tq: Int, keyLength tk: Int, mask: AttentionMask) -> Tensor {
        let h = heads, d = headDimension
        let qStride = h * d, kvStride = kvHeads * d
        precondition(q.count == batch * tq * qStride && k.count == batch * tk * kvStride && v.count == k.count,
                     "attention: q \(q.shape), k \(k.shape), v \(v.shape) for B=\(batch), Tq=\(tq), Tk=\(tk)")
        if let pad = mask.keyPadding { precondition(pad.count == batch * tk) }
        saved = (q, k, v, batch, tq, tk)
        output.resize([batch, tq, qStride])
        probabilities.resize([batch, h, tq, tk])
        let qs = q.data, ks = k.data, vs = v.data, ps = probabilities.data, out = output.data
        parallelChunks(batch, minimumChunk: sequencesPerChunk(queries: tq, keys: tk)) { sequences in
            for b in sequences {
                for head in 0..<h {
                    attendHead(head, q: qs + b * tq * qStride, queries: tq, keys: ks + b * tk * kvStride, values: vs + b * tk * kvStride,
                               keyCount: tk, mask: mask, paddingOffset: b * tk, probabilities: ps + (b * h + head) * tq * tk,
                               into: out + b * tq * qStride)
                }
            }
        }
        return output
    }

    /// Inference over keys and values held elsewhere (a KV cache): `queries` rows of q (row
    /// stride H·D) against `keyCount` rows of keys and values (row stride KV·D), into `out` (row
    /// stride H·D). The kernel of `forward`; nothing is saved. `scores` is scratch space.
    public func attend(q: UnsafePointer<Float>, queries tq: Int, keys: UnsafePointer<Float>, values: UnsafePointer<Float>,
                       keyCount tk: Int, mask: AttentionMask, scores: Tensor, into out: UnsafeMutablePointer<Float>) {
        precondition(mask.keyPadding == nil, "cached attention takes no key padding")
        scores.resize([tq, tk])
        for head in 0..<heads {
            attendHead(head, q: q, queries: tq, keys: keys, values: values, keyCount: tk, mask: mask, paddingOffset: 0,
                       probabilities: scores.data, into: out)
        }
    }

    /// One head of one sequence: P = softmax(c·q·kᵀ) under the mask, out = P·v.
    @inline(__always)
    private func attendHead(_ head: Int, q: UnsafePointer<Float>, queries tq: Int, keys: UnsafePointer<Float>, values: UnsafePointer<Float>,
                            keyCount tk: Int, mask: AttentionMask, paddingOffset: Int, probabilities p: UnsafeMutablePointer<Float>,
                            into out: UnsafeMutablePointer<Float>) {
        let d = headDimension, qStride = heads * d, kvStride = kvHeads * d
        let kv = (head / (heads / kvHeads)) * d
        matmul(transposeB: true, m: tq, n: tk, k: d, alpha: scale, q + head * d, lda: qStride, keys + kv, ldb: kvStride, p, ldc: tk)
        for i in 0..<tq {
            softmaxRow(p + i * tk, query: i, keys: tk, mask: mask, paddingOffset: paddingOffset)
        }
        matmul(m: tq, n: d, k: tk, p, lda: tk, values + kv, ldb: kvStride, out + head * d, ldc: qStride)
    }

    /// Sequences run concurrently only while each head's products are small enough that
    /// OpenBLAS runs them on one thread (its threshold: m·n·k ≤ 262,144); larger ones are
    /// threaded by OpenBLAS itself, and two threaded calls at once would only contend.
    private func sequencesPerChunk(queries: Int, keys: Int) -> Int {
        queries * keys * headDimension <= 262_144 ? 1 : Int.max
    }

    /// Softmax over the keys query i may see; every other entry becomes exactly 0.
    @inline(__always)
    private func softmaxRow(_ row: UnsafeMutablePointer<Float>, query i: Int, keys t: Int, mask: AttentionMask, paddingOffset: Int) {
        let (first, last) = mask.visibleKeys(i, keys: t)
        var maxValue = -Float.infinity
        if first <= last {
            for j in first...last where isVisible(j, mask, paddingOffset) { maxValue = max(maxValue, row[j]) }
        }
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
        for j in first...last { row[j] *= inv }
    }

    @inline(__always)
    private func isVisible(_ j: Int, _ mask: AttentionMask, _ offset: Int) -> Bool {
        guard let pad = mask.keyPadding else { return true }
        return pad[offset + j] != 0
    }

    /// Returns (dq, dk, dv) in the layouts of q, k, v.
    public func backward(_ dOut: Tensor) -> (dq: Tensor, dk: Tensor, dv: Tensor) {
        guard let (q, k, v, batch, tq, tk) = saved else { preconditionFailure("attention backward before forward") }
        precondition(dOut.count == q.count, "attention backward: dOut \(dOut.shape) for q \(q.shape)")
        let h = heads, g = heads / kvHeads, d = headDimension
        let qStride = h * d, kvStride = kvHeads * d
        queryGradient.resize(q.shape)
        keyGradient.resize(k.shape)
        valueGradient.resize(v.shape)
        keyGradient.zero()
        valueGradient.zero()
        scratch.resize([batch, tq, tk])
        let scale = self.scale
        let qs = q.data, ks = k.data, vs = v.data, ps = probabilities.data, dOuts = dOut.data
        let dq = queryGradient.data, dk = keyGradient.data, dv = valueGradient.data, dPs = scratch.data
        // Sequences are independent (each writes only its own rows), so they run concurrently.
        parallelChunks(batch, minimumChunk: sequencesPerChunk(queries: tq, keys: tk)) { sequences in
            for b in sequences {
                let dP = dPs + b * tq * tk
                for head in 0..<h {
                    let qOff = b * tq * qStride + head * d
                    let kvOff = b * tk * kvStride + (head / g) * d
                    let p = ps + (b * h + head) * tq * tk
                    let dO = dOuts + qOff
                    // dv += Pᵀ · dout
                    matmul(transposeA: true, m: tk, n: d, k: tq, p, lda: tk, dO, ldb: qStride, beta: 1, dv + kvOff, ldc: kvStride)
                    // dP = dout · vᵀ
                    matmul(transposeB: true, m: tq, n: tk, k: d, dO, lda: qStride, vs + kvOff, ldb: kvStride, dP, ldc: tk)
                    // dS = P ⊙ (dP − rowsum(dP ⊙ P)), in place in dP
                    for i in 0..<tq {
                        let pr = p + i * tk, dr = dP + i * tk
                        var dot: Float = 0
                        for j in 0..<tk { dot += pr[j] * dr[j] }
                        for j in 0..<tk { dr[j] = pr[j] * (dr[j] - dot) }
                    }
                    // dq = c · dS · k ;  dk += c · dSᵀ · q
                    matmul(m: tq, n: d, k: tk, alpha: scale, dP, lda: tk, ks + kvOff, ldb: kvStride, dq + qOff, ldc: qStride)
                    matmul(transposeA: true, m: tk, n: d, k: tq, alpha: scale, dP, lda: tk, qs + qOff, ldb: qStride, beta: 1,
                           dk + kvOff, ldc: kvStride)
                }
            }
        }
        return (queryGradient, keyGradient, valueGradient)
    }
}
