import Foundation
import Formats
import Kernels
import LoRA
import ModelCore

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

/// A run stopped on request (SIGINT, SIGTERM) after a step: where its state was saved.
public struct TrainingInterrupted: Error, CustomStringConvertible {
    /// The last step trained.
    public var step: Int
    /// The checkpoint that holds that step, or nil when none was written (nothing trained yet,
    /// or the weights were not finite).
    public var checkpoint: String?
    public var description: String {
        "training stopped at step \(step)" + (checkpoint.map { "; checkpoint \($0)" } ?? "; no checkpoint was written")
    }
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
    /// Written beside full fine-tuning's weights so that the result is a complete model folder:
    /// the tokenizer files (`config.json` is written from the model itself).
    let modelFiles: [String: Data]
    var bestScore: Double?
    var evaluationsWithoutImprovement = 0
    var metrics: FileHandle?
    var trainLosses: [(step: Int, loss: Double)] = []
    var validLosses: [(step: Int, loss: Double)] = []
    /// The trainable weights at the best evaluation, kept only when test sets need them and a
    /// later step changed the weights.
    var bestWeights: [Tensor]?
    var weightsAreBest = false
    /// The step of the last checkpoint written (or resumed from).
    var checkpointStep: Int?
    /// Asked between steps; true stops the run with a checkpoint (`TrainingInterrupted`).
    public var stopRequested: (() -> Bool)?
    /// Runs between the files of every checkpoint (a test hook: `LORA_TEST_CHECKPOINT_PAUSE_MS`).
    public var checkpointPause: (() -> Void)?
    /// Runs after every optimizer step, before evaluation and checkpointing (a test hook:
    /// `LORA_TEST_SPIKE_AT_STEP` blows the weights up to exercise divergence handling).
    public var afterStep: ((Trainer) -> Void)?

    /// - Parameter tests: held-out sets evaluated once at the end, on the kept model.
    public init(model: any PretrainedModel, configuration: TrainingConfiguration, train: [Example], valid: [Example],
                tests: [(name: String, examples: [Example])] = [],
                padId: Int, output: URL, labels: [String]?, resume: URL?, baseModel: String? = nil,
                modelFiles: [String: Data] = [:], events: @escaping (TrainingEvent) -> Void) throws {
        try configuration.validate()
        self.output = output
        self.valid = valid
        self.tests = tests
        self.labels = labels
        self.events = events
        self.modelFiles = modelFiles
        var state: TrainerState?
        if let resume {
            let s = try Checkpoints.readState(resume)
            if let why = Checkpoints.incompatibility(s, configuration: configuration, model: model) {
                throw TrainingError.checkpoint(path: resume.path, reason: "cannot resume this run: \(why)")
            }
            try Checkpoints.loadWeights(resume, into: model, full: configuration.full)
            state = s
        } else if configuration.full {
            for (_, p) in model.namedParameters { p.setTrainable(true) }
        } else {
            var config = Self.loraConfig(configuration, model: model)
            config.baseModelNameOrPath = baseModel
            do { try model.checkTrainingTargets(config) } catch { throw TrainingError.invalidConfiguration(error.description) }
            try model.addAdapter(named: "default", config: config, seed: configuration.seed)
        }
        trainer = try Trainer(model: model, configuration: configuration, examples: train, padId: padId)
        if let state, let resume {
            guard state.step < trainer.totalSteps else {
                let how = configuration.steps.map { "--steps \($0)" } ?? "\(trainer.totalSteps) steps (--epochs)"
                throw TrainingError.checkpoint(path: resume.path, reason: state.step == trainer.totalSteps
                    ? "it is at step \(state.step), the last of \(how): nothing is left to train; raise --steps to train further"
                    : "it is at step \(state.step), past \(how); raise --steps above \(state.step), or start afresh with --overwrite")
            }
            try Checkpoints.restore(trainer, from: resume, state: state)
            bestScore = state.bestScore
            evaluationsWithoutImprovement = state.evaluationsWithoutImprovement
            trainer.lastCheckpoint = resume.path
            checkpointStep = state.step
            events(.message("resumed from \(resume.path) at step \(state.step)"))
        }
    }

