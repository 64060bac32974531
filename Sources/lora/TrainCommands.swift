import ArgumentParser
import Foundation
import Formats
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
        Data: {"text"}, {"prompt","completion"} (loss on the completion), {"messages"} (the model's chat \
        template; loss on assistant turns) or, for a BERT-family encoder, {"text","label"[,"text_pair"]} \
        (the task follows the model). --data may be an mlx-lm data folder (train.jsonl, valid.jsonl, \
        test.jsonl). The adapter (the best one on --valid when it is given) is written to --output as a \
        PEFT directory, with --full as a complete model folder; checkpoints go to OUTPUT/checkpoints, with \
        metrics.jsonl and loss.svg beside them. An --output that holds another run is refused: continue \
        it with --resume latest or clear it with --overwrite.

        Settings may come from a YAML or JSON file (--config): keys are the flags in snake_case (lr, rank, \
        alpha, batch_size, …; PEFT/transformers spellings such as learning_rate, lora_alpha, r and \
        num_train_epochs are accepted too), and model, data, valid, test and output may be given there. \
        Flags override the file.
        """)
    @Option(help: ArgumentHelp(
        "A .gguf file, a Hugging Face model directory, or a known model (\(KnownModel.all.map(\.name).joined(separator: ", "))).",
        valueName: "model"))
    var model: String?
    @Option(help: "Training data: a JSONL file, or an mlx-lm data folder (train.jsonl, valid.jsonl, test.jsonl).") var data: String?
    @Option(help: "Validation data (JSONL), evaluated every --eval-every steps and at the end.") var valid: String?
    @Option(help: ArgumentHelp("Held-out test data (JSONL), evaluated once at the end on the kept model (the best on --valid); repeatable.",
                               valueName: "file")) var test: [String] = []
    @Option(help: "Output folder (created if needed; refused if it holds another run, see --overwrite).") var output: String?
    @Flag(help: "Delete what a previous run left in --output (adapter, model, checkpoints, metrics) before training.") var overwrite = false
    @Option(help: "A YAML or JSON file with settings (see above); flags override it.") var config: String?
    @Option(help: ArgumentHelp("A Jinja chat template for {\"messages\"} data instead of the model's (ChatML, Llama-3, Gemma or Mistral; recognised, never evaluated).", valueName: "file"))
    var chatTemplate: String?
    @Option(help: "causal-lm or classification (default: the model's: classification for a BERT-family encoder).") var task: TrainingTask?
    @Option(parsing: .unconditional, help: "LoRA rank r, at most the smaller dimension of each adapted layer (default: 8).") var rank: Int?
    @Option(parsing: .unconditional, help: "LoRA alpha; the adapter is scaled by alpha/r (default: 16).") var alpha: Double?
    @Option(parsing: .unconditional, help: "Dropout on the LoRA path (default: 0.05).") var dropout: Double?
    @Option(help: ArgumentHelp(
        "Comma-separated module names to adapt, each matching a module path or its end (q_proj, self_attn.v_proj), or all-linear; `lora inspect --modules` lists them (default: the attention projections: q_proj,k_proj,v_proj,o_proj for Llama; query,key,value,attention.output.dense for BERT).",
        valueName: "names")) var targets: String?
    @Option(name: .customLong("init"), help: "Initialisation of A: gaussian (the paper) or kaiming (PEFT's default) (default: gaussian).") var initialization: String?
    @Flag(help: "Scale by alpha/sqrt(r) (rsLoRA).") var rslora = false
    @Option(parsing: .unconditional, help: "Peak learning rate (default: 2e-4).") var lr: Double?
    @Option(parsing: .unconditional, help: "Passes over the data (default: 1).") var epochs: Int?
    @Option(parsing: .unconditional, help: "Optimizer steps (instead of --epochs).") var steps: Int?
    @Option(parsing: .unconditional, help: "Examples per micro-batch (default: 4).") var batchSize: Int?
    @Option(parsing: .unconditional, help: "Micro-batches per optimizer step (default: 1).") var gradAccum: Int?
    @Option(parsing: .unconditional, help: "Longest sequence in tokens; longer ones are truncated and counted (default: 512).") var maxSeqLen: Int?
    @Option(parsing: .unconditional, help: "Warm-up steps, or a fraction of all steps when below 1 (default: 0).") var warmup: Double?
    @Option(help: "constant, linear or cosine (default: cosine).") var schedule: LearningRateSchedule?
    @Option(parsing: .unconditional, help: "AdamW decoupled weight decay (default: 0).") var weightDecay: Double?
    @Option(parsing: .unconditional, help: "Clip the global gradient norm to this (default: 1).") var maxGradNorm: Double?
    @Option(parsing: .unconditional, help: "Evaluate --valid every N steps (default: at the end only; once per epoch with --early-stopping).") var evalEvery: Int?
    @Option(parsing: .unconditional, help: "Checkpoint every N steps (default: at the end only).") var saveEvery: Int?
    @Option(parsing: .unconditional, help: "Checkpoints kept, the newest (default: 3).") var keepCheckpoints: Int?
    @Option(parsing: .unconditional, help: "Random seed: data order, initialisation, dropout (default: 0).") var seed: UInt64?
    @Flag(help: "Full fine-tuning: train every weight instead of a LoRA adapter; --output becomes a complete model folder.") var full = false
    @Option(parsing: .unconditional, help: "Stop after this many evaluations on --valid without improvement (default: off).") var earlyStopping: Int?
    @Option(help: "Continue from a checkpoint folder (OUTPUT/checkpoints/step-…), or 'latest': the newest one written.") var resume: String?
    @OptionGroup var memory: MemoryOptions
    @Flag(help: "Load the model and the data, print the estimated peak memory of training (broken down) beside the memory available, and exit without training.")
    var dryRun = false
    @Flag(help: "Train even when the estimated peak memory exceeds the memory available (MemAvailable, or the cgroup's memory.max if lower).")
    var ignoreMemoryLimit = false
    @Flag(help: "Print the summary as one JSON object on stdout (progress goes to stderr).") var json = false

    func validate() throws {
        if overwrite && resume != nil { throw ValidationError("--overwrite deletes the checkpoints that --resume continues; give one of them") }
    }

    /// The settings: defaults, then the config file, then the flags.
    func settings(_ file: TrainConfigFile) throws -> TrainingConfiguration {
        var c = file.configuration
        if let task { c.task = task }
        if let rank { c.rank = rank }
        if let alpha { c.alpha = alpha }
        if let dropout { c.dropout = dropout }
        if let targets { c.targets = targets.split(separator: ",").map { $0.trimmingCharacters(in: .whitespaces) }.filter { !$0.isEmpty } }
        if let initialization {
            switch initialization {
            case "gaussian": c.initialization = .gaussian
            case "kaiming": c.initialization = .kaimingUniform
            default: throw ValidationError("--init must be gaussian or kaiming, got '\(initialization)'")
            }
        }
        if rslora { c.rslora = true }
        if let lr { c.learningRate = lr }
        if epochs != nil && steps != nil { throw ValidationError("give --epochs or --steps, not both") }
        if let epochs { c.epochs = epochs; c.steps = nil }
        if let steps { c.steps = steps; c.epochs = nil }
        if let batchSize { c.batchSize = batchSize }
        if let gradAccum { c.gradAccum = gradAccum }
        if let maxSeqLen { c.maxSeqLen = maxSeqLen }
        if let warmup { c.warmup = warmup }
        if let schedule { c.schedule = schedule }
        if let weightDecay { c.weightDecay = weightDecay }
        if let maxGradNorm { c.maxGradNorm = maxGradNorm }
        if let evalEvery { c.evalEvery = evalEvery }
        if let saveEvery { c.saveEvery = saveEvery }
        if let keepCheckpoints { c.keepCheckpoints = keepCheckpoints }
        if let seed { c.seed = seed }
        if full { c.full = true }
        if let earlyStopping { c.earlyStoppingPatience = earlyStopping }
        if c.full && memory.precision != .fp32 { throw ValidationError("--full trains every weight, so they stay fp32 (drop --precision)") }
        try c.validate()
        return c
    }

    /// Where the run's inputs are: flags first, then the config file; an mlx-lm data folder is
    /// read as its train/valid/test files.
    struct Inputs {
        var model: String
        var data: URL
        var valid: URL?
        var tests: [URL]
        var output: URL
    }

    func inputs(_ file: TrainConfigFile) throws -> Inputs {
        guard let model = model ?? file.model else { throw ValidationError("give --model (or model: in the --config file)") }
        guard let data = data ?? file.data else { throw ValidationError("give --data (or data: in the --config file)") }
        guard let output = output ?? file.output else { throw ValidationError("give --output (or output: in the --config file)") }
        guard !output.isEmpty else { throw ValidationError("--output must name a folder") }
        var inputs = Inputs(model: model, data: URL(fileURLWithPath: data), valid: (valid ?? file.valid).map { URL(fileURLWithPath: $0) },
                            tests: (test.isEmpty ? file.test : test).map { URL(fileURLWithPath: $0) }, output: URL(fileURLWithPath: output))
        var isDirectory: ObjCBool = false
        guard FileManager.default.fileExists(atPath: inputs.data.path, isDirectory: &isDirectory) else {
            throw CommandError("--data \(data): no such file or folder")
        }
        if isDirectory.boolValue {
            // mlx-lm's layout: DIR/train.jsonl, and valid.jsonl / test.jsonl when present.
            let folder = inputs.data
            let train = folder.appendingPathComponent("train.jsonl")
            guard FileManager.default.fileExists(atPath: train.path) else {
                throw CommandError("--data \(data) is a folder without train.jsonl; give a JSONL file, or a folder laid out as mlx-lm's (train.jsonl, and optionally valid.jsonl and test.jsonl)")
            }
            inputs.data = train
            var used = ["train.jsonl"]
            let validFile = folder.appendingPathComponent("valid.jsonl"), testFile = folder.appendingPathComponent("test.jsonl")
            if inputs.valid == nil, FileManager.default.fileExists(atPath: validFile.path) { inputs.valid = validFile; used.append("valid.jsonl as --valid") }
            if inputs.tests.isEmpty, FileManager.default.fileExists(atPath: testFile.path) { inputs.tests = [testFile]; used.append("test.jsonl as --test") }
            note("data folder \(data): \(used.joined(separator: ", "))")
        }
        for url in [inputs.valid].compactMap({ $0 }) + inputs.tests {
            if let why = unreadableFileReason(url) { throw CommandError("\(url.path): \(why)") }
        }
        return inputs
    }

    func run() throws {
        let file = try config.map(TrainConfigFile.load) ?? TrainConfigFile()
        var settings = try settings(file)
        let inputs = try inputs(file)
        // What the machine has before this process loads anything.
        let available = AvailableMemory.current()
        let location = try ModelStore().resolve(inputs.model) { note($0) }
        // The task follows the model unless given; a task the model cannot do is explained.
        let family = modelTask(of: location.url)
        let taskGiven = task != nil || file.taskGiven
        if !taskGiven { settings.task = family == .sequenceClassification ? .classification : .causalLM }
        switch (settings.task, family) {
        case (.classification, .causalLM):
            throw CommandError("--task classification needs a BERT-family encoder (such as all-minilm-l6-v2); \(inputs.model) is a causal language model, which trains with --task causal-lm")
        case (.causalLM, .sequenceClassification):
            throw CommandError("\(inputs.model) is a BERT-family encoder: it trains with --task classification on {\"text\", \"label\"} rows; causal language modelling needs a Llama or Gemma 3 model (such as smollm2-135m-instruct)")
        default: break
        }
        if settings.earlyStoppingPatience != nil && inputs.valid == nil {
            throw CommandError("--early-stopping needs --valid: it stops when the validation score stops improving")
        }
        // The output folder: refused if it holds another run, locked for this one.
        let outputURL = inputs.output
        let folder = dryRun ? nil : try RunFolder.claim(outputURL, resuming: resume != nil, overwrite: overwrite)
        defer { withExtendedLifetime(folder) {} }
        // SIGINT / SIGTERM: stop after the current step with a checkpoint; a second one exits at once.
        if !dryRun { StopSignals.install() }
        var resumeURL: URL?
        if let resume {
            resumeURL = resume == "latest" ? Checkpoints.latest(outputURL) : URL(fileURLWithPath: resume)
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
            tokenizer = try loadTokenizer(huggingFaceDirectory: location.url)
        } else {
            let p = try ModelOption.load(location, labels: labels, seed: settings.seed, precision: memory.precision, newHead: .trained)
            loaded = p
            tokenizer = p.tokenizer
        }
        let template = try chatTemplate.map { try lora.chatTemplate(file: $0) } ?? (try? loaded?.chatTemplate.get())
        let (train, trainReport, labelMap) = try Dataset.load(inputs.data, task: settings.task, tokenizer: tokenizer,
                                                               chatTemplate: template, maxSequenceLength: settings.maxSeqLen,
                                                               labelMap: labels.map { LabelMap(labels: $0) })
        if labels == nil, let labelMap { labels = labelMap.labels }
        let pretrained = try loaded ?? ModelOption.load(location, labels: labels, seed: settings.seed, precision: memory.precision, newHead: .trained)
        pretrained.model.setActivationRecomputation(memory.recompute)
        let inLoss = settings.task == .causalLM
            ? ", \(trainReport.trainableTokens) in the loss\(trainReport.format == "messages" ? " (assistant turns)" : trainReport.format == "prompt-completion" ? " (completions)" : "")" : ""
        note("data: \(count(trainReport.examples, "example")) (\(trainReport.format)), \(count(trainReport.tokens, "token"))\(inLoss), \(trainReport.truncated) truncated to \(settings.maxSeqLen)")
        if trainReport.skipped > 0 { note("warning: \(trainReport.skipped) examples had no target left after truncation and were left out (lines \(trainReport.skippedLines.prefix(10).map(String.init).joined(separator: ", ")))") }
        /// A validation or test file, tokenised and labelled as the training data.
        func heldOut(_ file: URL, _ what: String) throws -> [Example] {
            let (examples, report, _) = try Dataset.load(file, task: settings.task, tokenizer: pretrained.tokenizer,
                                                         chatTemplate: template, maxSequenceLength: settings.maxSeqLen, labelMap: labelMap)
            note("\(what): \(count(report.examples, "example")), \(report.truncated) truncated")
            return examples
        }
        let validExamples = try inputs.valid.map { try heldOut($0, "validation") } ?? []
        let testSets = try inputs.tests.map { (name: $0.path, examples: try heldOut($0, "test \($0.path)")) }
        if let limit = pretrained.model.hardPositionLimit {
            let longest = (train + validExamples + testSets.flatMap(\.examples)).map(\.ids.count).max() ?? 0
            if longest > limit {
                throw CommandError("an example is \(longest) tokens long, more than the model's \(limit) positions; use --max-seq-len \(limit) or less")
            }
        }
        if settings.earlyStoppingPatience != nil && settings.evalEvery == nil {
            // Early stopping needs evaluations along the way: once per epoch (several per run
            // when the run is an epoch or less).
            let perEpoch = max(1, (train.count + settings.batchSize * settings.gradAccum - 1) / (settings.batchSize * settings.gradAccum))
            let total = settings.steps ?? perEpoch * (settings.epochs ?? 1)
            let every = total >= 2 * perEpoch ? perEpoch : max(1, total / 5)
            settings.evalEvery = every
            note("note: --early-stopping evaluates --valid every \(count(every, "step")) (\(every == perEpoch ? "once per epoch" : "5 times in this run")); set --eval-every to change it")
        }
        let modelFiles: [String: Data] = settings.full
            ? try HuggingFaceExport.tokenizerFiles(for: pretrained).merging(
                ["config.json": try HuggingFaceExport.configJSON(pretrained.model, tokenizer: pretrained.tokenizer, storage: .f32)]) { a, _ in a }
            : [:]
        let progress = Progress(json: json)
        let session = try TrainingSession(model: pretrained.model, configuration: settings, train: train, valid: validExamples, tests: testSets,
                                          padId: pretrained.tokenizer.padTokenId ?? pretrained.tokenizer.eosTokenId ?? 0,
                                          output: outputURL, labels: labels, resume: resumeURL,
                                          baseModel: location.known?.huggingFaceId ?? location.url.path, modelFiles: modelFiles,
                                          events: progress.handle)
        note(pretrained.model.trainableParameterReport() + "; " + count(session.trainer.totalSteps, "step"))

        // Memory: the estimated peak against what the machine has (see MemoryEstimate).
        let everything = train + validExamples + testSets.flatMap(\.examples)
        let longest = min(settings.maxSeqLen, everything.map(\.ids.count).max() ?? settings.maxSeqLen)
        let fileBytes = modelFileBytes(location.url)
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
        \(settings.full ? "model" : "adapter"): \(summary.adapter)\(settings.full ? " (a complete model folder: config.json, model.safetensors, tokenizer)" : "") (checkpoints in \(Checkpoints.directory(outputURL).path), metrics.jsonl, loss.svg)
        """)
    }
}

