import AdapterFormats
import Kernels

/// Truncated SVD of weight changes, as kohya's `extract_lora_from_models.py`, `resize_lora.py` and
/// `svd_merge_lora.py` use it: ΔW [out, rest] ≈ up · down with up = U_k · diag(S_k), down = V_kᵀ
/// (rest = in · kh · kw for a convolution; its down keeps the kernel, its up is 1×1).
public enum LowRank {
    /// The factors of the best rank-k approximation of `d` ([out, rest]), and the share of ‖ΔW‖_F
    /// they keep. `clampQuantile` clamps both factors to ±(that quantile of their values together,
    /// signed, as torch.quantile interpolates them), as kohya's extraction and SVD merge do.
    public static func factorize(_ d: Tensor, rank: Int, clampQuantile: Double? = nil) -> (up: Tensor, down: Tensor, singular: [Float])? {
        precondition(d.shape.count == 2 && rank > 0)
        guard let (u, s, vt) = singularValueDecomposition(d) else { return nil }
        let out = d.shape[0], rest = d.shape[1], full = s.count, k = min(rank, full)
        let up = Tensor(shape: [out, k]), down = Tensor(shape: [k, rest])
        for o in 0..<out { for j in 0..<k { up.data[o * k + j] = u.data[o * full + j] * s[j] } }
        down.data.update(from: vt.data, count: k * rest)
        if let q = clampQuantile {
            let hi = quantile(up.scalars + down.scalars, q), lo = -hi
            for t in [up, down] { for i in 0..<t.count { t.data[i] = min(max(t.data[i], lo), hi) } }
        }
        return (up, down, s)
    }

    /// The q-quantile of `values` with linear interpolation between the two nearest ranks
    /// (torch.quantile's default).
    public static func quantile(_ values: [Float], _ q: Double) -> Float {
        precondition(!values.isEmpty && q >= 0 && q <= 1)
        let sorted = values.sorted()
        let position = q * Double(sorted.count - 1)
        let lower = Int(position.rounded(.down)), upper = min(lower + 1, sorted.count - 1)
        let fraction = Float(position - Double(lower))
        return sorted[lower] + (sorted[upper] - sorted[lower]) * fraction
    }

    /// kohya's dynamic rank rules (`resize_lora.py --dynamic_method`), each giving the smallest rank
    /// that meets its criterion. kohya's own formulas keep one more rank than that (the off-by-one of
    /// sd-scripts PR #2194); these do not.
    public enum DynamicRule: Equatable, Sendable, CustomStringConvertible {
        /// Keep the singular values at least S[0] / x.
        case svRatio(Double)
        /// Keep the fewest that hold a share x of ‖ΔW‖_F (the root of Σ S² kept over Σ S²).
        case svFrobenius(Double)
        /// Keep the fewest whose sum holds a share x of Σ S.
        case svCumulative(Double)

        public var description: String {
            switch self {
            case .svRatio(let x): "sv_ratio:\(x)"
            case .svFrobenius(let x): "sv_fro:\(x)"
            case .svCumulative(let x): "sv_cumulative:\(x)"
            }
        }

        /// "sv_ratio:2", "sv_fro:0.9", "sv_cumulative:0.9"; nil for anything else.
        public init?(_ text: String) {
            let parts = text.split(separator: ":", maxSplits: 1).map(String.init)
            guard parts.count == 2, let x = Double(parts[1]), x.isFinite, x > 0 else { return nil }
            switch parts[0] {
            case "sv_ratio": self = .svRatio(x)
            case "sv_fro" where x <= 1: self = .svFrobenius(x)
            case "sv_cumulative" where x <= 1: self = .svCumulative(x)
            default: return nil
            }
        }

        /// The rank for singular values `s` (descending), at most `maximum`, at least 1.
        public func rank(_ s: [Float], maximum: Int) -> Int {
            guard let first = s.first, first > 0 else { return 1 }
            let chosen: Int
            switch self {
            case .svRatio(let x):
                chosen = s.filter { Double($0) >= Double(first) / x }.count
            case .svFrobenius(let x):
                let total = s.reduce(0.0) { $0 + Double($1) * Double($1) }
                var kept = 0.0, k = 0
                while k < s.count && (kept / total).squareRoot() < x - 1e-12 { kept += Double(s[k]) * Double(s[k]); k += 1 }
                chosen = k
            case .svCumulative(let x):
                let total = s.reduce(0.0) { $0 + Double($1) }
                var kept = 0.0, k = 0
                while k < s.count && kept / total < x - 1e-12 { kept += Double(s[k]); k += 1 }
                chosen = k
            }
            return min(max(chosen, 1), maximum)
        }
    }

    /// The share of ‖ΔW‖_F a rank-k truncation keeps: √(Σ_{i<k} S²) / √(Σ S²).
    public static func frobeniusRetained(_ s: [Float], rank k: Int) -> Double {
        let total = s.reduce(0.0) { $0 + Double($1) * Double($1) }
        guard total > 0 else { return 1 }
        return (s.prefix(k).reduce(0.0) { $0 + Double($1) * Double($1) } / total).squareRoot()
    }

    /// The factors as a LoRA delta for a weight of `shape`: up [out, k(, 1, 1)], down [k, in(, kh, kw)].
    public static func delta(up: Tensor, down: Tensor, shape: [Int], alpha: Float) -> WeightDelta {
        let k = up.shape[1]
        if shape.count == 4 {
            up.reshape([shape[0], k, 1, 1])
            down.reshape([k, shape[1], shape[2], shape[3]])
        }
        return WeightDelta(kind: .lora(down: down, up: up, mid: nil), alpha: alpha)
    }
}
