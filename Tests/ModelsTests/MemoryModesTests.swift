import Foundation
import Kernels
import Layers
import LoRA
@testable import Models
import TestSupport
import Testing

/// The memory levers change where numbers live, never what they are: shared gradient buffers
/// and activation recomputation give bit-identical losses and gradients, and packed frozen
/// weights give the products of their decoded values.
@Suite("Memory modes")
struct MemoryModesTests {
    static func adaptedTinyLlama(dropout: Float) throws -> LlamaForCausalLM {
        let model = try LlamaForCausalLM(ModelBehaviourTests.tinyLlamaConfig())
        ModelBehaviourTests.randomise(model, seed: 11)
        try model.addLoRA(targets: ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "down_proj"],
                          settings: LoRASettings(rank: 2, alpha: 4, dropout: dropout), seed: 3)
        // Non-zero B, so every adapter gradient is exercised.
        for (i, (_, p)) in model.namedAdapterParameters.enumerated() where p.name == "lora_B" {
            p.value.copy(from: randomTensor(p.shape, seed: 100 + UInt64(i), scale: 0.2))
        }
        return model
    }

    @Test func recomputationIsBitIdenticalWithDropout() throws {
        let plain = try Self.adaptedTinyLlama(dropout: 0.3), recomputing = try Self.adaptedTinyLlama(dropout: 0.3)
        recomputing.recomputesActivations = true
        for step in 0..<2 {   // a second step checks that the dropout generators moved on identically
            plain.zeroGradients()
            recomputing.zeroGradients()
            let a = try plain.loss(ModelBehaviourTests.batch, labels: ModelBehaviourTests.labels, backward: true)
            let b = try recomputing.loss(ModelBehaviourTests.batch, labels: ModelBehaviourTests.labels, backward: true)
            #expect(a.bitPattern == b.bitPattern, "step \(step): loss \(a) vs \(b)")
            let gradients = zip(plain.namedAdapterParameters, recomputing.namedAdapterParameters)
            for ((name, p), (_, q)) in gradients {
                let (gp, gq) = (try #require(p.grad), try #require(q.grad))
                #expect(gp.isBitIdentical(to: gq), "step \(step): \(name) gradient differs")
                #expect(gp.scalars.contains { $0 != 0 }, "\(name) has a zero gradient")
            }
        }
        print("recomputation: losses and \(plain.namedAdapterParameters.count) adapter gradients bit-identical over 2 steps")
    }

    @Test func packedBF16WeightsComputeWithTheirDecodedValues() throws {
        // Reference: fp32 weights rounded to bf16 by hand. Packed: the same weights stored bf16.
        let reference = try Self.adaptedTinyLlama(dropout: 0), packed = try Self.adaptedTinyLlama(dropout: 0)
        for (_, p) in reference.packableParameters {
            for i in 0..<p.value.count { p.value[i] = Float(bitPattern: UInt32(bfloat16Bits(p.value[i])) << 16) }
        }
        try packed.compressFrozenWeights(to: .bf16)
        let packedWeights = packed.packableParameters.compactMap(\.parameter.packed)
        #expect(packedWeights.count == 2 * 7 + 1)   // 7 linear weights per block, the tied embedding
        // Products in fp32 on the decoded weights: the same numbers as the rounded fp32 model.
        for w in packedWeights { w.bf16Products = false }
        let a = try reference.loss(ModelBehaviourTests.batch, labels: ModelBehaviourTests.labels, backward: true)
        let b = try packed.loss(ModelBehaviourTests.batch, labels: ModelBehaviourTests.labels, backward: true)
        var worst: Float = 0
        for ((_, p), (_, q)) in zip(reference.namedAdapterParameters, packed.namedAdapterParameters) {
            let (gp, gq) = (try #require(p.grad), try #require(q.grad))
            for i in 0..<gp.count { worst = max(worst, abs(gp[i] - gq[i]) / max(abs(gp[i]), 1e-3)) }
        }
        print("packed bf16 vs fp32 with bf16-rounded weights: loss \(a) vs \(b), worst gradient difference \(worst)")
        #expect(abs(a - b) <= 1e-5 * abs(a))
        #expect(worst <= 1e-4)
        // With the AVX512-BF16 kernels the activations are rounded to bf16 too (as autocast does):
        // close, not equal.
        if hasBF16Instructions {
            for w in packedWeights { w.bf16Products = true }
            packed.zeroGradients()
            let c = try packed.loss(ModelBehaviourTests.batch, labels: ModelBehaviourTests.labels, backward: true)
            print("packed bf16 with bf16 products: loss \(c) vs \(a) (relative \(abs(c - a) / a))")
            #expect(abs(c - a) <= 2e-3 * abs(a))
        }
        // Merging needs fp32 weights: refused, nothing changed.
        #expect(throws: LoRAError.self) { try packed.mergeAdapters() }
        #expect(!packed.hasMergedAdapters)
    }

    /// A BERT classifier with bf16 blocks: the pooler and the classifier stay fp32 (classification
    /// training makes the head trainable), and LoRA training runs.
    @Test func packedBERTKeepsItsHeadTrainable() throws {
        let config = try BertConfiguration(vocabSize: 30, hiddenSize: 16, numHiddenLayers: 2, numAttentionHeads: 4,
                                           intermediateSize: 32, maxPositionEmbeddings: 8, numLabels: 3)
        let model = try BertForSequenceClassification(config)
        ModelBehaviourTests.randomise(model, seed: 300)
        let pretrained = model
        let parameterCount = model.namedParameters.reduce(0) { $0 + $1.parameter.count }
        try pretrained.compressFrozenWeights(to: .bf16)
        let packed = model.namedParameters.filter { $0.parameter.packed != nil }.map(\.name)
        #expect(packed.count == 2 * 6 + 1, "packed: \(packed)")   // 6 linear weights per layer, word embeddings
        #expect(!packed.contains { $0.hasPrefix("classifier") || $0.contains("pooler") })
        // Counts (reports, checkpoint fingerprints) do not depend on the storage.
        #expect(model.namedParameters.reduce(0) { $0 + $1.parameter.count } == parameterCount)
        try model.addLoRA(targets: ["query", "value"], settings: LoRASettings(rank: 2, alpha: 4), seed: 1)
        model.classifier.base.weight.setTrainable(true)
        let loss = try model.loss(ModelBehaviourTests.batch, labels: [2, 0], backward: true)
        #expect(loss.isFinite && (model.classifier.base.weight.grad?.scalars.contains { $0 != 0 } ?? false))
    }

    /// SmolLM2 with its Q4_1 blocks kept (QLoRA-style) against transformers' log-probabilities:
    /// the same values as the fp32 load, decoded tile by tile.
    @Test func smolLM2WithQuantisedBlocksMatchesTransformers() throws {
        let (loaded, _) = try ModelLoader.loadGGUF(try realModel(.smolLM2), frozen: .q)
        guard let model = loaded as? LlamaForCausalLM else { Issue.record("SmolLM2 did not load as Llama"); return }
        #expect(model.layers[0].selfAttn.qProj.base.weight.packed?.encoding == "Q4_1")
        #expect(loaded.frozenWeightBytes < 120 << 20, "frozen weights take \(loaded.frozenWeightBytes) bytes")
        model.setTraining(false)
        let golden = try PretrainedModelTests.golden(PretrainedModelTests.SmolLM2Golden.self, "smollm2.json")
        let score = try #require(golden.scores.first)
        let ours = try model.tokenLogProbabilities(score.ids)
        let worst = zip(ours, score.logprobs).map { abs($0 - $1) }.max() ?? .infinity
        print("SmolLM2 with Q4_1 blocks kept: max |Δ log p| vs transformers \(worst) over \(ours.count) tokens")
        #expect(ours.count == score.logprobs.count && worst <= 1e-3)
    }
}