extension Train {
    /// The bytes of the model's weight files (mapped while the weights are read).
    func modelFileBytes(_ url: URL) -> Int {
        var isDirectory: ObjCBool = false
        guard FileManager.default.fileExists(atPath: url.path, isDirectory: &isDirectory) else { return 0 }
        guard isDirectory.boolValue else { return fileSize(url) }
        let names = (try? FileManager.default.contentsOfDirectory(atPath: url.path)) ?? []
        return names.filter { $0.hasSuffix(".safetensors") || $0.hasSuffix(".gguf") }
            .reduce(0) { $0 + fileSize(url.appendingPathComponent($1)) }
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
        abstract: "Evaluate a model (with adapters) on a JSONL file: loss and perplexity, or accuracy, macro-F1 and confusion.",
        discussion: """
        Several --adapter flags combine as in every other command (Σ weight·ΔW). A classifier's \
        classes come from the label_map.json beside its adapter.
        """)
    @OptionGroup var model: ModelOption
    @OptionGroup var adapterOptions: AdapterOptions
    @Option(help: "The data (JSONL), in a training format.") var data: String
    @Option(parsing: .unconditional, help: "Longest sequence in tokens; longer ones are truncated.") var maxSeqLen = 512
    @Option(parsing: .unconditional, help: "Examples per batch.") var batchSize = 8
    @Flag(help: "Print one JSON object: {\"loss\", \"perplexity\", \"tokens\"}, or for a classifier {\"accuracy\", \"macro_f1\", \"confusion\", \"examples\", \"labels\"}.") var json = false

