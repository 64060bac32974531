import Foundation
import Kernels
import TestSupport
import Testing

@Suite("matmul (OpenBLAS) against the naive reference")
struct MatmulTests {
    @Test(arguments: [(false, false), (true, false), (false, true), (true, true)])
    func agreesWithReference(transposeA: Bool, transposeB: Bool) {
        let m = 7, n = 5, k = 9
        // Padded leading dimensions exercise strided sub-matrices, as attention heads use them.
        let lda = (transposeA ? m : k) + 3, ldb = (transposeB ? k : n) + 2, ldc = n + 1
        let a = randomTensor([(transposeA ? k : m) * lda], seed: 1)
        let b = randomTensor([(transposeB ? n : k) * ldb], seed: 2)
        let c0 = randomTensor([m * ldc], seed: 3)
        for (alpha, beta) in [(Float(1), Float(0)), (0.5, 1), (-2, 0.25)] {
            let fast = c0.clone(), slow = c0.clone()
            matmul(transposeA: transposeA, transposeB: transposeB, m: m, n: n, k: k, alpha: alpha,
                   a.data, lda: lda, b.data, ldb: ldb, beta: beta, fast.data, ldc: ldc)
            matmulReference(transposeA: transposeA, transposeB: transposeB, m: m, n: n, k: k, alpha: alpha,
                            a.data, lda: lda, b.data, ldb: ldb, beta: beta, slow.data, ldc: ldc)
            let e = maxAbsoluteDifference(fast, slow)
            print("matmul tA=\(transposeA) tB=\(transposeB) α=\(alpha) β=\(beta): max abs difference \(e)")
            #expect(e < 1e-4)
            // Padding columns of C are never written.
            for i in 0..<m { #expect(fast[i * ldc + n] == c0[i * ldc + n]) }
        }
    }

    @Test func emptyInnerDimensionScalesC() {
        let c = Tensor(shape: [2, 2], values: [1, 2, 3, 4])
        let dummy = Tensor(shape: [1])
        matmul(m: 2, n: 2, k: 0, dummy.data, lda: 1, dummy.data, ldb: 2, beta: 0.5, c.data, ldc: 2)
        #expect(c.scalars == [0.5, 1, 1.5, 2])
    }
}

@Suite("Tensor")
struct TensorTests {
    @Test func resizeReusesCapacity() {
        let tracker = AllocationTracker()
        let t = tracker.counting { Tensor(shape: [4, 8]) }
        #expect(tracker.count == 1)
        tracker.counting {
            t.resize([2, 8])
            t.resize([4, 8])
            t.resize([32])
        }
        #expect(tracker.count == 1)
        #expect(t.shape == [32] && t.capacity == 32)
        tracker.counting { t.resize([5, 8]) }
        #expect(tracker.count == 2)
        #expect(t.count == 40)
    }

    @Test func bitIdentityDistinguishesSignedZero() {
        let a = Tensor(shape: [1], values: [0]), b = Tensor(shape: [1], values: [-0.0])
        #expect(!a.isBitIdentical(to: b))
        #expect(a.isBitIdentical(to: a.clone()))
        #expect(!Tensor(shape: [2], values: [1, .nan]).isFinite)
    }
}

@Suite("Parallel elementwise kernels")
struct ParallelTests {
    @Test func chunksCoverTheRangeExactlyOnce() {
        for count in [0, 1, 7, 16_383, 16_384, 40_000, 100_001] {
            let seen = UnsafeMutableBufferPointer<Int32>.allocate(capacity: max(count, 1))
            defer { seen.deallocate() }
            seen.initialize(repeating: 0)
            let p = seen.baseAddress!
            parallelChunks(count) { range in for i in range { p[i] += 1 } }
            #expect(seen.prefix(count).allSatisfy { $0 == 1 }, "count \(count)")
        }
    }

    @Test func sumOfSquaresIsTheNaiveSumAndDoesNotDependOnThreads() {
        var g = SplitMix64(seed: 3)
        let t = Tensor(shape: [300_001], generator: { g.nextGaussian() })
        var naive = 0.0
        for i in 0..<t.count { naive += Double(t.data[i]) * Double(t.data[i]) }
        // The same fixed blocks, added in order on one thread: what any number of workers must give.
        var blocks = 0.0
        for start in stride(from: 0, to: t.count, by: 65_536) {
            var s = 0.0
            for i in start..<min(start + 65_536, t.count) { s += Double(t.data[i]) * Double(t.data[i]) }
            blocks += s
        }
        let parallel = sumOfSquares(t)
        print("sum of squares (\(parallelWorkers) workers): naive \(naive), blocks \(parallel), relative difference \(abs(parallel - naive) / naive)")
        #expect(parallel == blocks)
        #expect(abs(parallel - naive) / naive < 1e-12)
    }
}

@Suite("Call-free exp")
struct FastMathTests {
    @Test func fastExpIsWithinAFewUlpsOfExp() {
        var worst = 0.0
        for i in 0...200_000 {
            let x = Float(-87 + 175 * Double(i) / 200_000)
            let exact = Foundation.exp(Double(x))
            worst = max(worst, abs(Double(fastExp(x)) - exact) / exact)
        }
        print("fastExp on [-87, 88]: max relative error \(worst)")
        #expect(worst < 3e-7)
        #expect(fastExp(-200) >= 0 && fastExp(-200) < 1e-37 && fastExp(0) == 1)
    }
}
