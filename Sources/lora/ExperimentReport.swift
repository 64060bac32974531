import Foundation
import Kernels
import Training

/// The Markdown that `lora experiment sentiment` writes to docs/EXPERIMENTS.md: the results
/// table (swift-lora and, when given, PyTorch + PEFT), the targets checked against it, every
/// run, the commands and the machine.
struct ExperimentReport {
    let runs: [ExperimentRun]
    let methods: [ExperimentMethod]
    let peft: PEFTResults?
    let epochs: Int
    let steps: Int?
    let batchSize: Int
    let seeds: [UInt64]
    let output: String

    /// Figures of one method and implementation over its seeds.
    struct Aggregate {
        var test: [Double] = []
        var ood: [Double] = []
        var examplesPerSecond: [Double] = []
        var trainSeconds: [Double] = []
        var peak: [Double] = []
        var trainable = 0
        var all = 0
        var savedBytes = 0
        var checkpointBytes = 0
    }

    func ours(_ method: ExperimentMethod) -> Aggregate? {
        let selected = runs.filter { $0.method == method.name }
        guard let first = selected.first else { return nil }
        var a = Aggregate()
        a.test = selected.map(\.testAccuracy)
        a.ood = selected.map(\.oodAccuracy)
        a.examplesPerSecond = selected.map(\.summary.examplesPerSecond)
        a.trainSeconds = selected.map(\.summary.trainSeconds)
        a.peak = selected.map { Double($0.summary.peakRssBytes) }
        a.trainable = first.summary.trainableParams
        a.all = first.summary.allParams
        a.savedBytes = first.savedBytes
        a.checkpointBytes = first.checkpointBytes
        return a
    }

    func reference(_ method: ExperimentMethod) -> Aggregate? {
        guard let selected = peft?.runs.filter({ $0.method == method.name && $0.epochs == epochs }), let first = selected.first else { return nil }
        var a = Aggregate()
        a.test = selected.map(\.test_accuracy)
        a.ood = selected.map(\.ood_accuracy)
        a.examplesPerSecond = selected.map(\.examples_per_second)
        a.trainSeconds = selected.map(\.train_seconds)
        a.peak = selected.map { Double($0.peak_rss_bytes) }
        a.trainable = first.trainable_params
        a.all = first.all_params
        return a
    }

    func markdown() -> String {
        var md = """
        # Experiments

        ## Sentiment: LoRA vs full fine-tuning (all-MiniLM-L6-v2, Rotten Tomatoes sentences)

        \(steps.map { "**A quick check cut to \($0) steps per run: these figures say nothing about accuracy.**\n\n" } ?? "")\
        *Written by `lora experiment sentiment` on \(Self.date()); \(runs.count) swift-lora runs\
        \(peft.map { ", \($0.runs.filter { $0.epochs == epochs }.count) PyTorch + PEFT runs" } ?? ""). Do not edit by hand: run it again.*

        The LoRA paper's central result (its GLUE table) is that LoRA on the attention weights matches
        full fine-tuning with a tiny fraction of the weights trainable. This is that comparison at our
        scale, on a real encoder and real data, with PyTorch + transformers + PEFT run on the same
        splits and settings as the reference.

        **Setup.** all-MiniLM-L6-v2 (BERT, 6 layers, hidden 384) from the model store with a freshly
        initialised 2-class head (N(0, 0.02²), seeded by the run's seed). Data: the Rotten Tomatoes
        sentences with human sentiment scores (Hutto & Gilbert 2014, from vaderSentiment 3.3.2's source
        distribution); label = score > 0, score 0 dropped, split 80/10/10 with split seed 0
        (\(Self.lineCount(output, "train")) train, \(Self.lineCount(output, "valid")) validation, \
        \(Self.lineCount(output, "test")) test sentences). Out of domain: the \(Self.lineCount(output, "ood-test")) \
        Amazon review snippets of the same archive, never trained on. \(steps.map { "\($0) steps" } ?? "\(epochs) epochs"), batch \(batchSize),
        AdamW (β 0.9/0.999, ε 1e-8, no weight decay), linear decay after 6% warm-up, gradient clipping at
        1, max 128 tokens, seeds \(seeds.map(String.init).joined(separator: ", ")). The final weights are tested (no model
        selection). LoRA: r = 8, α = 16, dropout 0.1 on the LoRA path, A Gaussian (std 1/r), B = 0,
        the head trained too (PEFT's `modules_to_save`). Learning rates: \
        \(methods.map { "\($0.name) \(Self.rate($0.learningRate))" }.joined(separator: ", ")). The base
        model's own dropout is off on both sides (swift-lora does not implement it yet).


        """
        md += resultsTable()
        md += targetsSection()
        md += perRunTable()
        md += commandsSection()
        md += machineSection()
        return md
    }

    // MARK: - Tables

