import Foundation
import ModelCore

/// The peak resident memory of a training run, estimated before training from the model's
/// configuration and parameter shapes (nothing is allocated to find out), broken down by what
/// holds it. `lora train --dry-run` prints it, and `lora train` refuses to start when it exceeds
/// the memory available (`AvailableMemory`) unless told to go on.
///
/// What is counted, as the code allocates it (4 bytes per fp32 element; N = batch × length):
///
///     frozen weights       as stored: fp32, bf16 or the GGUF's quantised blocks (`frozenWeightBytes`)
///     trainable            every trainable element × 16 bytes: value, gradient, AdamW m and v
///     activations          every work buffer of the model's module tree at the batch's shape, as each
///                          module declares it (`WorkBuffer`, `PretrainedModel.activationEstimate`):
///                          norms, q/k/v/o, attention output and probabilities B·H·T², the MLP, the
///                          residuals, each active adapter's h [N, r] and dropout input and mask
///                          [N, in]. The blocks of a decoder keep their own activations, or with
///                          --recompute one shared set; their gradient buffers are one shared set.
///                          BERT has no such stack: every layer keeps its own.
///     LM head / logits     the head modules' buffers: the chunked loss's [256, V] logits and [256, C]
///                          rows (decoders); the pooler's and classifier's [B, ·] (BERT)
///     model file (loading) the mapped model file, resident while the weights are read: the peak
///                          is the larger of loading (frozen weights + file) and training
///     data                 the tokenised examples (ids, labels: 16 bytes a token, 100 bytes an example)
///     fixed overhead       the Swift runtime, OpenBLAS's per-thread buffers, the tokenizer, the
///                          packed products' scratch tiles: 88 MiB, measured (below)
///     checkpoint writing   the optimizer file (8 bytes per trainable element) built in memory
///                          before it is written: large only for --full
///
/// Calibrated against the measured peak (VmHWM, `peak_rss_bytes` of `lora train --json`) with
/// `Scripts/calibrate-memory.sh`: release build, this 2-core machine, rank 8 on the attention
/// projections (unless said), dropout 0.05, 3 steps on sequences that fill `--max-seq-len`.
/// Estimate ÷ measured, MiB in brackets:
///
///     SmolLM2-135M (Q4_1 GGUF)  fp32 4×128                    1.027  (1634 / 1592)
///                               bf16 4×128                    1.008  (1378 / 1366)
///                               q 4×128                       1.036  (1213 / 1170)
///                               fp32 --recompute 4×128        1.056  ( 795 /  753)
///                               fp32 --recompute --valid 4×128 1.051 ( 795 /  756)
///                               q --recompute 4×128           1.129  ( 374 /  331)
///                               fp32 1×64                     1.061  ( 751 /  707)
///                               fp32 8×256                    1.008  (4793 / 4756)
///                               bf16 8×256                    1.001  (4537 / 4534)
///                               fp32 --recompute 8×256        1.035  (1175 / 1136)
///                               fp32 all 7 projections r16    1.020  (2050 / 2010)
///                               --full 2×64                   1.037  (3463 / 3338)
///     all-MiniLM-L6-v2          fp32 4×128                    1.129  ( 411 /  364)
///                               fp32 16×256                   1.019  (2195 / 2153)
///                               --full 8×128                  1.093  (1008 /  923)
///
/// The fixed overhead (88 MiB) is set so that no configuration is estimated below its measured
/// peak: the overhead measured by difference is 41–52 MiB in LoRA runs (77–85 with bf16), so small runs are
/// overestimated most. A tiny test model measures about 37 MiB in all and is estimated at 90.
public struct MemoryEstimate: Sendable, Codable {
    public struct Item: Sendable, Codable {
        public var name: String
        public var bytes: Int
        public var detail: String
    }

    /// The training-time components, in order.
    public var items: [Item]
    /// The peak while loading: frozen weights plus the mapped model file, plus the fixed overhead.
    public var loadingBytes: Int
    /// max(sum of `items`, `loadingBytes`).
    public var peakBytes: Int
    public var batch: Int
    public var length: Int
    public var recompute: Bool
    public var recomputeApplies: Bool

