import Foundation
import Kernels
import Layers
import LoRA
@testable import Models
import TestSupport
import Testing
import Training

@Suite("Model assemblies")
struct ModelBehaviourTests {
    static func tinyLlamaConfig(tied: Bool = true) throws -> LlamaConfiguration {
        try LlamaConfiguration(vocabSize: 40, hiddenSize: 16, intermediateSize: 24, numHiddenLayers: 2,
                               numAttentionHeads: 4, numKeyValueHeads: 2, ropeTheta: 10_000, tieWordEmbeddings: tied)
    }

    /// Random weights for every parameter, reproducible.
    static func randomise(_ model: some AdaptableModel, seed: UInt64) {
        for (i, (name, p)) in model.namedParameters.enumerated() {
            let isNorm = name.contains("norm") || name.contains("LayerNorm")
            let values = randomTensor(p.shape, seed: seed &+ UInt64(i), scale: isNorm ? 0.1 : 0.3)
            if isNorm && name.hasSuffix("weight") { for j in 0..<values.count { values[j] += 1 } }
            p.value.copy(from: values)
        }
    }

    static let batch = TokenBatch(batch: 2, length: 5, inputIds: [3, 7, 1, 9, 2, 5, 5, 8, 0, 0],
                                  attentionMask: [1, 1, 1, 1, 1, 1, 1, 1, 0, 0])
    static let labels = [3, 7, 1, 9, 2, -100, 5, 8, -100, -100]

    /// A fixed 2×6 batch of token ids below `vocabulary`.
    static func tokensForVocabulary(_ vocabulary: Int) -> TokenBatch {
        TokenBatch(batch: 2, length: 6, inputIds: (0..<12).map { ($0 * 37 + 11) % vocabulary })
    }

