#if canImport(Glibc)
import Glibc
#endif

/// A frozen weight matrix [rows, columns] kept in a compact encoding (bf16, or a GGUF file's
/// quantised blocks) and decoded a tile of rows at a time inside the matrix products below, so
/// the Float32 matrix never exists as a whole (QLoRA's idea: the base model stays small, the
/// adapters and all arithmetic stay fp32).
///
/// Every row is encoded on its own in `bytesPerRow` bytes, so a tile of rows is a contiguous
/// byte range and rows can be gathered (embedding lookups).
public final class PackedMatrix: @unchecked Sendable {
    /// Decodes `rows` consecutive encoded rows at `source` into `rows × columns` floats.
    public typealias RowDecoder = @Sendable (_ source: UnsafeRawPointer, _ destination: UnsafeMutablePointer<Float>, _ rows: Int) -> Void

    public let rows: Int
    public let columns: Int
    /// The encoding's name for reports ("BF16", "Q4_1", …).
    public let encoding: String
    public let bytesPerRow: Int
    private let storage: UnsafeMutableRawPointer
    private let decode: RowDecoder

    /// Copies `rows × bytesPerRow` encoded bytes; row `i` of the matrix is encoded row `rowOrder(i)`
    /// of `bytes` (a permutation, for llama.cpp's reordered Q/K rows; identity by default).
    public init(rows: Int, columns: Int, encoding: String, bytesPerRow: Int, bytes: UnsafeRawBufferPointer,
                rowOrder: (Int) -> Int = { $0 }, decode: @escaping RowDecoder) {
        precondition(rows >= 0 && columns >= 0 && bytesPerRow >= 0 && bytes.count == rows * bytesPerRow,
                     "\(encoding): \(bytes.count) bytes for \(rows) rows of \(bytesPerRow)")
        self.rows = rows
        self.columns = columns
        self.encoding = encoding
        self.bytesPerRow = bytesPerRow
        self.decode = decode
        storage = UnsafeMutableRawPointer.allocate(byteCount: max(rows * bytesPerRow, 1), alignment: 64)
        if let base = bytes.baseAddress {
            for i in 0..<rows {
                let source = rowOrder(i)
                precondition(source >= 0 && source < rows, "row order maps \(i) to \(source)")
                (storage + i * bytesPerRow).copyMemory(from: base + source * bytesPerRow, byteCount: bytesPerRow)
            }
        }
    }

    deinit { storage.deallocate() }

    public var shape: [Int] { [rows, columns] }
    public var byteCount: Int { rows * bytesPerRow }

    /// A bf16 copy of `w` ([rows, columns]), rounded to nearest even (NaN stays NaN).
    public static func bf16(_ w: Tensor) -> PackedMatrix {
        precondition(w.shape.count == 2, "bf16 packing needs a matrix, got \(w.shape)")
        let rows = w.shape[0], columns = w.shape[1]
        let bits = UnsafeMutableBufferPointer<UInt16>.allocate(capacity: max(w.count, 1))
        defer { bits.deallocate() }
        for i in 0..<w.count { bits[i] = bfloat16Bits(w.data[i]) }
        return PackedMatrix(rows: rows, columns: columns, encoding: "BF16", bytesPerRow: 2 * columns,
                            bytes: UnsafeRawBufferPointer(start: bits.baseAddress, count: 2 * w.count)) { source, destination, rows in
            let s = source.assumingMemoryBound(to: UInt16.self)
            for i in 0..<(rows * columns) { destination[i] = Float(bitPattern: UInt32(s[i]) << 16) }
        }
    }

    /// Decodes rows `range` into `destination` ([range.count, columns]), split across the cores.
    public func decodeRows(_ range: Range<Int>, into destination: UnsafeMutablePointer<Float>) {
        precondition(range.lowerBound >= 0 && range.upperBound <= rows)
        parallelRows(range.count, rowLength: columns) { chunk in
            decode(storage + (range.lowerBound + chunk.lowerBound) * bytesPerRow,
                   destination + chunk.lowerBound * columns, chunk.count)
        }
    }

