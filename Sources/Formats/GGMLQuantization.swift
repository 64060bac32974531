/// ggml's tensor element types (`enum ggml_type` in ggml.h), as stored in a GGUF tensor info.
///
/// Quantised types store a row as consecutive blocks of `blockSize` elements, each block
/// `typeSize` bytes; a row's length must be a multiple of `blockSize`. All multi-byte fields are
/// little-endian; `f16` is IEEE binary16. Layouts (from ggml's reference `dequantize_row_*` in
/// ggml-quants.c) are documented on each kernel below. Gaps in the numbering (4, 5, 31–33) are
/// types ggml has removed.
public enum GGMLType: UInt32, Sendable, CaseIterable {
    case f32 = 0, f16 = 1
    case q4_0 = 2, q4_1 = 3, q5_0 = 6, q5_1 = 7, q8_0 = 8, q8_1 = 9
    case q2_K = 10, q3_K = 11, q4_K = 12, q5_K = 13, q6_K = 14, q8_K = 15
    case iq2_xxs = 16, iq2_xs = 17, iq3_xxs = 18, iq1_s = 19, iq4_nl = 20, iq3_s = 21, iq2_s = 22, iq4_xs = 23
    case i8 = 24, i16 = 25, i32 = 26, i64 = 27, f64 = 28
    case iq1_m = 29, bf16 = 30
    case tq1_0 = 34, tq2_0 = 35
    case mxfp4 = 39, nvfp4 = 40, q1_0 = 41

    /// Elements per K-quant super-block (`QK_K`).
    static let superBlock = 256

    /// Elements per block (1 for the plain scalar types).
    public var blockSize: Int {
        switch self {
        case .f32, .f16, .bf16, .f64, .i8, .i16, .i32, .i64: 1
        case .q4_0, .q4_1, .q5_0, .q5_1, .q8_0, .q8_1, .iq4_nl, .mxfp4: 32
        case .nvfp4: 64
        case .q1_0: 128
        case .q2_K, .q3_K, .q4_K, .q5_K, .q6_K, .q8_K, .iq2_xxs, .iq2_xs, .iq3_xxs, .iq1_s, .iq3_s, .iq2_s,
             .iq4_xs, .iq1_m, .tq1_0, .tq2_0: Self.superBlock
        }
    }

    /// Bytes per block (`GGML_QUANT_SIZES` in gguf-py, `type_size` in ggml).
    public var typeSize: Int {
        let k = Self.superBlock
        return switch self {
        case .f32, .i32: 4
        case .f16, .bf16, .i16: 2
        case .f64, .i64: 8
        case .i8: 1
        case .q4_0: 2 + 16
        case .q4_1: 2 + 2 + 16
        case .q5_0: 2 + 4 + 16
        case .q5_1: 2 + 2 + 4 + 16
        case .q8_0: 2 + 32
        case .q8_1: 4 + 4 + 32
        case .q2_K: 2 + 2 + k / 16 + k / 4
        case .q3_K: 2 + k / 4 + k / 8 + 12
        case .q4_K: 2 + 2 + k / 2 + 12
        case .q5_K: 2 + 2 + k / 2 + k / 8 + 12
        case .q6_K: 2 + k / 2 + k / 4 + k / 16
        case .q8_K: 4 + k + k / 8
        case .iq2_xxs: 2 + k / 4
        case .iq2_xs: 2 + k / 4 + k / 32
        case .iq3_xxs: 2 + k / 4 + k / 8
        case .iq1_s: 2 + k / 8 + k / 16
        case .iq4_nl: 2 + 16
        case .iq3_s: 2 + k / 4 + k / 8 + k / 32 + 4
        case .iq2_s: 2 + k / 4 + k / 16
        case .iq4_xs: 2 + 2 + k / 2 + k / 64
        case .iq1_m: k / 8 + k / 16 + k / 32
        case .tq1_0: 2 + 4 * 13
        case .tq2_0: 2 + 64
        case .mxfp4: 1 + 16
        case .nvfp4: 4 + 32
        case .q1_0: 2 + 16
        }
    }

    /// Whether `dequantize(_:into:)` (and so `GGUFFile.tensor(_:)`) handles this type.
    public var canDequantize: Bool {
        switch self {
        case .f32, .f16, .bf16, .q4_0, .q4_1, .q5_0, .q5_1, .q8_0, .q2_K, .q3_K, .q4_K, .q5_K, .q6_K: true
        default: false
        }
    }