    public var trainingBytes: Int { items.reduce(0) { $0 + $1.bytes } }

    /// The fixed part: runtime, BLAS buffers, tokenizer, scratch tiles (see the type's comment).
    public static let fixedOverheadBytes = 88 * 1_048_576

    enum CodingKeys: String, CodingKey {
        case items, loadingBytes = "loading_bytes", peakBytes = "peak_bytes", batch, length, recompute
        case recomputeApplies = "recompute_applies"
    }

    /// - Parameters:
    ///   - model: the model as it will train: frozen weights stored at the chosen precision,
    ///     the adapter attached (or every weight trainable with `--full`).
    ///   - batch, length: the largest batch: examples per micro-batch × the longest padded
    ///     sequence (the longest example, at most `--max-seq-len`).
    ///   - recompute: `--recompute` (where the architecture supports it: Llama).
    ///   - modelFileBytes: the size of the model's weight file(s), mapped while loading.
    ///   - dataTokens, dataExamples: the tokenised examples kept in memory.
    public static func estimate(model: any PretrainedModel, batch: Int, length: Int, recompute: Bool,
                                modelFileBytes: Int = 0, dataTokens: Int = 0, dataExamples: Int = 0) -> MemoryEstimate {
        let n = batch * length
        let trainable = model.trainableParameters.reduce(0) { $0 + $1.value.count }
        let frozen = model.frozenWeightBytes
        let recomputeApplies = model.supportsActivationRecomputation
        let part = model.activationEstimate(batch: batch, length: length, recompute: recompute && recomputeApplies)
        let adapted = model.linearModules.filter { !$0.isMerged && $0.adapter != nil }.count
        // The fixed part holds a tokenizer of up to 50k tokens; a larger vocabulary (Gemma 3's
        // 262,144) costs about 256 bytes a token more (measured: lora tokenize, 98 vs 46 MiB).
        let vocabularyBytes = max(0, model.vocabularySize - 50_000) * 256
        let fixed = fixedOverheadBytes + vocabularyBytes
        let data = dataTokens * 16 + dataExamples * 100
        // A checkpoint's optimizer file (m and v) is built in memory before it is written, on
        // top of everything else; the largest tensor is converted through one more buffer.
        let largest = model.trainableParameters.map(\.value.count).max() ?? 0
        let checkpointWrite = 8 * trainable + 4 * largest
        let items = [
            Item(name: "frozen weights", bytes: frozen, detail: frozen == 0 ? "none (every weight trains)" : "as stored"),
            Item(name: "trainable parameters", bytes: trainable * 16,
                 detail: "\(trainable.formatted()) × (value + gradient + AdamW m, v)"
                    + (adapted > 0 ? " in \(adapted) adapted modules" : "")),
            Item(name: "activations", bytes: part.activationBytes, detail: "batch \(batch) × \(length) tokens: " + part.activationDetail),
            Item(name: "LM head / logits", bytes: part.headBytes, detail: part.headDetail),
            Item(name: "checkpoint writing", bytes: checkpointWrite, detail: "the optimizer file (m, v) serialised in memory"),
            Item(name: "data", bytes: data, detail: "\(dataExamples) examples, \(dataTokens) tokens"),
            Item(name: "fixed overhead", bytes: fixed, detail: "runtime, BLAS buffers, tokenizer"
                    + (vocabularyBytes > 0 ? " (\(model.vocabularySize.formatted()) tokens: \(mib(vocabularyBytes)) above a 50k vocabulary's)" : "")),
        ]
        let training = items.reduce(0) { $0 + $1.bytes }
        // A weight packed as bf16 is read in fp32 first, one tensor at a time: the largest such
        // tensor (Gemma 3's 262,144-row embedding: 640 MiB) is resident beside everything loaded.
        let largestBF16 = model.namedParameters.compactMap { $0.parameter.packed?.encoding == "BF16" ? $0.parameter.count : nil }.max() ?? 0
        let loading = frozen + modelFileBytes + fixed + (frozen == 0 ? trainable * 4 : 0) + 4 * largestBF16
        return MemoryEstimate(items: items, loadingBytes: loading, peakBytes: max(training, loading), batch: batch, length: length,
                              recompute: recompute && recomputeApplies, recomputeApplies: recomputeApplies)
    }

