import Kernels

/// One module's change of weight in a Stable Diffusion adapter file, in any of the algorithms
/// users exchange (kohya LoRA and LoCon, LyCORIS LoHa / LoKr / Tucker, full differences, DoRA),
/// with the rules of the most tolerant loaders (ComfyUI's `comfy/weight_adapter`, sd.cpp):
///
///     lora        ΔW = up · down                       (conv: up [out, r, 1, 1] · down [r, in, kh, kw] flattened)
///     lora + mid  ΔW[o, i, …] = Σ up[o, m] · mid[m, n, …] · down[n, i]     (LoCon's Tucker form)
///     loha        ΔW = (w1a · w1b) ⊙ (w2a · w2b)       (with t1, t2: Tucker cores per factor)
///     lokr        ΔW = w1 ⊗ w2 (Kronecker), each factor whole or a · b (w2 with t2: a Tucker core)
///     diff        ΔW = diff
///
/// and the factor on ΔW: an explicit `scale` tensor if the file has one (sd.cpp), else
/// alpha / dim when the file gives alpha (dim = down's rank; LoHa: w1b's; LoKr: the low-rank
/// factor's, none — factor 1 — when both are whole), else 1. A merge at multiplier m adds
/// m · factor · ΔW, or with `doraScale` applies ComfyUI's weight decomposition.
public struct WeightDelta {
    public enum Algorithm: String, Sendable {
        case lora, loha, lokr, diff
    }

    public enum Kind {
        case lora(down: Tensor, up: Tensor, mid: Tensor?)
        case loha(w1a: Tensor, w1b: Tensor, w2a: Tensor, w2b: Tensor, t1: Tensor?, t2: Tensor?)
        case lokr(w1: Factor, w2: Factor)
        case diff(Tensor)
    }

    /// A LoKr factor: a whole matrix, or a low-rank pair a · b (w2 may have a Tucker core t).
    public enum Factor {
        case whole(Tensor)
        case lowRank(a: Tensor, b: Tensor, t: Tensor?)
    }

    public var kind: Kind
    /// The file's alpha for this module (nil: none given).
    public var alpha: Float?
    /// An explicit factor on ΔW that replaces alpha / dim (sd.cpp's `.scale`).
    public var scale: Float?
    /// DoRA's magnitude (`dora_scale`): [1, in(, 1, 1)] (per input column) or [out, 1(, 1, 1)].
    public var doraScale: Tensor?
    /// A bias change (`diff_b`).
    public var biasDiff: Tensor?

    public init(kind: Kind, alpha: Float? = nil, scale: Float? = nil, doraScale: Tensor? = nil, biasDiff: Tensor? = nil) {
        self.kind = kind
        self.alpha = alpha
        self.scale = scale
        self.doraScale = doraScale
        self.biasDiff = biasDiff
    }

    public var algorithm: Algorithm {
        switch kind {
        case .lora: .lora
        case .loha: .loha
        case .lokr: .lokr
        case .diff: .diff
        }
    }

    /// The rank users read off the file (down's rows, w1b's rows, LoKr's low-rank factor; nil for
    /// a full difference or whole Kronecker factors).
    public var rank: Int? {
        switch kind {
        case let .lora(down, _, _): down.shape.first
        case let .loha(_, w1b, _, _, _, _): w1b.shape.first
        case let .lokr(w1, w2):
            if case let .lowRank(_, b, _) = w2 { b.shape.first } else if case let .lowRank(_, b, _) = w1 { b.shape.first } else { nil }
        case .diff: nil
        }
    }

    /// Every tensor of the delta, for sizes and checks.
    public var tensors: [Tensor] {
        var result: [Tensor]
        switch kind {
        case let .lora(down, up, mid): result = [down, up] + (mid.map { [$0] } ?? [])
        case let .loha(w1a, w1b, w2a, w2b, t1, t2): result = [w1a, w1b, w2a, w2b] + [t1, t2].compactMap { $0 }
        case let .lokr(w1, w2):
            result = [w1, w2].flatMap { f -> [Tensor] in
                switch f {
                case .whole(let w): [w]
                case let .lowRank(a, b, t): [a, b] + (t.map { [$0] } ?? [])
                }
            }
        case .diff(let d): result = [d]
        }
        return result + [doraScale, biasDiff].compactMap { $0 }
    }

