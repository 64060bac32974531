import ArgumentParser
import Foundation
import LoRA
import ModelStore
import Models
import Tokenizers
import Training
import Yams
#if canImport(Glibc)
import Glibc
#endif

struct Train: ParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Fine-tune a LoRA adapter (or, with --full, every weight) on a JSONL data set.",
        discussion: """
        Data: {"text"}, {"prompt","completion"}, {"messages"} (chat template; loss on assistant turns) or, \
        with --task classification, {"text","label"[,"text_pair"]}. The adapter (the best one when \
        --valid is given) is written to --output as a PEFT directory; checkpoints go to \
        OUTPUT/checkpoints, with metrics.jsonl and loss.svg beside the adapter. Settings may come from \
        a YAML or JSON file (--config, keys as the flags in snake_case); flags override it.
        """)
    @OptionGroup var model: ModelOption
    @Option(help: "Training data (JSONL).") var data: String
    @Option(help: "Validation data (JSONL), evaluated every --eval-every steps and at the end.") var valid: String?
    @Option(help: ArgumentHelp("Held-out test data (JSONL), evaluated once at the end on the kept model (the best on --valid); repeatable.",
                               valueName: "file")) var test: [String] = []
    @Option(help: "Output directory.") var output: String
    @Option(help: "A YAML or JSON file with training settings, keys as the flags in snake_case (flags override it).") var config: String?
    @Option(help: "causal-lm or classification.") var task: TrainingTask?
    @Option(help: "LoRA rank r (default 8).") var rank: Int?
    @Option(help: "LoRA alpha (default 16; scaling alpha/r).") var alpha: Double?
    @Option(help: "Dropout on the LoRA path (default 0.05).") var dropout: Double?
    @Option(help: "Comma-separated module names to adapt (default: the attention projections).") var targets: String?
    @Option(name: .customLong("init"), help: "Initialisation of A: gaussian (the paper) or kaiming (PEFT's default).") var initialization: String?
    @Flag(help: "Scale by alpha/sqrt(r) (rsLoRA).") var rslora = false
    @Option(help: "Peak learning rate (default 2e-4).") var lr: Double?
    @Option(help: "Passes over the data (default 1).") var epochs: Int?
    @Option(help: "Optimizer steps (instead of --epochs).") var steps: Int?
    @Option(help: "Examples per micro-batch (default 4).") var batchSize: Int?
    @Option(help: "Micro-batches per optimizer step (default 1).") var gradAccum: Int?
    @Option(help: "Longest sequence in tokens; longer ones are truncated and counted (default 512).") var maxSeqLen: Int?
    @Option(help: "Warm-up steps, or a fraction of all steps when below 1 (default 0).") var warmup: Double?
    @Option(help: "constant, linear or cosine (default cosine).") var schedule: LearningRateSchedule?
    @Option(help: "AdamW decoupled weight decay (default 0).") var weightDecay: Double?
    @Option(help: "Evaluate every N steps.") var evalEvery: Int?
    @Option(help: "Checkpoint every N steps (always at the end).") var saveEvery: Int?
    @Option(help: "Random seed (data order, initialisation, dropout).") var seed: UInt64?
    @Flag(help: "Full fine-tuning: train every weight instead of a LoRA adapter.") var full = false
    @Option(help: "Stop after this many evaluations without improvement.") var earlyStopping: Int?
    @Option(help: "Continue from a checkpoint directory (OUTPUT/checkpoints/step-…), or 'latest'.") var resume: String?
    @OptionGroup var memory: MemoryOptions
    @Flag(help: "Load the model and the data, print the estimated peak memory of training (broken down) beside the memory available, and exit without training.")
    var dryRun = false
    @Flag(help: "Train even when the estimated peak memory exceeds the memory available (MemAvailable, or the cgroup's memory.max if lower).")
    var ignoreMemoryLimit = false
    @Flag(help: "Print the summary as one JSON object on stdout (progress goes to stderr).") var json = false

    /// The settings: defaults, then the config file, then the flags.
    func settings() throws -> TrainingConfiguration {
        var c = TrainingConfiguration()
        if let config {
            do {
                let data = try Data(contentsOf: URL(fileURLWithPath: config))
                let isYAML = config.hasSuffix(".yaml") || config.hasSuffix(".yml")
                c = isYAML ? try YAMLDecoder().decode(TrainingConfiguration.self, from: data)
                           : try JSONDecoder().decode(TrainingConfiguration.self, from: data)
            } catch {
                throw CommandError("\(config): \(error)")
            }
        }
        if let task { c.task = task }
        if let rank { c.rank = rank }
        if let alpha { c.alpha = alpha }
        if let dropout { c.dropout = dropout }
        if let targets { c.targets = targets.split(separator: ",").map { $0.trimmingCharacters(in: .whitespaces) } }
        if let initialization {
            switch initialization {
            case "gaussian": c.initialization = .gaussian
            case "kaiming": c.initialization = .kaimingUniform
            default: throw ValidationError("--init must be gaussian or kaiming")
            }
        }
        if rslora { c.rslora = true }
        if let lr { c.learningRate = lr }
        if let epochs { c.epochs = epochs; c.steps = nil }
        if let steps { c.steps = steps; c.epochs = nil }
        if let batchSize { c.batchSize = batchSize }
        if let gradAccum { c.gradAccum = gradAccum }
        if let maxSeqLen { c.maxSeqLen = maxSeqLen }
        if let warmup { c.warmup = warmup }
        if let schedule { c.schedule = schedule }
        if let weightDecay { c.weightDecay = weightDecay }
        if let evalEvery { c.evalEvery = evalEvery }
        if let saveEvery { c.saveEvery = saveEvery }
        if let seed { c.seed = seed }
        if full { c.full = true }
        if let earlyStopping { c.earlyStoppingPatience = earlyStopping }
        if c.full && memory.precision != .fp32 { throw ValidationError("--full trains every weight, so they stay fp32 (drop --precision)") }
        try c.validate()
        return c
    }

    func run() throws {
        let settings = try settings()
        // What the machine has before this process loads anything.
        let available = AvailableMemory.current()
        // SIGINT / SIGTERM: stop after the current step with a checkpoint; a second one exits at once.
        if !dryRun { StopSignals.install() }
        let outputURL = URL(fileURLWithPath: output)
        var resumeURL: URL?
        if let resume {
            resumeURL = resume == "latest" ? Checkpoints.list(outputURL).last : URL(fileURLWithPath: resume)
            guard let resumeURL else { throw CommandError("no checkpoint in \(Checkpoints.directory(outputURL).path) to resume") }
            guard Checkpoints.isComplete(resumeURL) else {
                throw CommandError("\(resumeURL.path) is not a complete checkpoint (it needs trainer_state.json, optimizer.safetensors and the adapter or model weights)")
            }
        }
        // Classification: the label map comes from the training data (or the checkpoint).
        var labels: [String]? = nil
        if settings.task == .classification, let resumeURL { labels = try Checkpoints.readState(resumeURL).labels }
        // A classifier's head size comes from the labels, so read the data (with the tokenizer
        // alone) before loading the model once, with its classes.
        var loaded: Pretrained? = nil
        let tokenizer: any Tokenizer
        if settings.task == .classification, labels == nil {
            let location = try ModelStore().resolve(model.model) { note($0) }
            tokenizer = try loadTokenizer(huggingFaceDirectory: location.url)
        } else {
            let p = try model.load(labels: labels, seed: settings.seed, precision: memory.precision)
            loaded = p
            tokenizer = p.tokenizer
        }
        let template = try? loaded?.chatTemplate.get()
        let (train, trainReport, labelMap) = try Dataset.load(URL(fileURLWithPath: data), task: settings.task, tokenizer: tokenizer,
                                                               chatTemplate: template, maxSequenceLength: settings.maxSeqLen,
                                                               labelMap: labels.map { LabelMap(labels: $0) })
        if labels == nil, let labelMap { labels = labelMap.labels }
        let pretrained = try loaded ?? model.load(labels: labels, seed: settings.seed, precision: memory.precision)
        pretrained.model.setActivationRecomputation(memory.recompute)
        let inLoss = settings.task == .causalLM ? ", \(trainReport.trainableTokens) in the loss" : ""
        note("data: \(trainReport.examples) examples (\(trainReport.format)), \(trainReport.tokens) tokens\(inLoss), \(trainReport.truncated) truncated to \(settings.maxSeqLen)")
        if trainReport.skipped > 0 { note("warning: \(trainReport.skipped) examples had no target left after truncation and were left out (lines \(trainReport.skippedLines.prefix(10).map(String.init).joined(separator: ", ")))") }
        /// A validation or test file, tokenised and labelled as the training data.
        func heldOut(_ file: String, _ what: String) throws -> [Example] {
            let (examples, report, _) = try Dataset.load(URL(fileURLWithPath: file), task: settings.task, tokenizer: pretrained.tokenizer,
                                                         chatTemplate: template, maxSequenceLength: settings.maxSeqLen, labelMap: labelMap)
            note("\(what): \(report.examples) examples, \(report.truncated) truncated")
            return examples
        }
        let validExamples = try valid.map { try heldOut($0, "validation") } ?? []
        let testSets = try test.map { (name: $0, examples: try heldOut($0, "test \($0)")) }
        switch pretrained.model {
        case .llama: guard settings.task == .causalLM else { throw CommandError("a Llama model trains with --task causal-lm") }
        case .bert: guard settings.task == .classification else { throw CommandError("a BERT model trains with --task classification") }
        }
        let progress = Progress(json: json)
        let session = try TrainingSession(model: pretrained.model, configuration: settings, train: train, valid: validExamples, tests: testSets,
                                          padId: pretrained.tokenizer.padTokenId ?? pretrained.tokenizer.eosTokenId ?? 0,
                                          output: outputURL, labels: labels, resume: resumeURL, events: progress.handle)
        note(pretrained.model.adaptable.trainableParameterReport() + "; \(session.trainer.totalSteps) steps")

        // Memory: the estimated peak against what the machine has (see MemoryEstimate).
        let everything = train + validExamples + testSets.flatMap(\.examples)
        let longest = min(settings.maxSeqLen, everything.map(\.ids.count).max() ?? settings.maxSeqLen)
        let fileBytes = modelFileBytes()
        func estimate(batch: Int, recompute: Bool) -> MemoryEstimate {
            MemoryEstimate.estimate(model: pretrained.model, batch: batch, length: longest, recompute: recompute, modelFileBytes: fileBytes,
                                    dataTokens: everything.reduce(0) { $0 + $1.ids.count }, dataExamples: everything.count)
        }
        let estimated = estimate(batch: settings.batchSize, recompute: memory.recompute)
        var alternatives: [(flag: String, bytes: Int)] = []
        if estimated.recomputeApplies && !memory.recompute {
            alternatives.append(("--recompute", estimate(batch: settings.batchSize, recompute: true).peakBytes))
        }
        if settings.batchSize > 1 {
            let half = settings.batchSize / 2
            alternatives.append(("--batch-size \(half) --grad-accum \(settings.gradAccum * 2)", estimate(batch: half, recompute: memory.recompute).peakBytes))
        }
        let verdict = MemoryVerdict.judge(estimated, available: available, ignoreLimit: ignoreMemoryLimit, alternatives: alternatives,
                                          precisionCanDrop: !settings.full && memory.precision == .fp32)
        if dryRun {
            return try printDryRun(estimated, available: available, verdict: verdict, alternatives: alternatives, precision: memory.precision)
        }
        switch verdict {
        case .fits: break
        case .refuse(let message): throw CommandError(message)
        case .proceedWithWarning(let message): note(message)
        }

        session.stopRequested = { StopSignals.requested != nil }
        if let pause = ProcessInfo.processInfo.environment["LORA_TEST_CHECKPOINT_PAUSE_MS"].flatMap(UInt32.init), pause > 0 {
            // Test hook: slow each checkpoint write down so that a kill or a signal can land inside it.
            session.checkpointPause = { usleep(pause * 1000) }
        }
        if let spike = ProcessInfo.processInfo.environment["LORA_TEST_SPIKE_AT_STEP"].flatMap(Int.init) {
            // Test hook: after that step, multiply every trainable weight by 1e30 (finite, but the
            // next steps' losses are not), as a learning-rate spike would.
            session.afterStep = { trainer in
                guard trainer.step == spike else { return }
                for p in trainer.optimizer.parameters { for i in 0..<p.value.count { p.value[i] *= 1e30 } }
            }
        }
        let summary: TrainingSummary
        do {
            summary = try session.run()
        } catch let stop as TrainingInterrupted {
            progress.finish()
            let signal = StopSignals.requested ?? SIGINT
            if let checkpoint = stop.checkpoint {
                note("\(StopSignals.name(signal)): stopped after step \(stop.step) of \(session.trainer.totalSteps); checkpoint written to \(checkpoint)")
                note("resume with: \(resumeCommand())")
            } else {
                let newest = Checkpoints.list(outputURL).last.map { "; the newest checkpoint is \($0.path) (resume with: \(resumeCommand()))" } ?? ""
                note("\(StopSignals.name(signal)): stopped at step \(stop.step); no checkpoint of this step was written\(newest)")
            }
            throw ExitCode(128 + signal)
        }
        progress.finish()
        if json { return try printJSON(summary) }
        print("""
        trained \(summary.steps) steps in \(String(format: "%.1f", summary.seconds)) s, \(String(format: "%.0f", summary.tokensPerSecond)) tokens/s, peak memory \(summary.peakRssBytes / 1_048_576) MiB
        trainable params \(summary.trainableParams.formatted()) of \(summary.allParams.formatted()); final train loss \(summary.finalTrainLoss.map { String(format: "%.4f", $0) } ?? "–")\(summary.bestValid.map { String(format: "; best validation %.4f", $0) } ?? "")
        adapter: \(summary.adapter) (checkpoints in \(Checkpoints.directory(outputURL).path), metrics.jsonl, loss.svg)
        """)
    }
}

