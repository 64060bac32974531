import Foundation
import Formats
import Kernels
import ModelStore
import TestSupport
import Testing

/// Little-endian byte builders for hand-made GGUF files.
enum GGUFBytes {
    static func u32(_ v: UInt32) -> [UInt8] { withUnsafeBytes(of: v.littleEndian, Array.init) }
    static func u64(_ v: UInt64) -> [UInt8] { withUnsafeBytes(of: v.littleEndian, Array.init) }
    static func string(_ s: String) -> [UInt8] { u64(UInt64(s.utf8.count)) + Array(s.utf8) }

    /// A metadata entry: key, value type, value bytes.
    static func kv(_ key: String, type: UInt32, _ value: [UInt8]) -> [UInt8] { string(key) + u32(type) + value }
    static func kvString(_ key: String, _ value: String) -> [UInt8] { kv(key, type: 8, string(value)) }
    static func kvU32(_ key: String, _ value: UInt32) -> [UInt8] { kv(key, type: 4, u32(value)) }

    /// A tensor info: name, n_dims, ne[], type, offset.
    static func tensor(_ name: String, _ ne: [UInt64], type: UInt32 = 0, offset: UInt64 = 0) -> [UInt8] {
        string(name) + u32(UInt32(ne.count)) + ne.flatMap(u64) + u32(type) + u64(offset)
    }

    /// Header + metadata + tensor infos, zero-padded to `alignment`, then `data`.
    static func file(version: UInt32 = 3, kvs: [[UInt8]] = [], tensors: [[UInt8]] = [], data: [UInt8] = [],
                     alignment: Int = 32, tensorCount: UInt64? = nil, kvCount: UInt64? = nil) -> [UInt8] {
        var b = Array("GGUF".utf8) + u32(version) + u64(tensorCount ?? UInt64(tensors.count)) + u64(kvCount ?? UInt64(kvs.count))
        b += kvs.flatMap { $0 } + tensors.flatMap { $0 }
        if !data.isEmpty {
            b += [UInt8](repeating: 0, count: (alignment - b.count % alignment) % alignment)
            b += data
        }
        return b
    }

    static func floats(_ values: [Float]) -> [UInt8] { values.flatMap { u32($0.bitPattern) } }
}

/// max |a − b| over all elements (Double), after checking shapes agree.
private func maxDifference(_ a: Tensor, _ b: Tensor) -> Double {
    #expect(a.shape == b.shape)
    guard a.count == b.count else { return .infinity }
    return maxAbsoluteDifference(a, b)
}

@Suite("GGUF reader")
struct GGUFTests {
    static let directory = fixturesDirectory.appendingPathComponent("gguf")

    // MARK: 1. Dequantisation against gguf-py