    /// The factor on ΔW (without the multiplier).
    public var factor: Float {
        if let scale { return scale }
        guard let alpha else { return 1 }
        switch kind {
        case .diff: return 1
        case let .lokr(w1, w2):
            // ComfyUI: dim is the low-rank factor's rank (w2's if both are), none when both are whole.
            var dim: Int?
            if case let .lowRank(_, b, _) = w1 { dim = b.shape.first }
            if case let .lowRank(_, b, _) = w2 { dim = b.shape.first }
            guard let dim, dim > 0 else { return 1 }
            return alpha / Float(dim)
        default:
            guard let r = rank, r > 0 else { return 1 }
            return alpha / Float(r)
        }
    }

    /// Why this delta cannot change a weight of `shape` (its tensors' sizes do not make one), or
    /// nil when it can: the check `delta(for:)` makes, without computing anything.
    public func shapeProblem(for shape: [Int]) -> String? {
        guard shape.count >= 2, shape.allSatisfy({ $0 > 0 }) else { return "a weight of shape \(shape) cannot be adapted" }
        let out = shape[0], rest = shape.dropFirst().reduce(1, *)
        switch kind {
        case let .lora(down, up, mid):
            guard down.shape.count >= 2, up.shape.count >= 2 else { return "lora_down \(down.shape) / lora_up \(up.shape) are not matrices" }
            let r = down.shape[0], upRank = up.shape.dropFirst().reduce(1, *)
            guard up.shape[0] == out else { return "lora_up \(up.shape) does not give the weight's \(out) outputs" }
            if let mid {
                guard mid.shape.count == 4, down.count == r * shape[1], upRank == mid.shape[0], mid.shape[1] == r,
                      shape.count == 4, mid.shape[2] == shape[2], mid.shape[3] == shape[3] else {
                    return "lora_down \(down.shape), lora_mid \(mid.shape), lora_up \(up.shape) do not make a \(shape) weight"
                }
            } else if upRank != r || down.count != r * rest {
                return "lora_down \(down.shape) and lora_up \(up.shape) do not make a \(shape) weight"
            }
        case let .loha(w1a, w1b, w2a, w2b, t1, t2):
            for (a, b, t, name) in [(w1a, w1b, t1, "hada_w1"), (w2a, w2b, t2, "hada_w2")] {
                if let t {
                    guard t.shape.count == 4, shape.count == 4, a.shape.count == 2, b.shape.count == 2, a.shape[0] == t.shape[0],
                          b.shape[0] == t.shape[1], a.shape[1] == out, b.shape[1] == shape[1], t.shape[2] == shape[2], t.shape[3] == shape[3] else {
                        return "\(name)_a \(a.shape), \(name)_b \(b.shape), core \(t.shape) do not make a \(shape) weight"
                    }
                } else if !(a.shape.count == 2 && a.shape[0] == out && b.shape.count >= 1 && a.shape[1] == b.shape[0] && b.count == b.shape[0] * rest) {
                    return "\(name)_a \(a.shape) and \(name)_b \(b.shape) do not make a \(shape) weight"
                }
            }
        case let .lokr(w1, w2):
            guard let a = Self.factorShape(w1, name: "lokr_w1"), let b = Self.factorShape(w2, name: "lokr_w2"),
                  a.count == 2, b.count == 2 || b.count == 4 else {
                return "lokr factors do not multiply out (\(Self.describe(w1)), \(Self.describe(w2)))"
            }
            let kernel = b.count == 4 ? b[2] * b[3] : 1
            guard a[0] * b[0] == out, a[1] * b[1] * kernel == rest else { return "lokr factors \(a) ⊗ \(b) do not make a \(shape) weight" }
        case .diff(let d):
            guard d.count == out * rest else { return "diff \(d.shape) does not fit a \(shape) weight" }
        }
        if let dora = doraScale, !(dora.count == shape[1] && (dora.shape.first == 1 || shape[1] == 1)) {
            return "dora_scale \(dora.shape) does not hold one magnitude per input column of a \(shape) weight (DoRA on the output axis is not supported)"
        }
        if let b = biasDiff, b.count != out { return "diff_b \(b.shape) does not fit \(out) outputs" }
        return nil
    }

