import Foundation
import Formats
import Kernels
import LoRA
import Models

/// What a run reports as it goes.
public enum TrainingEvent: Sendable {
    case step(StepRecord, total: Int)
    case evaluation(step: Int, EvaluationResult, improved: Bool)
    case checkpoint(step: Int, path: String)
    case message(String)
}

/// The end-of-run summary (`lora train --json` prints it).
public struct TrainingSummary: Sendable, Codable {
    public var adapter: String
    public var trainableParams: Int
    public var allParams: Int
    public var steps: Int
    public var seconds: Double
    public var tokensPerSecond: Double
    public var peakRssBytes: Int
    public var finalTrainLoss: Double?
    public var bestValid: Double?
    public var skippedSteps: Int
    /// Time in the training steps alone (no evaluation, no checkpoint writes).
    public var trainSeconds: Double
    /// Training sequences per second of `trainSeconds`.
    public var examplesPerSecond: Double
    /// The kept model (the best on validation, else the last) on each `--test` file.
    public var tests: [TestResult]

    enum CodingKeys: String, CodingKey {
        case adapter, trainableParams = "trainable_params", allParams = "all_params", steps, seconds
        case tokensPerSecond = "tokens_per_second", peakRssBytes = "peak_rss_bytes", finalTrainLoss = "final_train_loss"
        case bestValid = "best_valid", skippedSteps = "skipped_steps", trainSeconds = "train_seconds"
        case examplesPerSecond = "examples_per_second", tests
    }
}

/// One held-out test set's result at the end of a run.
public struct TestResult: Sendable, Codable {
    public var file: String
    public var examples: Int
    public var loss: Double
    public var accuracy: Double?
    public var macroF1: Double?

    enum CodingKeys: String, CodingKey { case file, examples, loss, accuracy, macroF1 = "macro_f1" }
}

/// A whole run: prepares the model (fresh LoRA adapter, full fine-tuning, or a checkpoint to
/// resume), trains, evaluates every `evalEvery` steps, keeps the best adapter in `output`,
/// checkpoints every `saveEvery` steps and at the end, and writes `metrics.jsonl` and `loss.svg`.
public final class TrainingSession {
    public let trainer: Trainer
    public let output: URL
    let valid: [Example]
    let tests: [(name: String, examples: [Example])]
    let labels: [String]?
    let events: (TrainingEvent) -> Void
    var bestScore: Double?
    var evaluationsWithoutImprovement = 0
    var metrics: FileHandle?
    var trainLosses: [(step: Int, loss: Double)] = []
    var validLosses: [(step: Int, loss: Double)] = []
    /// The trainable weights at the best evaluation, kept only when test sets need them and a
    /// later step changed the weights.
    var bestWeights: [Tensor]?
    var weightsAreBest = false

    /// - Parameter tests: held-out sets evaluated once at the end, on the kept model.
    public init(model: PretrainedModel, configuration: TrainingConfiguration, train: [Example], valid: [Example],
                tests: [(name: String, examples: [Example])] = [],
                padId: Int, output: URL, labels: [String]?, resume: URL?, events: @escaping (TrainingEvent) -> Void) throws {
        try configuration.validate()
        self.output = output
        self.valid = valid
        self.tests = tests
        self.labels = labels
        self.events = events
        var state: TrainerState?
        if let resume {
            let s = try Checkpoints.readState(resume)
            if let why = Checkpoints.incompatibility(s, configuration: configuration, model: model) {
                throw TrainingError.checkpoint(path: resume.path, reason: "cannot resume this run: \(why)")
            }
            try Checkpoints.loadWeights(resume, into: model, full: configuration.full)
            state = s
        } else if configuration.full {
            for (_, p) in model.adaptable.namedParameters { p.setTrainable(true) }
        } else {
            try model.adaptable.addAdapter(named: "default", config: Self.loraConfig(configuration, model: model), seed: configuration.seed)
        }
        trainer = try Trainer(model: model, configuration: configuration, examples: train, padId: padId)
        if let state, let resume {
            try Checkpoints.restore(trainer, from: resume, state: state)
            bestScore = state.bestScore
            evaluationsWithoutImprovement = state.evaluationsWithoutImprovement
            trainer.lastCheckpoint = resume.path
            events(.message("resumed from \(resume.path) at step \(state.step)"))
        }
    }