    /// The breakdown as lines for a terminal.
    public func report() -> [String] {
        var lines = items.map { item in
            "  " + item.name.padding(toLength: 22, withPad: " ", startingAt: 0)
                + String(format: "%10.1f MiB  %14@ bytes  ", Double(item.bytes) / 1_048_576, item.bytes.formatted()) + item.detail
        }
        lines.append(String(format: "  %@%10.1f MiB  %14@ bytes", "training".padding(toLength: 22, withPad: " ", startingAt: 0),
                            Double(trainingBytes) / 1_048_576, trainingBytes.formatted()))
        lines.append(String(format: "  %@%10.1f MiB  %14@ bytes  frozen weights + mapped model file + overhead",
                            "loading".padding(toLength: 22, withPad: " ", startingAt: 0), Double(loadingBytes) / 1_048_576, loadingBytes.formatted()))
        lines.append(String(format: "  %@%10.1f MiB  %14@ bytes", "estimated peak".padding(toLength: 22, withPad: " ", startingAt: 0),
                            Double(peakBytes) / 1_048_576, peakBytes.formatted()))
        return lines
    }
}


/// The memory a run may use: the kernel's MemAvailable and, when the process is in a cgroup
/// with a limit, `memory.max`; the lower of the two.
public struct AvailableMemory: Sendable, Codable, Equatable {
    public var memAvailable: Int?
    public var cgroupLimit: Int?
    /// Set when the figure was overridden (`LORA_AVAILABLE_MEMORY`, for tests).
    public var overridden: Int?

    public init(memAvailable: Int?, cgroupLimit: Int?, overridden: Int? = nil) {
        self.memAvailable = memAvailable
        self.cgroupLimit = cgroupLimit
        self.overridden = overridden
    }

    enum CodingKeys: String, CodingKey { case memAvailable = "mem_available", cgroupLimit = "cgroup_limit", overridden, bytes }

    public func encode(to encoder: any Encoder) throws {
        var c = encoder.container(keyedBy: CodingKeys.self)
        try c.encode(memAvailable, forKey: .memAvailable)
        try c.encode(cgroupLimit, forKey: .cgroupLimit)
        try c.encode(overridden, forKey: .overridden)
        try c.encode(bytes, forKey: .bytes)
    }

    public init(from decoder: any Decoder) throws {
        let c = try decoder.container(keyedBy: CodingKeys.self)
        memAvailable = try c.decodeIfPresent(Int.self, forKey: .memAvailable)
        cgroupLimit = try c.decodeIfPresent(Int.self, forKey: .cgroupLimit)
        overridden = try c.decodeIfPresent(Int.self, forKey: .overridden)
    }

    /// The limit in bytes, or nil when nothing could be read.
    public var bytes: Int? {
        if let overridden { return overridden }
        return [memAvailable, cgroupLimit].compactMap { $0 }.min()
    }

    /// Where the limit comes from, for messages.
    public var source: String {
        if overridden != nil { return "LORA_AVAILABLE_MEMORY" }
        switch (memAvailable, cgroupLimit) {
        case let (m?, c?): return c < m ? "cgroup memory.max" : "MemAvailable (cgroup memory.max \(mib(c)))"
        case (_?, nil): return "MemAvailable, no cgroup limit"
        case (nil, _?): return "cgroup memory.max"
        case (nil, nil): return "unknown"
        }
    }

    /// `MemAvailable` of a /proc/meminfo text, in bytes.
    public static func parseMemAvailable(_ meminfo: String) -> Int? {
        for line in meminfo.split(separator: "\n") where line.hasPrefix("MemAvailable:") {
            let fields = line.split(separator: " ", omittingEmptySubsequences: true)
            guard fields.count >= 2, let kb = Int(fields[1]), kb >= 0 else { return nil }
            let unit = fields.count >= 3 ? fields[2].lowercased() : "kb"
            return unit == "kb" ? kb * 1024 : kb
        }
        return nil
    }

