import Foundation
import Kernels
@testable import Layers
import TestSupport
import Testing

/// Finite-difference checks of every layer's backward. Each layer's output y is reduced to the
/// scalar L = Σ y ⊙ w with fixed random w, so dL/dy = w is fed to backward and every analytic
/// gradient is compared with central differences of L.
@Suite("Layer gradients vs finite differences")
struct GradientCheckTests {
    static let tolerance = 1e-2

    @Test func linearTrainable() {
        let layer = Linear(inFeatures: 5, outFeatures: 4, bias: true, trainable: true)
        layer.weight.value.copy(from: randomTensor([4, 5], seed: 1, scale: 0.5))
        layer.bias!.value.copy(from: randomTensor([4], seed: 2))
        let x = randomTensor([2, 3, 5], seed: 3), w = randomTensor([2, 3, 4], seed: 4)
        let loss = { weightedSum(layer.forward(x), w) }
        _ = layer.forward(x)
        let dx = Tensor(shape: x.shape)
        layer.backward(w, dx: dx)
        let errors = [
            finiteDifferenceError(of: x, analytic: dx, loss: loss),
            finiteDifferenceError(of: layer.weight.value, analytic: layer.weight.grad!, loss: loss),
            finiteDifferenceError(of: layer.bias!.value, analytic: layer.bias!.grad!, loss: loss),
        ]
        print("Linear dx, dW, db: \(errors)")
        #expect(errors.allSatisfy { $0 < Self.tolerance })
    }

    @Test func linearFrozenComputesOnlyInputGradient() {
        let layer = Linear(inFeatures: 3, outFeatures: 2, bias: true)
        #expect(layer.weight.grad == nil && layer.bias!.grad == nil)
        layer.weight.value.copy(from: randomTensor([2, 3], seed: 5))
        let x = randomTensor([4, 3], seed: 6), w = randomTensor([4, 2], seed: 7)
        _ = layer.forward(x)
        let dx = Tensor(shape: x.shape)
        layer.backward(w, dx: dx)
        let e = finiteDifferenceError(of: x, analytic: dx) { weightedSum(layer.forward(x), w) }
        print("frozen Linear dx: \(e)")
        #expect(e < Self.tolerance)
        #expect(layer.weight.grad == nil && layer.bias!.grad == nil)
    }

    @Test func embedding() {
        let layer = Embedding(count: 6, dimension: 3, trainable: true)
        layer.weight.value.copy(from: randomTensor([6, 3], seed: 8))
        let ids = [1, 4, 1, 0, 5], w = randomTensor([5, 3], seed: 9)
        _ = layer.forward(ids: ids, shape: [5])
        layer.backward(w)
        let e = finiteDifferenceError(of: layer.weight.value, analytic: layer.weight.grad!) {
            weightedSum(layer.forward(ids: ids, shape: [5]), w)
        }
        print("Embedding dW: \(e)")
        #expect(e < Self.tolerance)
    }

    /// Offset 0 (Llama) and 1 (Gemma's y = (1 + w) ⊙ x̂).
    @Test(arguments: [Float(0), 1])
    func rmsNorm(offset: Float) {
        let layer = RMSNorm(dimension: 6, epsilon: 1e-5, trainable: true, weightOffset: offset)
        layer.weight.value.copy(from: randomTensor([6], seed: 10))
        let x = randomTensor([3, 6], seed: 11), w = randomTensor([3, 6], seed: 12)
        _ = layer.forward(x)
        let dx = layer.backward(w).clone()
        let loss = { weightedSum(layer.forward(x), w) }
        let ex = finiteDifferenceError(of: x, analytic: dx, epsilon: 1e-3, loss: loss)
        let ew = finiteDifferenceError(of: layer.weight.value, analytic: layer.weight.grad!, epsilon: 1e-3, loss: loss)
        print("RMSNorm (offset \(offset)) dx, dw: \(ex), \(ew)")
        #expect(ex < Self.tolerance && ew < Self.tolerance)
        // The offset is added to the weight: (o + w) ⊙ x̂.
        let y = layer.forward(x)
        var r: Float = 0
        for j in 0..<6 { r += x[j] * x[j] }
        r = 1 / (r / 6 + 1e-5).squareRoot()
        #expect(abs(y[0] - (offset + layer.weight.value[0]) * x[0] * r) < 1e-6)
    }