    @Test func dequantisationMatchesGGUFPy() throws {
        let file = try GGUFFile(url: Self.directory.appendingPathComponent("quants.gguf"))
        let expected = try SafeTensorsFile(url: Self.directory.appendingPathComponent("quants.safetensors"))
        #expect(file.version == 3)
        #expect(Set(expected.names) == Set(file.tensorInfos.map(\.name)).subtracting(["unsupported.iq4_nl"]))
        let types: [String: GGMLType] = [
            "f32": .f32, "f16": .f16, "bf16": .bf16, "q4_0": .q4_0, "q4_1": .q4_1, "q5_0": .q5_0, "q5_1": .q5_1, "q8_0": .q8_0,
            "q2_k": .q2_K, "q3_k": .q3_K, "q4_k": .q4_K, "q5_k": .q5_K, "q6_k": .q6_K,
        ]
        for name in expected.names {
            let info = try file.info(name)
            let typeName = String(name.prefix { $0 != "." })
            #expect(info.type == types[typeName], "\(name)")
            let ours = try file.tensor(name)
            let theirs = try expected.tensor(name)
            #expect(ours.shape == info.shape && info.dimensions == info.shape.reversed())
            let diff = maxDifference(ours, theirs)
            print("GGUF dequantise \(name) (\(info.type.name), shape \(info.shape)): max |Swift − gguf-py| = \(diff)")
            #expect(diff == 0, "\(name): dequantisation must be bit-exact")
            #expect(ours.isBitIdentical(to: theirs), "\(name)")
        }
        #expect(try file.info("q8_0.3d").dimensions == [64, 3, 2])
        // Row slices agree with the whole tensor.
        let whole = try file.tensor("q6_k.raw")
        let rows = try file.tensor("q6_k.raw", rows: 1..<3)
        #expect(rows.shape == [2, 512])
        #expect(Array(whole.scalars[512..<1536]) == rows.scalars)
        #expect(throws: GGUFError.rowsOutOfRange(name: "q6_k.raw", rows: 3..<5, rowCount: 4)) { try file.tensor("q6_k.raw", rows: 3..<5) }
        // Parsed but not dequantised.
        #expect(try file.info("unsupported.iq4_nl").type == .iq4_nl)
        #expect(throws: GGUFError.unsupportedTensorType(name: "unsupported.iq4_nl", type: .iq4_nl)) { try file.tensor("unsupported.iq4_nl") }
        #expect(throws: GGUFError.missingTensor("nope")) { try file.tensor("nope") }
        #expect(try file.rawBytes("q4_k.raw").count == 4 * 2 * 144)
    }

    @Test func blockSizes() {
        let expected: [GGMLType: (Int, Int)] = [
            .f32: (1, 4), .f16: (1, 2), .bf16: (1, 2), .q4_0: (32, 18), .q4_1: (32, 20), .q5_0: (32, 22), .q5_1: (32, 24),
            .q8_0: (32, 34), .q8_1: (32, 40), .q2_K: (256, 84), .q3_K: (256, 110), .q4_K: (256, 144), .q5_K: (256, 176),
            .q6_K: (256, 210), .q8_K: (256, 292), .iq4_nl: (32, 18), .iq4_xs: (256, 136), .tq2_0: (256, 66), .mxfp4: (32, 17),
        ]
        for (type, (block, size)) in expected {
            #expect(type.blockSize == block && type.typeSize == size, "\(type.name)")
        }
        #expect(GGMLType.q4_K.name == "Q4_K" && GGMLType.iq2_xxs.name == "IQ2_XXS" && GGMLType.bf16.name == "BF16")
        #expect(GGMLType.q4_0.byteCount(elements: 64) == 36 && GGMLType.q4_0.byteCount(elements: 48) == nil)
    }

    // MARK: 2. Metadata value types

