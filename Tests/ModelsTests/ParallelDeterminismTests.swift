import Foundation
import Kernels
import Layers
import LoRA
@testable import Models
import TestSupport
import Testing
import Training

/// Every kernel that splits its work across threads (`parallelChunks` / `parallelRows`: the
/// activations, norms, attention, cross-entropy, LoRA dropout, bf16 products, AdamW) at sizes
/// large enough to be split, run twice on identical models: the results must be bit-identical,
/// as they are when each chunk only writes what it owns. This is the workload `make test-tsan`
/// runs under ThreadSanitizer (docs/RELIABILITY.md), where a shared write would be reported.
@Suite("Parallel kernels")
struct ParallelDeterminismTests {
    /// Wide enough that activations (8·64·128), SwiGLU (8·64·256), the cross-entropy rows
    /// (512 rows of 1024 classes) and the embedding's AdamW update (131,072) all split.
    static func wideLlama(precision: FrozenPrecision) throws -> LlamaForCausalLM {
        let config = try LlamaConfiguration(vocabSize: 1024, hiddenSize: 128, intermediateSize: 256, numHiddenLayers: 2,
                                            numAttentionHeads: 4, numKeyValueHeads: 2, tieWordEmbeddings: true)
        let model = try LlamaForCausalLM(config)
        ModelBehaviourTests.randomise(model, seed: 21)
        try model.addLoRA(targets: ["q_proj", "v_proj", "down_proj"], settings: LoRASettings(rank: 4, alpha: 8, dropout: 0.1), seed: 5)
        for (i, (_, p)) in model.namedAdapterParameters.enumerated() where p.name == "lora_B" {
            p.value.copy(from: randomTensor(p.shape, seed: 300 + UInt64(i), scale: 0.2))
        }
        if precision != .fp32 { try model.compressFrozenWeights(to: precision) }
        return model
    }

    static let llamaBatch = TokenBatch(batch: 8, length: 64, inputIds: (0..<512).map { ($0 * 131 + 7) % 1024 })
    static let llamaLabels = (0..<512).map { ($0 * 131 + 7) % 1024 }

    /// Two identical models, one forward + backward + AdamW step each: bit-identical results.
    @Test(arguments: [FrozenPrecision.fp32, .bf16])
    func llamaStepsAreBitIdentical(_ precision: FrozenPrecision) throws {
        print("parallel workers: \(parallelWorkers) (OpenBLAS threads \(matmulThreads)); bf16 instructions: \(hasBF16Instructions)")
        var results: [(loss: Float, gradients: [Tensor], updated: [Tensor])] = []
        for _ in 0..<2 {
            let model = try Self.wideLlama(precision: precision)
            let trainable = model.namedAdapterParameters.map(\.parameter)
            let optimizer = AdamW(parameters: trainable, learningRate: 1e-2, weightDecay: 0.01)
            optimizer.zeroGradients()
            let loss = try model.loss(Self.llamaBatch, labels: Self.llamaLabels, backward: true)
            let gradients = try trainable.map { try #require($0.grad).clone() }
            optimizer.update()
            results.append((loss, gradients, trainable.map { $0.value.clone() }))
        }
        let (a, b) = (results[0], results[1])
        #expect(a.loss.isFinite && a.loss.bitPattern == b.loss.bitPattern, "loss \(a.loss) vs \(b.loss)")
        for (i, (g, h)) in zip(a.gradients, b.gradients).enumerated() {
            #expect(g.isBitIdentical(to: h), "gradient \(i) differs")
            #expect(g.scalars.contains { $0 != 0 }, "gradient \(i) is zero")
        }
        for (i, (u, v)) in zip(a.updated, b.updated).enumerated() { #expect(u.isBitIdentical(to: v), "update \(i) differs") }
        print("\(precision): loss \(a.loss), \(a.gradients.count) adapter gradients and updates bit-identical across two runs")
    }

    /// BERT: LayerNorm rows, GELU and attention over 8 sequences of 64, and AdamW over a
    /// 131,072-value embedding (full fine-tuning), twice.
    @Test func bertStepsAreBitIdentical() throws {
        var results: [(loss: Float, updated: [Tensor])] = []
        for _ in 0..<2 {
            let config = try BertConfiguration(vocabSize: 1024, hiddenSize: 128, numHiddenLayers: 1, numAttentionHeads: 4,
                                               intermediateSize: 512, maxPositionEmbeddings: 64)
            let model = try BertForSequenceClassification(config)
            ModelBehaviourTests.randomise(model, seed: 33)
            let parameters = model.namedParameters.map(\.parameter)
            for p in parameters { p.setTrainable(true) }
            let optimizer = AdamW(parameters: parameters, learningRate: 1e-3, weightDecay: 0.01)
            optimizer.zeroGradients()
            let batch = TokenBatch(batch: 8, length: 64, inputIds: (0..<512).map { ($0 * 37 + 3) % 1024 })
            let loss = try model.loss(batch, labels: [0, 1, 1, 0, 1, 0, 0, 1], backward: true)
            optimizer.update()
            results.append((loss, parameters.map { $0.value.clone() }))
        }
        #expect(results[0].loss.isFinite && results[0].loss.bitPattern == results[1].loss.bitPattern)
        for (i, (u, v)) in zip(results[0].updated, results[1].updated).enumerated() {
            #expect(u.isBitIdentical(to: v), "parameter \(i) differs after the step")
        }
        print("BERT: loss \(results[0].loss), \(results[0].updated.count) parameters bit-identical after a full step, twice")
    }

    /// The rest of the split kernels: the gradient norm's blocked sum and the clipping scale over
    /// 300,000 values, and the bf16 product for fewer than 16 rows (decoding's path).
    @Test func reductionsAndSmallBatchProductsAreBitIdentical() throws {
        let t = randomTensor([300_000], seed: 4)
        let (a, b) = (sumOfSquares(t), sumOfSquares(t))
        #expect(a > 0 && a.bitPattern == b.bitPattern)
        let (u, v) = (t.clone(), t.clone())
        scaleInPlace(u, by: 0.37)
        scaleInPlace(v, by: 0.37)
        #expect(u.isBitIdentical(to: v) && u[7] == t[7] * 0.37)
        let batch = TokenBatch(batch: 1, length: 4, inputIds: [5, 77, 901, 13])
        let losses = try (0..<2).map { _ in try Self.wideLlama(precision: .bf16).loss(batch, labels: [5, 77, 901, 13], backward: false) }
        #expect(losses[0].isFinite && losses[0].bitPattern == losses[1].bitPattern)
        print("sum of squares \(a), bf16 4-token loss \(losses[0]): bit-identical twice")
    }
}
