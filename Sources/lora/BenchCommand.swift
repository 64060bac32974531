import ArgumentParser
import Foundation
import Kernels
import LoRA
import Models
import Training

/// `lora bench train|infer`: the throughput and memory of one configuration on a real model,
/// as one JSON object, so `Benchmarks/compare.sh` can put it beside PyTorch + PEFT measured in
/// the same run. Inputs are random token ids (seeded): the speed of a step does not depend on
/// the text.
struct Bench: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "bench",
        abstract: "Measure training or inference throughput and peak memory on a real model.",
        subcommands: [BenchTrain.self, BenchInfer.self, BenchReport.self]
    )
}

/// Seconds since this process started (kernel start time), so "time to first step" includes
/// everything a user waits for: dynamic loading, model parsing, dequantisation.
func secondsSinceProcessStart() -> Double {
    guard let stat = try? String(contentsOfFile: "/proc/self/stat", encoding: .utf8),
          let uptime = try? String(contentsOfFile: "/proc/uptime", encoding: .utf8),
          let close = stat.lastIndex(of: ")") else { return .nan }
    // Fields after the ")" of the command name start at field 3; starttime is field 22.
    let fields = stat[stat.index(after: close)...].split(separator: " ")
    guard fields.count > 19, let ticks = Double(fields[19]),
          let now = Double(uptime.split(separator: " ").first ?? "") else { return .nan }
    return now - ticks / Double(sysconf(Int32(_SC_CLK_TCK)))
}

func monotonicSeconds() -> Double { Double(DispatchTime.now().uptimeNanoseconds) / 1e9 }

/// The median (mean of the two middle values for an even count); NaN for none.
func median(of values: [Double]) -> Double {
    let s = values.sorted()
    guard !s.isEmpty else { return .nan }
    return s.count % 2 == 1 ? s[s.count / 2] : (s[s.count / 2 - 1] + s[s.count / 2]) / 2
}

/// The machine's own GEMM throughput for a precision on a square 1024³ product, median of
/// `repetitions`: OpenBLAS's sgemm for fp32 (and for the quantised path, which decodes to fp32
/// for sgemm); for bf16, the bf16 kernels when they run here (the BLAS has no bf16 GEMM).
func machineGEMMGFLOPS(precision: FrozenPrecision = .fp32, repetitions: Int = 5) -> Double {
    let n = 1024
    let a = Tensor(shape: [n, n], generator: { 0.01 }), b = Tensor(shape: [n, n], generator: { 0.01 }), c = Tensor(shape: [n, n])
    let packed = PackedMatrix.bf16(b)
    let product: () -> Void = precision == .bf16 && hasBF16Instructions
        ? { matmul(a.data, ldx: n, rows: n, transposedPacked: packed, into: c.data, ldy: n) }
        : { matmul(m: n, n: n, k: n, a.data, lda: n, b.data, ldb: n, c.data, ldc: n) }
    product()   // warm-up
    let times = (0..<repetitions).map { _ in
        let start = monotonicSeconds()
        product()
        return monotonicSeconds() - start
    }
    return 2 * Double(n * n * n) / median(of: times) / 1e9
}