    @Test func metadataRoundTrips() throws {
        let file = try GGUFFile(url: Self.directory.appendingPathComponent("metadata.gguf"))
        let m = file.metadata
        #expect(m["general.architecture"] == .string("test"))
        #expect(m["general.alignment"] == .uint32(64) && file.alignment == 64)
        #expect(m["t.u8"] == .uint8(200))
        #expect(m["t.i8"] == .int8(-100))
        #expect(m["t.u16"] == .uint16(60000))
        #expect(m["t.i16"] == .int16(-30000))
        #expect(m["t.u32"] == .uint32(4_000_000_000))
        #expect(m["t.i32"] == .int32(-2_000_000_000))
        #expect(m["t.f32"] == .float32(0.1))
        #expect(m["t.bool"] == .bool(true) && m["t.bool_false"] == .bool(false))
        #expect(m["t.string"] == .string("héllo ✓ 日本"))
        #expect(m["t.u64"] == .uint64(.max))
        #expect(m["t.i64"] == .int64(.min))
        #expect(m["t.f64"] == .float64(1.0 / 3.0))
        #expect(m["t.strings"]?.strings == ["a", "", "Ġthe", "<|im_start|>"])
        #expect(m["t.u64s"] == .array([.uint64(1), .uint64(1 << 40)]))
        #expect(m["t.f32s"]?.doubles == [0.5, -1.25])
        #expect(m["t.bools"] == .array([.bool(true), .bool(false), .bool(true)]))
        #expect(m["t.nested"] == .array([.array([.int32(1), .int32(2)]), .array([.int32(3), .int32(4), .int32(5)])]))
        #expect(m["t.nested"]?.array?.compactMap(\.ints) == [[1, 2], [3, 4, 5]])
        #expect(m["t.nested_strings"] == .array([.array([.string("x")]), .array([.string("y"), .string("z")])]))
        #expect(file.metadataKeys == ["general.architecture", "general.alignment", "t.u8", "t.i8", "t.u16", "t.i16", "t.u32",
                                      "t.i32", "t.f32", "t.bool", "t.bool_false", "t.string", "t.u64", "t.i64", "t.f64",
                                      "t.strings", "t.u64s", "t.f32s", "t.bools", "t.nested", "t.nested_strings"])
        // Accessors.
        #expect(m["t.u8"]?.int == 200 && m["t.i64"]?.int == Int(Int64.min) && m["t.u64"]?.int == nil)
        #expect(m["t.u64"]?.double == 18_446_744_073_709_551_615.0 && m["t.i16"]?.double == -30000)
        #expect(m["t.string"]?.int == nil && m["t.bool"]?.bool == true && m["t.u8"]?.bool == nil)
        #expect(try file.int("t.u32") == 4_000_000_000 && file.double("t.f64") == 1.0 / 3.0 && file.string("t.string") == "héllo ✓ 日本")
        #expect(throws: GGUFError.missingKey("nope")) { try file.int("nope") }
        #expect(throws: GGUFError.wrongValueType(key: "t.string", expected: "an integer", found: .string)) { try file.int("t.string") }
        // Tensors after a 64-byte alignment.
        let expected = try SafeTensorsFile(url: Self.directory.appendingPathComponent("metadata.safetensors"))
        #expect(file.dataOffset % 64 == 0 && file.tensorInfos.map(\.offset) == [0, 64])
        for name in ["a", "b"] {
            let diff = maxDifference(try file.tensor(name), try expected.tensor(name))
            print("GGUF metadata fixture tensor \(name): max difference \(diff)")
            #expect(diff == 0)
        }
    }

    @Test func readsVersion2AndEmptyArrays() throws {
        typealias B = GGUFBytes
        let bytes = B.file(version: 2, kvs: [B.kv("empty", type: 9, B.u32(8) + B.u64(0)), B.kvU32("n", 7)],
                           tensors: [B.tensor("w", [2, 1]), B.tensor("z", [0, 3])], data: B.floats([1.5, -2]))
        let file = try GGUFFile(data: Data(bytes))
        #expect(file.version == 2 && file.metadata["empty"] == .array([]) && file.metadata["empty"]?.strings == [])
        #expect(try file.tensor("w").scalars == [1.5, -2] && file.tensor("w").shape == [1, 2])
        #expect(try file.tensor("z").shape == [3, 0])
        // No tensors and no data: the file may end right after the metadata.
        let empty = try GGUFFile(data: Data(B.file(kvs: [B.kvString("general.architecture", "x")])))
        #expect(empty.tensorInfos.isEmpty && empty.metadataKeys == ["general.architecture"])
    }

    // MARK: 3. Broken files

    static let brokenFiles: [(String, [UInt8], GGUFError)] = {
        typealias B = GGUFBytes
        let w = B.tensor("w", [4])                       // F32, 16 bytes at offset 0
        let valid = B.file(kvs: [B.kvString("general.name", "hello")], tensors: [w], data: B.floats([1, 2, 3, 4]))
        let nameValueOffset = 24 + 8 + "general.name".utf8.count + 4
        let tensorInfoOffset = 24 + B.kvString("general.name", "hello").count
        return [
            ("empty", [], .truncated(what: "the magic number", offset: 0)),
            ("bad magic", Array("GGML".utf8) + Array(valid.dropFirst(4)), .badMagic(found: 0x4C4D_4747)),
            ("version 1", B.file(version: 1), .unsupportedVersion(1)),
            ("big-endian", Array("GGUF".utf8) + B.u32(UInt32(3).byteSwapped) + B.u64(0) + B.u64(0), .unsupportedVersion(0x0300_0000)),
            ("truncated header", Array(valid.prefix(13)), .truncated(what: "the tensor count", offset: 8)),
            ("truncated in a metadata string", Array(valid.prefix(nameValueOffset + 8 + 2)),
             .truncated(what: "metadata 'general.name'", offset: nameValueOffset)),
            ("truncated in tensor infos", Array(valid.prefix(tensorInfoOffset + 8 + 1 + 4 + 3)),
             .truncated(what: "dimension 0 of tensor 'w'", offset: tensorInfoOffset + 8 + 1 + 4)),
            ("truncated before the data", Array(valid.prefix(tensorInfoOffset + w.count + 1)),
             .truncated(what: "the padding before the data section", offset: tensorInfoOffset + w.count)),
            ("truncated in data", Array(valid.dropLast(4)), .tensorOutOfRange(name: "w", offset: 0, byteCount: 16, dataSize: 12)),
            ("key length 2^62", B.file(kvCount: 1) + B.u64(1 << 62) + [0, 0, 0, 0, 0],
             .stringTooLong(what: "metadata key #0", length: 1 << 62, offset: 24)),
            ("string value length 2^62", B.file(kvs: [B.kv("k", type: 8, B.u64(1 << 62) + [1, 2, 3])]),
             .stringTooLong(what: "metadata 'k'", length: 1 << 62, offset: 24 + 9 + 4)),
            ("array count 2^62", B.file(kvs: [B.kv("k", type: 9, B.u32(0) + B.u64(1 << 62) + [1, 2, 3])]),
             .countTooLarge(what: "array 'k'", count: 1 << 62, offset: 24 + 9 + 4)),
            ("string array count 2^62", B.file(kvs: [B.kv("k", type: 9, B.u32(8) + B.u64(1 << 62))]),
             .countTooLarge(what: "array 'k'", count: 1 << 62, offset: 24 + 9 + 4)),
            ("array longer than the rest of the file", B.file(kvs: [B.kv("k", type: 9, B.u32(4) + B.u64(3) + B.u32(1) + B.u32(2))]),
             .truncated(what: "array 'k'", offset: 24 + 9 + 4)),
            ("metadata count 2^62", B.file(kvCount: 1 << 62), .countTooLarge(what: "metadata count", count: 1 << 62, offset: 16)),
            ("tensor count 2^62", B.file(tensorCount: 1 << 62), .countTooLarge(what: "tensor count", count: 1 << 62, offset: 8)),
            ("duplicate key", B.file(kvs: [B.kvU32("a", 1), B.kvU32("a", 2)]), .duplicateKey("a")),
            ("duplicate tensor", B.file(tensors: [w, B.tensor("w", [4], offset: 32)], data: B.floats(Array(repeating: 0, count: 16))),
             .duplicateTensor("w")),
            ("tensor past the end", B.file(tensors: [B.tensor("w", [4], offset: 32)], data: B.floats([1, 2, 3, 4])),
             .tensorOutOfRange(name: "w", offset: 32, byteCount: 16, dataSize: 16)),
            ("tensor offset 2^63", B.file(tensors: [B.tensor("w", [4], offset: 1 << 63)], data: B.floats([1, 2, 3, 4])),
             .tensorOutOfRange(name: "w", offset: 1 << 63, byteCount: 16, dataSize: 16)),
            ("overlapping tensors", B.file(tensors: [B.tensor("a", [16]), B.tensor("b", [8], offset: 32)], data: B.floats(Array(repeating: 0, count: 24))),
             .overlappingTensors("a", "b")),
            ("misaligned offset", B.file(tensors: [B.tensor("w", [1], offset: 4)], data: B.floats([1, 2])),
             .misalignedTensor(name: "w", offset: 4, alignment: 32)),
            ("unknown value type", B.file(kvs: [B.kv("k", type: 13, B.u32(0))]), .invalidValueType(key: "k", raw: 13)),
            ("unknown array element type", B.file(kvs: [B.kv("k", type: 9, B.u32(77) + B.u64(0))]), .invalidValueType(key: "k", raw: 77)),
            ("unknown tensor type", B.file(tensors: [B.tensor("w", [4], type: 99)], data: B.floats([1, 2, 3, 4])),
             .unknownTensorType(name: "w", raw: 99)),
            ("removed tensor type Q4_2", B.file(tensors: [B.tensor("w", [32], type: 4)], data: B.floats([1, 2, 3, 4])),
             .unknownTensorType(name: "w", raw: 4)),
            ("n_dims 0", B.file(tensors: [B.tensor("w", [])], data: B.floats([1])), .invalidDimensionCount(name: "w", count: 0)),
            ("n_dims 5", B.file(tensors: [B.tensor("w", [1, 1, 1, 1, 1])], data: B.floats([1])), .invalidDimensionCount(name: "w", count: 5)),
            ("n_dims 2^32-1", B.file(tensors: [B.string("w") + B.u32(.max) + [UInt8](repeating: 0, count: 32)]),
             .invalidDimensionCount(name: "w", count: .max)),
            ("element count overflow", B.file(tensors: [B.tensor("w", [1 << 62, 4])], data: B.floats([1])),
             .invalidDimensions(name: "w", dimensions: [1 << 62, 4])),
            ("byte count overflow", B.file(tensors: [B.tensor("w", [1 << 62])], data: B.floats([1])),
             .invalidDimensions(name: "w", dimensions: [1 << 62])),
            // Zero elements, but the other dimensions multiply past Int.max: later products of
            // them (the row count, the shape reversed) would trap.
            ("zero row length with 2^80 rows", B.file(tensors: [B.tensor("w", [0, 1 << 40, 1 << 40])]),
             .invalidDimensions(name: "w", dimensions: [0, 1 << 40, 1 << 40])),
            ("row of 2^62 floats, zero rows", B.file(tensors: [B.tensor("w", [1 << 62, 0])]),
             .invalidDimensions(name: "w", dimensions: [1 << 62, 0])),
            ("dimension above Int.max", B.file(tensors: [B.tensor("w", [1 << 63])], data: B.floats([1])),
             .invalidDimensions(name: "w", dimensions: [1 << 63])),
            ("row not a multiple of the block", B.file(tensors: [B.tensor("w", [16, 2], type: 2)], data: B.floats([1])),
             .rowNotMultipleOfBlock(name: "w", rowLength: 16, type: .q4_0)),
            ("zero alignment", B.file(kvs: [B.kvU32("general.alignment", 0)]), .invalidAlignment(.uint32(0))),
            ("alignment 48", B.file(kvs: [B.kvU32("general.alignment", 48)]), .invalidAlignment(.uint32(48))),
            ("string alignment", B.file(kvs: [B.kvString("general.alignment", "32")]), .invalidAlignment(.string("32"))),
            ("invalid UTF-8 key", B.file(kvCount: 1) + B.u64(2) + [0xC3, 0x28] + B.u32(4) + B.u32(1),
             .invalidUTF8(what: "metadata key #0", offset: 24)),
            ("arrays nested 10 deep", B.file(kvs: [B.kv("k", type: 9, (0..<9).flatMap { _ in B.u32(9) + B.u64(1) } + B.u32(4) + B.u64(0))]),
             .nestingTooDeep(key: "k", offset: 24 + 9 + 4 + 8 * 12)),
        ]
    }()

    @Test(arguments: 0..<brokenFiles.count)
    func rejectsBrokenFiles(index: Int) {
        let (what, bytes, expected) = Self.brokenFiles[index]
        #expect(throws: expected, "\(what)") { try GGUFFile(data: Data(bytes)) }
        do {
            _ = try GGUFFile(data: Data(bytes))
        } catch {
            #expect(!error.description.isEmpty)
        }
    }

    @Test func namesThePathOfAFile() throws {
        let url = FileManager.default.temporaryDirectory.appendingPathComponent("gguf-test-\(UUID().uuidString).gguf")
        try Data(GGUFBytes.file(version: 1)).write(to: url)
        defer { try? FileManager.default.removeItem(at: url) }
        #expect(throws: GGUFError.inFile(path: url.path, .unsupportedVersion(1))) { try GGUFFile(url: url) }
        do {
            _ = try GGUFFile(url: url)
        } catch {
            #expect(error.underlying == .unsupportedVersion(1))
            #expect(error.description.hasPrefix(url.path) && error.description.contains("version 1"))
            print("GGUF error message: \(error)")
        }
        #expect(throws: GGUFError.self) { try GGUFFile(url: URL(fileURLWithPath: "/nonexistent/x.gguf")) }
    }

    /// Every prefix of a valid file, and random byte corruptions of it, give an error or a
    /// consistent file — never a crash.
    @Test func survivesTruncationAndCorruption() throws {
        let valid = try Data(contentsOf: Self.directory.appendingPathComponent("metadata.gguf"))
        let full = try GGUFFile(data: valid)
        let end = full.dataOffset + full.tensorInfos.map { $0.offset + $0.byteCount }.max()!
        for n in 0..<valid.count {
            if n < end {
                #expect(throws: GGUFError.self, "prefix \(n)") { try GGUFFile(data: valid.prefix(n)) }
            } else {
                #expect(try GGUFFile(data: valid.prefix(n)).tensorInfos.count == 2, "prefix \(n): only padding missing")
            }
        }
        var rng = SplitMix64(seed: 42)
        var parsed = 0
        for _ in 0..<3000 {
            var bytes = [UInt8](valid)
            for _ in 0..<(1 + Int(rng.next() % 3)) {
                let i = Int(rng.next() % UInt64(bytes.count))
                bytes[i] = rng.next() % 4 == 0 ? 0xFF : UInt8(truncatingIfNeeded: rng.next())
            }
            if let file = try? GGUFFile(data: Data(bytes)) {
                parsed += 1
                for info in file.tensorInfos where info.type.canDequantize {
                    _ = try? file.tensor(info.name)
                }
            }
        }
        print("GGUF corruption fuzz: 3000 corrupted files, \(parsed) still parsed, none crashed")
    }

    // MARK: 4. The real SmolLM2 file

    @Test func readsSmolLM2() throws {
        let url = try realModel(.smolLM2)
        let start = ContinuousClock.now
        let file = try GGUFFile(url: url)
        let elapsed = ContinuousClock.now - start
        print("GGUF parse of \(url.lastPathComponent): \(elapsed) (debug build)")

        #expect(file.version == 3)
        #expect(try file.string("general.architecture") == "llama")
        #expect(try file.int("llama.block_count") == 30)
        #expect(try file.int("llama.embedding_length") == 576)
        #expect(try file.int("llama.attention.head_count") == 9)
        #expect(try file.int("llama.attention.head_count_kv") == 3)
        #expect(try file.int("llama.feed_forward_length") == 1536)
        #expect(try file.double("llama.rope.freq_base") == 100_000)
        #expect(file.metadata["llama.attention.layer_norm_rms_epsilon"] == .float32(1e-5))
        #expect(try file.string("tokenizer.ggml.model") == "gpt2")
        #expect(try file.string("tokenizer.ggml.pre") == "smollm")
        let tokens = try file.strings("tokenizer.ggml.tokens")
        #expect(tokens.count == 49152)
        #expect(tokens.prefix(3) == ["<|endoftext|>", "<|im_start|>", "<|im_end|>"])
        #expect(try file.strings("tokenizer.ggml.merges").count == 48900)
        #expect(file.metadata["tokenizer.ggml.token_type"]?.ints?.count == 49152)
        #expect(try file.int("tokenizer.ggml.bos_token_id") == 1 && file.int("tokenizer.ggml.eos_token_id") == 2)
        #expect(file.alignment == 32 && file.metadataKeys.count == 33 && file.tensorInfos.count == 272)

        var types: [GGMLType: Int] = [:]
        for info in file.tensorInfos { types[info.type, default: 0] += 1 }
        #expect(types == [.q4_1: 210, .f32: 61, .q8_0: 1])
        #expect(try file.info("token_embd.weight").type == .q8_0 && file.info("token_embd.weight").shape == [49152, 576])
        #expect(try file.info("blk.0.attn_q.weight").type == .q4_1 && file.info("blk.0.attn_q.weight").shape == [576, 576])
        #expect(try file.info("blk.0.attn_k.weight").shape == [192, 576])
        #expect(try file.info("blk.0.ffn_down.weight").shape == [576, 1536])
        #expect(try file.info("blk.0.attn_norm.weight").type == .f32 && file.info("output_norm.weight").shape == [576])
        #expect(file.tensorInfos.allSatisfy { !$0.name.hasPrefix("output.") }, "tied embeddings: no output.weight")

        print("GGUF SmolLM2 metadata (\(file.metadataKeys.count) keys):")
        for key in file.metadataKeys {
            let v = file.metadata[key]!
            switch v {
            case let .array(a): print("  \(key): array of \(a.first.map { "\($0.type)" } ?? "?") × \(a.count)")
            case let .string(s) where s.count > 60: print("  \(key): string (\(s.utf8.count) bytes)")
            default: print("  \(key): \(v.type) = \(v)")
            }
        }
        print("GGUF SmolLM2 tensors (block 0 and non-block):")
        for info in file.tensorInfos where !info.name.hasPrefix("blk.") || info.name.hasPrefix("blk.0.") {
            print("  \(info.name): \(info.type.name) shape \(info.shape) (ne \(info.dimensions)) at \(info.offset), \(info.byteCount) bytes")
        }

        // Dequantised values against gguf-py's.
        let expected = try SafeTensorsFile(url: Self.directory.appendingPathComponent("smollm2.safetensors"))
        for name in ["blk.0.attn_q.weight", "token_embd.weight", "blk.0.ffn_down.weight", "blk.29.attn_v.weight"] {
            let info = try file.info(name)
            let rows = try file.tensor(name, rows: 0..<2)
            let last = try file.tensor(name, rows: (info.rowCount - 1)..<info.rowCount)
            let d1 = maxDifference(rows, try expected.tensor(name + ".rows01"))
            let d2 = maxDifference(last, try expected.tensor(name + ".last_row"))
            print("GGUF SmolLM2 \(name) (\(info.type.name)): rows 0-1 max diff \(d1), last row max diff \(d2)")
            #expect(d1 == 0 && d2 == 0, "\(name)")
            if name != "token_embd.weight" {
                let whole = try file.tensor(name)
                #expect(whole.shape == info.shape)
                var sum = 0.0
                for i in 0..<whole.count { sum += Double(whole[i]) }
                let reference = Double(try expected.tensor(name + ".sum")[0])
                print("GGUF SmolLM2 \(name): sum \(sum) vs gguf-py \(reference)")
                #expect(abs(sum - reference) <= 1e-3 * max(1, abs(reference)))
                #expect(whole.isBitIdentical(to: try file.tensor(name, rows: 0..<info.rowCount).reshaped(info.shape)))
            }
        }
        for name in ["blk.0.attn_norm.weight", "output_norm.weight"] {
            let diff = maxDifference(try file.tensor(name), try expected.tensor(name))
            print("GGUF SmolLM2 \(name) (F32): max diff \(diff)")
            #expect(diff == 0)
        }
    }
}

private extension Tensor {
    func reshaped(_ shape: [Int]) -> Tensor {
        reshape(shape)
        return self
    }
}