    /// The shape a LoKr factor multiplies out to, nil when its parts do not multiply.
    static func factorShape(_ f: Factor, name: String) -> [Int]? {
        switch f {
        case .whole(let w): return w.shape.count == 2 || w.shape.count == 4 ? w.shape : nil
        case let .lowRank(a, b, t):
            if let t {
                guard t.shape.count == 4, a.shape.count == 2, b.shape.count == 2, a.shape[0] == t.shape[0], b.shape[0] == t.shape[1] else { return nil }
                return [a.shape[1], b.shape[1], t.shape[2], t.shape[3]]
            }
            guard a.shape.count == 2, b.shape.count >= 2, a.shape[1] == b.shape[0] else { return nil }
            return [a.shape[0]] + Array(b.shape.dropFirst())
        }
    }

    static func describe(_ f: Factor) -> String {
        switch f {
        case .whole(let w): "\(w.shape)"
        case let .lowRank(a, b, t): "\(a.shape) · \(b.shape)" + (t.map { " with core \($0.shape)" } ?? "")
        }
    }

    /// ΔW (without factor or multiplier) for a weight of `shape`, as [out, rest] row-major (the
    /// weight's own element order); throws unless the delta's size fits the weight (`shapeProblem`).
    public func delta(for shape: [Int]) throws(WeightDeltaError) -> Tensor {
        if let problem = shapeProblem(for: shape) { throw .shape(problem) }
        let out = shape[0], rest = shape.dropFirst().reduce(1, *)
        let result: Tensor
        switch kind {
        case let .lora(down, up, mid):
            guard down.shape.count >= 2, up.shape.count >= 2 else { throw .shape("lora_down \(down.shape) / lora_up \(up.shape) are not matrices") }
            let r = down.shape[0], upRank = up.shape.dropFirst().reduce(1, *)
            guard up.shape[0] == out else { throw .shape("lora_up \(up.shape) does not give the weight's \(out) outputs") }
            if let mid {
                // down [r, in, 1, 1], mid [r, r, kh, kw], up [out, r, 1, 1]
                guard mid.shape.count == 4, down.count == r * shape[1], upRank == mid.shape[0], mid.shape[1] == r,
                      shape.count == 4, mid.shape[2] == shape[2], mid.shape[3] == shape[3] else {
                    throw .shape("lora_down \(down.shape), lora_mid \(mid.shape), lora_up \(up.shape) do not make a \(shape) weight")
                }
                result = Self.tucker(up: up.data, down: down.data, mid: mid, out: out, input: shape[1], rank: r)
            } else {
                guard upRank == r, down.count == r * rest else {
                    throw .shape("lora_down \(down.shape) and lora_up \(up.shape) do not make a \(shape) weight")
                }
                result = Tensor(shape: [out, rest])
                matmul(m: out, n: rest, k: r, up.data, lda: r, down.data, ldb: rest, result.data, ldc: rest)
            }
        case let .loha(w1a, w1b, w2a, w2b, t1, t2):
            let m1 = try Self.hadamardFactor(a: w1a, b: w1b, t: t1, shape: shape, name: "hada_w1")
            let m2 = try Self.hadamardFactor(a: w2a, b: w2b, t: t2, shape: shape, name: "hada_w2")
            result = m1
            for i in 0..<result.count { result.data[i] *= m2.data[i] }
        case let .lokr(w1, w2):
            let a = try Self.matrix(w1, name: "lokr_w1"), b = try Self.matrix(w2, name: "lokr_w2")
            // kron(w1 [p, q], w2 [s, t(, kh, kw)]) = [p·s, q·t(, kh, kw)], laid out as the weight.
            let p = a.shape[0], q = a.shape[1], s = b.shape[0]
            let trail = b.shape.dropFirst().reduce(1, *)          // t · kh · kw
            let kernel = b.shape.count == 4 ? b.shape[2] * b.shape[3] : 1
            let t = trail / kernel
            guard p * s == out, q * t * kernel == rest else {
                throw .shape("lokr factors \(a.shape) ⊗ \(b.shape) do not make a \(shape) weight")
            }
            result = Tensor(shape: [out, rest])
            for i in 0..<p {
                for j in 0..<q {
                    let x = a.data[i * q + j]
                    for k in 0..<s {
                        let row = (i * s + k) * rest
                        for l in 0..<t {
                            let dst = result.data + row + (j * t + l) * kernel, src = b.data + (k * t + l) * kernel
                            for e in 0..<kernel { dst[e] = x * src[e] }
                        }
                    }
                }
            }
        case .diff(let d):
            guard d.count == out * rest else { throw .shape("diff \(d.shape) does not fit a \(shape) weight") }
            result = d.clone()
            result.reshape([out, rest])
        }
        return result
    }

