import Foundation
import Kernels
import Layers
import LoRA
import Models
import TestSupport
import Testing

/// The tiny Llama fixtures: a random `LlamaForCausalLM` wrapped by PEFT, run by PyTorch.
struct LlamaFixture {
    let fixture: ReferenceFixture
    let config: LlamaConfiguration
    let settings: LoRASettings
    let targets: [String]
    let batch: TokenBatch
    let labels: [Int]

    init(_ name: String) throws {
        fixture = try ReferenceFixture(name)
        config = try JSONDecoder().decode(LlamaConfiguration.self, from: fixture.configJSON)
        let peft = try fixture.adapterConfig()
        let rank = try #require(peft["r"] as? Int), alpha = try #require(peft["lora_alpha"] as? Double)
        settings = LoRASettings(rank: rank, alpha: Float(alpha), useRSLoRA: peft["use_rslora"] as? Bool ?? false)
        targets = try #require(peft["target_modules"] as? [String])
        let ids = try fixture.reference.integers("input_ids")
        let shape = try fixture.reference.entry("input_ids").shape
        batch = TokenBatch(batch: shape[0], length: shape[1], inputIds: ids,
                           attentionMask: try fixture.reference.integers("attention_mask"))
        labels = try fixture.reference.integers("labels")
    }

    func baseModel() throws -> LlamaForCausalLM {
        let model = try LlamaForCausalLM(config)
        try model.loadWeights(fixture.weights)
        return model
    }

    func adaptedModel() throws -> LlamaForCausalLM {
        let model = try baseModel()
        try model.addLoRA(targets: targets, settings: settings, seed: 1)
        try model.loadAdapterWeights(fixture.adapter)
        return model
    }

    func expected(_ name: String) throws -> Tensor { try fixture.reference.tensor(name) }
}

@Suite("Llama against PyTorch + PEFT")
struct LlamaReferenceTests {
    @Test(arguments: ["tiny-llama", "tiny-llama-untied"])
    func logitsLossAndLoRAGradientsMatch(name: String) throws {
        let fx = try LlamaFixture(name)
        let model = try fx.adaptedModel()

        let logits = try model.logits(fx.batch)
        let logitsError = relativeDifference(logits, try fx.expected("logits"))
        print("[\(name)] logits: max relative difference \(logitsError)")
        #expect(logitsError <= 1e-4)

        model.zeroGradients()
        let loss = try model.loss(fx.batch, labels: fx.labels, backward: true)
        let expectedLoss = try fx.expected("loss")[0]
        let lossError = abs(Double(loss - expectedLoss)) / abs(Double(expectedLoss))
        print("[\(name)] loss: \(loss) vs \(expectedLoss), relative difference \(lossError)")
        #expect(lossError <= 1e-4)

        var worst = 0.0, compared = 0
        for (paramName, parameter) in model.namedAdapterParameters {
            let grad = try #require(parameter.grad, "\(paramName) has no gradient")
            let reference = try fx.expected("grad.base_model.model." + paramName)
            let e = relativeDifference(grad, reference)
            #expect(e <= 1e-4, "gradient of \(paramName): relative difference \(e)")
            worst = max(worst, e)
            compared += 1
        }
        let gradientNames = fx.fixture.reference.names.filter { $0.hasPrefix("grad.") }
        #expect(compared == gradientNames.count, "compared \(compared) of \(gradientNames.count) reference gradients")
        print("[\(name)] \(compared) LoRA gradients: max relative difference \(worst)")
    }

    @Test(arguments: ["tiny-llama", "tiny-llama-untied"])
    func baseModelMatchesAndZeroBIsExact(name: String) throws {
        let fx = try LlamaFixture(name)
        let base = try fx.baseModel()
        let baseLogits = try base.logits(fx.batch).clone()
        let e = relativeDifference(baseLogits, try fx.expected("base_logits"))
        print("[\(name)] base logits: max relative difference \(e)")
        #expect(e <= 1e-4)

        // Freshly initialised adapters (B = 0) leave the output bit-identical.
        try base.addLoRA(targets: fx.targets, settings: fx.settings, seed: 7)
        let adapted = try base.logits(fx.batch)
        #expect(adapted.isBitIdentical(to: baseLogits), "B = 0 changed the output by \(maxAbsoluteDifference(adapted, baseLogits))")
    }

    @Test(arguments: ["tiny-llama", "tiny-llama-untied"])
    func mergeMatchesAndUnmergeRestoresExactly(name: String) throws {
        let fx = try LlamaFixture(name)
        let model = try fx.adaptedModel()
        let unmerged = try model.logits(fx.batch).clone()
        let originals = model.linearModules.map { $0.base.weight.value.clone() }

        try model.mergeAdapters()
        let merged = try model.logits(fx.batch).clone()
        let vsUnmerged = relativeDifference(merged, unmerged)
        let vsPEFT = relativeDifference(merged, try fx.expected("merged_logits"))
        print("[\(name)] merged vs unmerged: \(vsUnmerged); merged vs PEFT merged: \(vsPEFT)")
        #expect(vsUnmerged <= 1e-5)
        #expect(vsPEFT <= 1e-4)

        try model.unmergeAdapters()
        for (m, original) in zip(model.linearModules, originals) {
            #expect(m.base.weight.value.isBitIdentical(to: original), "\(m.name) not restored bit for bit")
        }
        #expect(try model.logits(fx.batch).isBitIdentical(to: unmerged))
    }
}
