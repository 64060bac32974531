import Foundation
import Kernels
import Layers
import LoRA
import Models
import TestSupport
import Testing

/// The tiny BERT fixture: `BertForSequenceClassification` with PEFT LoRA on query/value and the
/// classifier as a fully trained module (`modules_to_save`).
struct BertFixture {
    let fixture: ReferenceFixture
    let config: BertConfiguration
    let settings: LoRASettings
    let targets: [String]
    let batch: TokenBatch
    let labels: [Int]

    init() throws {
        fixture = try ReferenceFixture("tiny-bert")
        config = try JSONDecoder().decode(BertConfiguration.self, from: fixture.configJSON)
        let peft = try fixture.adapterConfig()
        let rank = try #require(peft["r"] as? Int), alpha = try #require(peft["lora_alpha"] as? Double)
        settings = LoRASettings(rank: rank, alpha: Float(alpha))
        targets = try #require(peft["target_modules"] as? [String])
        let shape = try fixture.reference.entry("input_ids").shape
        batch = TokenBatch(batch: shape[0], length: shape[1], inputIds: try fixture.reference.integers("input_ids"),
                           attentionMask: try fixture.reference.integers("attention_mask"),
                           tokenTypeIds: try fixture.reference.integers("token_type_ids"))
        labels = try fixture.reference.integers("labels")
    }

    func baseModel() throws -> BertForSequenceClassification {
        let model = try BertForSequenceClassification(config)
        try model.loadWeights(fixture.weights)
        return model
    }

    /// LoRA on the targets plus PEFT's trainable copy of the classifier.
    func adaptedModel() throws -> BertForSequenceClassification {
        let model = try baseModel()
        try model.addLoRA(targets: targets, settings: settings, seed: 1)
        try model.loadAdapterWeights(fixture.adapter)
        for p in model.classifier.base.parameters {
            p.setTrainable(true)
            p.value.copy(from: try #require(fixture.adapter["base_model.model.classifier." + p.name]))
        }
        return model
    }

    func expected(_ name: String) throws -> Tensor { try fixture.reference.tensor(name) }
}

@Suite("BERT against PyTorch + PEFT")
struct BertReferenceTests {
    @Test func logitsLossAndGradientsMatch() throws {
        let fx = try BertFixture()
        let model = try fx.adaptedModel()
        let logits = try model.logits(fx.batch)
        let logitsError = relativeDifference(logits, try fx.expected("logits"))
        print("[tiny-bert] logits: max relative difference \(logitsError)")
        #expect(logitsError <= 1e-4)

        model.zeroGradients()
        let loss = try model.loss(fx.batch, labels: fx.labels, backward: true)
        let expectedLoss = try fx.expected("loss")[0]
        let lossError = abs(Double(loss - expectedLoss)) / abs(Double(expectedLoss))
        print("[tiny-bert] loss: \(loss) vs \(expectedLoss), relative difference \(lossError)")
        #expect(lossError <= 1e-4)

        let trainable = model.namedAdapterParameters
            + model.classifier.base.parameters.map { (name: "classifier." + $0.name, parameter: $0) }
        var worst = 0.0
        for (name, parameter) in trainable {
            let grad = try #require(parameter.grad)
            let e = relativeDifference(grad, try fx.expected("grad.base_model.model." + name))
            #expect(e <= 1e-4, "gradient of \(name): relative difference \(e)")
            worst = max(worst, e)
        }
        let referenceCount = fx.fixture.reference.names.filter { $0.hasPrefix("grad.") }.count
        #expect(trainable.count == referenceCount)
        print("[tiny-bert] \(trainable.count) gradients (LoRA + classifier): max relative difference \(worst)")
    }

    @Test func baseModelMatchesAndZeroBIsExact() throws {
        let fx = try BertFixture()
        let model = try fx.baseModel()
        let base = try model.logits(fx.batch).clone()
        let e = relativeDifference(base, try fx.expected("base_logits"))
        print("[tiny-bert] base logits: max relative difference \(e)")
        #expect(e <= 1e-4)
        try model.addLoRA(targets: fx.targets, settings: fx.settings, seed: 3)
        #expect(try model.logits(fx.batch).isBitIdentical(to: base))
    }

    @Test func mergeMatchesAndUnmergeRestoresExactly() throws {
        let fx = try BertFixture()
        let model = try fx.adaptedModel()
        let unmerged = try model.logits(fx.batch).clone()
        let originals = model.linearModules.map { $0.base.weight.value.clone() }
        try model.mergeAdapters()
        let merged = try model.logits(fx.batch).clone()
        let vsUnmerged = relativeDifference(merged, unmerged)
        let vsPEFT = relativeDifference(merged, try fx.expected("merged_logits"))
        print("[tiny-bert] merged vs unmerged: \(vsUnmerged); merged vs PEFT merged: \(vsPEFT)")
        #expect(vsUnmerged <= 1e-5)
        #expect(vsPEFT <= 1e-4)
        try model.unmergeAdapters()
        for (m, original) in zip(model.linearModules, originals) {
            #expect(m.base.weight.value.isBitIdentical(to: original), "\(m.name) not restored bit for bit")
        }
    }
}
