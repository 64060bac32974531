import Kernels
import TestSupport
import Testing

/// Packed frozen weights: bf16 rounding, and the tiled products against the naive reference on
/// the decoded matrix.
@Suite("Packed matrices")
struct PackedMatrixTests {
    @Test func bfloat16RoundsToNearestEven() {
        #expect(bfloat16Bits(1) == 0x3F80)
        #expect(bfloat16Bits(1 + 1.0 / 256) == 0x3F80)          // exactly half an ulp: ties to even (down)
        #expect(bfloat16Bits(1 + 3.0 / 256) == 0x3F82)          // half an ulp above an odd one: up
        #expect(bfloat16Bits(1 + 1.0 / 256 + 1.0 / 65536) == 0x3F81)
        #expect(bfloat16Bits(-2) == 0xC000)
        #expect(Float(bitPattern: UInt32(bfloat16Bits(.nan)) << 16).isNaN)
        #expect(Float(bitPattern: UInt32(bfloat16Bits(.infinity)) << 16) == .infinity)
    }

    /// 40 rows of 9,000 columns: tiles of 16 rows (16, 16, 8), so the tile seams are exercised.
    @Test func tiledProductsMatchTheReference() {
        let rows = 40, columns = 9_000, n = 5
        let w = randomTensor([rows, columns], seed: 1, scale: 0.5)
        let packed = PackedMatrix.bf16(w)
        packed.bf16Products = false   // decode tiles to fp32, sgemm
        let decoded = packed.unpacked()
        var worstRounding: Float = 0
        for i in 0..<w.count { worstRounding = max(worstRounding, abs(decoded[i] - w[i]) / max(abs(w[i]), 1e-30)) }
        #expect(worstRounding <= 1.0 / 256, "bf16 relative rounding \(worstRounding)")

        let x = randomTensor([n, columns], seed: 2), y = randomTensor([n, rows], seed: 3)
        let expected = y.clone()
        matmulReference(transposeB: true, m: n, n: rows, k: columns, x.data, lda: columns, decoded.data, ldb: columns,
                        beta: 1, expected.data, ldc: rows)
        matmul(x.data, ldx: columns, rows: n, transposedPacked: packed, beta: 1, into: y.data, ldy: rows)
        let forward = maxRelativeDifference(y, expected)

        let dy = randomTensor([n, rows], seed: 4), dx = Tensor(shape: [n, columns]), dxExpected = Tensor(shape: [n, columns])
        matmulReference(m: n, n: columns, k: rows, dy.data, lda: rows, decoded.data, ldb: columns, dxExpected.data, ldc: columns)
        matmul(dy.data, lddy: rows, rows: n, packed: packed, into: dx.data, lddx: columns)
        let backward = maxRelativeDifference(dx, dxExpected)
        print("packed bf16 products vs reference: forward \(forward), input gradient \(backward)")
        #expect(forward < 1e-4 && backward < 1e-4)
    }

    /// The AVX512-BF16 kernels against the reference on bf16-rounded operands (what they
    /// compute): token counts on both paths (5: one dot per output; 37: 16-token groups, padded),
    /// 42 weight rows (not a multiple of the 12-row micro-tile) and 1,000 columns (not a multiple
    /// of the 32-column strip), with beta 0 and 1.
    @Test(arguments: [5, 37])
    func bf16KernelsMatchTheReferenceOnRoundedOperands(tokens n: Int) throws {
        guard hasBF16Instructions else {
            print("bf16 kernels: this CPU has no AVX512-BF16; the fp32 fallback is what runs (tested above)")
            return
        }
        let rows = 42, columns = 1_000
        let packed = PackedMatrix.bf16(randomTensor([rows, columns], seed: 6, scale: 0.5)), w = packed.unpacked()
        func rounded(_ t: Tensor) -> Tensor {
            let r = t.clone()
            for i in 0..<r.count { r[i] = Float(bitPattern: UInt32(bfloat16Bits(r[i])) << 16) }
            return r
        }
        for beta: Float in [0, 1] {
            let x = randomTensor([n, columns], seed: 7), y = randomTensor([n, rows], seed: 8), expected = y.clone()
            let xRounded = rounded(x)
            matmulReference(transposeB: true, m: n, n: rows, k: columns, xRounded.data, lda: columns, w.data, ldb: columns,
                            beta: beta, expected.data, ldc: rows)
            matmul(x.data, ldx: columns, rows: n, transposedPacked: packed, beta: beta, into: y.data, ldy: rows)
            let dy = randomTensor([n, rows], seed: 9), dx = randomTensor([n, columns], seed: 10), dxExpected = dx.clone()
            let dyRounded = rounded(dy)
            matmulReference(m: n, n: columns, k: rows, dyRounded.data, lda: rows, w.data, ldb: columns, beta: beta,
                            dxExpected.data, ldc: columns)
            matmul(dy.data, lddy: rows, rows: n, packed: packed, beta: beta, into: dx.data, lddx: columns)
            let (forward, backward) = (maxRelativeDifference(y, expected), maxRelativeDifference(dx, dxExpected))
            withExtendedLifetime((xRounded, dyRounded, w)) {}
            print("bf16 kernels, \(n) tokens, beta \(beta): forward \(forward), input gradient \(backward)")
            #expect(forward < 1e-5 && backward < 1e-5)
        }
    }

    @Test func rowOrderAndRowLookup() {
        let w = randomTensor([6, 4], seed: 5)
        let bytes = w.buffer.withMemoryRebound(to: UInt8.self) { UnsafeRawBufferPointer($0) }
        let reversed = PackedMatrix(rows: 6, columns: 4, encoding: "F32", bytesPerRow: 16, bytes: bytes, rowOrder: { 5 - $0 }) { s, d, rows in
            d.update(from: s.assumingMemoryBound(to: Float.self), count: rows * 4)
        }
        let out = reversed.unpacked(), row = Tensor(shape: [4])
        for i in 0..<6 {
            for j in 0..<4 { #expect(out[i * 4 + j] == w[(5 - i) * 4 + j]) }
        }
        reversed.decodeRow(2, into: row.data)
        #expect(row.scalars == Array(w.scalars[12..<16]))
    }

    func maxRelativeDifference(_ a: Tensor, _ b: Tensor) -> Float {
        var worst: Float = 0, scale: Float = 0
        for i in 0..<b.count { scale = max(scale, abs(b[i])) }
        for i in 0..<a.count { worst = max(worst, abs(a[i] - b[i])) }
        return worst / max(scale, 1e-30)
    }
}
