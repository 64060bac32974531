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
        let outputURL = URL(fileURLWithPath: output)
        var resumeURL: URL?
        if let resume {
            resumeURL = resume == "latest" ? Checkpoints.list(outputURL).last : URL(fileURLWithPath: resume)
            guard resumeURL != nil else { throw CommandError("no checkpoint in \(Checkpoints.directory(outputURL).path) to resume") }
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
        let summary = try session.run()
        progress.finish()
        if json { return try printJSON(summary) }
        print("""
        trained \(summary.steps) steps in \(String(format: "%.1f", summary.seconds)) s, \(String(format: "%.0f", summary.tokensPerSecond)) tokens/s, peak memory \(summary.peakRssBytes / 1_048_576) MiB
        trainable params \(summary.trainableParams.formatted()) of \(summary.allParams.formatted()); final train loss \(summary.finalTrainLoss.map { String(format: "%.4f", $0) } ?? "–")\(summary.bestValid.map { String(format: "; best validation %.4f", $0) } ?? "")
        adapter: \(summary.adapter) (checkpoints in \(Checkpoints.directory(outputURL).path), metrics.jsonl, loss.svg)
        """)
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
