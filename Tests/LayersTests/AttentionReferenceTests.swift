import Formats
import Kernels
@testable import Layers
import TestSupport
import Testing

/// Attention with query length ≠ key length against PyTorch's `scaled_dot_product_attention`
/// (`Scripts/reference/make_attention_fixtures.py`): cross-attention with key padding and grouped
/// heads, and a decoding step (queries at the last key positions, sliding window, scale 0.3);
/// forward, backward, and the cached kernel `attend`.
@Suite("Attention with Tq ≠ Tk against PyTorch")
struct AttentionReferenceTests {
    struct Case: Sendable {
        let name: String, batch: Int, queries: Int, keys: Int, heads: Int, kvHeads: Int, scale: Float
        let mask: AttentionMask
    }

    static let cases = [
        Case(name: "cross", batch: 2, queries: 3, keys: 5, heads: 4, kvHeads: 2, scale: 0.5,
             mask: AttentionMask(causal: false, keyPadding: [1, 1, 1, 1, 1, 1, 1, 1, 0, 0])),
        Case(name: "offset", batch: 1, queries: 3, keys: 7, heads: 2, kvHeads: 1, scale: 0.3,
             mask: AttentionMask(causal: true, slidingWindow: 3, queryOffset: 4)),
    ]

    @Test(arguments: cases)
    func matchesPyTorch(_ c: Case) throws {
        let file = try SafeTensorsFile(url: fixturesDirectory.appendingPathComponent("attention/attention.safetensors"))
        let t = { (key: String) throws -> Tensor in try file.tensor("\(c.name).\(key)") }
        let q = try t("q"), k = try t("k"), v = try t("v"), w = try t("w")
        let layer = ScaledDotProductAttention(heads: c.heads, kvHeads: c.kvHeads, headDimension: 4, scale: c.scale)
        let forward = { layer.forward(q: q, k: k, v: v, batch: c.batch, queryLength: c.queries, keyLength: c.keys, mask: c.mask) }
        let out = forward().clone()
        let (dq, dk, dv) = layer.backward(w)
        let errors = [maxAbsoluteDifference(out, try t("out")), maxAbsoluteDifference(dq, try t("dq")),
                      maxAbsoluteDifference(dk, try t("dk")), maxAbsoluteDifference(dv, try t("dv"))]
        // The same gradients by finite differences.
        let (dqc, dkc, dvc) = (dq.clone(), dk.clone(), dv.clone())
        let loss = { weightedSum(forward(), w) }
        let fd = [finiteDifferenceError(of: q, analytic: dqc, epsilon: 1e-3, loss: loss),
                  finiteDifferenceError(of: k, analytic: dkc, epsilon: 1e-3, loss: loss),
                  finiteDifferenceError(of: v, analytic: dvc, epsilon: 1e-3, loss: loss)]
        print("attention \(c.name) (Tq \(c.queries), Tk \(c.keys)) vs PyTorch: max |Δ| out, dq, dk, dv \(errors); finite differences \(fd)")
        #expect(errors.allSatisfy { $0 < 1e-5 })
        #expect(fd.allSatisfy { $0 < 2e-2 })
        // The cached kernel on the decoding case: the same output from keys held elsewhere.
        if c.mask.keyPadding == nil {
            let cached = Tensor(shape: [c.queries, c.heads * 4]), scores = Tensor(shape: [0])
            layer.attend(q: q.data, queries: c.queries, keys: k.data, values: v.data, keyCount: c.keys, mask: c.mask,
                         scores: scores, into: cached.data)
            let e = (0..<cached.count).map { abs(cached[$0] - out[$0]) }.max() ?? .infinity
            print("attention \(c.name): cached kernel vs forward max |Δ| \(e)")
            #expect(e == 0)
        }
    }
}