struct BenchTrain: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "train",
        abstract: "Time training steps (forward, backward, AdamW) on random tokens.",
        discussion: """
        Prints tokens/s and the median step time over the steps after the warm-up, the process's \
        peak resident memory, the time from process start to the end of the first step, and the \
        step's matrix-product FLOPs per second against the machine's own GEMM for the precision \
        (1024³, measured after the steps: OpenBLAS's sgemm, or the bf16 kernels with \
        --precision bf16). Everything goes to stdout as one JSON object with --json.
        """
    )

    @OptionGroup var modelOption: ModelOption
    @Option(parsing: .unconditional, help: "LoRA rank.") var rank = 8
    @Option(parsing: .unconditional, help: "LoRA alpha.") var alpha = 16.0
    @Option(help: "Modules to adapt, comma-separated, or 'all-linear' (default: q,k,v,o / BERT's attention).")
    var targets: String?
    @Flag(help: "Full fine-tuning: every weight trainable (for the memory and speed contrast).") var full = false
    @Option(parsing: .unconditional, help: "Sequences per step.") var batchSize = 4
    @Option(parsing: .unconditional, help: "Tokens per sequence.") var seqLen = 128
    @Option(parsing: .unconditional, help: "Timed steps after the warm-up.") var steps = 10
    @Option(parsing: .unconditional, help: "Untimed warm-up steps (buffers grow, caches fill).") var warmup = 2
    @OptionGroup var memory: MemoryOptions
    @Flag(help: "Print one JSON object on stdout.") var json = false
    var precision: FrozenPrecision { memory.precision }
    var recompute: Bool { memory.recompute }

    func validate() throws {
        guard batchSize > 0, seqLen > 1, steps > 0, warmup >= 0 else {
            throw ValidationError("--batch-size, --steps must be positive, --seq-len at least 2, --warmup not negative")
        }
        if full && precision != .fp32 { throw ValidationError("--full trains every weight, so they stay fp32 (drop --precision)") }
    }

    func run() throws {
        let pretrained = try modelOption.load(labels: ["negative", "positive"], seed: 0, precision: precision)
        let model = pretrained.model
        var generator = SplitMix64(seed: 1234)
        let vocabulary = model.vocabularySize
        let labels: [Int]
        let ids = (0..<batchSize * seqLen).map { _ in Int(generator.next() % UInt64(vocabulary)) }
        if model.task == .sequenceClassification { labels = (0..<batchSize).map { _ in Int(generator.next() % 2) } } else { labels = ids }
        let batch = TokenBatch(batch: batchSize, length: seqLen, inputIds: ids)

        if full {
            for (_, p) in model.namedParameters { p.setTrainable(true) }
        } else {
            let names = targets.map { $0.split(separator: ",").map(String.init) } ?? pretrained.model.defaultLoRATargets
            var config = LoRAConfig(rank: rank, alpha: alpha, dropout: 0, targets: names == ["all-linear"] ? .allLinear : .names(names))
            config.taskType = pretrained.model.task.rawValue
            _ = try model.addAdapter(named: "default", config: config, seed: 1)
        }
        pretrained.model.setActivationRecomputation(recompute)
        model.setTraining(true)
        let optimizer = AdamW(parameters: model.trainableParameters, learningRate: 1e-4)
        let trainable = optimizer.parameters.reduce(0) { $0 + $1.value.count }

        var stepTimes: [Double] = []
        var firstStep = Double.nan
        var losses: [Float] = []
        for step in 0..<(warmup + steps) {
            let start = monotonicSeconds()
            optimizer.zeroGradients()
            losses.append(try pretrained.model.loss(batch, labels: labels, backward: true))
            optimizer.update()
            let seconds = monotonicSeconds() - start
            if step == 0 { firstStep = secondsSinceProcessStart() }
            if step >= warmup { stepTimes.append(seconds) }
            if !json { note(String(format: "step %d: %.0f ms, loss %.4f", step + 1, seconds * 1000, losses.last ?? .nan)) }
        }
        let stepMedian = median(of: stepTimes)
        let flops = pretrained.model.trainingStepFLOPs(batch: batchSize, length: seqLen)
        let machine = machineGEMMGFLOPS(precision: precision)
        let result = BenchTrainResult(
            model: modelOption.model, method: full ? "full" : "lora", precision: precision.rawValue,
            recompute: recompute, batch_size: batchSize, seq_len: seqLen, steps: steps,
            trainable_parameters: trainable, tokens_per_second: Double(batchSize * seqLen) / stepMedian,
            step_seconds_median: stepMedian, peak_rss_bytes: peakResidentBytes(), time_to_first_step_seconds: firstStep,
            step_gflop: flops / 1e9, gemm_gflops_achieved: flops / stepMedian / 1e9, machine_gemm_gflops: machine,
            gemm_fraction: flops / stepMedian / 1e9 / machine, losses: losses.map(Double.init))
        if json {
            try printJSON(result)
        } else {
            print(String(format: "%@ %@ %@: %.0f tokens/s (step %.0f ms median of %d), peak %d MiB, first step after %.1f s, %.1f GFLOP/s = %.2f of sgemm (%.1f)",
                         result.model, result.method, result.precision, result.tokens_per_second, stepMedian * 1000, steps,
                         result.peak_rss_bytes >> 20, firstStep, result.gemm_gflops_achieved, result.gemm_fraction, machine))
        }
    }
}

struct BenchTrainResult: Codable {
    var model: String
    var method: String
    var precision: String
    var recompute: Bool
    var batch_size: Int
    var seq_len: Int
    var steps: Int
    var trainable_parameters: Int
    var tokens_per_second: Double
    var step_seconds_median: Double
    var peak_rss_bytes: Int
    var time_to_first_step_seconds: Double
    var step_gflop: Double
    var gemm_gflops_achieved: Double
    var machine_gemm_gflops: Double
    var gemm_fraction: Double
    var losses: [Double]
}