    @Test func layerNorm() {
        let layer = LayerNorm(dimension: 6, epsilon: 1e-5, trainable: true)
        layer.weight.value.copy(from: randomTensor([6], seed: 13))
        layer.bias.value.copy(from: randomTensor([6], seed: 14))
        let x = randomTensor([3, 6], seed: 15), w = randomTensor([3, 6], seed: 16)
        _ = layer.forward(x)
        let dx = layer.backward(w).clone()
        let loss = { weightedSum(layer.forward(x), w) }
        let errors = [
            finiteDifferenceError(of: x, analytic: dx, epsilon: 1e-3, loss: loss),
            finiteDifferenceError(of: layer.weight.value, analytic: layer.weight.grad!, epsilon: 1e-3, loss: loss),
            finiteDifferenceError(of: layer.bias.value, analytic: layer.bias.grad!, epsilon: 1e-3, loss: loss),
        ]
        print("LayerNorm dx, dw, db: \(errors)")
        #expect(errors.allSatisfy { $0 < Self.tolerance })
    }

    @Test func rotaryEmbedding() {
        let rope = RotaryEmbedding(headDimension: 8, base: 100_000)
        let positions = [0, 1, 2, 7, 3]
        let x = randomTensor([5, 16], seed: 17), w = randomTensor([5, 16], seed: 18)
        // backward of an in-place rotation: rotate dL/dy back.
        let dx = w.clone()
        rope.apply(dx, positions: positions, inverse: true)
        let e = finiteDifferenceError(of: x, analytic: dx) {
            let y = x.clone()
            rope.apply(y, positions: positions)
            return weightedSum(y, w)
        }
        print("RoPE dx: \(e)")
        #expect(e < Self.tolerance)
        // Position 0 is the identity, and inverse undoes forward.
        let y = x.clone()
        rope.apply(y, positions: positions)
        #expect((0..<16).allSatisfy { y[$0] == x[$0] })
        rope.apply(y, positions: positions, inverse: true)
        #expect(maxAbsoluteDifference(y, x) < 1e-5)
    }