    /// ggml's name for the type (`Q4_K`, `BF16`, …).
    public var name: String {
        switch self {
        case .f32: "F32"
        case .f16: "F16"
        case .bf16: "BF16"
        case .f64: "F64"
        case .i8: "I8"
        case .i16: "I16"
        case .i32: "I32"
        case .i64: "I64"
        default: "\(self)".uppercased()
        }
    }

    /// Bytes needed for `elements` elements, nil when `elements` is not a whole number of
    /// blocks or the size overflows.
    public func byteCount(elements: Int) -> Int? {
        guard elements >= 0, elements % blockSize == 0 else { return nil }
        let (bytes, overflow) = (elements / blockSize).multipliedReportingOverflow(by: typeSize)
        return overflow ? nil : bytes
    }

    /// Dequantises `destination.count` elements (a whole number of blocks) from the blocks in
    /// `source`, which must hold exactly `destination.count / blockSize` blocks.
    ///
    /// Results are bit-identical to ggml's `dequantize_row_*` (and gguf-py's `dequantize`): the
    /// same float operations in the same order, no fused multiply-add.
    /// Preconditions (programmer errors, not file content): `canDequantize`, and matching sizes.
    public func dequantize(_ source: UnsafeRawBufferPointer, into destination: UnsafeMutableBufferPointer<Float>) {
        precondition(canDequantize, "no dequantisation kernel for \(name)")
        let n = destination.count
        precondition(n % blockSize == 0 && source.count == n / blockSize * typeSize,
                     "\(name): \(source.count) bytes for \(n) elements")
        guard n > 0, let x = source.baseAddress, let y = destination.baseAddress else { return }
        let blocks = n / blockSize
        switch self {
        case .f32: GGMLKernels.f32(x, y, n)
        case .f16: GGMLKernels.f16(x, y, n)
        case .bf16: GGMLKernels.bf16(x, y, n)
        case .q4_0: GGMLKernels.q4_0(x, y, blocks)
        case .q4_1: GGMLKernels.q4_1(x, y, blocks)
        case .q5_0: GGMLKernels.q5_0(x, y, blocks)
        case .q5_1: GGMLKernels.q5_1(x, y, blocks)
        case .q8_0: GGMLKernels.q8_0(x, y, blocks)
        case .q2_K: GGMLKernels.q2_K(x, y, blocks)
        case .q3_K: GGMLKernels.q3_K(x, y, blocks)
        case .q4_K: GGMLKernels.q4_K(x, y, blocks)
        case .q5_K: GGMLKernels.q5_K(x, y, blocks)
        case .q6_K: GGMLKernels.q6_K(x, y, blocks)
        default: preconditionFailure("no dequantisation kernel for \(name)")
        }
    }
}

/// The dequantisation kernels. Each reads `blocks` consecutive blocks at `x` and writes
/// `blocks * blockSize` floats at `y`. Byte offsets below are within one block.
enum GGMLKernels {
    @inline(__always) static func u8(_ p: UnsafeRawPointer, _ offset: Int) -> UInt8 {
        p.load(fromByteOffset: offset, as: UInt8.self)
    }

    @inline(__always) static func i8(_ p: UnsafeRawPointer, _ offset: Int) -> Float {
        Float(Int8(bitPattern: p.load(fromByteOffset: offset, as: UInt8.self)))
    }

    @inline(__always) static func half(_ p: UnsafeRawPointer, _ offset: Int) -> Float {
        Float(Float16(bitPattern: UInt16(littleEndian: p.loadUnaligned(fromByteOffset: offset, as: UInt16.self))))
    }

    /// F32: 4 bytes per element.
    static func f32(_ x: UnsafeRawPointer, _ y: UnsafeMutablePointer<Float>, _ n: Int) {
        for i in 0..<n { y[i] = Float(bitPattern: UInt32(littleEndian: x.loadUnaligned(fromByteOffset: 4 * i, as: UInt32.self))) }
    }

    /// F16: IEEE binary16, 2 bytes per element.
    static func f16(_ x: UnsafeRawPointer, _ y: UnsafeMutablePointer<Float>, _ n: Int) {
        for i in 0..<n { y[i] = half(x, 2 * i) }
    }

    /// BF16: the high 16 bits of a binary32, 2 bytes per element.
    static func bf16(_ x: UnsafeRawPointer, _ y: UnsafeMutablePointer<Float>, _ n: Int) {
        for i in 0..<n {
            y[i] = Float(bitPattern: UInt32(UInt16(littleEndian: x.loadUnaligned(fromByteOffset: 2 * i, as: UInt16.self))) << 16)
        }
    }