    struct CausalOutput: Encodable { let loss: Double; let perplexity: Double; let tokens: Int }
    struct ClassificationOutput: Encodable {
        let accuracy: Double; let macro_f1: Double; let confusion: [[Int]]; let examples: Int; let labels: [String]
    }

    func validate() throws {
        guard maxSeqLen >= 2 else { throw ValidationError("--max-seq-len must be at least 2") }
        guard batchSize > 0 else { throw ValidationError("--batch-size must be positive") }
    }

    func run() throws {
        var labels = try AdapterOptions.labels(of: adapterOptions.adapters).map { LabelMap(labels: $0) }
        let pretrained = try model.load(labels: labels?.labels, newHead: adapterOptions.adapters.isEmpty ? .untrained : .silent)
        try adapterOptions.apply(to: pretrained.model)
        let classifier = pretrained.model as? any SequenceClassifier
        let task: TrainingTask = classifier == nil ? .causalLM : .classification
        let labelsFromModel = labels == nil
        if labels == nil, let classifier { labels = LabelMap(labels: classifier.labelNames) }
        let examples: [Example]
        do {
            (examples, _, _) = try Dataset.load(URL(fileURLWithPath: data), task: task, tokenizer: pretrained.tokenizer,
                                                chatTemplate: try? pretrained.chatTemplate.get(), maxSequenceLength: maxSeqLen, labelMap: labels)
        } catch {
            guard labelsFromModel, case let .unknownLabel(file, line, label) = error else { throw error }
            let known = labels?.labels.joined(separator: ", ") ?? ""
            throw CommandError("\(file):\(line): label \"\(label)\" is not one of the model's labels (\(known)); "
                + "give the --adapter trained on these labels (its label_map.json names them)")
        }
        let result = try Trainer.evaluate(pretrained.model, examples, batchSize: batchSize,
                                          padId: pretrained.tokenizer.padTokenId ?? pretrained.tokenizer.eosTokenId ?? 0)
        if let accuracy = result.accuracy, let confusion = result.confusion {
            let output = ClassificationOutput(accuracy: accuracy, macro_f1: result.macroF1 ?? 0, confusion: confusion,
                                              examples: result.examples, labels: labels?.labels ?? [])
            if json { return try printJSON(output) }
            print(String(format: "accuracy %.4f, macro-F1 %.4f over %@", accuracy, output.macro_f1, count(result.examples, "example")))
            print("confusion (rows: true \(output.labels), columns: predicted): \(confusion)")
        } else {
            let output = CausalOutput(loss: result.loss, perplexity: result.perplexity, tokens: result.tokens)
            if json { return try printJSON(output) }
            print(String(format: "loss %.4f, perplexity %.3f over %@", result.loss, result.perplexity, count(result.tokens, "token")))
        }
    }
}

extension TrainingTask: ExpressibleByArgument {}
extension LearningRateSchedule: ExpressibleByArgument {}
