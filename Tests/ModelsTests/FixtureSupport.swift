import Foundation
import Kernels
import Layers
import LoRA
import Models
import TestSupport
import Testing

/// What every PyTorch/PEFT model fixture holds: the LoRA settings of its `adapter_config.json`,
/// the batch and labels, and the expected tensors.
struct ModelFixture {
    let fixture: ReferenceFixture
    let settings: LoRASettings
    let targets: [String]
    let batch: TokenBatch
    let labels: [Int]

    init(_ name: String) throws {
        fixture = try ReferenceFixture(name)
        let peft = try fixture.adapterConfig()
        let rank = try #require(peft["r"] as? Int), alpha = try #require(peft["lora_alpha"] as? Double)
        settings = LoRASettings(rank: rank, alpha: Float(alpha), useRSLoRA: peft["use_rslora"] as? Bool ?? false)
        targets = try #require(peft["target_modules"] as? [String])
        let reference = fixture.reference
        let shape = try reference.entry("input_ids").shape
        batch = TokenBatch(batch: shape[0], length: shape[1], inputIds: try reference.integers("input_ids"),
                           attentionMask: try reference.integers("attention_mask"),
                           tokenTypeIds: reference.entries["token_type_ids"] == nil ? nil : try reference.integers("token_type_ids"))
        labels = try reference.integers("labels")
    }

    func configuration<C: Decodable>(_ type: C.Type) throws -> C {
        try JSONDecoder().decode(type, from: fixture.configJSON)
    }

    /// Loads the fixture's base weights into `model`.
    func loadBase<M: AdaptableModel>(_ model: M) throws -> M {
        try model.loadWeights(fixture.weights)
        return model
    }

    /// Loads the fixture's PEFT adapter directory (as PEFT saved it) into a model holding the
    /// base weights.
    func adapt<M: AdaptableModel>(_ model: M) throws -> M {
        try model.loadPEFTAdapter(from: fixture.directory)
        return model
    }

    func expected(_ name: String) throws -> Tensor { try fixture.reference.tensor(name) }

    var referenceGradientCount: Int { fixture.reference.names.filter { $0.hasPrefix("grad.") }.count }

    /// Compares each parameter's gradient with `grad.base_model.model.<name>`; returns the worst
    /// relative difference. Every reference gradient must be compared.
    func compareGradients(_ parameters: [(name: String, parameter: Parameter)], label: String) throws -> Double {
        var worst = 0.0
        for (name, parameter) in parameters {
            let grad = try #require(parameter.grad, "\(name) has no gradient")
            let e = relativeDifference(grad, try expected("grad.base_model.model." + name))
            #expect(e <= 1e-4, "gradient of \(name): relative difference \(e)")
            worst = max(worst, e)
        }
        #expect(parameters.count == referenceGradientCount, "compared \(parameters.count) of \(referenceGradientCount) reference gradients")
        print("[\(label)] \(parameters.count) gradients: max relative difference \(worst)")
        return worst
    }

    /// Logits and loss against the reference, printed and checked at 1e-4 relative.
    func checkLogitsAndLoss(logits: Tensor, loss: Float, label: String) throws {
        let logitsError = relativeDifference(logits, try expected("logits"))
        let expectedLoss = try expected("loss")[0]
        let lossError = abs(Double(loss - expectedLoss)) / abs(Double(expectedLoss))
        print("[\(label)] logits: max relative difference \(logitsError); loss \(loss) vs \(expectedLoss), relative difference \(lossError)")
        #expect(logitsError <= 1e-4)
        #expect(lossError <= 1e-4)
    }

    /// merge → logits agree with unmerged and with PEFT's merged model; unmerge → every weight and
    /// the logits are bit-identical to before.
    func checkMergeAndUnmerge(_ model: some AdaptableModel, logits: () throws -> Tensor, label: String) throws {
        let unmerged = try logits().clone()
        let originals = model.linearModules.map { $0.base.weight.value.clone() }
        try model.mergeAdapters()
        let merged = try logits().clone()
        let vsUnmerged = relativeDifference(merged, unmerged)
        let vsPEFT = relativeDifference(merged, try expected("merged_logits"))
        print("[\(label)] merged vs unmerged: \(vsUnmerged); merged vs PEFT merged: \(vsPEFT)")
        #expect(vsUnmerged <= 1e-5)
        #expect(vsPEFT <= 1e-4)
        try model.unmergeAdapters()
        for (m, original) in zip(model.linearModules, originals) {
            #expect(m.base.weight.value.isBitIdentical(to: original), "\(m.name) not restored bit for bit")
        }
        #expect(try logits().isBitIdentical(to: unmerged))
    }

    /// Base logits against the reference; then fresh adapters (B = 0) must not change one bit.
    func checkBaseAndZeroB(_ model: some AdaptableModel, logits: () throws -> Tensor, label: String) throws {
        let base = try logits().clone()
        let e = relativeDifference(base, try expected("base_logits"))
        print("[\(label)] base logits: max relative difference \(e)")
        #expect(e <= 1e-4)
        try model.addLoRA(targets: targets, settings: settings, seed: 7)
        let adapted = try logits()
        #expect(adapted.isBitIdentical(to: base), "B = 0 changed the output by \(maxAbsoluteDifference(adapted, base))")
    }
}

/// Finite differences of `loss` for a few distinct elements of every parameter against the
/// analytic gradients already accumulated in them; returns the worst error.
func sampledGradientError(_ parameters: [(name: String, parameter: Parameter)], samples: Int, loss: () -> Double) throws -> Double {
    var worst = 0.0
    for (index, (name, p)) in parameters.enumerated() {
        let analytic = try #require(p.grad)
        var g = SplitMix64(seed: UInt64(index))
        let sample = Array((0..<p.value.count).shuffled(using: &g).prefix(samples))
        let values = Tensor(shape: [sample.count]), grads = Tensor(shape: [sample.count])
        for (k, i) in sample.enumerated() { values[k] = p.value[i]; grads[k] = analytic[i] }
        let e = finiteDifferenceError(of: values, analytic: grads, epsilon: 1e-2) {
            for (k, i) in sample.enumerated() { p.value[i] = values[k] }
            return loss()
        }
        for (k, i) in sample.enumerated() { p.value[i] = values[k] }
        #expect(e < 2e-2, "\(name): \(e)")
        worst = max(worst, e)
    }
    return worst
}