extension Train {
    /// The bytes of the model's weight files (mapped while the weights are read).
    func modelFileBytes() -> Int {
        guard let location = try? ModelStore().resolve(model.model, fetchIfNeeded: false) else { return 0 }
        var isDirectory: ObjCBool = false
        guard FileManager.default.fileExists(atPath: location.url.path, isDirectory: &isDirectory) else { return 0 }
        guard isDirectory.boolValue else { return fileSize(location.url) }
        let names = (try? FileManager.default.contentsOfDirectory(atPath: location.url.path)) ?? []
        return names.filter { $0.hasSuffix(".safetensors") || $0.hasSuffix(".gguf") }
            .reduce(0) { $0 + fileSize(location.url.appendingPathComponent($1)) }
    }

    /// This command line with `--resume latest` (replacing any --resume), quoted for a shell.
    func resumeCommand() -> String {
        var arguments = Array(CommandLine.arguments.dropFirst())
        var i = 0
        while i < arguments.count {
            if arguments[i] == "--resume" {
                arguments.removeSubrange(i..<min(i + 2, arguments.count))
            } else if arguments[i].hasPrefix("--resume=") {
                arguments.remove(at: i)
            } else {
                i += 1
            }
        }
        let quoted = arguments.map { a in
            a.allSatisfy({ $0.isLetter || $0.isNumber || "-_./=,:+@".contains($0) }) && !a.isEmpty
                ? a : "'" + a.replacingOccurrences(of: "'", with: "'\\''") + "'"
        }
        return (["lora"] + quoted + ["--resume", "latest"]).joined(separator: " ")
    }

