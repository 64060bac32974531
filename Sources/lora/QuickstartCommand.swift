import ArgumentParser
import Foundation
import ModelStore
import Models
import Tokenizers
import Training
#if canImport(Glibc)
import Glibc
#endif

/// `lora quickstart`: the whole job on the default model, with numbers that say whether it worked.
struct Quickstart: ParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Fine-tune SmolLM2-135M-Instruct to turn requests into strict JSON, and measure it.",
        discussion: """
        Generates the task's data from a seed (train / validation / held-out test), measures the base \
        model's exact-match accuracy on the test split, trains a LoRA adapter, measures again, merges the \
        adapter and checks the merged model answers the same, and prints an example.
        """)
    @Option(help: "The base model.") var model = "smollm2-135m-instruct"
    @Option(help: "Where the data, adapter and checkpoints go (default: $LORA_HOME/runs/quickstart).") var output: String?
    @Option(parsing: .unconditional, help: "Training examples.") var trainExamples = 600
    @Option(parsing: .unconditional, help: "Validation examples.") var validExamples = 40
    @Option(parsing: .unconditional, help: "Held-out test examples.") var testExamples = 50
    @Option(parsing: .unconditional, help: "Passes over the training data.") var epochs = 2
    @Option(parsing: .unconditional, help: "Seed of the data, the initialisation and the data order.") var seed: UInt64 = 0
    @Option(parsing: .unconditional, help: "Peak learning rate.") var lr = 2e-3

    func run() throws {
        let start = Date()
        let out = output.map { URL(fileURLWithPath: $0) } ?? ModelStore().root.appendingPathComponent("runs/quickstart")
        let dataDir = out.appendingPathComponent("data"), adapterDir = out.appendingPathComponent("adapter")
        try FileManager.default.createDirectory(at: dataDir, withIntermediateDirectories: true)
        try? FileManager.default.removeItem(at: adapterDir)
        let (train, valid, test) = QuickstartTask.splits(seed: seed, train: trainExamples, valid: validExamples, test: testExamples)
        for (name, items) in [("train", train), ("valid", valid), ("test", test)] {
            try QuickstartTask.jsonl(items).write(to: dataDir.appendingPathComponent("\(name).jsonl"))
        }
        print("1. Task: requests → strict JSON. \(train.count) train / \(valid.count) validation / \(test.count) test examples in \(dataDir.path)")
        print("   e.g. \(test[0].request.debugDescription) → \(test[0].json)")

        let pretrained = try ModelOption.parse(["--model", model]).load()
        guard let llm = pretrained.model as? any CausalLanguageModel & PretrainedModel else { throw CommandError("the quickstart needs a causal language model") }
        llm.setTraining(false)

        print("2. Base model on the held-out test split:")
        let before = try exactMatch(llm, pretrained.tokenizer, test, stop: pretrained.stopTokens)
        print(String(format: "   exact match %d/%d = %.1f%%", before.correct, test.count, 100 * before.accuracy))
        print("   e.g. it answers \(before.answers[0].debugDescription)")

        print("3. Training a LoRA adapter (r 8, α 16, q/k/v/o and MLP projections):")
        var settings = TrainingConfiguration()
        settings.targets = ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"]
        settings.learningRate = lr
        settings.epochs = epochs
        settings.batchSize = 8
        settings.warmup = 0.06
        settings.dropout = 0.05
        settings.maxSeqLen = 128
        settings.seed = seed
        let template = try? pretrained.chatTemplate.get()
        let (trainSet, report, _) = try Dataset.load(dataDir.appendingPathComponent("train.jsonl"), task: .causalLM, tokenizer: pretrained.tokenizer,
                                                     chatTemplate: template, maxSequenceLength: settings.maxSeqLen, labelMap: nil)
        let (validSet, _, _) = try Dataset.load(dataDir.appendingPathComponent("valid.jsonl"), task: .causalLM, tokenizer: pretrained.tokenizer,
                                                chatTemplate: template, maxSequenceLength: settings.maxSeqLen, labelMap: nil)
        print("   \(report.examples) examples, \(report.tokens) tokens (\(report.trainableTokens) in the loss)")
        // A fresh run every time: the adapter folder of an earlier quickstart is cleared first.
        try? FileManager.default.removeItem(at: adapterDir)
        let progress = Progress(json: false)
        let session = try TrainingSession(model: pretrained.model, configuration: settings, train: trainSet, valid: validSet,
                                          padId: pretrained.tokenizer.padTokenId ?? 0, output: adapterDir, labels: nil, resume: nil,
                                          events: progress.handle)
        print("   " + llm.trainableParameterReport())
        let summary = try session.run()
        progress.finish()
        print(String(format: "   %d steps in %.0f s, %.0f tokens/s, peak memory %d MiB", summary.steps, summary.seconds,
                     summary.tokensPerSecond, summary.peakRssBytes / 1_048_576))

        // The best adapter (by validation loss) is the one in adapterDir: use exactly that.
        try llm.removeAdapter(named: "default")
        try llm.loadPEFTAdapter(from: adapterDir)
        llm.setTraining(false)
        print("4. Adapted model on the same test split:")
        let after = try exactMatch(llm, pretrained.tokenizer, test, stop: pretrained.stopTokens)
        print(String(format: "   exact match %d/%d = %.1f%% (base: %.1f%%)", after.correct, test.count, 100 * after.accuracy, 100 * before.accuracy))
        let adapterBytes = fileSize(adapterDir.appendingPathComponent("adapter_model.safetensors"))
        let baseBytes = fileSize(URL(fileURLWithPath: pretrained.report.source))
        let parameters = llm.namedParameters.reduce(0) { $0 + $1.parameter.count }
        print(String(format: "   adapter %.1f MB (%@) vs base model %.1f MB as shipped (Q4_1), %.1f MB in fp32",
                     Double(adapterBytes) / 1e6, adapterDir.path, Double(baseBytes) / 1e6, Double(parameters * 4) / 1e6))

        print("5. Merged into the weights (no adapter left at inference):")
        try llm.mergeAdapters()
        let merged = try exactMatch(llm, pretrained.tokenizer, test, stop: pretrained.stopTokens)
        let same = zip(merged.answers, after.answers).filter { $0 == $1 }.count
        print(String(format: "   exact match %d/%d = %.1f%%; %d/%d answers identical to the unmerged adapter's",
                     merged.correct, test.count, 100 * merged.accuracy, same, test.count))
        try llm.unmergeAdapters()

        let example = test[1]
        print("6. Example (held out):\n   request: \(example.request)\n   base:    \(before.answers[1])\n   adapted: \(after.answers[1])\n   expected: \(example.json)")
        print(String(format: "Done in %.0f s. Reproduce the training with:\n   lora train --model %@ --data %@ --valid %@ --output %@ --overwrite --epochs %d --lr %g --batch-size 8 --targets q_proj,k_proj,v_proj,o_proj,gate_proj,up_proj,down_proj --warmup 0.06 --max-seq-len 128",
                     Date().timeIntervalSince(start), model, dataDir.appendingPathComponent("train.jsonl").path,
                     dataDir.appendingPathComponent("valid.jsonl").path, adapterDir.path, epochs, lr))
    }

    /// Greedy answers (up to 48 tokens, stopping at EOS) and their exact-match accuracy.
    func exactMatch(_ llm: any CausalLanguageModel, _ tokenizer: any Tokenizer, _ items: [QuickstartTask.Item], stop: Set<Int>) throws
        -> (correct: Int, accuracy: Double, answers: [String]) {
        var answers: [String] = [], correct = 0
        for (i, item) in items.enumerated() {
            var sampler = Sampler(temperature: 0)
            let ids = try llm.generate(prompt: tokenizer.encode(item.prompt, addSpecialTokens: true), maxTokens: 48, sampler: &sampler, stopTokens: stop)
            let answer = tokenizer.decode(ids, skipSpecialTokens: true).trimmingCharacters(in: .whitespacesAndNewlines)
            answers.append(answer)
            if answer == item.json { correct += 1 }
            FileHandle.standardError.write(Data("\r   \(i + 1)/\(items.count) answered, \(correct) exact".utf8))
        }
        FileHandle.standardError.write(Data("\r\u{1B}[K".utf8))
        return (correct, Double(correct) / Double(max(items.count, 1)), answers)
    }
}
