import Foundation
import Formats
import Kernels
import TestSupport
import Testing

func temporaryDirectory() throws -> URL {
    let url = URL(fileURLWithPath: NSTemporaryDirectory()).appendingPathComponent("swift-lora-\(UUID().uuidString)")
    try FileManager.default.createDirectory(at: url, withIntermediateDirectories: true)
    return url
}

@Suite("safetensors writer and sharded checkpoints")
struct SafeTensorsWriterTests {
    @Test(arguments: [SafeTensorsWriter.StorageType.f32, .f16, .bf16])
    func roundTrip(storage: SafeTensorsWriter.StorageType) throws {
        let dir = try temporaryDirectory()
        defer { try? FileManager.default.removeItem(at: dir) }
        let a = randomTensor([3, 5], seed: 1), b = randomTensor([7], seed: 2)
        let url = dir.appendingPathComponent("x.safetensors")
        try SafeTensorsWriter.write(["layer.a": a, "b": b], to: url, as: storage, metadata: ["format": "pt"])
        let file = try SafeTensorsFile(url: url)
        #expect(file.names == ["b", "layer.a"] && file.metadata == ["format": "pt"])
        let readA = try file.tensor("layer.a"), readB = try file.tensor("b")
        #expect(readA.shape == [3, 5] && readB.shape == [7])
        // Relative precision of the storage type: exact, 2^-11 (F16) or 2^-8 (BF16).
        let tolerance: Double = storage == .f32 ? 0 : storage == .f16 ? 1.0 / 2048 : 1.0 / 256
        let e = max(relativeDifference(readA, a), relativeDifference(readB, b))
        print("safetensors \(storage.rawValue) round trip: max relative difference \(e)")
        #expect(e <= tolerance)
        if storage == .f32 { #expect(readA.isBitIdentical(to: a)) }
        // The header is padded so the data starts 8-byte aligned.
        let bytes = try Data(contentsOf: url)
        let headerSize = bytes.prefix(8).enumerated().reduce(0) { $0 | Int($1.element) << (8 * $1.offset) }
        #expect((8 + headerSize) % 8 == 0)
    }

    @Test func writesAtomicallyOverAnExistingFile() throws {
        let dir = try temporaryDirectory()
        defer { try? FileManager.default.removeItem(at: dir) }
        let url = dir.appendingPathComponent("w.safetensors")
        try SafeTensorsWriter.write(["w": Tensor(shape: [2], values: [1, 2])], to: url)
        try SafeTensorsWriter.write(["w": Tensor(shape: [3], values: [4, 5, 6])], to: url)
        #expect(try SafeTensorsFile(url: url).tensor("w").scalars == [4, 5, 6])
        #expect(try FileManager.default.contentsOfDirectory(atPath: dir.path) == ["w.safetensors"])
        #expect(throws: SafeTensorsError.self) {
            try SafeTensorsWriter.write(["w": Tensor(shape: [1])], to: dir.appendingPathComponent("missing/w.safetensors"))
        }
    }

    @Test func readsShardedCheckpoints() throws {
        let dir = try temporaryDirectory()
        defer { try? FileManager.default.removeItem(at: dir) }
        try SafeTensorsWriter.write(["a": Tensor(shape: [1], values: [1])], to: dir.appendingPathComponent("model-00001-of-00002.safetensors"))
        try SafeTensorsWriter.write(["b": Tensor(shape: [2], values: [2, 3])], to: dir.appendingPathComponent("model-00002-of-00002.safetensors"))
        let index = #"{"metadata": {"total_size": 12}, "weight_map": {"a": "model-00001-of-00002.safetensors", "b": "model-00002-of-00002.safetensors"}}"#
        try Data(index.utf8).write(to: dir.appendingPathComponent("model.safetensors.index.json"))
        let tensors = try SafeTensorsCheckpoint(directory: dir).floatTensors()
        #expect(tensors.keys.sorted() == ["a", "b"] && tensors["b"]?.scalars == [2, 3])

        // The index names a tensor its shard does not hold.
        let wrong = #"{"weight_map": {"a": "model-00002-of-00002.safetensors", "b": "model-00002-of-00002.safetensors"}}"#
        try Data(wrong.utf8).write(to: dir.appendingPathComponent("model.safetensors.index.json"))
        #expect(throws: SafeTensorsError.self) { try SafeTensorsCheckpoint(directory: dir) }
        // A shard outside the folder.
        let escape = #"{"weight_map": {"a": "../x.safetensors"}}"#
        try Data(escape.utf8).write(to: dir.appendingPathComponent("model.safetensors.index.json"))
        #expect(throws: SafeTensorsError.self) { try SafeTensorsCheckpoint(directory: dir) }
        // No weights at all.
        let empty = try temporaryDirectory()
        defer { try? FileManager.default.removeItem(at: empty) }
        #expect(throws: SafeTensorsError.self) { try SafeTensorsCheckpoint(directory: empty) }
    }

    @Test func errorsFromAFileNameIt() throws {
        let dir = try temporaryDirectory()
        defer { try? FileManager.default.removeItem(at: dir) }
        let url = dir.appendingPathComponent("broken.safetensors")
        try Data([1, 0, 0, 0, 0, 0, 0, 0, 0x7b]).write(to: url)
        do {
            _ = try SafeTensorsFile(url: url)
            Issue.record("a broken file was accepted")
        } catch {
            #expect("\(error)".contains("broken.safetensors"))
        }
    }
}