    func resultsTable() -> String {
        var md = """
        ### Results

        Accuracy in %, mean ± standard deviation over the seeds. Trainable parameters as PEFT counts them
        (the head's trainable copy included). Saved: the adapter (LoRA) or the weights (full) that a run
        delivers; checkpoint: what resuming needs (trainable weights + AdamW state). Peak memory: the
        process's peak resident set, median over seeds. Time and examples/s: the training steps alone
        (no evaluation, no checkpoint writing), median over seeds.

        | Method | Implementation | Test accuracy | Out-of-domain accuracy | Trainable parameters | Saved / checkpoint | Peak memory | Training time | Examples/s |
        |---|---|---|---|---|---|---|---|---|

        """
        for method in methods {
            let reference = reference(method)
            if let a = ours(method) {
                let ratio = reference.map { String(format: " (%.2f× PEFT)", median(of: a.examplesPerSecond) / median(of: $0.examplesPerSecond)) } ?? ""
                md += "| \(method.title) | swift-lora | \(Self.meanStd(a.test)) | \(Self.meanStd(a.ood)) | \(Self.params(a)) | "
                md += "\(Self.bytes(a.savedBytes)) / \(Self.bytes(a.checkpointBytes)) | \(Self.bytes(Int(median(of: a.peak)))) | "
                md += "\(Self.seconds(median(of: a.trainSeconds))) | \(String(format: "%.1f", median(of: a.examplesPerSecond)))\(ratio) |\n"
            }
            if let r = reference {
                md += "| \(method.title) | PyTorch + PEFT | \(Self.meanStd(r.test)) | \(Self.meanStd(r.ood)) | \(Self.params(r)) | – | "
                md += "\(Self.bytes(Int(median(of: r.peak)))) | \(Self.seconds(median(of: r.trainSeconds))) | "
                md += "\(String(format: "%.1f", median(of: r.examplesPerSecond))) |\n"
            }
        }
        return md + "\n"
    }

    func targetsSection() -> String {
        var md = "### Targets\n\n| Target | Measured | Met |\n|---|---|---|\n"
        func row(_ target: String, _ measured: String, _ met: Bool?) {
            md += "| \(target) | \(measured) | \(met.map { $0 ? "yes" : "**no**" } ?? "not measured") |\n"
        }
        let byName = Dictionary(uniqueKeysWithValues: methods.map { ($0.name, $0) })
        let full = byName["full"].flatMap(ours), qv = byName["lora-qv"].flatMap(ours)
        if let full, let qv {
            let gap = (Self.mean(qv.test) - Self.mean(full.test)) * 100
            let percent = 100 * Double(qv.trainable) / Double(max(qv.all, 1))
            row("LoRA (query, value) test accuracy within 1 point of full fine-tuning, ≤ 0.5% trainable",
                String(format: "%+.2f points, %.3f%% trainable", gap, percent), gap >= -1 && percent <= 0.5)
            let memory = median(of: qv.peak) / median(of: full.peak)
            row("LoRA (query, value) peak memory clearly below full fine-tuning's",
                String(format: "%@ vs %@ (%.2f×)", Self.bytes(Int(median(of: qv.peak))), Self.bytes(Int(median(of: full.peak))), memory), memory < 0.9)
            let smaller = Double(full.savedBytes) / Double(max(qv.savedBytes, 1))
            let smallerCheckpoint = Double(full.checkpointBytes) / Double(max(qv.checkpointBytes, 1))
            row("LoRA (query, value) result ≥ 50× smaller than full fine-tuning's",
                String(format: "%@ vs %@: %.0f× (checkpoints: %.0f×)", Self.bytes(qv.savedBytes), Self.bytes(full.savedBytes), smaller, smallerCheckpoint),
                smaller >= 50)
        } else {
            row("LoRA vs full fine-tuning", "needs both the full and lora-qv methods", nil)
        }
        for method in methods {
            guard let a = ours(method) else { continue }
            guard let r = reference(method) else {
                row("\(method.name): accuracy within 1 point of PEFT; examples/s ≥ PEFT's", "no PEFT results", nil)
                continue
            }
            let gap = (Self.mean(a.test) - Self.mean(r.test)) * 100
            row("\(method.name): test accuracy within 1 point of PyTorch + PEFT", String(format: "%+.2f points", gap), abs(gap) <= 1)
            let ratio = median(of: a.examplesPerSecond) / median(of: r.examplesPerSecond)
            row("\(method.name): examples/s ≥ PyTorch + PEFT's", String(format: "%.2f×", ratio), ratio >= 1)
        }
        return md + "\n"
    }

