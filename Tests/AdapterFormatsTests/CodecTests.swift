import AdapterFormats
import Formats
import Foundation
import Kernels
import LoRA
import TestSupport
import Testing

/// The adapter codecs on their own: keys mapped to module paths and back, bit for bit, and bad
/// folders refused with what is wrong said.
@Suite("Adapter codecs")
struct CodecTests {
    static let adapters = fixturesDirectory.appendingPathComponent("adapters")

    static func temporary() -> URL {
        FileManager.default.temporaryDirectory.appendingPathComponent("lora-codec-\(UUID().uuidString)")
    }

    /// PEFT → neutral → PEFT gives the same tensors under the same keys and the same config.
    @Test(arguments: ["tiny-llama-patterns", "tiny-bert-cls", "gemma3-qvd"])
    func peftRoundTripIsExact(name: String) throws {
        let source = Self.adapters.appendingPathComponent(name)
        let adapter = try PEFTCodec.read(source)
        #expect(AdapterFormats.detect(source).name == PEFTCodec.name && adapter.format == "peft" && adapter.unrecognised.isEmpty)
        #expect(Set(adapter.loraA.keys) == Set(adapter.loraB.keys) && !adapter.loraA.isEmpty)
        let path = try #require(adapter.modulePaths.first)
        #expect(adapter.fileKey(path + ".lora_A") == "base_model.model.\(path).lora_A.weight")
        let out = Self.temporary()
        defer { try? FileManager.default.removeItem(at: out) }
        try PEFTCodec.write(adapter, to: out)
        let original = try SafeTensorsFile(url: source.appendingPathComponent("adapter_model.safetensors")).floatTensors()
        let written = try SafeTensorsFile(url: out.appendingPathComponent("adapter_model.safetensors")).floatTensors()
        #expect(Set(original.keys) == Set(written.keys))
        #expect(original.allSatisfy { written[$0.key]?.isBitIdentical(to: $0.value) == true })
        let again = try PEFTCodec.read(out)
        #expect(again.config.jsonText() == adapter.config.jsonText() && again.savedModules.keys.sorted() == adapter.savedModules.keys.sorted())
        print("[\(name)] \(adapter.modulePaths.count) modules, \(adapter.savedModules.count) saved tensors, \(original.count) tensors rewritten bit for bit")
    }

    /// mlx-lm's keys and orientation: lora_a [in, r] = Aᵀ, lora_b [r, out] = Bᵀ, α = scale·r; a
    /// tensor that is neither is kept as unrecognised (a model refuses it by name).
    @Test func mlxKeysAndOrientation() throws {
        let folder = Self.temporary()
        defer { try? FileManager.default.removeItem(at: folder) }
        let a = randomTensor([6, 2], seed: 1), b = randomTensor([2, 5], seed: 2)
        try FileManager.default.createDirectory(at: folder, withIntermediateDirectories: true)
        try SafeTensorsWriter.write(["model.layers.0.self_attn.q_proj.lora_a": a, "model.layers.0.self_attn.q_proj.lora_b": b,
                                     "model.layers.0.self_attn.q_proj.dora_m": Tensor(shape: [5])],
                                    to: folder.appendingPathComponent("adapters.safetensors"))
        try Data(#"{"fine_tune_type": "lora", "num_layers": 1, "lora_parameters": {"rank": 2, "scale": 4.0, "dropout": 0.0}}"#.utf8)
            .write(to: folder.appendingPathComponent("adapter_config.json"))
        #expect(AdapterFormats.detect(folder).name == MLXCodec.name)
        let adapter = try AdapterFormats.read(folder)
        let path = "model.layers.0.self_attn.q_proj"
        let loraA = try #require(adapter.loraA[path]), loraB = try #require(adapter.loraB[path])
        #expect(loraA.shape == [2, 6] && loraB.shape == [5, 2])
        #expect((0..<6).allSatisfy { c in (0..<2).allSatisfy { i in loraA[i * 6 + c] == a[c * 2 + i] } })
        #expect((0..<2).allSatisfy { i in (0..<5).allSatisfy { o in loraB[o * 2 + i] == b[i * 5 + o] } })
        #expect(adapter.config.rank == 2 && adapter.config.alpha == 8 && adapter.config.settings(for: path).scale == 4)
        #expect(adapter.fileKey(path + ".lora_B") == path + ".lora_b" && adapter.unrecognised == [path + ".dora_m"])
        // Its DoRA tensor cannot go to PEFT's file either: the writer refuses what it cannot hold.
        #expect { try MLXCodec.write(adapter, to: Self.temporary(), base: AdapterBase(numHiddenLayers: 1)) } throws: { "\($0)".contains("dora_m") }
    }

    @Test func badFoldersAreRefusedSayingWhy() throws {
        let folder = Self.temporary()
        defer { try? FileManager.default.removeItem(at: folder) }
        #expect { try AdapterFormats.read(folder) } throws: { "\($0)".contains("no such folder") }
        try FileManager.default.createDirectory(at: folder, withIntermediateDirectories: true)
        #expect { try AdapterFormats.read(folder) } throws: { "\($0)".contains("no adapter_config.json: not a PEFT adapter directory") }
        let file = folder.appendingPathComponent("adapter_model.safetensors")
        try Data("x".utf8).write(to: file)
        #expect { try AdapterFormats.read(file) } throws: { "\($0)".contains("is a file; give the adapter's folder") }
        try Data(#"{"r": 4, "lora_alpha": 8, "target_modules": ["q_proj"], "peft_type": "LORA"}"#.utf8)
            .write(to: folder.appendingPathComponent("adapter_config.json"))
        #expect { try AdapterFormats.read(folder) } throws: { "\($0)".contains("adapter_model.safetensors") }
        try FileManager.default.removeItem(at: file)
        try Data().write(to: folder.appendingPathComponent("adapter_model.bin"))
        #expect { try AdapterFormats.read(folder) } throws: { "\($0)".contains("PyTorch pickle") }
        // mlx-lm's weights without its config.
        let mlx = Self.temporary()
        defer { try? FileManager.default.removeItem(at: mlx) }
        try FileManager.default.createDirectory(at: mlx, withIntermediateDirectories: true)
        try SafeTensorsWriter.write(["m.lora_a": Tensor(shape: [2, 2])], to: mlx.appendingPathComponent("adapters.safetensors"))
        #expect { try AdapterFormats.read(mlx) } throws: { "\($0)".contains("no adapter_config.json beside adapters.safetensors") }
    }
}