    /// The PEFT config of the adapter a run trains.
    public static func loraConfig(_ c: TrainingConfiguration, model: any PretrainedModel) -> LoRAConfig {
        let targets: LoRATargets = c.targets == ["all-linear"] ? .allLinear : .names(c.targets ?? model.defaultLoRATargets)
        return LoRAConfig(rank: c.rank, alpha: c.alpha, dropout: c.dropout, targets: targets,
                   useRSLoRA: c.rslora, initialization: c.initialization,
                   modulesToSave: (model as? any SequenceClassifier)?.headModuleNames, taskType: model.task.rawValue)
    }

    public func run() throws -> TrainingSummary {
        let fm = FileManager.default
        do {
            try fm.createDirectory(at: output, withIntermediateDirectories: true)
        } catch {
            throw TrainingError.output(path: output.path, reason: DurableFiles.plainReason(error))
        }
        for note in Checkpoints.sweep(output) { events(.message("leftover of an interrupted write: \(note)")) }
        let metricsURL = output.appendingPathComponent("metrics.jsonl")
        if !fm.fileExists(atPath: metricsURL.path) { _ = fm.createFile(atPath: metricsURL.path, contents: nil) }
        do {
            metrics = try FileHandle(forWritingTo: metricsURL)
            try metrics?.seekToEnd()
        } catch {
            throw TrainingError.output(path: metricsURL.path, reason: DurableFiles.plainReason(error))
        }
        defer { try? metrics?.close() }
        let c = trainer.configuration
        let start = Date()
        var tokens = 0, examples = 0, trainSeconds = 0.0
        var lastLoss: Double?
        var stopEarly = false
        while trainer.step < trainer.totalSteps && !stopEarly {
            if let stopRequested, stopRequested() { throw try interrupted() }
            let record: StepRecord
            do {
                record = try trainer.trainStep()
            } catch TrainingError.diverged(let step, _) {
                throw divergence(at: step)
            }
            afterStep?(trainer)
            weightsAreBest = weightsAreBest && record.skipped
            tokens += record.tokens
            examples += record.examples
            trainSeconds += record.seconds
            if !record.skipped { lastLoss = record.loss; trainLosses.append((record.step, record.loss)) }
            try log(["type": "train", "step": record.step, "loss": record.loss, "lr": record.learningRate,
                 "grad_norm": record.gradientNorm, "tokens": record.tokens, "seconds": record.seconds, "skipped": record.skipped])
            events(.step(record, total: trainer.totalSteps))
            let last = trainer.step == trainer.totalSteps
            if !valid.isEmpty, let every = c.evalEvery ?? (last ? 1 : nil), trainer.step % every == 0 || last {
                stopEarly = try evaluateAndKeepBest()
            }
            if let every = c.saveEvery, trainer.step % every == 0, !last {
                // Never while the steps are not finite: those weights may be the diverging ones.
                if trainer.consecutiveNonFinite == 0 {
                    try checkpoint()
                } else {
                    events(.message("no checkpoint at step \(trainer.step): the step was not finite"))
                }
            }
        }
        if trainer.consecutiveNonFinite > 0 {
            events(.message("warning: the last \(trainer.consecutiveNonFinite) steps were not finite (fewer than max_non_finite_steps, "
                            + "\(c.maxNonFiniteSteps), so training was not stopped); the final weights are those of step \(trainer.step - trainer.consecutiveNonFinite)"))
        }
        try checkpoint()
        if valid.isEmpty || bestScore == nil { try saveAdapter() }
        try writeLossCurve()
        let seconds = Date().timeIntervalSince(start)
        let peak = peakResidentBytes()   // of training, before the test sets
        let (trainable, all) = trainer.model.parameterCounts
        return TrainingSummary(adapter: output.path, trainableParams: trainable, allParams: all, steps: trainer.step,
                               seconds: seconds, tokensPerSecond: Double(tokens) / max(seconds, 1e-9),
                               peakRssBytes: peak, finalTrainLoss: lastLoss, bestValid: bestScore.map { s in
                                   trainer.model.task == .sequenceClassification ? s : -s },
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
        // A non-finite evaluation never counts as the best: its adapter is not saved.
        let improved = result.score.isFinite && (bestScore.map { result.score > $0 } ?? true)
        var entry: [String: Any] = ["type": "eval", "step": trainer.step, "loss": result.loss, "examples": result.examples]
        if let a = result.accuracy { entry["accuracy"] = a }
        if let f = result.macroF1 { entry["macro_f1"] = f }
        try log(entry)
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

    /// The result in `output` itself: a PEFT adapter (or, with `full`, a complete Hugging Face
    /// model folder: weights, `config.json` and the tokenizer files) plus the label map.
    ///
    /// Never left half-written in a way that loads wrongly: the files are written into
    /// `output/.tmp-adapter-…/` and fsynced; then the marker (`adapter_config.json`, or
    /// `config.json` for a model) is removed, the weights and label map are renamed into place,
    /// and the marker comes last. A crash in between leaves a folder without its marker, which
    /// every loader refuses by name, never a new config beside old weights. Non-finite weights are never saved.
    func saveAdapter() throws {
        guard weightsAreFinite() else {
            throw TrainingError.diverged(step: trainer.step, lastCheckpoint: trainer.lastCheckpoint)
        }
        let fm = FileManager.default
        let temporary = output.appendingPathComponent(".tmp-adapter-\(UUID().uuidString)")
        defer { if fm.fileExists(atPath: temporary.path) { try? fm.removeItem(at: temporary) } }
        func failed(_ error: any Error) -> TrainingError {
            let file = DurableFiles.fileNamed(in: error).map { URL(fileURLWithPath: $0).lastPathComponent } ?? "the adapter"
            return .output(path: output.appendingPathComponent(file).path, reason: "cannot write it: \(DurableFiles.plainReason(error))")
        }
        do {
            try fm.createDirectory(at: temporary, withIntermediateDirectories: true)
            var weights: [String]
            // The file whose presence makes the folder loadable, renamed into place last.
            let marker = trainer.configuration.full ? "config.json" : "adapter_config.json"
            if trainer.configuration.full {
                try Checkpoints.writeAllWeights(trainer.model, to: temporary.appendingPathComponent("model.safetensors"))
                weights = ["model.safetensors"]
                for (name, data) in modelFiles.sorted(by: { $0.key < $1.key }) {
                    try atomicWrite(data, to: temporary.appendingPathComponent(name))
                    if name != marker { weights.append(name) }
                }
            } else {
                try trainer.model.savePEFTAdapter(named: "default", to: temporary)
                weights = ["adapter_model.safetensors"]
            }
            if let labels {
                let data = try JSONSerialization.data(withJSONObject: ["labels": labels], options: [.sortedKeys])
                try atomicWrite(data, to: temporary.appendingPathComponent("label_map.json"))
            }
            try DurableFiles.syncContents(of: temporary)
            let config = output.appendingPathComponent(marker)
            if fm.fileExists(atPath: temporary.appendingPathComponent(marker).path), fm.fileExists(atPath: config.path) {
                try fm.removeItem(at: config)
                try DurableFiles.sync(output)
            }
            for name in (labels == nil ? [] : ["label_map.json"]) + weights {
                try DurableFiles.rename(temporary.appendingPathComponent(name), to: output.appendingPathComponent(name))
            }
            if fm.fileExists(atPath: temporary.appendingPathComponent(marker).path) {
                try DurableFiles.sync(output)
                try DurableFiles.rename(temporary.appendingPathComponent(marker), to: config)
            }
            try DurableFiles.sync(output)
        } catch {
            throw failed(error)
        }
    }

    /// Whether every trainable weight is finite (diverged weights are never saved).
    func weightsAreFinite() -> Bool {
        trainer.optimizer.parameters.allSatisfy { $0.value.isFinite }
    }

    func checkpoint() throws {
        guard weightsAreFinite() else {
            events(.message("no checkpoint at step \(trainer.step): the weights are not finite"))
            return
        }
        let state = TrainerState(step: trainer.step, batcher: trainer.batcher.state, dropout: trainer.dropoutStates.map(String.init),
                                 configuration: trainer.configuration, baseModel: BaseModelFingerprint(trainer.model),
                                 bestScore: bestScore, evaluationsWithoutImprovement: evaluationsWithoutImprovement, labels: labels,
                                 sequence: Checkpoints.nextSequence(output))
        let url = try Checkpoints.save(trainer, state: state, output: output, keep: trainer.configuration.keepCheckpoints,
                                       pause: checkpointPause)
        trainer.lastCheckpoint = url.path
        checkpointStep = trainer.step
        events(.checkpoint(step: trainer.step, path: url.path))
    }

    /// The error for a divergence declared at `step`. The weights the non-finite steps ran on are
    /// those of the last finite step; a checkpoint of that step holds them, so it is set aside as
    /// `checkpoints/diverged-step-NNNNNN` (kept for inspection, never listed, never resumed by
    /// `latest`), and the error names the newest checkpoint before it.
    func divergence(at step: Int) -> TrainingError {
        let lastFinite = step - trainer.consecutiveNonFinite
        let dir = Checkpoints.directory(output)
        let suspect = dir.appendingPathComponent(String(format: "step-%06d", lastFinite))
        if FileManager.default.fileExists(atPath: suspect.path) {
            var target = dir.appendingPathComponent("diverged-" + suspect.lastPathComponent)
            if FileManager.default.fileExists(atPath: target.path) {
                target = dir.appendingPathComponent("diverged-\(suspect.lastPathComponent)-\(UUID().uuidString)")
            }
            if (try? DurableFiles.rename(suspect, to: target)) != nil {
                try? DurableFiles.sync(dir)
                events(.message("the checkpoint of step \(lastFinite) holds the weights that gave the non-finite steps: moved to \(target.path)"))
            }
        }
        let good = Checkpoints.list(output).last { (Checkpoints.step(ofName: $0.lastPathComponent) ?? .max) < lastFinite }
        return .diverged(step: step, lastCheckpoint: good?.path)
    }

    /// Stops on request: checkpoints the current step (unless it already is, or nothing was
    /// trained) and returns the error that reports it.
    func interrupted() throws -> TrainingInterrupted {
        if trainer.step > 0 && checkpointStep != trainer.step && trainer.consecutiveNonFinite == 0 { try checkpoint() }
        return TrainingInterrupted(step: trainer.step, checkpoint: checkpointStep == trainer.step ? trainer.lastCheckpoint : nil)
    }

    func log(_ entry: [String: Any]) throws {
        // JSON has no NaN or infinity: a skipped step's figures are logged as null.
        let entry = entry.mapValues { value -> Any in
            if let d = value as? Double, !d.isFinite { return NSNull() }
            return value
        }
        guard let data = try? JSONSerialization.data(withJSONObject: entry, options: [.sortedKeys]) else { return }
        do {
            try metrics?.write(contentsOf: data + Data("\n".utf8))
        } catch {
            throw TrainingError.output(path: output.appendingPathComponent("metrics.jsonl").path,
                                       reason: "cannot append to it: \(DurableFiles.plainReason(error))")
        }
    }

    func writeLossCurve() throws {
        let svg = LossCurve.svg(train: trainLosses, valid: validLosses, title: "loss — \(output.lastPathComponent)")
        let url = output.appendingPathComponent("loss.svg")
        do {
            try atomicWrite(Data(svg.utf8), to: url)
        } catch {
            throw TrainingError.output(path: url.path, reason: "cannot write it: \(DurableFiles.plainReason(error))")
        }
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
