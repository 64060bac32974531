import Foundation
import Formats
import Kernels
import Layers
import LoRA
@testable import Models
import TestSupport
import Testing

/// Misuse and hostile input: every case is a typed error, never a trap or silent damage.
@Suite("Model robustness")
struct RobustnessTests {
    static func adaptedLlama() throws -> LlamaForCausalLM {
        let model = try LlamaForCausalLM(ModelBehaviourTests.tinyLlamaConfig())
        ModelBehaviourTests.randomise(model, seed: 400)
        try model.addLoRA(targets: ["q_proj", "v_proj"], settings: LoRASettings(rank: 2, alpha: 4), seed: 1)
        for (_, p) in model.namedAdapterParameters { p.value.copy(from: randomTensor(p.shape, seed: 5, scale: 0.3)) }
        return model
    }

    @Test func mergedModelsRefuseLoadingAndTraining() throws {
        let model = try Self.adaptedLlama()
        let weights = Dictionary(uniqueKeysWithValues: model.namedParameters.map { ($0.name, $0.parameter.value.clone()) })
        let dir = URL(fileURLWithPath: NSTemporaryDirectory()).appendingPathComponent("lora-merged-\(UUID().uuidString)")
        defer { try? FileManager.default.removeItem(at: dir) }
        try model.savePEFTAdapter(to: dir)
        try model.mergeAdapters()
        #expect(throws: ModelError.self) { try model.loadWeights(weights) }
        #expect(throws: ModelError.self) { try model.loadPEFTAdapter(from: dir, named: "second") }
        #expect(throws: ModelError.self) { try model.setActiveAdapters([]) }
        #expect(throws: ModelError.self) {
            _ = try model.loss(ModelBehaviourTests.batch, labels: ModelBehaviourTests.labels, backward: true)
        }
        // Evaluation while merged is fine.
        _ = try model.loss(ModelBehaviourTests.batch, labels: ModelBehaviourTests.labels, backward: false)
        try model.unmergeAdapters()
        _ = try model.loss(ModelBehaviourTests.batch, labels: ModelBehaviourTests.labels, backward: true)
    }

    @Test func mergeIsAllOrNothing() throws {
        let model = try Self.adaptedLlama()
        let originals = model.linearModules.map { $0.base.weight.value.clone() }
        // The last adapted module would overflow.
        let last = try #require(model.linearModules.last { $0.adapter != nil })
        last.adapter!.a.value.copy(from: Tensor(shape: last.adapter!.a.shape, generator: { 1e30 }))
        last.adapter!.b.value.copy(from: Tensor(shape: last.adapter!.b.shape, generator: { 1e30 }))
        #expect(throws: LoRAError.nonFiniteMerge(layer: last.name)) { try model.mergeAdapters() }
        #expect(!model.hasMergedAdapters)
        for (m, original) in zip(model.linearModules, originals) {
            #expect(m.base.weight.value.isBitIdentical(to: original), "\(m.name) changed by a failed merge")
        }
        // A NaN in an adapter (not an overflow) is refused the same way.
        last.adapter!.a.value.copy(from: randomTensor(last.adapter!.a.shape, seed: 9))
        last.adapter!.b.value.copy(from: randomTensor(last.adapter!.b.shape, seed: 10))
        last.adapter!.b.value[0] = .nan
        #expect(throws: LoRAError.nonFiniteMerge(layer: last.name)) { try model.mergeAdapters() }
        for (m, original) in zip(model.linearModules, originals) {
            #expect(m.base.weight.value.isBitIdentical(to: original), "\(m.name) changed by a failed merge")
        }
    }

    @Test func backwardFollowsTheForwardAcrossMerges() throws {
        // forward (1 row, unmerged) → merge → forward (8 rows) → unmerge → backward (8 rows):
        // backward must use what the last forward saved, not stale low-rank buffers.
        let layer = LoRALinear(name: "m.q", inFeatures: 4, outFeatures: 3, bias: false)
        var g = SplitMix64(seed: 1)
        try layer.attach(LoRAWeights(inFeatures: 4, outFeatures: 3, settings: LoRASettings(rank: 2, alpha: 2), generator: &g))
        layer.adapter!.b.value.copy(from: randomTensor([3, 2], seed: 2))
        _ = layer.forward(randomTensor([1, 4], seed: 3))
        try layer.merge()
        let x = randomTensor([8, 4], seed: 4)
        _ = layer.forward(x)
        try layer.unmerge()
        let dx = Tensor(shape: x.shape)
        layer.backward(randomTensor([8, 3], seed: 5), dx: dx)
        #expect(layer.adapter!.a.grad!.scalars.allSatisfy { $0 == 0 } && layer.adapter!.b.grad!.scalars.allSatisfy { $0 == 0 })
        #expect(dx.isFinite)
    }

    @Test func adapterFilesAreLoadedStrictly() throws {
        let model = try Self.adaptedLlama()
        let dir = URL(fileURLWithPath: NSTemporaryDirectory()).appendingPathComponent("lora-strict-\(UUID().uuidString)")
        defer { try? FileManager.default.removeItem(at: dir) }
        try model.savePEFTAdapter(to: dir)
        let file = dir.appendingPathComponent("adapter_model.safetensors")
        let good = try SafeTensorsFile(url: file).floatTensors()
        func reload(_ tensors: [String: Tensor]) throws {
            try SafeTensorsWriter.write(tensors, to: file)
            let fresh = try Self.adaptedLlama()
            try fresh.removeAdapter(named: "default")
            try fresh.loadPEFTAdapter(from: dir)
        }
        try reload(good)
        var extra = good
        extra["base_model.model.model.layers.0.self_attn.q_proj.lora_magnitude_vector"] = Tensor(shape: [16])
        #expect(throws: ModelError.self) { try reload(extra) }
        var wrongShape = good
        wrongShape["base_model.model.model.layers.0.self_attn.q_proj.lora_A.weight"] = Tensor(shape: [3, 16])
        #expect(throws: ModelError.self) { try reload(wrongShape) }
        var missing = good
        missing["base_model.model.model.layers.1.self_attn.v_proj.lora_B.weight"] = nil
        #expect(throws: ModelError.self) { try reload(missing) }
        // A failed load leaves no adapter behind.
        let model2 = try LlamaForCausalLM(ModelBehaviourTests.tinyLlamaConfig())
        try SafeTensorsWriter.write(missing, to: file)
        #expect(throws: ModelError.self) { try model2.loadPEFTAdapter(from: dir) }
        #expect(model2.adapterRegistry.names.isEmpty && model2.linearModules.allSatisfy { $0.adapters.isEmpty })
        // Wrong dtype or non-finite values: refused with the tensor named, the model untouched.
        let model3 = try Self.adaptedLlama()
        let before = model3.namedParameters.map { $0.parameter.value.clone() }
        let key = "base_model.model.model.layers.0.self_attn.q_proj.lora_A.weight"
        var poisoned = good
        poisoned[key] = Tensor(shape: good[key]!.shape, generator: { .nan })
        try SafeTensorsWriter.write(poisoned, to: file)
        do {
            try model3.loadPEFTAdapter(from: dir, named: "second")
            Issue.record("an adapter holding NaN was loaded")
        } catch {
            print("NaN adapter: \(error)")
            #expect(error.description.contains(key) && error.description.contains("NaN"))
        }
        let integers = #"{"base_model.model.x":{"dtype":"I64","shape":[1],"data_offsets":[0,8]}}"#
        var header = Data(withUnsafeBytes(of: UInt64(integers.utf8.count).littleEndian, Array.init))
        header.append(Data(integers.utf8))
        header.append(Data(count: 8))
        try header.write(to: file)
        do {
            try model3.loadPEFTAdapter(from: dir, named: "second")
            Issue.record("an adapter with an I64 tensor was loaded")
        } catch {
            print("I64 adapter: \(error)")
            #expect(error.description.contains("dtype I64"))
        }
        #expect(model3.adapterRegistry.names == ["default"])
        for (p, b) in zip(model3.namedParameters, before) { #expect(p.parameter.value.isBitIdentical(to: b), "\(p.name) changed") }
        // A config asking for rank 65536 beside a small file is refused before anything is allocated.
        try SafeTensorsWriter.write(good, to: file)
        let configURL = dir.appendingPathComponent("adapter_config.json")
        let originalConfig = try Data(contentsOf: configURL)
        var json = try #require(JSONSerialization.jsonObject(with: originalConfig) as? [String: Any])
        json["r"] = 65536
        try JSONSerialization.data(withJSONObject: json).write(to: configURL)
        do {
            try model3.loadPEFTAdapter(from: dir, named: "huge")
            Issue.record("a rank-65536 config was loaded")
        } catch {
            print("rank bomb: \(error)")
            #expect(error.description.contains("asks for") && error.description.contains("LoRA weights"))
        }
        #expect(model3.adapterRegistry.names == ["default"])
        try originalConfig.write(to: configURL)
        try SafeTensorsWriter.write(missing, to: file)
        // No adapter_config.json: an error, never a fresh adapter.
        try FileManager.default.removeItem(at: dir.appendingPathComponent("adapter_config.json"))
        #expect(throws: ModelError.self) { try model2.loadPEFTAdapter(from: dir) }
    }

    /// A config.json (or GGUF metadata, see the fuzz regressions) describing a model larger than
    /// the weights beside it is refused before the model is allocated.
    @Test(arguments: ["tiny-llama", "tiny-bert"])
    func configurationsLargerThanTheirWeightsAreRefused(_ fixture: String) throws {
        let source = fixturesDirectory.appendingPathComponent(fixture)
        let dir = URL(fileURLWithPath: NSTemporaryDirectory()).appendingPathComponent("lora-bomb-\(UUID().uuidString)")
        try FileManager.default.createDirectory(at: dir, withIntermediateDirectories: true)
        defer { try? FileManager.default.removeItem(at: dir) }
        try FileManager.default.copyItem(at: source.appendingPathComponent("model.safetensors"), to: dir.appendingPathComponent("model.safetensors"))
        var config = try #require(JSONSerialization.jsonObject(with: Data(contentsOf: source.appendingPathComponent("config.json"))) as? [String: Any])
        config["num_hidden_layers"] = 2000   // ~1.3·10^10 parameters, 50 GB of Float32: under the
        config["hidden_size"] = 1024         // 2^36 ceiling, so only the comparison with the file stops it
        config["intermediate_size"] = 1024
        config["head_dim"] = nil
        try JSONSerialization.data(withJSONObject: config).write(to: dir.appendingPathComponent("config.json"))
        do {
            _ = try ModelLoader.loadHuggingFace(directory: dir)
            Issue.record("a config describing a model larger than its weights was loaded")
        } catch {
            print("\(fixture): \(error)")
            #expect("\(error)".contains("the configuration describes") && "\(error)".contains("but the file holds only"))
        }
    }

    @Test func hostileConfigurationsAndInputsThrow() throws {
        #expect(throws: ModelError.self) {
            _ = try LlamaConfiguration(vocabSize: 1 << 62, hiddenSize: 64, intermediateSize: 8, numHiddenLayers: 1,
                                       numAttentionHeads: 4, numKeyValueHeads: 4)
        }
        #expect(throws: ModelError.self) {
            _ = try LlamaConfiguration(vocabSize: 10, hiddenSize: 64, intermediateSize: 8, numHiddenLayers: 1 << 40,
                                       numAttentionHeads: 4, numKeyValueHeads: 1 << 61)
        }
        let hugeLabels = #"{"vocab_size": 10, "hidden_size": 8, "num_hidden_layers": 1, "num_attention_heads": 2, "intermediate_size": 8, "num_labels": 4611686018427387904}"#
        #expect(throws: ModelError.self) { _ = try JSONDecoder().decode(BertConfiguration.self, from: Data(hugeLabels.utf8)) }
        let regression = #"{"vocab_size": 10, "hidden_size": 8, "num_hidden_layers": 1, "num_attention_heads": 2, "intermediate_size": 8, "num_labels": 1}"#
        #expect(throws: ModelError.self) { _ = try JSONDecoder().decode(BertConfiguration.self, from: Data(regression.utf8)) }
        let multiLabel = #"{"vocab_size": 10, "hidden_size": 8, "num_hidden_layers": 1, "num_attention_heads": 2, "intermediate_size": 8, "problem_type": "multi_label_classification"}"#
        #expect(throws: ModelError.self) { _ = try JSONDecoder().decode(BertConfiguration.self, from: Data(multiLabel.utf8)) }

        let model = try LlamaForCausalLM(ModelBehaviourTests.tinyLlamaConfig())
        #expect(throws: ModelError.self) {
            _ = try model.loss(TokenBatch(batch: Int.max / 2, length: 4, inputIds: [1]), labels: [1], backward: false)
        }
        #expect(throws: LoRAError.self) { try model.addLoRA(targets: [], settings: LoRASettings(rank: 2, alpha: 4), seed: 1) }
        #expect(throws: LoRAError.self) { try model.addLoRA(targets: ["q_proj"], settings: LoRASettings(rank: 1 << 40, alpha: 4), seed: 1) }
    }
}