    /// Q4_0, 32 elements in 18 bytes: `d` f16 @0, `qs[16]` @2.
    /// Element j < 16 is the low nibble of qs[j], element j + 16 its high nibble;
    /// value = (nibble − 8) · d.
    static func q4_0(_ x: UnsafeRawPointer, _ y: UnsafeMutablePointer<Float>, _ blocks: Int) {
        for b in 0..<blocks {
            let p = x + 18 * b, o = y + 32 * b
            let d = half(p, 0)
            for j in 0..<16 {
                let q = u8(p, 2 + j)
                o[j] = Float(Int(q & 0x0F) - 8) * d
                o[j + 16] = Float(Int(q >> 4) - 8) * d
            }
        }
    }

    /// Q4_1, 32 elements in 20 bytes: `d` f16 @0, `m` f16 @2, `qs[16]` @4.
    /// Nibbles as in Q4_0; value = nibble · d + m.
    static func q4_1(_ x: UnsafeRawPointer, _ y: UnsafeMutablePointer<Float>, _ blocks: Int) {
        for b in 0..<blocks {
            let p = x + 20 * b, o = y + 32 * b
            let d = half(p, 0), m = half(p, 2)
            for j in 0..<16 {
                let q = u8(p, 4 + j)
                o[j] = Float(q & 0x0F) * d + m
                o[j + 16] = Float(q >> 4) * d + m
            }
        }
    }

    /// Q5_0, 32 elements in 22 bytes: `d` f16 @0, `qh` u32 @2 (bit j = 5th bit of element j),
    /// `qs[16]` @6 (low 4 bits, nibbles as in Q4_0); value = (q − 16) · d.
    static func q5_0(_ x: UnsafeRawPointer, _ y: UnsafeMutablePointer<Float>, _ blocks: Int) {
        for b in 0..<blocks {
            let p = x + 22 * b, o = y + 32 * b
            let d = half(p, 0)
            let qh = UInt32(littleEndian: p.loadUnaligned(fromByteOffset: 2, as: UInt32.self))
            for j in 0..<16 {
                let q = u8(p, 6 + j)
                let h0 = Int((qh >> UInt32(j)) & 1) << 4, h1 = Int((qh >> UInt32(j + 16)) & 1) << 4
                o[j] = Float((Int(q & 0x0F) | h0) - 16) * d
                o[j + 16] = Float((Int(q >> 4) | h1) - 16) * d
            }
        }
    }

    /// Q5_1, 32 elements in 24 bytes: `d` f16 @0, `m` f16 @2, `qh` u32 @4, `qs[16]` @8;
    /// 5-bit q as in Q5_0, value = q · d + m.
    static func q5_1(_ x: UnsafeRawPointer, _ y: UnsafeMutablePointer<Float>, _ blocks: Int) {
        for b in 0..<blocks {
            let p = x + 24 * b, o = y + 32 * b
            let d = half(p, 0), m = half(p, 2)
            let qh = UInt32(littleEndian: p.loadUnaligned(fromByteOffset: 4, as: UInt32.self))
            for j in 0..<16 {
                let q = u8(p, 8 + j)
                let h0 = Int((qh >> UInt32(j)) & 1) << 4, h1 = Int((qh >> UInt32(j + 16)) & 1) << 4
                o[j] = Float(Int(q & 0x0F) | h0) * d + m
                o[j + 16] = Float(Int(q >> 4) | h1) * d + m
            }
        }
    }

    /// Q8_0, 32 elements in 34 bytes: `d` f16 @0, `qs[32]` int8 @2; value = qs[j] · d.
    static func q8_0(_ x: UnsafeRawPointer, _ y: UnsafeMutablePointer<Float>, _ blocks: Int) {
        for b in 0..<blocks {
            let p = x + 34 * b, o = y + 32 * b
            let d = half(p, 0)
            for j in 0..<32 { o[j] = Float(Int8(bitPattern: u8(p, 2 + j))) * d }
        }
    }

