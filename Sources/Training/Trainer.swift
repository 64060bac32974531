import Foundation
import Kernels
import Layers
import LoRA
import ModelCore

/// One optimizer step's figures.
public struct StepRecord: Sendable, Codable {
    public var step: Int
    public var loss: Double
    public var learningRate: Double
    public var gradientNorm: Double
    public var tokens: Int
    /// Sequences in the step's micro-batches.
    public var examples: Int
    public var seconds: Double
    public var skipped: Bool
}

/// An evaluation: loss (and perplexity) for causal LMs, accuracy, macro-F1 and the confusion
/// matrix for classification.
public struct EvaluationResult: Sendable, Codable {
    public var loss: Double
    public var tokens: Int
    public var examples: Int
    public var accuracy: Double?
    public var macroF1: Double?
    /// confusion[true][predicted]
    public var confusion: [[Int]]?
    public var perplexity: Double { exp(loss) }

    /// The number to maximise when choosing the best adapter: accuracy when there is one, else −loss.
    public var score: Double { accuracy ?? -loss }
}

/// Trains the trainable parameters of a model: LoRA matrices (plus any `modules_to_save`), or
/// every weight with `full`. One `step()` is one optimizer update over `gradAccum` micro-batches,
/// with global-norm clipping, the learning-rate schedule and non-finite detection.
public final class Trainer {
    public let model: any PretrainedModel
    public let configuration: TrainingConfiguration
    public let totalSteps: Int
    public private(set) var step = 0
    public private(set) var batcher: Batcher
    public let optimizer: AdamW
    let padId: Int
    public private(set) var consecutiveNonFinite = 0
    public private(set) var skippedSteps = 0
    public var lastCheckpoint: String?

    public init(model: any PretrainedModel, configuration: TrainingConfiguration, examples: [Example], padId: Int) throws(TrainingError) {
        try configuration.validate()
        guard !examples.isEmpty else { throw .data("no training examples") }
        self.model = model
        self.configuration = configuration
        self.padId = padId
        batcher = Batcher(examples: examples, batchSize: configuration.batchSize, seed: configuration.seed)
        let perEpoch = max(batcher.batchesPerEpoch / configuration.gradAccum, 1)
        let (epochSteps, overflow) = perEpoch.multipliedReportingOverflow(by: configuration.epochs ?? 1)
        guard configuration.steps != nil || !overflow else { throw .invalidConfiguration("--epochs \(configuration.epochs ?? 1) is too many") }
        totalSteps = configuration.steps ?? epochSteps
        let trainable = model.trainableParameters
        guard !trainable.isEmpty else { throw .invalidConfiguration("the model has no trainable parameters") }
        optimizer = AdamW(parameters: trainable, learningRate: Float(configuration.learningRate),
                          weightDecay: Float(configuration.weightDecay))
    }

    /// One optimizer step. Returns its record; a step whose loss or gradients are not finite is
    /// skipped (no update) and counted, and too many in a row stop training.
    public func trainStep() throws -> StepRecord {
        let start = DispatchTime.now().uptimeNanoseconds
        model.setTraining(true)
        optimizer.zeroGradients()
        var lossSum = 0.0, tokens = 0, examples = 0
        for _ in 0..<configuration.gradAccum {
            let (batch, labels, count) = batcher.next(padId: padId)
            lossSum += Double(try model.loss(batch, labels: labels, backward: true))
            tokens += count
            examples += batch.batch
        }
        let loss = lossSum / Double(configuration.gradAccum)
        // Average the accumulated micro-batch gradients, then clip by global norm.
        let accumulation = Float(configuration.gradAccum)
        var squared = 0.0
        for p in optimizer.parameters {
            guard let g = p.grad else { continue }
            if configuration.gradAccum > 1 { scaleInPlace(g, by: 1 / accumulation) }
            squared += sumOfSquares(g)
        }
        let norm = squared.squareRoot()
        let lr = configuration.learningRate(atStep: step, of: totalSteps)
        var record = StepRecord(step: step + 1, loss: loss, learningRate: lr, gradientNorm: norm, tokens: tokens, examples: examples,
                                seconds: 0, skipped: false)
        if !loss.isFinite || !norm.isFinite {
            consecutiveNonFinite += 1
            skippedSteps += 1
            record.skipped = true
            if consecutiveNonFinite >= configuration.maxNonFiniteSteps {
                throw TrainingError.diverged(step: step + 1, lastCheckpoint: lastCheckpoint)
            }
        } else {
            consecutiveNonFinite = 0
            if norm > configuration.maxGradNorm {
                let scale = Float(configuration.maxGradNorm / norm)
                for p in optimizer.parameters { if let g = p.grad { scaleInPlace(g, by: scale) } }
            }
            optimizer.learningRate = Float(lr)
            optimizer.update()
        }
        step += 1
        record.seconds = Double(DispatchTime.now().uptimeNanoseconds - start) / 1e9
        return record
    }