    @Test func frozenWeightsHaveNoGradientOrOptimizerState() throws {
        let model = try LlamaForCausalLM(Self.tinyLlamaConfig())
        #expect(model.namedParameters.allSatisfy { $0.parameter.grad == nil })
        let adapted = try model.addLoRA(targets: ["q_proj", "v_proj"], settings: LoRASettings(rank: 2, alpha: 4), seed: 1)
        #expect(adapted.count == 4 && adapted.first == "model.layers.0.self_attn.q_proj")
        #expect(model.namedParameters.allSatisfy { $0.parameter.grad == nil })
        #expect(throws: LoRAError.adapterAlreadyAttached(layer: "model.layers.0.self_attn.v_proj")) {
            try model.addLoRA(targets: ["v_proj"], settings: LoRASettings(rank: 2, alpha: 4), seed: 1)
        }
        let trainable = model.trainableParameters
        #expect(trainable.count == 8)   // A and B of 4 modules
        #expect(trainable.allSatisfy { p in model.namedAdapterParameters.contains { $0.parameter === p } })
        let optimizer = AdamW(parameters: model.namedParameters.map(\.parameter) + trainable, learningRate: 1e-3)
        #expect(optimizer.parameters.count == 8)
        #expect(optimizer.stateCount == 2 * trainable.reduce(0) { $0 + $1.value.count })
    }

    @Test func adamWLowersTheLossAndAllocatesNothingInSteadyState() throws {
        let model = try LlamaForCausalLM(Self.tinyLlamaConfig())
        Self.randomise(model, seed: 100)
        try model.addLoRA(targets: ["q_proj", "k_proj", "v_proj", "o_proj"], settings: LoRASettings(rank: 4, alpha: 8), seed: 2)
        let optimizer = AdamW(parameters: model.trainableParameters, learningRate: 1e-2, weightDecay: 0)
        func step() throws -> Float {
            optimizer.zeroGradients()
            let loss = try model.loss(Self.batch, labels: Self.labels, backward: true)
            optimizer.update()
            return loss
        }
        var losses = [try step(), try step()]
        let tracker = AllocationTracker()
        try tracker.counting { for _ in 0..<3 { losses.append(try step()) } }
        #expect(tracker.count == 0, "steady-state steps allocated \(tracker.count) tensors")
        for _ in 0..<15 { losses.append(try step()) }
        print("tiny Llama LoRA + AdamW losses: \(losses.map { String(format: "%.4f", $0) })")
        #expect(losses.last! < losses.first! * 0.9)
    }

    @Test func fullModelGradientsMatchFiniteDifferences() throws {
        // Full fine-tuning: every base weight trainable; check a sample of each tensor's elements.
        for tied in [true, false] {
            let model = try LlamaForCausalLM(Self.tinyLlamaConfig(tied: tied))
            Self.randomise(model, seed: 200)
            for (_, p) in model.namedParameters { p.setTrainable(true) }
            _ = try model.loss(Self.batch, labels: Self.labels, backward: true)
            let worst = try sampledGradientError(model.namedParameters, samples: 6) {
                Double((try? model.loss(Self.batch, labels: Self.labels, backward: false)) ?? .nan)
            }
            print("Llama (tied: \(tied)) full backward vs finite differences: worst \(worst)")
        }
    }

    @Test func bertFullBackwardMatchesFiniteDifferences() throws {
        let config = try BertConfiguration(vocabSize: 30, hiddenSize: 16, numHiddenLayers: 2, numAttentionHeads: 4,
                                           intermediateSize: 32, maxPositionEmbeddings: 8, numLabels: 3)
        let model = try BertForSequenceClassification(config)
        Self.randomise(model, seed: 300)
        for (_, p) in model.namedParameters { p.setTrainable(true) }
        var batch = Self.batch
        batch.tokenTypeIds = [0, 0, 1, 1, 1, 0, 0, 0, 0, 0]
        let labels = [2, 0]
        _ = try model.loss(batch, labels: labels, backward: true)
        let worst = try sampledGradientError(model.namedParameters, samples: 5) {
            Double((try? model.loss(batch, labels: labels, backward: false)) ?? .nan)
        }
        print("BERT full backward vs finite differences: worst \(worst)")
    }

    @Test func badInputGivesTypedErrors() throws {
        #expect(throws: ModelError.self) {
            _ = try LlamaConfiguration(vocabSize: 10, hiddenSize: 16, intermediateSize: 8, numHiddenLayers: 1,
                                       numAttentionHeads: 4, numKeyValueHeads: 3)
        }
        let bad = #"{"vocab_size": 10, "hidden_size": 16, "intermediate_size": 8, "num_hidden_layers": 1, "num_attention_heads": 4, "rope_scaling": {"rope_type": "yarn", "factor": 4.0}}"#
        #expect(throws: ModelError.self) { _ = try JSONDecoder().decode(LlamaConfiguration.self, from: Data(bad.utf8)) }

        let model = try LlamaForCausalLM(Self.tinyLlamaConfig())
        var weights = Dictionary(uniqueKeysWithValues: model.namedParameters.map { ($0.name, $0.parameter.value.clone()) })
        weights["model.norm.weight"] = nil
        weights["model.layers.0.mlp.up_proj.weight"] = Tensor(shape: [3, 3])
        weights["model.layers.9.extra.weight"] = Tensor(shape: [1])
        #expect(throws: ModelError.weights(missing: ["model.norm.weight"], unexpected: ["model.layers.9.extra.weight"],
                                           mismatched: ["model.layers.0.mlp.up_proj.weight: file [3, 3], model [24, 16]"])) {
            try model.loadWeights(weights)
        }
        #expect(throws: LoRAError.noSuchModule("query")) {
            try model.addLoRA(targets: ["q_proj", "query"], settings: LoRASettings(rank: 2, alpha: 4), seed: 1)
        }
        #expect(model.namedAdapterParameters.isEmpty, "a failed injection must not leave adapters behind")
        #expect(throws: LoRAError.noSuchModule("model.layers.5.self_attn.q_proj")) {
            _ = try model.linearModule(named: "model.layers.5.self_attn.q_proj")
        }
        #expect(throws: ModelError.self) {
            _ = try model.logits(TokenBatch(batch: 1, length: 2, inputIds: [1, 40]))
        }
        #expect(throws: ModelError.self) {
            _ = try model.loss(TokenBatch(batch: 1, length: 2, inputIds: [1, 2]), labels: [1], backward: true)
        }
    }

    @Test func configurationsDecodeHuggingFaceNames() throws {
        let v4 = #"{"vocab_size": 49152, "hidden_size": 576, "intermediate_size": 1536, "num_hidden_layers": 30, "num_attention_heads": 9, "num_key_value_heads": 3, "rms_norm_eps": 1e-05, "rope_theta": 100000.0, "rope_scaling": null, "tie_word_embeddings": true, "max_position_embeddings": 8192, "hidden_act": "silu"}"#
        let config = try JSONDecoder().decode(LlamaConfiguration.self, from: Data(v4.utf8))
        #expect(config.headDim == 64 && config.ropeTheta == 100_000 && config.numKeyValueHeads == 3 && config.tieWordEmbeddings)
        let roundTrip = try JSONDecoder().decode(LlamaConfiguration.self, from: JSONEncoder().encode(config))
        #expect(roundTrip == config)
        let bert = #"{"vocab_size": 30522, "hidden_size": 384, "num_hidden_layers": 6, "num_attention_heads": 12, "intermediate_size": 1536, "hidden_act": "gelu", "id2label": {"0": "negative", "1": "positive"}}"#
        let b = try JSONDecoder().decode(BertConfiguration.self, from: Data(bert.utf8))
        #expect(b.numLabels == 2 && b.id2label[1] == "positive" && b.headDim == 32)
    }
}