    struct DryRunOutput: Encodable {
        let estimate: MemoryEstimate
        let available: AvailableMemory
        let fits: Bool
        let alternatives: [String: Int]
    }

    func printDryRun(_ estimate: MemoryEstimate, available: AvailableMemory, verdict: MemoryVerdict,
                     alternatives: [(flag: String, bytes: Int)], precision: FrozenPrecision) throws {
        let fits = if case .fits = verdict { true } else { false }
        if json {
            return try printJSON(DryRunOutput(estimate: estimate, available: available, fits: fits,
                                              alternatives: Dictionary(alternatives.map { ($0.flag, $0.bytes) }, uniquingKeysWith: { a, _ in a })))
        }
        let recompute = !estimate.recomputeApplies ? "--recompute does not apply to this model" : estimate.recompute ? "--recompute" : "no --recompute"
        print("estimated peak memory of training: batch \(estimate.batch) × \(estimate.length) tokens, frozen weights \(precision.rawValue), \(recompute)")
        for line in estimate.report() { print(line) }
        for a in alternatives {
            print(String(format: "  with %@: %.1f MiB", a.flag, Double(a.bytes) / 1_048_576))
        }
        if let limit = available.bytes {
            print(String(format: "available: %.1f MiB (%@ bytes; %@)", Double(limit) / 1_048_576, limit.formatted(), available.source))
        } else {
            print("available: unknown (no /proc/meminfo and no cgroup limit)")
        }
        switch verdict {
        case .fits: print("fits: training would start")
        case .refuse(let why), .proceedWithWarning(let why): print("does not fit: \(why)")
        }
        print("dry run: nothing was trained or written")
    }
}