    /// Evaluates on `examples` without touching the gradients (dropout off).
    public func evaluate(_ examples: [Example]) throws -> EvaluationResult {
        try Self.evaluate(model, examples, batchSize: configuration.batchSize, padId: padId)
    }

    /// Token-weighted mean loss (causal LM) or accuracy / macro-F1 / confusion (classification).
    public static func evaluate(_ model: any PretrainedModel, _ examples: [Example], batchSize: Int, padId: Int) throws -> EvaluationResult {
        model.setTraining(false)
        defer { model.setTraining(true) }
        // Length-sorted windows cut padding; the totals do not depend on the order.
        var batcher = Batcher(examples: examples, batchSize: batchSize, seed: 0, shuffle: false, bucketByLength: true)
        var lossSum = 0.0, tokens = 0
        var confusion: [[Int]]? = nil
        for _ in 0..<batcher.batchesPerEpoch {
            let (batch, labels, _) = batcher.next(padId: padId)
            if let classifier = model as? any SequenceClassifier {
                let k = classifier.labelNames.count
                if confusion == nil { confusion = Array(repeating: Array(repeating: 0, count: k), count: k) }
                lossSum += Double(try classifier.loss(batch, labels: labels, backward: false)) * Double(batch.batch)
                tokens += batch.batch
                let logits = classifier.lastLogits   // the logits of the batch just scored
                for b in 0..<batch.batch where labels[b] >= 0 && labels[b] < k {
                    var best = 0
                    for j in 1..<k where logits[b * k + j] > logits[b * k + best] { best = j }
                    confusion?[labels[b]][best] += 1
                }
            } else {
                // Next-token targets counted as the model counts them: labels[t + 1] for t < T − 1.
                var count = 0
                for b in 0..<batch.batch {
                    for t in 1..<batch.length where labels[b * batch.length + t] != ignoreIndex { count += 1 }
                }
                guard count > 0 else { continue }
                lossSum += Double(try model.loss(batch, labels: labels, backward: false)) * Double(count)
                tokens += count
            }
        }
        var result = EvaluationResult(loss: tokens > 0 ? lossSum / Double(tokens) : .nan, tokens: tokens, examples: examples.count)
        if let confusion {
            let total = confusion.joined().reduce(0, +)
            let correct = confusion.indices.reduce(0) { $0 + confusion[$1][$1] }
            result.accuracy = total > 0 ? Double(correct) / Double(total) : nil
            let f1s = confusion.indices.map { c -> Double in
                let tp = Double(confusion[c][c])
                let fp = Double(confusion.indices.reduce(0) { $0 + confusion[$1][c] }) - tp
                let fn = Double(confusion[c].reduce(0, +)) - tp
                return tp == 0 ? 0 : 2 * tp / (2 * tp + fp + fn)
            }
            result.macroF1 = f1s.reduce(0, +) / Double(max(f1s.count, 1))
            result.confusion = confusion
        }
        return result
    }

    // MARK: Checkpoint state

    /// The dropout generators of every trainable adapter, in module order.
    var dropoutStates: [UInt64] {
        model.linearModules.compactMap { $0.dropoutGenerator?.state }
    }

    func restoreDropoutStates(_ states: [UInt64]) {
        let adapted = model.linearModules.filter { $0.adapter != nil }
        for (m, s) in zip(adapted, states) { m.dropoutGenerator = SplitMix64(seed: s) }
    }

    func restore(step: Int, batcher state: Batcher.State, dropout: [UInt64]) throws(TrainingError) {
        self.step = step
        do { try batcher.restore(state) } catch { throw .checkpoint(path: "", reason: "\(error)") }
        restoreDropoutStates(dropout)
    }
}