    @Test(arguments: [(4, 2, true), (4, 4, false), (3, 1, true)])
    func attentionWithMasksAndGroupedHeads(heads: Int, kvHeads: Int, causal: Bool) {
        let b = 2, t = 5, d = 4
        let layer = ScaledDotProductAttention(heads: heads, kvHeads: kvHeads, headDimension: d)
        let q = randomTensor([b, t, heads * d], seed: 19), k = randomTensor([b, t, kvHeads * d], seed: 20)
        let v = randomTensor([b, t, kvHeads * d], seed: 21), w = randomTensor([b, t, heads * d], seed: 22)
        let mask = AttentionMask(causal: causal, keyPadding: [1, 1, 1, 1, 1, 1, 1, 1, 0, 0])
        let loss = { weightedSum(layer.forward(q: q, k: k, v: v, batch: b, length: t, mask: mask), w) }
        _ = loss()
        let (dq, dk, dv) = layer.backward(w)
        let (dqCopy, dkCopy, dvCopy) = (dq.clone(), dk.clone(), dv.clone())
        let errors = [
            finiteDifferenceError(of: q, analytic: dqCopy, epsilon: 1e-3, loss: loss),
            finiteDifferenceError(of: k, analytic: dkCopy, epsilon: 1e-3, loss: loss),
            finiteDifferenceError(of: v, analytic: dvCopy, epsilon: 1e-3, loss: loss),
        ]
        print("attention H=\(heads) KV=\(kvHeads) causal=\(causal) dq, dk, dv: \(errors)")
        #expect(errors.allSatisfy { $0 < Self.tolerance })
        // Padded keys get no gradient: their values never reach the output.
        for j in 3..<5 { for c in 0..<(kvHeads * d) { #expect(dvCopy[(1 * t + j) * kvHeads * d + c] == 0) } }
    }

    /// A sliding window (Gemma's local layers) and a scale other than 1/√D, with padding.
    @Test func attentionWithSlidingWindowAndScale() {
        let b = 2, t = 6, d = 4, heads = 2, kvHeads = 1, window = 3
        let layer = ScaledDotProductAttention(heads: heads, kvHeads: kvHeads, headDimension: d, scale: 0.3)
        let q = randomTensor([b, t, heads * d], seed: 31), k = randomTensor([b, t, kvHeads * d], seed: 32)
        let v = randomTensor([b, t, kvHeads * d], seed: 33), w = randomTensor([b, t, heads * d], seed: 34)
        let mask = AttentionMask(causal: true, keyPadding: [1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 0], slidingWindow: window)
        let loss = { weightedSum(layer.forward(q: q, k: k, v: v, batch: b, length: t, mask: mask), w) }
        let out = layer.forward(q: q, k: k, v: v, batch: b, length: t, mask: mask).clone()
        let (dq, dk, dv) = layer.backward(w)
        let (dqCopy, dkCopy, dvCopy) = (dq.clone(), dk.clone(), dv.clone())
        let errors = [
            finiteDifferenceError(of: q, analytic: dqCopy, epsilon: 1e-3, loss: loss),
            finiteDifferenceError(of: k, analytic: dkCopy, epsilon: 1e-3, loss: loss),
            finiteDifferenceError(of: v, analytic: dvCopy, epsilon: 1e-3, loss: loss),
        ]
        // The reference: softmax(0.3·q·kᵀ) over i − 3 < j ≤ i, written out directly.
        var e: Float = 0
        for s in 0..<b {
            for h in 0..<heads {
                for i in 0..<t {
                    let keys = (max(0, i - window + 1)...i).filter { s * t + $0 != 11 }
                    let scores = keys.map { j in (0..<d).reduce(Float(0)) { $0 + q[(s * t + i) * heads * d + h * d + $1] * k[(s * t + j) * d + $1] } * 0.3 }
                    let top = scores.max() ?? 0
                    let weights = scores.map { Foundation.exp($0 - top) }
                    let total = weights.reduce(0, +)
                    for c in 0..<d {
                        let expected = zip(keys, weights).reduce(Float(0)) { $0 + $1.1 / total * v[(s * t + $1.0) * d + c] }
                        e = max(e, abs(out[(s * t + i) * heads * d + h * d + c] - expected))
                    }
                }
            }
        }
        print("attention window=\(window) scale=0.3: max |Δ| vs direct \(e); dq, dk, dv: \(errors)")
        #expect(e < 1e-5 && errors.allSatisfy { $0 < Self.tolerance })
        // The cached (decoding) path with the same window and scale gives sequence 0's output (it has no padding).
        let cached = Tensor(shape: [t, heads * d])
        let scores = Tensor(shape: [0])
        layer.attend(q: q.data, queries: t, keys: k.data, values: v.data, keyCount: t,
                     mask: AttentionMask(causal: true, slidingWindow: window), scores: scores, into: cached.data)
        let cachedError = (0..<cached.count).map { abs(cached[$0] - out[$0]) }.max() ?? .infinity
        print("cached attention with the same window and scale: max |Δ| \(cachedError)")
        #expect(cachedError < 1e-6)
    }

    @Test func attentionMasksAreRespected() {
        // Causal: the first query sees only the first key, so its output is v[0] exactly.
        let layer = ScaledDotProductAttention(heads: 1, kvHeads: 1, headDimension: 2)
        let q = randomTensor([1, 3, 2], seed: 23), k = randomTensor([1, 3, 2], seed: 24), v = randomTensor([1, 3, 2], seed: 25)
        let out = layer.forward(q: q, k: k, v: v, batch: 1, length: 3, mask: AttentionMask(causal: true))
        #expect(out[0] == v[0] && out[1] == v[1])
        // A row with every key masked gives zeros, not NaN.
        let masked = layer.forward(q: q, k: k, v: v, batch: 1, length: 3, mask: AttentionMask(causal: true, keyPadding: [0, 1, 1]))
        #expect(masked[0] == 0 && masked[1] == 0 && masked.isFinite)
    }

    @Test func geluTanhGate() {
        let layer = GatedActivation(.geluTanh, width: 5)
        let g = randomTensor([3, 5], seed: 41, scale: 2), u = randomTensor([3, 5], seed: 42), w = randomTensor([3, 5], seed: 43)
        let loss = { weightedSum(layer.forward(gate: g, up: u), w) }
        let out = layer.forward(gate: g, up: u).clone()
        let (dg, du) = layer.backward(w)
        let (dgc, duc) = (dg.clone(), du.clone())
        let errors = [finiteDifferenceError(of: g, analytic: dgc, epsilon: 1e-3, loss: loss),
                      finiteDifferenceError(of: u, analytic: duc, epsilon: 1e-3, loss: loss)]
        // torch.nn.functional.gelu(x, approximate="tanh") at a few points (torch 2.15, float64).
        let reference: [(Double, Double)] = [(-3, -0.0036373920817729943), (-1, -0.15880800939172324), (0.5, 0.34571400982514394),
                                             (2, 1.954597694087775)]
        var valueError = 0.0
        for (x, expected) in reference {
            let one = Tensor(shape: [1, 1]); one[0] = Float(x)
            let unit = Tensor(shape: [1, 1]); unit[0] = 1
            valueError = max(valueError, abs(Double(GatedActivation(.geluTanh, width: 1).forward(gate: one, up: unit)[0]) - expected))
        }
        print("GELU-tanh gate dgate, dup: \(errors); values vs torch \(valueError)")
        #expect(errors.allSatisfy { $0 < Self.tolerance } && valueError < 1e-6 && out.isFinite)
    }

    @Test func swiGLU() {
        let layer = GatedActivation(.silu, width: 4)
        let g = randomTensor([3, 4], seed: 26), u = randomTensor([3, 4], seed: 27), w = randomTensor([3, 4], seed: 28)
        let loss = { weightedSum(layer.forward(gate: g, up: u), w) }
        _ = loss()
        let (dg, du) = layer.backward(w)
        let (dgc, duc) = (dg.clone(), du.clone())
        let errors = [finiteDifferenceError(of: g, analytic: dgc, epsilon: 1e-3, loss: loss),
                      finiteDifferenceError(of: u, analytic: duc, epsilon: 1e-3, loss: loss)]
        print("SwiGLU dgate, dup: \(errors)")
        #expect(errors.allSatisfy { $0 < Self.tolerance })
    }

    @Test func geluAndTanh() {
        let gelu = GELU(width: 5), tanh = Tanh(width: 5)
        let x = randomTensor([3, 5], seed: 29, scale: 2), w = randomTensor([3, 5], seed: 30)
        _ = gelu.forward(x)
        let dGelu = gelu.backward(w).clone()
        let eg = finiteDifferenceError(of: x, analytic: dGelu, epsilon: 1e-3) { weightedSum(gelu.forward(x), w) }
        _ = tanh.forward(x)
        let dTanh = tanh.backward(w).clone()
        let et = finiteDifferenceError(of: x, analytic: dTanh, epsilon: 1e-3) { weightedSum(tanh.forward(x), w) }
        print("GELU dx: \(eg), tanh dx: \(et)")
        #expect(eg < Self.tolerance && et < Self.tolerance)
        // Exact-erf GELU, not the tanh approximation: GELU(1) = Φ(1) = 0.841344746...
        #expect(abs(GELU(width: 1).forward(Tensor(shape: [1], values: [1]))[0] - 0.8413447) < 1e-6)
    }

    @Test func crossEntropyIgnoresMaskedTargets() {
        let loss = CrossEntropyLoss(classes: 5)
        let logits = randomTensor([4, 5], seed: 31)
        let targets = [2, ignoreIndex, 0, 4]
        let (value, count) = loss.forwardBackward(logits: logits, targets: targets)
        #expect(count == 3)
        let dz = loss.logitsGradient.clone()
        let e = finiteDifferenceError(of: logits, analytic: dz, epsilon: 1e-3) {
            Double(loss.forwardBackward(logits: logits, targets: targets).loss)
        }
        print("cross-entropy dlogits: \(e)")
        #expect(e < Self.tolerance)
        #expect((0..<5).allSatisfy { dz[5 + $0] == 0 })
        // The value is the mean of −log softmax over the three counted rows.
        var expected = 0.0
        for (row, t) in targets.enumerated() where t != ignoreIndex {
            let z = (0..<5).map { Double(logits[row * 5 + $0]) }
            expected += log(z.map { exp($0) }.reduce(0, +)) - z[t]
        }
        #expect(abs(Double(value) - expected / 3) < 1e-5)
    }

    @Test func chunkedHeadLossEqualsFullLogitsLoss() {
        let n = 11, c = 6, vocab = 13
        let x = randomTensor([n, c], seed: 32), head = Parameter("weight", randomTensor([vocab, c], seed: 33), trainable: true)
        var g = SplitMix64(seed: 34)
        let targets = (0..<n).map { i in i % 4 == 1 ? ignoreIndex : Int(g.next() % UInt64(vocab)) }
        let chunked = ChunkedLMHeadLoss(vocabularySize: vocab, hiddenSize: c, chunkRows: 4)
        let (loss, count) = chunked(x, head: head, targets: targets, computeGradients: true)
        let dx = chunked.inputGradient.clone(), dW = head.grad!.clone()

        // Reference: materialise all logits, then the plain loss.
        let logits = Tensor(shape: [n, vocab])
        matmul(x, transposedWeight: head.value, into: logits)
        let reference = CrossEntropyLoss(classes: vocab)
        let (refLoss, refCount) = reference.forwardBackward(logits: logits, targets: targets)
        #expect(count == refCount)
        #expect(abs(loss - refLoss) < 1e-5)
        let lossFn = { Double(ChunkedLMHeadLoss(vocabularySize: vocab, hiddenSize: c, chunkRows: 4)(x, head: head, targets: targets, computeGradients: false).loss) }
        let ex = finiteDifferenceError(of: x, analytic: dx, epsilon: 1e-3, loss: lossFn)
        let ew = finiteDifferenceError(of: head.value, analytic: dW, epsilon: 1e-3, loss: lossFn)
        print("chunked LM head loss dx, dW: \(ex), \(ew)")
        #expect(ex < Self.tolerance && ew < Self.tolerance)
    }
}

#if canImport(Glibc)
import Glibc
#endif
