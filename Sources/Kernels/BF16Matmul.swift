import CKernels
#if canImport(Glibc)
import Glibc
#endif

/// Whether this CPU runs the AVX512-BF16 kernels (checked once). `SWIFT_LORA_BF16_KERNELS=0`
/// turns them off (bf16 storage then decodes to fp32 for sgemm), for comparisons.
public let hasBF16Instructions: Bool = {
    if let setting = getenv("SWIFT_LORA_BF16_KERNELS"), String(cString: setting) == "0" { return false }
    return ck_has_avx512bf16() != 0
}()

/// Token counts below this use one dot product per output (decoding) instead of 32-token tiles.
let bf16SmallBatch = 16

/// `y[n, rows] = x[n, columns] · Wᵀ + beta · y` for bf16 W with vdpbf16ps: x is rounded to bf16
/// once (packed in groups of 16 tokens), then the rows of W are split across the cores.
func bf16Matmul(_ x: UnsafePointer<Float>, ldx: Int, rows n: Int, transposed w: PackedMatrix, beta: Float,
                into y: UnsafeMutablePointer<Float>, ldy: Int) {
    let k = w.columns, weights = w.bytes.assumingMemoryBound(to: UInt16.self)
    let blockRows = 12   // the kernel's micro-tile height; chunks are whole blocks
    if n < bf16SmallBatch {
        ScratchPool.shared.withScratch(bytes: 2 * n * k) { raw in
            let xb = raw.assumingMemoryBound(to: UInt16.self)
            ck_rows_to_bf16(Int32(n), Int32(k), x, Int32(ldx), xb, 0, Int32(n))
            let blocks = (w.rows + blockRows - 1) / blockRows
            parallelChunks(blocks, minimumChunk: max(1, elementsPerChunk / max(k, 1))) { range in
                ck_bf16_xwt_small(Int32(n), Int32(k), xb, weights, Int32(range.lowerBound * blockRows),
                                  Int32(min(range.upperBound * blockRows, w.rows)), y, Int32(ldy), beta)
            }
        }
        return
    }
    let groups = ((n + 15) / 16 + 1) / 2 * 2   // the kernel reads token groups in pairs
    ScratchPool.shared.withScratch(bytes: 4 * groups * 16 * (k / 2)) { raw in
        let packed = raw.assumingMemoryBound(to: UInt32.self)
        parallelChunks(groups, minimumChunk: 2) { range in
            ck_pack_tokens_bf16(Int32(n), Int32(k), x, Int32(ldx), packed, Int32(range.lowerBound), Int32(range.upperBound))
        }
        let blocks = (w.rows + blockRows - 1) / blockRows
        parallelChunks(blocks, minimumChunk: 1) { range in
            ck_bf16_xwt(Int32(n), Int32(k), packed, weights, Int32(range.lowerBound * blockRows),
                        Int32(min(range.upperBound * blockRows, w.rows)), y, Int32(ldy), beta)
        }
    }
}

/// `dx[n, columns] = dy[n, rows] · W + beta · dx` for bf16 W with vdpbf16ps: dy is rounded to
/// bf16 once, then the columns of dx are split across the cores in 32-column blocks.
func bf16Matmul(_ dy: UnsafePointer<Float>, lddy: Int, rows n: Int, _ w: PackedMatrix, beta: Float,
                into dx: UnsafeMutablePointer<Float>, lddx: Int) {
    let outF = w.rows, k = w.columns, weights = w.bytes.assumingMemoryBound(to: UInt16.self)
    ScratchPool.shared.withScratch(bytes: 2 * n * outF) { raw in
        let dyb = raw.assumingMemoryBound(to: UInt16.self)
        parallelRows(n, rowLength: outF) { range in
            ck_rows_to_bf16(Int32(n), Int32(outF), dy, Int32(lddy), dyb, Int32(range.lowerBound), Int32(range.upperBound))
        }
        let blockColumns = 32
        let blocks = (k + blockColumns - 1) / blockColumns
        parallelChunks(blocks, minimumChunk: 1) { range in
            // One 32-column strip of W, interleaved into pairs along the rows, per thread.
            ScratchPool.shared.withScratch(bytes: 64 * outF) { strip in
                ck_bf16_dyw(Int32(n), Int32(outF), Int32(k), dyb, weights, Int32(range.lowerBound * blockColumns),
                            Int32(min(range.upperBound * blockColumns, k)), dx, Int32(lddx), beta, strip)
            }
        }
    }
}