    /// Q2_K, 256 elements in 84 bytes: `scales[16]` @0 (one byte per 16-element sub-block: low
    /// nibble scale, high nibble min), `qs[64]` @16 (2-bit quants), `d` f16 @80, `dmin` f16 @82.
    /// Element 128h + 32j + 16k + l (h < 2, j < 4, k < 2, l < 16) is
    /// q = (qs[32h + 16k + l] >> 2j) & 3 in sub-block 8h + 2j + k; value = (d·scale) · q − (dmin·min).
    static func q2_K(_ x: UnsafeRawPointer, _ y: UnsafeMutablePointer<Float>, _ blocks: Int) {
        for b in 0..<blocks {
            let p = x + 84 * b, o = y + 256 * b
            let d = half(p, 80), dmin = half(p, 82)
            for h in 0..<2 {
                for j in 0..<4 {
                    let shift = UInt8(2 * j)
                    for part in 0..<2 {
                        let sc = u8(p, 8 * h + 2 * j + part)
                        let dl = d * Float(sc & 0x0F), ml = dmin * Float(sc >> 4)
                        let base = 128 * h + 32 * j + 16 * part
                        for l in 0..<16 {
                            let q = (u8(p, 16 + 32 * h + 16 * part + l) >> shift) & 3
                            o[base + l] = dl * Float(q) - ml
                        }
                    }
                }
            }
        }
    }

    /// Q3_K, 256 elements in 110 bytes: `hmask[32]` @0 (high bits), `qs[64]` @32 (low 2 bits),
    /// `scales[12]` @96 (sixteen 6-bit scales), `d` f16 @108.
    /// Scale i: low 4 bits from byte i % 8 (low nibble for i < 8, high nibble otherwise), high 2
    /// bits from byte 8 + i % 4 at bit 2·(i / 4); the scale is that 6-bit value − 32.
    /// Element 128h + 32j + l (h < 2, j < 4, l < 32): low bits (qs[32h + l] >> 2j) & 3, high bit
    /// hmask[l] bit 4h + j; q = low − (high ? 0 : 4); sub-block 8h + 2j + l/16; value = (d·scale)·q.
    static func q3_K(_ x: UnsafeRawPointer, _ y: UnsafeMutablePointer<Float>, _ blocks: Int) {
        for b in 0..<blocks {
            let p = x + 110 * b, o = y + 256 * b
            let d = half(p, 108)
            for h in 0..<2 {
                for j in 0..<4 {
                    let shift = UInt8(2 * j), bit = UInt8(1) << UInt8(4 * h + j)
                    for part in 0..<2 {
                        let dl = d * q3Scale(p + 96, 8 * h + 2 * j + part)
                        let base = 128 * h + 32 * j + 16 * part
                        for l in 0..<16 {
                            let low = Int((u8(p, 32 + 32 * h + 16 * part + l) >> shift) & 3)
                            let high = u8(p, 16 * part + l) & bit != 0
                            o[base + l] = dl * Float(low - (high ? 0 : 4))
                        }
                    }
                }
            }
        }
    }

    /// Scale i < 16 of a Q3_K block from its 12 scale bytes `q` (see `q3_K`), as a signed value.
    @inline(__always) static func q3Scale(_ q: UnsafeRawPointer, _ i: Int) -> Float {
        let low = i < 8 ? u8(q, i) & 0x0F : u8(q, i - 8) >> 4
        let high = (u8(q, 8 + i % 4) >> UInt8(2 * (i / 4))) & 3
        return Float(Int(low | high << 4) - 32)
    }

    /// The 6-bit scale and min of sub-block j < 8 of a Q4_K/Q5_K block (`get_scale_min_k4`),
    /// from the 12 bytes `q`: j < 4: scale = q[j] & 63, min = q[j+4] & 63; otherwise
    /// scale = (q[j+4] & 15) | (q[j−4] >> 6) << 4, min = (q[j+4] >> 4) | (q[j] >> 6) << 4.
    @inline(__always) static func scaleMinK4(_ j: Int, _ q: UnsafeRawPointer) -> (Float, Float) {
        if j < 4 {
            return (Float(u8(q, j) & 63), Float(u8(q, j + 4) & 63))
        }
        let sc = (u8(q, j + 4) & 0x0F) | ((u8(q, j - 4) >> 6) << 4)
        let m = (u8(q, j + 4) >> 4) | ((u8(q, j) >> 6) << 4)
        return (Float(sc), Float(m))
    }

    /// Q4_K, 256 elements in 144 bytes: `d` f16 @0, `dmin` f16 @2, `scales[12]` @4 (eight
    /// 6-bit scale/min pairs, see `scaleMinK4`), `qs[128]` @16.
    /// Chunk c < 4 (64 elements, qs[32c..<32c+32]): element 64c + l is the low nibble of
    /// qs[32c + l] in sub-block 2c, element 64c + 32 + l the high nibble in sub-block 2c + 1;
    /// value = (d·scale) · q − (dmin·min).
    static func q4_K(_ x: UnsafeRawPointer, _ y: UnsafeMutablePointer<Float>, _ blocks: Int) {
        for b in 0..<blocks {
            let p = x + 144 * b, o = y + 256 * b
            let d = half(p, 0), dmin = half(p, 2)
            for c in 0..<4 {
                let (s1, m1) = scaleMinK4(2 * c, p + 4), (s2, m2) = scaleMinK4(2 * c + 1, p + 4)
                let d1 = d * s1, dm1 = dmin * m1, d2 = d * s2, dm2 = dmin * m2
                for l in 0..<32 {
                    let q = u8(p, 16 + 32 * c + l)
                    o[64 * c + l] = d1 * Float(q & 0x0F) - dm1
                    o[64 * c + 32 + l] = d2 * Float(q >> 4) - dm2
                }
            }
        }
    }

