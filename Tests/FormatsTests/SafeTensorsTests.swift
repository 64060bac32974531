import Foundation
import Formats
import Kernels
import TestSupport
import Testing

/// Builds a safetensors file by hand: 8-byte little-endian header size, header, data.
func safetensorsBytes(header: String, data: [UInt8]) -> Data {
    let h = Array(header.utf8)
    var bytes = withUnsafeBytes(of: UInt64(h.count).littleEndian, Array.init)
    bytes += h + data
    return Data(bytes)
}

func littleEndianBytes<T: FixedWidthInteger>(_ values: [T]) -> [UInt8] {
    values.flatMap { withUnsafeBytes(of: $0.littleEndian, Array.init) }
}

@Suite("safetensors reader")
struct SafeTensorsTests {
    @Test func readsTheFixtureFiles() throws {
        let file = try SafeTensorsFile(url: fixturesDirectory.appendingPathComponent("tiny-llama/model.safetensors"))
        #expect(file.names.contains("model.embed_tokens.weight"))
        let embed = try file.tensor("model.embed_tokens.weight")
        #expect(embed.shape == [256, 64] && embed.isFinite)
        let reference = try SafeTensorsFile(url: fixturesDirectory.appendingPathComponent("tiny-llama/reference.safetensors"))
        #expect(try reference.integers("input_ids").count == 16)
        #expect(throws: SafeTensorsError.notIntegral(tensor: "logits", dtype: "F32")) { try reference.integers("logits") }
        #expect(throws: SafeTensorsError.missingTensor("nope")) { try reference.tensor("nope") }
    }

    @Test func convertsF16AndBF16() throws {
        let f16: [UInt16] = [Float16(1.5).bitPattern, Float16(-0.25).bitPattern]
        let bf16: [UInt16] = [UInt16(Float(3.0).bitPattern >> 16), UInt16(Float(-2.5).bitPattern >> 16)]
        let f32 = littleEndianBytes([Float(7.25).bitPattern])
        let header = #"{"a":{"dtype":"F16","shape":[2],"data_offsets":[0,4]},"b":{"dtype":"BF16","shape":[2],"data_offsets":[4,8]},"c":{"dtype":"F32","shape":[1,1],"data_offsets":[8,12]},"__metadata__":{"format":"pt"}}"#
        let file = try SafeTensorsFile(data: safetensorsBytes(header: header, data: littleEndianBytes(f16) + littleEndianBytes(bf16) + f32))
        #expect(try file.tensor("a").scalars == [1.5, -0.25])
        #expect(try file.tensor("b").scalars == [3.0, -2.5])
        #expect(try file.tensor("c").shape == [1, 1])
        #expect(try file.tensor("c")[0] == 7.25)
        #expect(file.metadata == ["format": "pt"])
    }

    static let brokenFiles: [(String, Data, SafeTensorsError)] = [
        ("too short", Data([1, 2, 3]), .truncatedHeader(fileSize: 3)),
        ("header larger than file", safetensorsBytes(header: "{}", data: []).prefix(9), .headerSizeOutOfRange(declared: 2, fileSize: 9)),
        ("unsupported dtype", safetensorsBytes(header: #"{"a":{"dtype":"F8_E4M3","shape":[1],"data_offsets":[0,1]}}"#, data: [0]),
         .unsupportedDType(tensor: "a", dtype: "F8_E4M3")),
        ("size mismatch", safetensorsBytes(header: #"{"a":{"dtype":"F32","shape":[2],"data_offsets":[0,4]}}"#, data: [0, 0, 0, 0]),
         .sizeMismatch(tensor: "a", expectedBytes: 8, declaredBytes: 4)),
        ("offsets past the end", safetensorsBytes(header: #"{"a":{"dtype":"F32","shape":[1],"data_offsets":[4,8]}}"#, data: [0, 0, 0, 0]),
         .offsetsOutOfRange(tensor: "a", begin: 4, end: 8, dataSize: 4)),
        ("overlap", safetensorsBytes(header: #"{"a":{"dtype":"F32","shape":[1],"data_offsets":[0,4]},"b":{"dtype":"F16","shape":[2],"data_offsets":[2,6]}}"#, data: [UInt8](repeating: 0, count: 6)),
         .overlappingTensors("a", "b")),
        ("hole", safetensorsBytes(header: #"{"a":{"dtype":"F16","shape":[1],"data_offsets":[2,4]}}"#, data: [0, 0, 0, 0]),
         .unindexedBytes(at: 0)),
        ("trailing bytes", safetensorsBytes(header: #"{"a":{"dtype":"F16","shape":[1],"data_offsets":[0,2]}}"#, data: [0, 0, 0]),
         .unindexedBytes(at: 2)),
        ("overflowing shape", safetensorsBytes(header: #"{"a":{"dtype":"F32","shape":[4611686018427387904,4],"data_offsets":[0,4]}}"#, data: [0, 0, 0, 0]),
         .invalidShape(tensor: "a", shape: [4611686018427387904, 4])),
        // Zero bytes, but the other dimensions multiply past Int.max (2^40 · 2^40).
        ("zero dimension first, 2^80 after", safetensorsBytes(header: #"{"a":{"dtype":"F32","shape":[0,1099511627776,1099511627776],"data_offsets":[0,0]}}"#, data: []),
         .invalidShape(tensor: "a", shape: [0, 1099511627776, 1099511627776])),
    ]

    @Test(arguments: 0..<brokenFiles.count)
    func rejectsBrokenFiles(index: Int) {
        let (what, data, expected) = Self.brokenFiles[index]
        #expect(throws: expected, "\(what)") { try SafeTensorsFile(data: data) }
    }

    @Test func rejectsMalformedHeaders() {
        for header in ["not json", "[1, 2]", #"{"a": 3}"#, #"{"a":{"dtype":"F32","shape":[-1],"data_offsets":[0,0]}}"#,
                       #"{"__metadata__":{"x":1}}"#] {
            #expect(throws: SafeTensorsError.self, "\(header)") { try SafeTensorsFile(data: safetensorsBytes(header: header, data: [])) }
        }
        #expect(throws: SafeTensorsError.self) { try SafeTensorsFile(url: URL(fileURLWithPath: "/nonexistent/x.safetensors")) }
    }
}

@Suite("safetensors header numbers")
struct SafeTensorsHeaderNumberTests {
    /// Shapes and offsets must be exact non-negative integers: JSON that a lenient reader would
    /// round, truncate or wrap is refused.
    @Test(arguments: [
        #"{"a":{"dtype":"F32","shape":[1.7],"data_offsets":[0,4]}}"#,
        #"{"a":{"dtype":"F32","shape":[true],"data_offsets":[0,4]}}"#,
        #"{"a":{"dtype":"F32","shape":[1],"data_offsets":[0.0,4.9]}}"#,
        #"{"a":{"dtype":"F32","shape":[18446744073709551617],"data_offsets":[0,4]}}"#,
        #"{"a":{"dtype":"F32","shape":[1],"data_offsets":[0]}}"#,
        #"{"a":{"dtype":"F32","shape":"1","data_offsets":[0,4]}}"#,
    ])
    func refusesInexactNumbers(header: String) {
        #expect(throws: SafeTensorsError.self) { try SafeTensorsFile(data: safetensorsBytes(header: header, data: [0, 0, 0, 0])) }
    }
}