    /// A cgroup v2 `memory.max`: a byte count, or nil for "max" (no limit) and anything unreadable.
    public static func parseCgroupLimit(_ text: String) -> Int? {
        let value = text.trimmingCharacters(in: .whitespacesAndNewlines)
        guard let bytes = Int(value), bytes > 0 else { return nil }
        return bytes
    }

    /// A byte count with an optional K, M, G or T suffix (powers of 1024), as given in
    /// `LORA_AVAILABLE_MEMORY`.
    public static func parseByteCount(_ text: String) -> Int? {
        var s = text.trimmingCharacters(in: .whitespaces).uppercased()
        if s.hasSuffix("IB") { s.removeLast(2) } else if s.hasSuffix("B") { s.removeLast() }
        var factor = 1
        if let last = s.last, let power = ["K": 1, "M": 2, "G": 3, "T": 4][String(last)] {
            factor = 1 << (10 * power)
            s.removeLast()
        }
        guard let value = Double(s), value.isFinite, value >= 0, value * Double(factor) < 9e18 else { return nil }
        return Int(value * Double(factor))
    }

    /// Reads /proc/meminfo and /sys/fs/cgroup/memory.max. `LORA_AVAILABLE_MEMORY` (bytes, or
    /// with a K/M/G suffix) replaces both: it exists so that tests can fake a small machine.
    public static func current(environment: [String: String] = ProcessInfo.processInfo.environment) -> AvailableMemory {
        let meminfo = (try? String(contentsOfFile: "/proc/meminfo", encoding: .utf8)).flatMap(parseMemAvailable)
        let cgroup = (try? String(contentsOfFile: "/sys/fs/cgroup/memory.max", encoding: .utf8)).flatMap(parseCgroupLimit)
        let fake = environment["LORA_AVAILABLE_MEMORY"].flatMap(parseByteCount)
        return AvailableMemory(memAvailable: meminfo, cgroupLimit: cgroup, overridden: fake)
    }
}

/// What to do about an estimate and the memory available.
public enum MemoryVerdict: Equatable, Sendable {
    /// It fits (or nothing is known about the machine).
    case fits
    /// It does not fit, and the run must not start.
    case refuse(String)
    /// It does not fit, but the user said to go on: a warning.
    case proceedWithWarning(String)

    /// - Parameters:
    ///   - alternatives: other settings and their estimates; those that fit are suggested.
    ///   - precisionCanDrop: whether `--precision bf16` (or `q`) is open to this run (LoRA on fp32 weights).
    public static func judge(_ estimate: MemoryEstimate, available: AvailableMemory, ignoreLimit: Bool,
                             alternatives: [(flag: String, bytes: Int)] = [], precisionCanDrop: Bool = true) -> MemoryVerdict {
        guard let limit = available.bytes, estimate.peakBytes > limit else { return .fits }
        let what = String(format: "the estimated peak memory of this run, %.0f MiB (%@ bytes), exceeds the %.0f MiB (%@ bytes) available (%@)",
                          Double(estimate.peakBytes) / 1_048_576, estimate.peakBytes.formatted(), Double(limit) / 1_048_576,
                          limit.formatted(), available.source)
        if ignoreLimit { return .proceedWithWarning("warning: \(what); training anyway (--ignore-memory-limit)") }
        let fitting = alternatives.filter { $0.bytes <= limit }
            .map { String(format: "%@ (%.0f MiB)", $0.flag, Double($0.bytes) / 1_048_576) }
        let options = (fitting.isEmpty ? "" : "; these would fit: " + fitting.joined(separator: ", "))
        var levers = ["lower --batch-size or --max-seq-len"]
        if estimate.recomputeApplies && !estimate.recompute { levers.append("add --recompute") }
        if precisionCanDrop { levers.append("use --precision bf16 (or q for a GGUF model)") }
        return .refuse("\(what). To fit: \(levers.joined(separator: ", "))\(options); "
                       + "or pass --ignore-memory-limit to train anyway (see --dry-run for the breakdown)")
    }
}