    /// W' for a base weight `w` ([out, rest], fp32) at multiplier `m`: w + m · factor · ΔW, or
    /// with `doraScale`, ComfyUI's weight decomposition: V = w + factor · ΔW, each input
    /// column of V (everything but axis 1, per kernel position included) scaled to the
    /// magnitude `doraScale` gives it, then w + m · (V' − w).
    public func apply(to w: Tensor, shape: [Int], multiplier m: Float) throws(WeightDeltaError) {
        let d = try delta(for: shape)
        let f = factor
        guard let dora = doraScale else {
            let k = m * f
            for i in 0..<w.count { w.data[i] += k * d.data[i] }
            return
        }
        let out = shape[0], input = shape[1], kernel = shape.dropFirst(2).reduce(1, *)
        guard dora.count == input, dora.shape.first == 1 || input == 1 else {
            throw .shape("dora_scale \(dora.shape) does not hold one magnitude per input column of a \(shape) weight (DoRA on the output axis is not supported)")
        }
        // V = w + f·ΔW, then ‖V[:, c, …]‖ over outputs and kernel positions, per input column c.
        let v = Tensor(shape: [out, input * kernel])
        for i in 0..<v.count { v.data[i] = w.data[i] + f * d.data[i] }
        var norms = [Double](repeating: 0, count: input)
        for o in 0..<out {
            for c in 0..<input {
                for e in 0..<kernel { let x = Double(v.data[(o * input + c) * kernel + e]); norms[c] += x * x }
            }
        }
        for o in 0..<out {
            for c in 0..<input {
                let s = Float(Double(dora.data[c]) / norms[c].squareRoot())
                for e in 0..<kernel {
                    let i = (o * input + c) * kernel + e
                    w.data[i] += m * (v.data[i] * s - w.data[i])
                }
            }
        }
    }

    /// Up [out, r(, 1, 1)], down [r, in(, 1, 1)], mid [r, r, kh, kw] → ΔW [out, in·kh·kw].
    static func tucker(up: UnsafePointer<Float>, down: UnsafePointer<Float>, mid: Tensor, out: Int, input: Int, rank r: Int) -> Tensor {
        let kernel = mid.shape[2] * mid.shape[3], mr = mid.shape[0]
        // core[m, i, e] = Σ_n mid[m, n, e] · down[n, i]
        let core = Tensor(shape: [mr, input * kernel])
        for m in 0..<mr {
            for n in 0..<r {
                for i in 0..<input {
                    let x = down[n * input + i]
                    let dst = core.data + (m * input + i) * kernel, src = mid.data + (m * r + n) * kernel
                    for e in 0..<kernel { dst[e] += src[e] * x }
                }
            }
        }
        let result = Tensor(shape: [out, input * kernel])
        matmul(m: out, n: input * kernel, k: mr, up, lda: mr, core.data, ldb: input * kernel, result.data, ldc: input * kernel)
        return result
    }