    /// Q5_K, 256 elements in 176 bytes: `d` f16 @0, `dmin` f16 @2, `scales[12]` @4 (as Q4_K),
    /// `qh[32]` @16, `qs[128]` @48. As Q4_K, with a fifth bit: element 64c + l adds 16 when
    /// bit 2c of qh[l] is set, element 64c + 32 + l when bit 2c + 1 is.
    static func q5_K(_ x: UnsafeRawPointer, _ y: UnsafeMutablePointer<Float>, _ blocks: Int) {
        for b in 0..<blocks {
            let p = x + 176 * b, o = y + 256 * b
            let d = half(p, 0), dmin = half(p, 2)
            for c in 0..<4 {
                let (s1, m1) = scaleMinK4(2 * c, p + 4), (s2, m2) = scaleMinK4(2 * c + 1, p + 4)
                let d1 = d * s1, dm1 = dmin * m1, d2 = d * s2, dm2 = dmin * m2
                let u1 = UInt8(1) << UInt8(2 * c), u2 = UInt8(2) << UInt8(2 * c)
                for l in 0..<32 {
                    let q = u8(p, 48 + 32 * c + l), h = u8(p, 16 + l)
                    o[64 * c + l] = d1 * Float(Int(q & 0x0F) + (h & u1 != 0 ? 16 : 0)) - dm1
                    o[64 * c + 32 + l] = d2 * Float(Int(q >> 4) + (h & u2 != 0 ? 16 : 0)) - dm2
                }
            }
        }
    }

    /// Q6_K, 256 elements in 210 bytes: `ql[128]` @0 (low 4 bits), `qh[64]` @128 (high 2 bits),
    /// `scales[16]` int8 @192, `d` f16 @208.
    /// Half h < 2 (128 elements; ql[64h...], qh[32h...], scales[8h...]), l < 32, s = l / 16:
    ///   element 128h + l      = (ql[64h + l] & 15)      | ((qh[32h + l] >> 0) & 3) << 4, scale 8h + s
    ///   element 128h + 32 + l = (ql[64h + 32 + l] & 15) | ((qh[32h + l] >> 2) & 3) << 4, scale 8h + s + 2
    ///   element 128h + 64 + l = (ql[64h + l] >> 4)      | ((qh[32h + l] >> 4) & 3) << 4, scale 8h + s + 4
    ///   element 128h + 96 + l = (ql[64h + 32 + l] >> 4) | ((qh[32h + l] >> 6) & 3) << 4, scale 8h + s + 6
    /// value = (d · scale) · (q − 32).
    static func q6_K(_ x: UnsafeRawPointer, _ y: UnsafeMutablePointer<Float>, _ blocks: Int) {
        for b in 0..<blocks {
            let p = x + 210 * b, o = y + 256 * b
            let d = half(p, 208)
            for h in 0..<2 {
                let ql = 64 * h, qh = 128 + 32 * h, sc = 192 + 8 * h, out = 128 * h
                for l in 0..<32 {
                    let s = l / 16
                    let a = u8(p, ql + l), c = u8(p, ql + 32 + l), hi = u8(p, qh + l)
                    let q1 = Int((a & 0x0F) | ((hi >> 0) & 3) << 4) - 32
                    let q2 = Int((c & 0x0F) | ((hi >> 2) & 3) << 4) - 32
                    let q3 = Int((a >> 4) | ((hi >> 4) & 3) << 4) - 32
                    let q4 = Int((c >> 4) | ((hi >> 6) & 3) << 4) - 32
                    o[out + l] = d * i8(p, sc + s) * Float(q1)
                    o[out + 32 + l] = d * i8(p, sc + s + 2) * Float(q2)
                    o[out + 64 + l] = d * i8(p, sc + s + 4) * Float(q3)
                    o[out + 96 + l] = d * i8(p, sc + s + 6) * Float(q4)
                }
            }
        }
    }
}