    /// The PEFT config of the adapter a run trains.
    public static func loraConfig(_ c: TrainingConfiguration, model: PretrainedModel) -> LoRAConfig {
        LoRAConfig(rank: c.rank, alpha: c.alpha, dropout: c.dropout, targets: .names(c.targets ?? model.defaultLoRATargets),
                   useRSLoRA: c.rslora, initialization: c.initialization,
                   modulesToSave: model.isClassifier ? ["classifier"] : nil, taskType: model.peftTaskType)
    }

    public func run() throws -> TrainingSummary {
        let fm = FileManager.default
        try fm.createDirectory(at: output, withIntermediateDirectories: true)
        let metricsURL = output.appendingPathComponent("metrics.jsonl")
        if !fm.fileExists(atPath: metricsURL.path) { _ = fm.createFile(atPath: metricsURL.path, contents: nil) }
        metrics = try FileHandle(forWritingTo: metricsURL)
        try metrics?.seekToEnd()
        defer { try? metrics?.close() }
        let c = trainer.configuration
        let start = Date()
        var tokens = 0, examples = 0, trainSeconds = 0.0
        var lastLoss: Double?
        var stopEarly = false
        while trainer.step < trainer.totalSteps && !stopEarly {
            let record = try trainer.trainStep()
            weightsAreBest = weightsAreBest && record.skipped
            tokens += record.tokens
            examples += record.examples
            trainSeconds += record.seconds
            if !record.skipped { lastLoss = record.loss; trainLosses.append((record.step, record.loss)) }
            log(["type": "train", "step": record.step, "loss": record.loss, "lr": record.learningRate,
                 "grad_norm": record.gradientNorm, "tokens": record.tokens, "seconds": record.seconds, "skipped": record.skipped])
            events(.step(record, total: trainer.totalSteps))
            let last = trainer.step == trainer.totalSteps
            if !valid.isEmpty, let every = c.evalEvery ?? (last ? 1 : nil), trainer.step % every == 0 || last {
                stopEarly = try evaluateAndKeepBest()
            }
            if let every = c.saveEvery, trainer.step % every == 0, !last { try checkpoint() }
        }
        try checkpoint()
        if valid.isEmpty || bestScore == nil { try saveAdapter() }
        try writeLossCurve()
        let seconds = Date().timeIntervalSince(start)
        let peak = peakResidentBytes()   // of training, before the test sets
        let report = trainer.model.adaptable
        let (trainable, all) = report.parameterCounts
        return TrainingSummary(adapter: output.path, trainableParams: trainable, allParams: all, steps: trainer.step,
                               seconds: seconds, tokensPerSecond: Double(tokens) / max(seconds, 1e-9),
                               peakRssBytes: peak, finalTrainLoss: lastLoss, bestValid: bestScore.map { s in
                                   trainer.model.isClassifier ? s : -s },
                               skippedSteps: trainer.skippedSteps, trainSeconds: trainSeconds,
                               examplesPerSecond: Double(examples) / max(trainSeconds, 1e-9), tests: try runTests())
    }

    /// The test sets, on the weights that were saved: the best on validation (restored from the
    /// in-memory copy when later steps changed them), else the last.
    func runTests() throws -> [TestResult] {
        guard !tests.isEmpty else { return [] }
        if !valid.isEmpty && bestScore != nil && !weightsAreBest {
            if let bestWeights {
                for (p, best) in zip(trainer.optimizer.parameters, bestWeights) { p.value.copy(from: best) }
            } else {
                events(.message("note: the best weights were saved before this run resumed; the test sets see the last weights"))
            }
        }
        return try tests.map { name, examples in
            let r = try trainer.evaluate(examples)
            events(.message("test \(name): " + (r.accuracy.map { String(format: "accuracy %.4f, macro-F1 %.4f", $0, r.macroF1 ?? 0) }
                ?? String(format: "loss %.4f, perplexity %.2f", r.loss, r.perplexity)) + " over \(r.examples) examples"))
            return TestResult(file: name, examples: r.examples, loss: r.loss, accuracy: r.accuracy, macroF1: r.macroF1)
        }
    }