    /// One LoHa factor: a · b, or with a Tucker core t [r, r, kh, kw] (a [r, out], b [r, in]).
    static func hadamardFactor(a: Tensor, b: Tensor, t: Tensor?, shape: [Int], name: String) throws(WeightDeltaError) -> Tensor {
        let out = shape[0], rest = shape.dropFirst().reduce(1, *)
        if let t {
            // einsum("i j k l, j r, i p -> p r k l", t, b, a): a [i, p = out], b [j, r = in]
            guard t.shape.count == 4, shape.count == 4, a.shape.count == 2, b.shape.count == 2, a.shape[0] == t.shape[0],
                  b.shape[0] == t.shape[1], a.shape[1] == out, b.shape[1] == shape[1], t.shape[2] == shape[2], t.shape[3] == shape[3] else {
                throw .shape("\(name)_a \(a.shape), \(name)_b \(b.shape), core \(t.shape) do not make a \(shape) weight")
            }
            let ri = t.shape[0], rj = t.shape[1], input = shape[1], kernel = shape[2] * shape[3]
            // tb[i, r, e] = Σ_j t[i, j, e] · b[j, r]
            let tb = Tensor(shape: [ri, input * kernel])
            for i in 0..<ri {
                for j in 0..<rj {
                    for r in 0..<input {
                        let x = b.data[j * input + r]
                        let dst = tb.data + (i * input + r) * kernel, src = t.data + (i * rj + j) * kernel
                        for e in 0..<kernel { dst[e] += src[e] * x }
                    }
                }
            }
            let result = Tensor(shape: [out, rest])
            matmul(transposeA: true, m: out, n: rest, k: ri, a.data, lda: out, tb.data, ldb: rest, result.data, ldc: rest)
            return result
        }
        guard a.shape.count == 2, a.shape[0] == out, b.count == b.shape[0] * rest, a.shape[1] == b.shape[0] else {
            throw .shape("\(name)_a \(a.shape) and \(name)_b \(b.shape) do not make a \(shape) weight")
        }
        let r = a.shape[1]
        let result = Tensor(shape: [out, rest])
        matmul(m: out, n: rest, k: r, a.data, lda: r, b.data, ldb: rest, result.data, ldc: rest)
        return result
    }

    /// A LoKr factor as a matrix (w2 may keep a [s, t, kh, kw] shape).
    static func matrix(_ f: Factor, name: String) throws(WeightDeltaError) -> Tensor {
        switch f {
        case .whole(let w):
            guard w.shape.count == 2 || w.shape.count == 4 else { throw .shape("\(name) \(w.shape) is not a matrix") }
            return w
        case let .lowRank(a, b, t):
            guard a.shape.count == 2, b.shape.count >= 2, a.shape[1] == b.shape[0] || t != nil else {
                throw .shape("\(name)_a \(a.shape) and \(name)_b \(b.shape) do not multiply")
            }
            if let t {
                // einsum("i j k l, j r, i p -> p r k l", t, b, a): a [i, p], b [j, r], t [i, j, kh, kw]
                guard t.shape.count == 4, a.shape[0] == t.shape[0], b.shape[0] == t.shape[1] else {
                    throw .shape("\(name)_a \(a.shape), \(name)_b \(b.shape), lokr_t2 \(t.shape) do not make a factor")
                }
                let p = a.shape[1], r = b.shape[1], ri = t.shape[0], rj = t.shape[1], kernel = t.shape[2] * t.shape[3]
                let result = Tensor(shape: [p, r, t.shape[2], t.shape[3]])
                for i in 0..<ri {
                    for j in 0..<rj {
                        let tt = t.data + (i * rj + j) * kernel
                        for pp in 0..<p {
                            let ap = a.data[i * p + pp]
                            for rr in 0..<r {
                                let x = ap * b.data[j * r + rr]
                                let dst = result.data + (pp * r + rr) * kernel
                                for e in 0..<kernel { dst[e] += x * tt[e] }
                            }
                        }
                    }
                }
                return result
            }
            let rows = a.shape[0], inner = a.shape[1], cols = b.count / inner
            let result = Tensor(shape: [rows, cols])
            matmul(m: rows, n: cols, k: inner, a.data, lda: inner, b.data, ldb: cols, result.data, ldc: cols)
            return result
        }
    }
}

public enum WeightDeltaError: Error, Equatable, CustomStringConvertible {
    case shape(String)
    public var description: String {
        switch self {
        case .shape(let why): why
        }
    }
}
