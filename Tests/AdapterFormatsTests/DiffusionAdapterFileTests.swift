import AdapterFormats
import Formats
import Foundation
import Kernels
import TestSupport
import Testing

/// Reading Stable Diffusion adapter files: every spelling's keys split into modules and roles,
/// and bad files refused with what is wrong said.
@Suite("Stable Diffusion adapter files")
struct DiffusionAdapterFileTests {
    static func write(_ tensors: [String: Tensor], metadata: [String: String] = [:]) throws -> URL {
        let url = FileManager.default.temporaryDirectory.appendingPathComponent("lora-sdfile-\(UUID().uuidString).safetensors")
        try SafeTensorsWriter.write(tensors, to: url, metadata: metadata)
        return url
    }

    static func read(_ tensors: [String: Tensor], metadata: [String: String] = [:]) throws -> DiffusionAdapterFile {
        let url = try write(tensors, metadata: metadata)
        defer { try? FileManager.default.removeItem(at: url) }
        return try DiffusionAdapterFile(url: url)
    }

    static var down: Tensor { Tensor(shape: [2, 4], values: (0..<8).map { Float($0) / 8 }) }
    static var up: Tensor { Tensor(shape: [3, 2], values: (0..<6).map { Float($0) / 6 }) }

    @Test func everySpellingSplitsIntoAModuleAndItsRole() throws {
        let cases: [(String, String, String)] = [
            ("lora_unet_down_blocks_0_attentions_0_proj_in.lora_down.weight", "lora_unet_down_blocks_0_attentions_0_proj_in.lora_up.weight", "lora_unet_down_blocks_0_attentions_0_proj_in"),
            ("unet.mid_block.attentions.0.proj_out.lora_A.weight", "unet.mid_block.attentions.0.proj_out.lora_B.weight", "unet.mid_block.attentions.0.proj_out"),
            ("base_model.model.conv_in.lora_A.default.weight", "base_model.model.conv_in.lora_B.default.weight", "base_model.model.conv_in"),
            ("unet.x.attn1.to_q.lora.down.weight", "unet.x.attn1.to_q.lora.up.weight", "unet.x.attn1.to_q"),
            ("text_encoder.encoder.layers.0.mlp.fc1.lora_linear_layer.down.weight", "text_encoder.encoder.layers.0.mlp.fc1.lora_linear_layer.up.weight", "text_encoder.encoder.layers.0.mlp.fc1"),
            ("unet.x.attn2.processor.to_out_lora.down.weight", "unet.x.attn2.processor.to_out_lora.up.weight", "unet.x.attn2.processor.to_out"),
        ]
        for (downKey, upKey, spelling) in cases {
            let file = try Self.read([downKey: Self.down, upKey: Self.up])
            #expect(file.modules.map(\.spelling) == [spelling], "\(downKey)")
            #expect(file.modules.first?.delta.rank == 2 && file.modules.first?.delta.alpha == nil)
        }
        // kohya's alpha and a LyCORIS LoHa beside it; PEFT alphas from lora_adapter_metadata.
        let file = try Self.read(["m.lora_down.weight": Self.down, "m.lora_up.weight": Self.up, "m.alpha": Tensor(shape: [], values: [4]),
                                  "n.hada_w1_a": Self.up, "n.hada_w1_b": Self.down, "n.hada_w2_a": Self.up, "n.hada_w2_b": Self.down])
        #expect(file.modules.map(\.spelling) == ["m", "n"] && file.modules[0].delta.factor == 2 && file.modules[1].delta.algorithm == .loha)
        let peft = try Self.read(["unet.m.lora_A.weight": Self.down, "unet.m.lora_B.weight": Self.up],
                                 metadata: ["lora_adapter_metadata": #"{"unet.r": 2, "unet.lora_alpha": 6.0}"#])
        #expect(peft.modules[0].delta.alpha == 6 && peft.modules[0].delta.factor == 3)
        // alpha_pattern: a module path, or its end after a dot, gets its own alpha.
        let patterned = try Self.read(["unet.a.m.lora_A.weight": Self.down, "unet.a.m.lora_B.weight": Self.up,
                                       "unet.a.n.lora_A.weight": Self.down, "unet.a.n.lora_B.weight": Self.up],
                                      metadata: ["lora_adapter_metadata": #"{"unet.lora_alpha": 6, "unet.alpha_pattern": {"m": 2}}"#])
        #expect(patterned.modules.map { $0.delta.alpha } == [2, 6])
    }

    @Test func badFilesAreRefusedSayingWhy() throws {
        func refused(_ tensors: [String: Tensor], metadata: [String: String] = [:], _ says: String) {
            #expect { try Self.read(tensors, metadata: metadata) } throws: { error in
                print("refused: \(error)")
                return "\(error)".contains(says)
            }
        }
        refused(["m.lora_down.weight": Self.down, "m.lora_up.weight": Self.up, "m.alpha": Tensor(shape: [], values: [-1])], "alpha is -1.0; it must be positive")
        refused(["m.lora_down.weight": Self.down, "m.lora_up.weight": Self.up, "m.alpha": Tensor(shape: [2], values: [1, 2])], "must be one number")
        refused(["m.lora_down.weight": Self.down], "m has no up (lora_up / lora_B) tensor")
        refused(["m.lora_down.weight": Self.down, "m.lora_up.weight": Tensor(shape: [3, 2], values: [1, 2, .nan, 4, 5, 6])], "NaN or infinite")
        refused(["a.weird": Self.down, "b.weird": Self.down, "c.weird": Self.down, "d.weird": Self.down, "m.lora_down.weight": Self.down, "m.lora_up.weight": Self.up],
                "4 keys of no adapter form this program reads: a.weird, b.weird, c.weird, …")
        refused(["m.alpha": Tensor(shape: [], values: [1])], "m has only alpha: no weights to apply")
        refused(["m.lora_down.weight": Tensor(shape: [70_000, 1]), "m.lora_up.weight": Tensor(shape: [1, 70_000])], "rank 70000, above 65536")
        refused(["m.lora_A.weight": Self.down, "m.lora_B.weight": Self.up], metadata: ["lora_adapter_metadata": "{not json"], "not a JSON object")
        refused(["unet.m.lora_A.weight": Self.down, "unet.m.lora_B.weight": Self.up],
                metadata: ["lora_adapter_metadata": #"{"unet.lora_alpha": 4, "unet.alpha_pattern": {"m.*": 2}}"#], "key 'm.*' is a regular expression, which is not supported yet")
        refused(["m.lora_magnitude_vector": Self.down, "m.lora_A.weight": Self.down, "m.lora_B.weight": Self.up], "PEFT's DoRA magnitude is not supported yet")
        // Not a safetensors file at all, and an integer tensor.
        let url = FileManager.default.temporaryDirectory.appendingPathComponent("lora-sdfile-\(UUID().uuidString).safetensors")
        defer { try? FileManager.default.removeItem(at: url) }
        try Data([1, 2, 3]).write(to: url)
        #expect { try DiffusionAdapterFile(url: url) } throws: { "\($0)".contains("too short for a header") }
        let integers = #"{"m.alpha":{"dtype":"I64","shape":[],"data_offsets":[0,8]}}"#
        var header = Data(withUnsafeBytes(of: UInt64(integers.utf8.count).littleEndian, Array.init))
        header.append(Data(integers.utf8))
        header.append(Data(count: 8))
        try header.write(to: url)
        #expect { try DiffusionAdapterFile(url: url) } throws: { "\($0)".contains("dtype I64") }
    }

    /// The shape check that guards every merge: a delta that does not make the weight says why,
    /// and one that does applies to exactly the weight's elements.
    @Test func shapesAreCheckedBeforeAnythingIsComputed() throws {
        let lora = WeightDelta(kind: .lora(down: Self.down, up: Self.up, mid: nil), alpha: 2)
        #expect(lora.shapeProblem(for: [3, 4]) == nil)
        #expect(lora.shapeProblem(for: [3, 5])?.contains("do not make a [3, 5] weight") == true)
        #expect(lora.shapeProblem(for: [4, 4])?.contains("does not give the weight's 4 outputs") == true)
        #expect(lora.shapeProblem(for: [3, 4, 1, 1]) == nil)   // a 1×1 convolution of the same size
        let kron = WeightDelta(kind: .lokr(w1: .whole(Tensor(shape: [2, 2])), w2: .whole(Tensor(shape: [3, 3]))))
        #expect(kron.shapeProblem(for: [6, 6]) == nil && kron.shapeProblem(for: [6, 5]) != nil && kron.factor == 1)
        let dora = WeightDelta(kind: .lora(down: Self.down, up: Self.up, mid: nil), doraScale: Tensor(shape: [3, 1]))
        #expect(dora.shapeProblem(for: [3, 4])?.contains("DoRA on the output axis is not supported") == true)
        let w = Tensor(shape: [12])
        try lora.apply(to: w, shape: [3, 4], multiplier: 0.5)
        // w = 0.5 · (2 / 2) · up · down
        var expected: [Float] = []
        for o in 0..<3 { for i in 0..<4 { expected.append(0.5 * (0..<2).reduce(Float(0)) { $0 + Self.up[o * 2 + $1] * Self.down[$1 * 4 + i] }) } }
        #expect(zip(w.scalars, expected).allSatisfy { abs($0 - $1) < 1e-6 })
    }
}
