import ArgumentParser
import Foundation
import Formats
import ModelStore
import Training

struct ExperimentCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "experiment", abstract: "Reproducible experiments that write their own results table.",
        subcommands: [SentimentExperiment.self])
}

/// The LoRA paper's central claim at our scale: sentence classification with LoRA on the
/// attention weights vs full fine-tuning, on all-MiniLM-L6-v2 and the Rotten Tomatoes
/// sentences, over several seeds, with the PyTorch + PEFT reference beside it.
struct SentimentExperiment: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "sentiment",
        abstract: "LoRA vs full fine-tuning of all-MiniLM-L6-v2 on movie-review sentiment; writes docs/EXPERIMENTS.md.",
        discussion: """
        Prepares the splits (`lora data prepare sentiment`, split seed 0) into OUTPUT/data, then runs \
        every method × seed as its own `lora train` process (so each peak memory is its own) into \
        OUTPUT/runs/METHOD-seedS, testing the final weights on the in-domain test split and on the \
        Amazon review snippets (out of domain). A finished run is kept and reused: run the command \
        again to continue after an interruption (--rerun starts over). With the PyTorch + PEFT \
        results of Scripts/reference/sentiment_peft.py (--reference, default OUTPUT/peft.json when \
        it exists), the table puts both side by side.
        """)

    @Option(help: "Working folder: data, runs, results (default: $LORA_HOME/runs/experiment-sentiment).") var output: String?
    @Option(help: "Comma-separated seeds (initialisation, data order, dropout).") var seeds = "0,1,2"
    @Option(help: "Comma-separated methods: \(ExperimentMethod.all.map(\.name).joined(separator: ", ")).")
    var methods = ExperimentMethod.all.map(\.name).joined(separator: ",")
    @Option(parsing: .unconditional, help: "Passes over the training split.") var epochs = 3
    @Option(parsing: .unconditional, help: "Optimizer steps per run instead of --epochs (a quick check of the whole pipeline).") var steps: Int?
    @Option(parsing: .unconditional, help: "Examples per batch.") var batchSize = 32
    @Option(help: "PyTorch + PEFT results (JSON from Scripts/reference/sentiment_peft.py).") var reference: String?
    @Option(help: "Where to write the results table, Markdown (default: EXPERIMENTS.md in --output).") var report: String?
    @Flag(help: "Run every method and seed again, even those with results.") var rerun = false

    func run() throws {
        let seedList = try seeds.split(separator: ",").map { s -> UInt64 in
            guard let v = UInt64(s.trimmingCharacters(in: .whitespaces)) else { throw ValidationError("--seeds: '\(s)' is not a seed") }
            return v
        }
        let methodList = try methods.split(separator: ",").map { name -> ExperimentMethod in
            guard let m = ExperimentMethod.all.first(where: { $0.name == name }) else {
                throw ValidationError("unknown method '\(name)' (known: \(ExperimentMethod.all.map(\.name).joined(separator: ", ")))")
            }
            return m
        }
        guard !seedList.isEmpty, epochs > 0, batchSize > 0, (steps ?? 1) > 0 else {
            throw ValidationError("--seeds, --epochs, --steps and --batch-size must be positive")
        }

        let root = output.map { URL(fileURLWithPath: $0) } ?? ModelStore().root.appendingPathComponent("runs/experiment-sentiment")
        let data = root.appendingPathComponent("data")
        note("preparing the splits in \(data.path)")
        let folder = try ModelStore().fetch(.vaderSentiment) { note($0) }
        for line in try SentimentData.prepare(groundTruth: folder, output: data, seed: 0) { note("  " + line) }

        var runs: [ExperimentRun] = []
        let total = methodList.count * seedList.count
        for method in methodList {
            for seed in seedList {
                let dir = root.appendingPathComponent("runs/\(method.name)-seed\(seed)")
                let resultURL = dir.appendingPathComponent("result.json")
                if !rerun, let previous = try? JSONDecoder().decode(ExperimentRun.self, from: Data(contentsOf: resultURL)),
                   previous.epochs == epochs, previous.steps == steps, previous.batchSize == batchSize {
                    note("[\(runs.count + 1)/\(total)] \(method.name) seed \(seed): done before, reusing \(resultURL.path)")
                    runs.append(previous)
                    continue
                }
                note("[\(runs.count + 1)/\(total)] \(method.name) seed \(seed)")
                let run = try train(method, seed: seed, data: data, output: dir)
                try atomicWrite(try JSONEncoder().encode(run), to: resultURL)
                note(String(format: "  test %.4f, out of domain %.4f, %.1f examples/s, peak %d MiB",
                            run.testAccuracy, run.oodAccuracy, run.summary.examplesPerSecond, run.summary.peakRssBytes >> 20))
                runs.append(run)
            }
        }

        let referenceURL = reference.map { URL(fileURLWithPath: $0) } ?? root.appendingPathComponent("peft.json")
        var peft: PEFTResults?
        if steps != nil {
            note("--steps: a quick check, not compared with the PyTorch + PEFT runs")
        } else if FileManager.default.fileExists(atPath: referenceURL.path) {
            do { peft = try JSONDecoder().decode(PEFTResults.self, from: Data(contentsOf: referenceURL)) } catch {
                throw CommandError("\(referenceURL.path): not a result of Scripts/reference/sentiment_peft.py (\(error))")
            }
        } else if reference != nil {
            throw CommandError("\(referenceURL.path) does not exist")
        } else {
            note("no PyTorch + PEFT results at \(referenceURL.path): the table will have swift-lora only")
        }
        let markdown = ExperimentReport(runs: runs, methods: methodList, peft: peft, epochs: epochs, steps: steps, batchSize: batchSize,
                                        seeds: seedList, output: root.path).markdown()
        let reportURL = report.map { URL(fileURLWithPath: $0) } ?? root.appendingPathComponent("EXPERIMENTS.md")
        try FileManager.default.createDirectory(at: reportURL.deletingLastPathComponent(), withIntermediateDirectories: true)
        try atomicWrite(Data(markdown.utf8), to: reportURL)
        print(markdown)
        note("wrote \(reportURL.path)")
    }

    /// One `lora train` process; its JSON summary on stdout, its progress passed through on stderr.
    func train(_ method: ExperimentMethod, seed: UInt64, data: URL, output dir: URL) throws -> ExperimentRun {
        try? FileManager.default.removeItem(at: dir)
        func file(_ name: String) -> String { data.appendingPathComponent(name).path }
        let length = steps.map { ["--steps", String($0)] } ?? ["--epochs", String(epochs)]
        let arguments = ["train", "--model", "all-minilm-l6-v2", "--task", "classification",
                         "--data", file("train.jsonl"), "--valid", file("valid.jsonl"),
                         "--test", file("test.jsonl"), "--test", file("ood-test.jsonl"), "--output", dir.path,
                         "--batch-size", String(batchSize), "--max-seq-len", "128"] + length + [

                         "--lr", String(method.learningRate), "--warmup", "0.06", "--schedule", "linear",
                         "--seed", String(seed), "--json"] + method.arguments
        let process = Process()
        process.executableURL = URL(fileURLWithPath: "/proc/self/exe").resolvingSymlinksInPath()
        process.arguments = arguments
        let stdout = Pipe()
        process.standardOutput = stdout
        try process.run()
        let output = stdout.fileHandleForReading.readDataToEndOfFile()
        process.waitUntilExit()
        guard process.terminationStatus == 0 else {
            throw CommandError("lora \(arguments.joined(separator: " ")) failed with status \(process.terminationStatus)")
        }
        let summary: TrainingSummary
        do { summary = try JSONDecoder().decode(TrainingSummary.self, from: output) } catch {
            throw CommandError("lora train printed no summary: \(String(decoding: output.prefix(300), as: UTF8.self))")
        }
        func accuracy(_ name: String) throws -> Double {
            guard let a = summary.tests.first(where: { $0.file.hasSuffix("/" + name) })?.accuracy else {
                throw CommandError("the run in \(dir.path) has no accuracy on \(name)")
            }
            return a
        }
        let saved = dir.appendingPathComponent(method.isFull ? "model.safetensors" : "adapter_model.safetensors")
        let checkpoint = Checkpoints.list(dir).last
        return ExperimentRun(method: method.name, seed: seed, epochs: epochs, steps: steps, batchSize: batchSize, learningRate: method.learningRate,
                             testAccuracy: try accuracy("test.jsonl"), oodAccuracy: try accuracy("ood-test.jsonl"),
                             savedBytes: fileSize(saved), checkpointBytes: checkpoint.map(directorySize) ?? 0,
                             summary: summary, command: "lora " + arguments.joined(separator: " "))
    }
}