struct BenchInfer: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "infer",
        abstract: "Time prefill and greedy decoding of a causal language model (Llama, Gemma 3), with or without an adapter.",
        discussion: """
        Runs a random prompt of --prompt-tokens through the model (prefill), then decodes \
        --new-tokens one at a time with the KV cache (end-of-sequence does not stop it), \
        --repeats times; prints the medians. --random-adapter attaches a fresh r=8 adapter on \
        q, k, v, o with non-zero B, for measuring the unmerged overhead without a trained adapter. \
        --paired (with --random-adapter) measures the base model, the unmerged and the merged \
        adapter in turn within each repetition, in one process, and reports the medians of the \
        per-repetition latency ratios: on a noisy machine that is what resolves a 2% difference.
        """
    )

    @OptionGroup var modelOption: ModelOption
    @Option(name: .customLong("adapter"), help: ArgumentHelp("A PEFT adapter directory (repeatable, DIR:WEIGHT).", valueName: "dir[:weight]"))
    var adapters: [String] = []
    @Flag(help: "Merge the adapter(s) into the weights first.") var merge = false
    @Flag(help: "Attach a random r=8 adapter on q,k,v,o (unmerged unless --merge).") var randomAdapter = false
    @Flag(help: "With --random-adapter: base, unmerged and merged measured in turn, paired ratios.") var paired = false
    @Option(parsing: .unconditional, help: "Prompt length.") var promptTokens = 128
    @Option(parsing: .unconditional, help: "Tokens decoded after the prompt.") var newTokens = 64
    @Option(parsing: .unconditional, help: "Measured repetitions (after one warm-up).") var repeats = 3
    @Option(help: "Storage of the frozen weights: fp32, bf16, or q (a GGUF file's quantised blocks); not with --merge.")
    var precision: FrozenPrecision = .fp32
    @Flag(help: "Print one JSON object on stdout.") var json = false

    func validate() throws {
        guard promptTokens > 0, newTokens > 0, repeats > 0 else { throw ValidationError("--prompt-tokens, --new-tokens and --repeats must be positive") }
        if merge && adapters.isEmpty && !randomAdapter { throw ValidationError("--merge needs --adapter or --random-adapter") }
        if merge && precision != .fp32 { throw ValidationError("--merge needs fp32 base weights (drop --precision)") }
        if paired && (!randomAdapter || merge || !adapters.isEmpty || precision != .fp32) {
            throw ValidationError("--paired needs --random-adapter, fp32 weights, and no --merge or --adapter (it merges in turn itself)")
        }
    }

    func run() throws {
        let pretrained = try modelOption.load(precision: precision)
        guard let llm = pretrained.model as? any CausalLanguageModel & PretrainedModel else { throw CommandError("bench infer needs a causal language model (Llama or Gemma 3); this is a \(pretrained.model.architecture) model") }
        try AdapterOptions.apply(adapters, merge: merge, to: llm)
        if randomAdapter {
            var config = LoRAConfig(rank: 8, alpha: 16, dropout: 0, targets: .names(pretrained.model.defaultLoRATargets))
            config.taskType = pretrained.model.task.rawValue
            _ = try llm.addAdapter(named: "bench", config: config, seed: 7)
            var g = SplitMix64(seed: 8)
            for (_, p) in llm.namedAdapterParameters where p.name == "lora_B" {
                for i in 0..<p.value.count { p.value.data[i] = g.nextGaussian() * 0.01 }
            }
            if merge {
                do { try llm.mergeAdapters() } catch { throw CommandError(error.description) }
            }
        }
        llm.setTraining(false)
        var generator = SplitMix64(seed: 99)
        let prompt = (0..<promptTokens).map { _ in Int(generator.next() % UInt64(llm.vocabularySize)) }
        if paired { return try runPaired(llm, prompt: prompt) }
        var prefill: [Double] = [], decode: [Double] = []
        for run in 0...repeats {
            let (prefillSeconds, decodeSeconds) = try measure(llm, prompt: prompt)
            if run > 0 {
                prefill.append(prefillSeconds)
                decode.append(decodeSeconds)
            }
        }
        let adapted = randomAdapter || !adapters.isEmpty
        let result = BenchInferResult(
            model: modelOption.model, variant: adapted ? (merge ? "merged" : "unmerged") : "base", precision: precision.rawValue,
            prompt_tokens: promptTokens, new_tokens: newTokens, repeats: repeats,
            prefill_tokens_per_second: Double(promptTokens) / median(of: prefill),
            decode_tokens_per_second: Double(newTokens) / median(of: decode),
            decode_ms_per_token: median(of: decode) / Double(newTokens) * 1000, peak_rss_bytes: peakResidentBytes())
        if json {
            try printJSON(result)
        } else {
            print(String(format: "%@ (%@, %@): prefill %.0f tokens/s, decode %.1f tokens/s (%.2f ms/token), peak %d MiB",
                         result.model, result.variant, result.precision, result.prefill_tokens_per_second,
                         result.decode_tokens_per_second, result.decode_ms_per_token, result.peak_rss_bytes >> 20))
        }
    }
}