    func perRunTable() -> String {
        var md = """
        ### Every run

        | Method | Seed | Implementation | Validation | Test | Out of domain | Examples/s | Peak memory | Final train loss |
        |---|---|---|---|---|---|---|---|---|

        """
        for method in methods {
            for run in runs where run.method == method.name {
                md += "| \(method.name) | \(run.seed) | swift-lora | \(run.summary.bestValid.map { Self.percent($0) } ?? "–") | "
                md += "\(Self.percent(run.testAccuracy)) | \(Self.percent(run.oodAccuracy)) | "
                md += "\(String(format: "%.1f", run.summary.examplesPerSecond)) | \(Self.bytes(run.summary.peakRssBytes)) | "
                md += "\(run.summary.finalTrainLoss.map { String(format: "%.4f", $0) } ?? "–") |\n"
            }
            for run in peft?.runs ?? [] where run.method == method.name && run.epochs == epochs {
                md += "| \(method.name) | \(run.seed) | PyTorch + PEFT | – | \(Self.percent(run.test_accuracy)) | "
                md += "\(Self.percent(run.ood_accuracy)) | \(String(format: "%.1f", run.examples_per_second)) | "
                md += "\(Self.bytes(run.peak_rss_bytes)) | – |\n"
            }
        }
        return md + "\n"
    }

    func commandsSection() -> String {
        var md = """
        ### Reproduce

        ```sh
        make experiment-sentiment      # both sides; the PEFT side needs the venv of Scripts/reference/README.md
        # which is:
        python Scripts/reference/sentiment_peft.py --data \(output)/data --out \(output)/peft.json --epochs \(epochs)
        lora experiment sentiment --output \(output) --epochs \(epochs) --seeds \(seeds.map(String.init).joined(separator: ","))
        ```

        Each swift-lora run is one `lora train` process, for example:

        ```sh

        """
        for method in methods {
            // Paths relative to the repository, as a reader would type them.
            let here = FileManager.default.currentDirectoryPath + "/"
            if let run = runs.first(where: { $0.method == method.name }) { md += run.command.replacingOccurrences(of: here, with: "") + "\n" }
        }
        return md + "```\n\n"
    }

    func machineSection() -> String {
        var md = "### Machine\n\n"
        md += "- CPU: \(Self.cpuModel()), \(ProcessInfo.processInfo.activeProcessorCount) cores; memory \(Self.bytes(Int(ProcessInfo.processInfo.physicalMemory)))\n"
        md += "- \(ProcessInfo.processInfo.operatingSystemVersionString)\n"
        md += "- swift-lora 0.1.0 (release build), \(blasConfiguration), \(parallelWorkers) threads\n"
        if let peft {
            let versions = peft.versions.sorted { $0.key < $1.key }.map { "\($0.key) \($0.value)" }.joined(separator: ", ")
            let threads = Set(peft.runs.map(\.threads)).sorted().map(String.init).joined(separator: "/")
            md += "- Reference: \(versions), \(threads) threads (CPU)\n"
        }
        md += "- Every run is its own process; `make experiment-sentiment` runs the PEFT side first, then this one, never both at once.\n"
        return md
    }

    // MARK: - Formatting

    static func mean(_ x: [Double]) -> Double { x.isEmpty ? .nan : x.reduce(0, +) / Double(x.count) }
    static func std(_ x: [Double]) -> Double {
        guard x.count > 1 else { return 0 }
        let m = mean(x)
        return (x.reduce(0) { $0 + ($1 - m) * ($1 - m) } / Double(x.count - 1)).squareRoot()
    }
    static func meanStd(_ x: [Double]) -> String { String(format: "%.2f ± %.2f", mean(x) * 100, std(x) * 100) }
    static func percent(_ x: Double) -> String { String(format: "%.2f", x * 100) }
    static func params(_ a: Aggregate) -> String {
        "\(a.trainable.formatted()) (\(String(format: a.trainable == a.all ? "%.0f" : "%.3f", 100 * Double(a.trainable) / Double(max(a.all, 1))))%)"
    }
    static func rate(_ x: Double) -> String { String(format: "%g", x) }
    static func seconds(_ s: Double) -> String { String(format: "%d min %02d s", Int(s) / 60, Int(s) % 60) }
    static func bytes(_ b: Int) -> String {
        if b >= 1 << 30 { return String(format: "%.2f GiB", Double(b) / Double(1 << 30)) }
        if b >= 1 << 20 { return String(format: "%.1f MiB", Double(b) / Double(1 << 20)) }
        return String(format: "%.0f KiB", Double(b) / 1024)
    }
    static func date() -> String {
        let f = DateFormatter()
        f.locale = Locale(identifier: "en_US_POSIX")
        f.dateFormat = "yyyy-MM-dd"
        return f.string(from: Date())
    }
    static func lineCount(_ output: String, _ split: String) -> String {
        let url = URL(fileURLWithPath: output).appendingPathComponent("data/\(split).jsonl")
        guard let data = try? Data(contentsOf: url) else { return "?" }
        return data.reduce(0) { $0 + ($1 == 0x0A ? 1 : 0) }.formatted()
    }
    static func cpuModel() -> String {
        guard let info = try? String(contentsOfFile: "/proc/cpuinfo", encoding: .utf8),
              let line = info.split(separator: "\n").first(where: { $0.hasPrefix("model name") }),
              let colon = line.firstIndex(of: ":") else { return "unknown CPU" }
        return line[line.index(after: colon)...].trimmingCharacters(in: .whitespaces)
    }
}
