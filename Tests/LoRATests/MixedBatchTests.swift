import Formats
import Foundation
import Kernels
import Layers
import LoRA
import TestSupport
import Testing

/// The per-row adapter forward against PEFT's mixed batch (`model(x, adapter_names=[…])`,
/// `Scripts/reference/make_mixed_batch_fixture.py`): rows on the base model, adapter a (α/r) and
/// adapter b (rsLoRA) in one call.
@Suite("LoRA mixed-batch forward")
struct MixedBatchTests {
    struct Config: Decodable {
        struct Adapter: Decodable { let r: Int; let lora_alpha: Double; let use_rslora: Bool }
        let adapters: [String: Adapter]
        let rows: [String]
    }

    static func layer() throws -> (LoRALinear, [String: Tensor], Config) {
        let dir = fixturesDirectory.appendingPathComponent("mixed-batch")
        let config = try JSONDecoder().decode(Config.self, from: Data(contentsOf: dir.appendingPathComponent("config.json")))
        let t = try SafeTensorsFile(url: dir.appendingPathComponent("tensors.safetensors")).floatTensors()
        let weight = try #require(t["weight"])
        let layer = LoRALinear(name: "proj", inFeatures: weight.shape[1], outFeatures: weight.shape[0], bias: true)
        layer.base.weight.value.copy(from: weight)
        try #require(layer.base.bias).value.copy(from: try #require(t["bias"]))
        for (name, c) in config.adapters.sorted(by: { $0.key < $1.key }) {
            let adapter = try LoRAWeights(settings: LoRASettings(rank: c.r, alpha: Float(c.lora_alpha), useRSLoRA: c.use_rslora),
                                          a: try #require(t["\(name).lora_A"]), b: try #require(t["\(name).lora_B"]))
            try layer.attach(adapter, named: name, activate: false)
        }
        layer.isTraining = false
        return (layer, t, config)
    }

    @Test func matchesPEFTAndEachRowAlone() throws {
        let (layer, t, config) = try Self.layer()
        let x = try #require(t["x"]), expected = try #require(t["mixed"]), alone = try #require(t["alone"])
        let rows = config.rows.map { $0 == "__base__" ? nil : $0 }
        let y = try layer.forward(x, rowAdapters: rows)
        let vsPEFT = (0..<y.count).map { abs(y[$0] - expected[$0]) }.max() ?? .infinity
        let vsAlone = (0..<y.count).map { abs(y[$0] - alone[$0]) }.max() ?? .infinity
        // Each row alone through the ordinary forward with its adapter active.
        var ours: Float = 0
        for (i, name) in rows.enumerated() {
            try layer.setActiveAdapters(name.map { [$0] } ?? [])
            let row = Tensor(shape: [1, x.rowLength])
            (row.data).update(from: x.data + i * x.rowLength, count: x.rowLength)
            let out = layer.forward(row)
            for j in 0..<out.count { ours = max(ours, abs(out[j] - y[i * y.rowLength + j])) }
        }
        print("mixed batch (\(rows.map { $0 ?? "base" })): max |Δ| vs PEFT \(vsPEFT), vs PEFT row by row \(vsAlone), vs our row-by-row forward \(ours)")
        #expect(vsPEFT < 1e-5 && vsAlone < 1e-5 && ours < 1e-6)
    }

    @Test func unknownAdaptersAndMergedLayersAreRefused() throws {
        let (layer, t, _) = try Self.layer()
        let x = try #require(t["x"])
        #expect(throws: LoRAError.self) { try layer.forward(x, rowAdapters: [String?](repeating: "c", count: x.rowCount)) }
        #expect(throws: LoRAError.self) { try layer.forward(x, rowAdapters: [nil]) }
        try layer.setActiveAdapters(["a"])
        try layer.merge()
        #expect(throws: LoRAError.self) { try layer.forward(x, rowAdapters: [String?](repeating: nil, count: x.rowCount)) }
    }
}