extension BenchInfer {
    /// Seconds of the prefill and of `newTokens` greedy decoding steps.
    func measure(_ llm: any CausalLanguageModel & PretrainedModel, prompt: [Int]) throws -> (prefill: Double, decode: Double) {
        let cache = llm.makeCache(capacity: promptTokens + newTokens)
        var start = monotonicSeconds()
        var logits = try llm.forwardCached(prompt, cache: cache, allLogits: false)
        let prefill = monotonicSeconds() - start
        var sampler = Sampler()
        start = monotonicSeconds()
        for _ in 0..<newTokens {
            let next = sampler.sample(logits.data, count: llm.vocabularySize)
            logits = try llm.forwardCached([next], cache: cache, allLogits: false)
        }
        return (prefill, monotonicSeconds() - start)
    }

    /// Base, unmerged and merged in turn in every repetition (after one warm-up round).
    func runPaired(_ llm: any CausalLanguageModel & PretrainedModel, prompt: [Int]) throws {
        var decode: [String: [Double]] = [:]
        var mergedOverBase: [Double] = [], unmergedOverBase: [Double] = []
        for round in 0...repeats {
            try llm.setActiveAdapters([])
            let base = try measure(llm, prompt: prompt).decode
            try llm.setActiveAdapters(["bench"])
            let unmerged = try measure(llm, prompt: prompt).decode
            do { try llm.mergeAdapters() } catch { throw CommandError(error.description) }
            let merged = try measure(llm, prompt: prompt).decode
            do { try llm.unmergeAdapters() } catch { throw CommandError(error.description) }
            guard round > 0 else { continue }
            decode["base", default: []].append(base)
            decode["unmerged", default: []].append(unmerged)
            decode["merged", default: []].append(merged)
            mergedOverBase.append(merged / base)
            unmergedOverBase.append(unmerged / base)
        }
        let perSecond = { (key: String) in Double(newTokens) / median(of: decode[key] ?? []) }
        let result = BenchPairedResult(
            model: modelOption.model, prompt_tokens: promptTokens, new_tokens: newTokens, repeats: repeats,
            decode_tokens_per_second_base: perSecond("base"), decode_tokens_per_second_unmerged: perSecond("unmerged"),
            decode_tokens_per_second_merged: perSecond("merged"), merged_over_base: median(of: mergedOverBase),
            unmerged_over_base: median(of: unmergedOverBase), peak_rss_bytes: peakResidentBytes())
        if json { return try printJSON(result) }
        print(String(format: "%@: decode %.1f (base), %.1f (unmerged), %.1f (merged) tokens/s; latency merged/base %.3f, unmerged/base %.3f (paired medians of %d)",
                     result.model, result.decode_tokens_per_second_base, result.decode_tokens_per_second_unmerged,
                     result.decode_tokens_per_second_merged, result.merged_over_base, result.unmerged_over_base, repeats))
    }
}

struct BenchPairedResult: Codable {
    var model: String
    var prompt_tokens: Int
    var new_tokens: Int
    var repeats: Int
    var decode_tokens_per_second_base: Double
    var decode_tokens_per_second_unmerged: Double
    var decode_tokens_per_second_merged: Double
    var merged_over_base: Double
    var unmerged_over_base: Double
    var peak_rss_bytes: Int
}

struct BenchInferResult: Codable {
    var model: String
    var variant: String
    var precision: String
    var prompt_tokens: Int
    var new_tokens: Int
    var repeats: Int
    var prefill_tokens_per_second: Double
    var decode_tokens_per_second: Double
    var decode_ms_per_token: Double
    var peak_rss_bytes: Int
}