    /// Decodes one row (an embedding lookup).
    public func decodeRow(_ row: Int, into destination: UnsafeMutablePointer<Float>) {
        precondition(row >= 0 && row < rows, "row \(row) outside 0..<\(rows)")
        decode(storage + row * bytesPerRow, destination, 1)
    }

    /// The whole matrix in Float32 (tests, merging into a full-precision copy).
    public func unpacked() -> Tensor {
        let t = Tensor(shape: shape)
        decodeRows(0..<rows, into: t.data)
        return t
    }

    /// Rows per tile: about 128 K floats (512 KiB, within L2), at least 16.
    var tileRows: Int { max(16, min(rows, 131_072 / max(columns, 1))) }

    /// Decodes the matrix a tile of rows at a time into reused scratch memory and hands `body`
    /// each tile's first row, row count and floats ([count, columns]).
    func forEachDecodedTile(_ body: (_ start: Int, _ count: Int, _ tile: UnsafePointer<Float>) -> Void) {
        let tile = tileRows
        ScratchPool.shared.withScratch(bytes: 4 * tile * columns) { raw in
            let scratch = raw.assumingMemoryBound(to: Float.self)
            for start in stride(from: 0, to: rows, by: tile) {
                let count = min(tile, rows - start)
                decodeRows(start..<(start + count), into: scratch)
                body(start, count, scratch)
            }
        }
    }

    /// The encoded bytes (bf16 rows for the bf16 kernels).
    var bytes: UnsafeRawPointer { UnsafeRawPointer(storage) }

    /// Products in bf16 with the AVX512-BF16 kernels (activations rounded to bf16, fp32 sums)
    /// rather than decoding tiles to fp32 for sgemm. On for bf16 storage when the CPU has the
    /// instructions; `bf16Products = false` keeps bf16 storage with fp32 products.
    public var bf16Products = true
    var usesBF16Kernels: Bool { bf16Products && encoding == "BF16" && hasBF16Instructions }
}

/// bfloat16 bits of `x`: the high half of its binary32, rounded to nearest even.
@inline(__always)
public func bfloat16Bits(_ x: Float) -> UInt16 {
    let bits = x.bitPattern
    if x.isNaN { return UInt16(bits >> 16) | 0x40 }
    let rounded = bits &+ 0x7FFF &+ ((bits >> 16) & 1)
    return UInt16(rounded >> 16)
}

/// `y[n, rows] = x[n, columns] · Wᵀ + beta · y` for a packed W: each tile of rows is decoded,
/// then multiplied by sgemm into its columns of y.   ldx, ldy: row strides of x and y.
public func matmul(_ x: UnsafePointer<Float>, ldx: Int, rows n: Int, transposedPacked w: PackedMatrix,
                   beta: Float = 0, into y: UnsafeMutablePointer<Float>, ldy: Int) {
    if w.usesBF16Kernels && w.columns % 2 == 0 {
        return bf16Matmul(x, ldx: ldx, rows: n, transposed: w, beta: beta, into: y, ldy: ldy)
    }
    w.forEachDecodedTile { start, count, tile in
        matmul(transposeB: true, m: n, n: count, k: w.columns, x, lda: ldx, tile, ldb: w.columns,
               beta: beta, y + start, ldc: ldy)
    }
}

/// `dx[n, columns] = dy[n, rows] · W + beta · dx` for a packed W (the input gradient of a frozen
/// packed layer): tile by tile, each tile's product accumulated into dx.
public func matmul(_ dy: UnsafePointer<Float>, lddy: Int, rows n: Int, packed w: PackedMatrix,
                   beta: Float = 0, into dx: UnsafeMutablePointer<Float>, lddx: Int) {
    if w.usesBF16Kernels && w.rows % 2 == 0 {
        return bf16Matmul(dy, lddy: lddy, rows: n, w, beta: beta, into: dx, lddx: lddx)
    }
    w.forEachDecodedTile { start, count, tile in
        matmul(m: n, n: w.columns, k: count, dy + start, lda: lddy, tile, ldb: w.columns,
               beta: start == 0 ? beta : 1, dx, ldc: lddx)
    }
}