/// Training progress: a live line on a terminal, plain periodic lines otherwise; to stderr when
/// stdout carries JSON.
final class Progress: @unchecked Sendable {
    let live: Bool
    let start = Date()
    var tokens = 0
    var lastPlain = Date.distantPast
    let toStderr: Bool

    init(json: Bool) {
        toStderr = json
        live = isatty(json ? 2 : 1) == 1
    }

    func write(_ s: String) {
        if toStderr { return FileHandle.standardError.write(Data(s.utf8)) }
        // Through stdio, like print, so that progress and printed lines keep their order.
        print(s, terminator: "")
        fflush(nil)
    }

    func handle(_ event: TrainingEvent) {
        switch event {
        case let .step(record, total):
            tokens += record.tokens
            let elapsed = Date().timeIntervalSince(start)
            let rate = Double(tokens) / max(elapsed, 1e-9)
            let eta = elapsed / Double(record.step) * Double(total - record.step)
            let line = String(format: "step %d/%d  loss %.4f  lr %.2e  %.0f tok/s  ETA %d:%02d%@",
                              record.step, total, record.loss, record.learningRate, rate, Int(eta) / 60, Int(eta) % 60,
                              record.skipped ? "  (skipped: not finite)" : "")
            if live {
                let width = 24, filled = width * record.step / max(total, 1)
                write("\r[" + String(repeating: "#", count: filled) + String(repeating: ".", count: width - filled) + "] " + line + "\u{1B}[K")
            } else if Date().timeIntervalSince(lastPlain) > 5 || record.step == total || record.step == 1 {
                lastPlain = Date()
                write(line + "\n")
            }
        case let .evaluation(step, result, improved):
            let what = result.accuracy.map { String(format: "accuracy %.4f, macro-F1 %.4f", $0, result.macroF1 ?? 0) }
                ?? String(format: "loss %.4f, perplexity %.2f", result.loss, result.perplexity)
            write((live ? "\n" : "") + "eval at step \(step): \(what)\(improved ? " (best so far, adapter saved)" : "")\n")
        case let .checkpoint(step, path):
            if !live { write("checkpoint at step \(step): \(path)\n") }
        case .message(let m):
            write((live ? "\n" : "") + m + "\n")
        }
    }