    /// Evaluates; saves the adapter when it is the best so far. Returns true to stop early.
    func evaluateAndKeepBest() throws -> Bool {
        let result = try trainer.evaluate(valid)
        let improved = bestScore.map { result.score > $0 } ?? true
        var entry: [String: Any] = ["type": "eval", "step": trainer.step, "loss": result.loss, "examples": result.examples]
        if let a = result.accuracy { entry["accuracy"] = a }
        if let f = result.macroF1 { entry["macro_f1"] = f }
        log(entry)
        validLosses.append((trainer.step, result.loss))
        events(.evaluation(step: trainer.step, result, improved: improved))
        if improved {
            bestScore = result.score
            evaluationsWithoutImprovement = 0
            try saveAdapter()
            weightsAreBest = true
            if !tests.isEmpty && trainer.step < trainer.totalSteps {
                let parameters = trainer.optimizer.parameters
                let copies = bestWeights ?? parameters.map { Tensor(shape: $0.value.shape) }
                bestWeights = copies
                for (copy, p) in zip(copies, parameters) { copy.copy(from: p.value) }
            }
        } else {
            evaluationsWithoutImprovement += 1
        }
        if let patience = trainer.configuration.earlyStoppingPatience, evaluationsWithoutImprovement >= patience {
            events(.message("early stopping: no improvement in \(patience) evaluations"))
            return true
        }
        return false
    }

    /// The result in `output` itself: a PEFT adapter (or, with `full`, the weights) plus the label map.
    func saveAdapter() throws {
        if trainer.configuration.full {
            try Checkpoints.writeAllWeights(trainer.model, to: output.appendingPathComponent("model.safetensors"))
        } else {
            try trainer.model.adaptable.savePEFTAdapter(named: "default", to: output)
        }
        if let labels {
            let data = try JSONSerialization.data(withJSONObject: ["labels": labels], options: [.sortedKeys])
            try atomicWrite(data, to: output.appendingPathComponent("label_map.json"))
        }
    }

    func checkpoint() throws {
        let state = TrainerState(step: trainer.step, batcher: trainer.batcher.state, dropout: trainer.dropoutStates.map(String.init),
                                 configuration: trainer.configuration, baseModel: BaseModelFingerprint(trainer.model),
                                 bestScore: bestScore, evaluationsWithoutImprovement: evaluationsWithoutImprovement, labels: labels)
        let url = try Checkpoints.save(trainer, state: state, output: output, keep: trainer.configuration.keepCheckpoints)
        trainer.lastCheckpoint = url.path
        events(.checkpoint(step: trainer.step, path: url.path))
    }

    func log(_ entry: [String: Any]) {
        guard let data = try? JSONSerialization.data(withJSONObject: entry, options: [.sortedKeys]) else { return }
        metrics?.write(data + Data("\n".utf8))
    }

    func writeLossCurve() throws {
        let svg = LossCurve.svg(train: trainLosses, valid: validLosses, title: "loss — \(output.lastPathComponent)")
        try atomicWrite(Data(svg.utf8), to: output.appendingPathComponent("loss.svg"))
    }
}


/// Peak resident memory of this process (VmHWM), in bytes.
public func peakResidentBytes() -> Int {
    guard let status = try? String(contentsOfFile: "/proc/self/status", encoding: .utf8) else { return 0 }
    for line in status.split(separator: "\n") where line.hasPrefix("VmHWM:") {
        let kb = line.split(separator: " ").compactMap { Int($0) }.first ?? 0
        return kb * 1024
    }
    return 0
}
