import Foundation
import Kernels
import Layers
import LoRA
import Models
import TestSupport
import Testing
@testable import Training

@Suite("Trainer", .serialized)
struct TrainerTests {
    static func tinyLlama() throws -> any PretrainedModel {
        try ModelLoader.loadHuggingFace(directory: fixturesDirectory.appendingPathComponent("tiny-llama")).0
    }

    /// Causal examples over the tiny vocabulary, with a masked prompt.
    static func examples(_ n: Int, seed: UInt64) -> [Example] {
        var g = SplitMix64(seed: seed)
        return (0..<n).map { i in
            let length = 5 + Int(g.next() % 6)
            let ids = (0..<length).map { _ in 1 + Int(g.next() % 255) }
            let labels = ids.enumerated().map { $0.offset < 2 ? ignoreIndex : $0.element }
            return Example(ids: ids, labels: labels, label: nil, tokenTypeIds: nil, line: i + 1)
        }
    }

    static func configuration() -> TrainingConfiguration {
        var c = TrainingConfiguration()
        c.steps = 8
        c.batchSize = 3
        c.gradAccum = 2
        c.learningRate = 5e-3
        c.warmup = 2
        c.dropout = 0.1
        c.seed = 11
        return c
    }

    @Test func resumedRunReproducesTheUninterruptedLosses() throws {
        let train = Self.examples(20, seed: 1)
        let out = URL(fileURLWithPath: NSTemporaryDirectory()).appendingPathComponent("lora-resume-\(UUID().uuidString)")
        defer { try? FileManager.default.removeItem(at: out) }
        // Uninterrupted: 8 steps.
        let full = try TrainingSession(model: try Self.tinyLlama(), configuration: Self.configuration(), train: train, valid: [],
                                       padId: 0, output: out.appendingPathComponent("a"), labels: nil, resume: nil, events: { _ in })
        let uninterrupted = try (0..<8).map { _ in try full.trainer.trainStep().loss }
        // Interrupted after 3 steps (checkpoint), resumed on a freshly loaded model.
        let first = try TrainingSession(model: try Self.tinyLlama(), configuration: Self.configuration(), train: train, valid: [],
                                        padId: 0, output: out.appendingPathComponent("b"), labels: nil, resume: nil, events: { _ in })
        var resumed = try (0..<3).map { _ in try first.trainer.trainStep().loss }
        try first.checkpoint()
        let checkpoint = try #require(Checkpoints.list(out.appendingPathComponent("b")).last)
        let second = try TrainingSession(model: try Self.tinyLlama(), configuration: Self.configuration(), train: train, valid: [],
                                         padId: 0, output: out.appendingPathComponent("b"), labels: nil, resume: checkpoint, events: { _ in })
        #expect(second.trainer.step == 3)
        resumed += try (0..<5).map { _ in try second.trainer.trainStep().loss }
        let worst = zip(uninterrupted, resumed).map { abs($0 - $1) }.max() ?? .infinity
        print("resume after 3 of 8 steps: losses \(uninterrupted.map { String(format: "%.5f", $0) }); max difference \(worst)")
        #expect(worst == 0, "resumed losses differ from the uninterrupted run")
        #expect(uninterrupted.last! < uninterrupted.first!)
    }