/// A method of the experiment: its learning rate (the paper used higher rates for LoRA than for
/// full fine-tuning) and its `lora train` flags.
struct ExperimentMethod: Sendable {
    let name: String
    let title: String
    let learningRate: Double
    let arguments: [String]
    var isFull: Bool { name == "full" }

    static let loraFlags = ["--rank", "8", "--alpha", "16", "--dropout", "0.1", "--init", "gaussian"]
    static let all = [
        ExperimentMethod(name: "full", title: "Full fine-tuning", learningRate: 5e-5, arguments: ["--full"]),
        ExperimentMethod(name: "lora-qv", title: "LoRA r=8, α=16 on query, value", learningRate: 1e-3,
                         arguments: ["--targets", "query,value"] + loraFlags),
        ExperimentMethod(name: "lora-qkvo", title: "LoRA r=8, α=16 on query, key, value, output", learningRate: 1e-3,
                         arguments: ["--targets", "query,key,value,attention.output.dense"] + loraFlags),
    ]
}

/// One finished run (OUTPUT/runs/METHOD-seedS/result.json).
struct ExperimentRun: Codable {
    var method: String
    var seed: UInt64
    var epochs: Int
    /// Set when the run was cut to a number of steps (a quick check), not `epochs`.
    var steps: Int?
    var batchSize: Int
    var learningRate: Double
    var testAccuracy: Double
    var oodAccuracy: Double
    /// The adapter (LoRA) or the weights (full) that the run delivers.
    var savedBytes: Int
    /// The resumable checkpoint: trainable weights and optimizer state.
    var checkpointBytes: Int
    var summary: TrainingSummary
    var command: String
}

/// What Scripts/reference/sentiment_peft.py writes.
struct PEFTResults: Decodable {
    struct Run: Decodable {
        var method: String
        var seed: Int
        var epochs: Int
        var test_accuracy: Double
        var ood_accuracy: Double
        var examples_per_second: Double
        var train_seconds: Double
        var peak_rss_bytes: Int
        var trainable_params: Int
        var all_params: Int
        var threads: Int
    }
    var runs: [Run]
    var versions: [String: String]
}

func directorySize(_ url: URL) -> Int {
    let files = (try? FileManager.default.contentsOfDirectory(at: url, includingPropertiesForKeys: nil)) ?? []
    return files.reduce(0) { $0 + fileSize($1) }
}