    func finish() { if live { write("\n") } }
}

struct Eval: ParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Evaluate a model (with an adapter) on a JSONL file: loss and perplexity, or accuracy, macro-F1 and confusion.")
    @OptionGroup var model: ModelOption
    @Option(name: .customLong("adapter"), help: "A PEFT adapter directory (a label_map.json beside it gives the classes).") var adapter: String?
    @Option(help: "The data (JSONL), in a training format.") var data: String
    @Option(help: "Longest sequence in tokens (default 512).") var maxSeqLen = 512
    @Option(help: "Examples per batch.") var batchSize = 8
    @Flag(help: "Print one JSON object.") var json = false

    struct CausalOutput: Encodable { let loss: Double; let perplexity: Double; let tokens: Int }
    struct ClassificationOutput: Encodable {
        let accuracy: Double; let macro_f1: Double; let confusion: [[Int]]; let examples: Int; let labels: [String]
    }

    func run() throws {
        var labels: LabelMap?
        if let adapter {
            let url = URL(fileURLWithPath: adapter).appendingPathComponent("label_map.json")
            if FileManager.default.fileExists(atPath: url.path) { labels = try LabelMap.load(url) }
        }
        let pretrained = try model.load(labels: labels?.labels)
        if let adapter { try AdapterOptions.apply([adapter], merge: false, to: pretrained.model.adaptable) }
        let task: TrainingTask = if case .bert = pretrained.model { .classification } else { .causalLM }
        if task == .classification && labels == nil, case .bert(let m) = pretrained.model {
            labels = LabelMap(labels: (0..<m.config.numLabels).map { m.config.id2label[$0] ?? String($0) })
        }
        let (examples, _, _) = try Dataset.load(URL(fileURLWithPath: data), task: task, tokenizer: pretrained.tokenizer,
                                                chatTemplate: try? pretrained.chatTemplate.get(), maxSequenceLength: maxSeqLen, labelMap: labels)
        let result = try Trainer.evaluate(pretrained.model, examples, batchSize: batchSize,
                                          padId: pretrained.tokenizer.padTokenId ?? pretrained.tokenizer.eosTokenId ?? 0)
        if let accuracy = result.accuracy, let confusion = result.confusion {
            let output = ClassificationOutput(accuracy: accuracy, macro_f1: result.macroF1 ?? 0, confusion: confusion,
                                              examples: result.examples, labels: labels?.labels ?? [])
            if json { return try printJSON(output) }
            print(String(format: "accuracy %.4f, macro-F1 %.4f over %d examples", accuracy, output.macro_f1, result.examples))
            print("confusion (rows: true \(output.labels), columns: predicted): \(confusion)")
        } else {
            let output = CausalOutput(loss: result.loss, perplexity: result.perplexity, tokens: result.tokens)
            if json { return try printJSON(output) }
            print(String(format: "loss %.4f, perplexity %.3f over %d tokens", result.loss, result.perplexity, result.tokens))
        }
    }
}

extension TrainingTask: ExpressibleByArgument {}
extension LearningRateSchedule: ExpressibleByArgument {}