    @Test func checkpointsOfAnotherRunAreRefused() throws {
        let train = Self.examples(10, seed: 2)
        let out = URL(fileURLWithPath: NSTemporaryDirectory()).appendingPathComponent("lora-refuse-\(UUID().uuidString)")
        defer { try? FileManager.default.removeItem(at: out) }
        let session = try TrainingSession(model: try Self.tinyLlama(), configuration: Self.configuration(), train: train, valid: [],
                                          padId: 0, output: out, labels: nil, resume: nil, events: { _ in })
        _ = try session.trainer.trainStep()
        try session.checkpoint()
        let checkpoint = try #require(Checkpoints.list(out).last)
        var other = Self.configuration()
        other.rank = 4
        #expect(throws: TrainingError.self) {
            _ = try TrainingSession(model: try Self.tinyLlama(), configuration: other, train: train, valid: [], padId: 0,
                                    output: out, labels: nil, resume: checkpoint, events: { _ in })
        }
        let untied = try ModelLoader.loadHuggingFace(directory: fixturesDirectory.appendingPathComponent("tiny-llama-untied")).0
        #expect(throws: TrainingError.self) {
            _ = try TrainingSession(model: untied, configuration: Self.configuration(), train: train, valid: [], padId: 0,
                                    output: out, labels: nil, resume: checkpoint, events: { _ in })
        }
    }

    @Test func scheduleClippingAndDivergence() throws {
        var c = TrainingConfiguration()
        c.learningRate = 1
        c.warmup = 0.25
        c.schedule = .cosine
        #expect(c.learningRate(atStep: 0, of: 8) == 0.5 && c.learningRate(atStep: 1, of: 8) == 1)
        #expect(abs(c.learningRate(atStep: 5, of: 8) - 0.5) < 1e-12)
        c.schedule = .linear
        #expect(abs(c.learningRate(atStep: 5, of: 8) - 0.5) < 1e-12)
        // A poisoned batch (NaN weights) is skipped, then training stops with a clear error.
        let model = try Self.tinyLlama()
        var config = Self.configuration()
        config.maxNonFiniteSteps = 3
        let out = URL(fileURLWithPath: NSTemporaryDirectory()).appendingPathComponent("lora-nan-\(UUID().uuidString)")
        defer { try? FileManager.default.removeItem(at: out) }
        let session = try TrainingSession(model: model, configuration: config, train: Self.examples(6, seed: 3), valid: [], padId: 0,
                                          output: out, labels: nil, resume: nil, events: { _ in })
        model.namedParameters[0].parameter.value[0] = .nan
        var records: [StepRecord] = []
        do {
            for _ in 0..<5 { records.append(try session.trainer.trainStep()) }
            Issue.record("training went on with non-finite losses")
        } catch let error as TrainingError {
            #expect("\(error)".contains("diverged"))
        }
        #expect(records.count == 2 && records.allSatisfy(\.skipped))
    }
}

@Suite("Trainer modes", .serialized)
struct TrainerModeTests {
    static func output() -> URL { URL(fileURLWithPath: NSTemporaryDirectory()).appendingPathComponent("lora-modes-\(UUID().uuidString)") }

    @Test func fullFineTuningTrainsEveryWeightAndKeepsTheLastCheckpoints() throws {
        let model = try TrainerTests.tinyLlama()
        var c = TrainerTests.configuration()
        c.full = true
        c.steps = 5
        c.saveEvery = 1
        c.keepCheckpoints = 2
        c.learningRate = 1e-3
        let out = Self.output()
        defer { try? FileManager.default.removeItem(at: out) }
        var losses: [Double] = []
        let session = try TrainingSession(model: model, configuration: c, train: TrainerTests.examples(12, seed: 5), valid: [],
                                          padId: 0, output: out, labels: nil, resume: nil) { event in
            if case .step(let r, _) = event { losses.append(r.loss) }
        }
        #expect(model.namedParameters.allSatisfy { $0.parameter.isTrainable })
        #expect(model.linearModules.allSatisfy { $0.adapters.isEmpty })
        let summary = try session.run()
        print("full fine-tuning losses \(losses.map { String(format: "%.4f", $0) }); \(summary.trainableParams) trainable")
        #expect(summary.trainableParams == model.namedParameters.reduce(0) { $0 + $1.parameter.value.count })
        #expect(losses.last! < losses.first!)
        let kept = Checkpoints.list(out).map(\.lastPathComponent)
        #expect(kept == ["step-000004", "step-000005"], "kept \(kept)")
        #expect(FileManager.default.fileExists(atPath: out.appendingPathComponent("model.safetensors").path))
    }

    @Test func classificationWithEvaluationAndEarlyStopping() throws {
        let bert = try ModelLoader.loadHuggingFace(directory: fixturesDirectory.appendingPathComponent("tiny-bert")).0
        var g = SplitMix64(seed: 9)
        let examples = (0..<16).map { i -> Example in
            let label = i % 2
            // The class is visible in the tokens: label 1 sequences contain token 7.
            let ids = [2] + (0..<5).map { _ in 10 + Int(g.next() % 100) } + (label == 1 ? [7] : [8]) + [3]
            return Example(ids: ids, labels: [], label: label, tokenTypeIds: nil, line: i + 1)
        }
        var c = TrainingConfiguration()
        c.task = .classification
        c.steps = 12
        c.batchSize = 4
        c.learningRate = 1e-2
        c.evalEvery = 3
        c.dropout = 0
        let out = Self.output()
        defer { try? FileManager.default.removeItem(at: out) }
        var evaluations: [EvaluationResult] = []
        let session = try TrainingSession(model: bert, configuration: c, train: examples, valid: examples, padId: 0, output: out,
                                          labels: ["no", "yes"], resume: nil) { event in
            if case .evaluation(_, let r, _) = event { evaluations.append(r) }
        }
        let summary = try session.run()
        print("classification evaluations: \(evaluations.map { String(format: "acc %.2f loss %.3f", $0.accuracy ?? -1, $0.loss) })")
        #expect(evaluations.count == 4 && evaluations.allSatisfy { $0.confusion?.joined().reduce(0, +) == 16 })
        #expect((summary.bestValid ?? 0) >= 0.9)
        #expect(FileManager.default.fileExists(atPath: out.appendingPathComponent("label_map.json").path))
        #expect(FileManager.default.fileExists(atPath: out.appendingPathComponent("adapter_model.safetensors").path))

        // Early stopping: with a learning rate too small to change anything, the second evaluation
        // does not improve and training stops there.
        let frozen = try ModelLoader.loadHuggingFace(directory: fixturesDirectory.appendingPathComponent("tiny-bert")).0
        c.learningRate = 1e-30
        c.evalEvery = 1
        c.earlyStoppingPatience = 1
        let out2 = Self.output()
        defer { try? FileManager.default.removeItem(at: out2) }
        let stopped = try TrainingSession(model: frozen, configuration: c, train: examples, valid: examples, padId: 0, output: out2,
                                          labels: ["no", "yes"], resume: nil, events: { _ in }).run()
        #expect(stopped.steps == 2, "early stopping after \(stopped.steps) steps")
    }
}

@Suite("Test sets at the end of a run")
struct TestSetTests {
    /// With the validation set also given as a test set, the test loss must be exactly the best
    /// validation loss: the test sees the kept (best) weights even when later steps were worse.
    @Test func testSetsSeeTheBestWeights() throws {
        let out = URL(fileURLWithPath: NSTemporaryDirectory()).appendingPathComponent("lora-tests-\(UUID().uuidString)")
        defer { try? FileManager.default.removeItem(at: out) }
        var c = TrainerTests.configuration()
        c.steps = 6
        c.learningRate = 0.5   // far too high: the loss gets worse after the first steps
        c.warmup = 0
        c.schedule = .constant
        c.evalEvery = 1
        let valid = TrainerTests.examples(6, seed: 8)
        var evaluations: [(step: Int, loss: Double)] = []
        let session = try TrainingSession(model: try TrainerTests.tinyLlama(), configuration: c, train: TrainerTests.examples(12, seed: 7),
                                          valid: valid, tests: [("valid", valid)], padId: 0, output: out, labels: nil, resume: nil,
                                          events: { if case let .evaluation(step, r, _) = $0 { evaluations.append((step, r.loss)) } })
        let summary = try session.run()
        let best = try #require(evaluations.min { $0.loss < $1.loss })
        let test = try #require(summary.tests.first)
        print("validation losses \(evaluations.map { String(format: "%.4f", $0.loss) }); best at step \(best.step); test loss \(test.loss)")
        #expect(best.step < c.steps!, "the run should have got worse after its best step, to exercise the restore")
        #expect(test.loss == best.loss)
        #expect(summary.examplesPerSecond > 0 && summary.trainSeconds > 0 && summary.trainSeconds <= summary.seconds)
    }
}
