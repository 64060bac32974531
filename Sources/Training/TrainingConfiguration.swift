import Foundation
import LoRA

public enum LearningRateSchedule: String, Sendable, Codable, CaseIterable { case constant, linear, cosine }

/// Everything that defines a training run. Field names are `lora train`'s flag names in
/// snake_case, so a JSON config file and the flags say the same thing; defaults follow PEFT and
/// the LoRA paper (r 8, α 16, the attention projections).
public struct TrainingConfiguration: Sendable, Codable, Equatable {
    public var task: TrainingTask = .causalLM
    public var rank = 8
    public var alpha: Double = 16
    public var dropout: Double = 0.05
    /// nil = the attention projections of the model family.
    public var targets: [String]? = nil
    public var initialization: LoRAInitialization = .gaussian
    public var rslora = false
    public var learningRate: Double = 2e-4
    public var epochs: Int? = nil
    public var steps: Int? = nil
    public var batchSize = 4
    public var gradAccum = 1
    public var maxSeqLen = 512
    /// Warm-up: a whole number of steps, or a fraction of all steps when below 1.
    public var warmup: Double = 0
    public var schedule: LearningRateSchedule = .cosine
    public var weightDecay: Double = 0
    public var maxGradNorm: Double = 1
    public var evalEvery: Int? = nil
    public var saveEvery: Int? = nil
    public var keepCheckpoints = 3
    public var seed: UInt64 = 0
    /// Train every weight (full fine-tuning) instead of LoRA.
    public var full = false
    /// Stop after this many evaluations without improvement.
    public var earlyStoppingPatience: Int? = nil
    /// Stop when this many steps in a row have non-finite loss or gradients.
    public var maxNonFiniteSteps = 5

    enum CodingKeys: String, CodingKey {
        case task, rank, alpha, dropout, targets, initialization = "init", rslora, learningRate = "lr", epochs, steps
        case batchSize = "batch_size", gradAccum = "grad_accum", maxSeqLen = "max_seq_len", warmup, schedule
        case weightDecay = "weight_decay", maxGradNorm = "max_grad_norm", evalEvery = "eval_every", saveEvery = "save_every"
        case keepCheckpoints = "keep_checkpoints", seed, full, earlyStoppingPatience = "early_stopping_patience"
        case maxNonFiniteSteps = "max_non_finite_steps"
    }

    public init() {}

    public init(from decoder: any Decoder) throws {
        let c = try decoder.container(keyedBy: CodingKeys.self)
        var d = TrainingConfiguration()
        d.task = try c.decodeIfPresent(TrainingTask.self, forKey: .task) ?? d.task
        d.rank = try c.decodeIfPresent(Int.self, forKey: .rank) ?? d.rank
        d.alpha = try c.decodeIfPresent(Double.self, forKey: .alpha) ?? d.alpha
        d.dropout = try c.decodeIfPresent(Double.self, forKey: .dropout) ?? d.dropout
        d.targets = try c.decodeIfPresent([String].self, forKey: .targets) ?? d.targets
        d.initialization = try c.decodeIfPresent(LoRAInitialization.self, forKey: .initialization) ?? d.initialization
        d.rslora = try c.decodeIfPresent(Bool.self, forKey: .rslora) ?? d.rslora
        d.learningRate = try c.decodeIfPresent(Double.self, forKey: .learningRate) ?? d.learningRate
        d.epochs = try c.decodeIfPresent(Int.self, forKey: .epochs) ?? d.epochs
        d.steps = try c.decodeIfPresent(Int.self, forKey: .steps) ?? d.steps
        d.batchSize = try c.decodeIfPresent(Int.self, forKey: .batchSize) ?? d.batchSize
        d.gradAccum = try c.decodeIfPresent(Int.self, forKey: .gradAccum) ?? d.gradAccum
        d.maxSeqLen = try c.decodeIfPresent(Int.self, forKey: .maxSeqLen) ?? d.maxSeqLen
        d.warmup = try c.decodeIfPresent(Double.self, forKey: .warmup) ?? d.warmup
        d.schedule = try c.decodeIfPresent(LearningRateSchedule.self, forKey: .schedule) ?? d.schedule
        d.weightDecay = try c.decodeIfPresent(Double.self, forKey: .weightDecay) ?? d.weightDecay
        d.maxGradNorm = try c.decodeIfPresent(Double.self, forKey: .maxGradNorm) ?? d.maxGradNorm
        d.evalEvery = try c.decodeIfPresent(Int.self, forKey: .evalEvery) ?? d.evalEvery
        d.saveEvery = try c.decodeIfPresent(Int.self, forKey: .saveEvery) ?? d.saveEvery
        d.keepCheckpoints = try c.decodeIfPresent(Int.self, forKey: .keepCheckpoints) ?? d.keepCheckpoints
        d.seed = try c.decodeIfPresent(UInt64.self, forKey: .seed) ?? d.seed
        d.full = try c.decodeIfPresent(Bool.self, forKey: .full) ?? d.full
        d.earlyStoppingPatience = try c.decodeIfPresent(Int.self, forKey: .earlyStoppingPatience) ?? d.earlyStoppingPatience
        d.maxNonFiniteSteps = try c.decodeIfPresent(Int.self, forKey: .maxNonFiniteSteps) ?? d.maxNonFiniteSteps
        self = d
    }

    /// Every value checked, with the flag's name in the message.
    public func validate() throws(TrainingError) {
        func bad(_ flag: String, _ why: String) -> TrainingError { .invalidConfiguration("--\(flag) \(why)") }
        guard rank > 0 && rank <= LoRASettings.maximumRank else { throw bad("rank", "must be in 1...\(LoRASettings.maximumRank)") }
        guard alpha.isFinite else { throw bad("alpha", "must be finite") }
        guard alpha > 0 else {
            throw bad("alpha", "must be positive: the adapter's output is scaled by alpha/r, so alpha \(alpha.formatted()) would \(alpha == 0 ? "learn nothing" : "flip the update's sign")")
        }
        guard dropout >= 0 && dropout < 1 else { throw bad("dropout", "must be in [0, 1)") }
        guard learningRate > 0 && learningRate.isFinite else { throw bad("lr", "must be positive") }
        guard batchSize > 0 else { throw bad("batch-size", "must be positive") }
        guard gradAccum > 0 else { throw bad("grad-accum", "must be positive") }
        guard maxSeqLen > 1 else { throw bad("max-seq-len", "must be at least 2") }
        // Bounded so that the step count it gives always converts to an Int.
        guard warmup >= 0 && warmup <= 1e15 else { throw bad("warmup", "must be in 0...1e15 (steps, or a fraction below 1)") }
        guard weightDecay >= 0 else { throw bad("weight-decay", "must be ≥ 0") }
        guard maxGradNorm > 0 else { throw bad("max-grad-norm", "must be positive") }
        guard epochs == nil || steps == nil else { throw .invalidConfiguration("give --epochs or --steps, not both") }
        if let epochs, epochs <= 0 { throw bad("epochs", "must be positive") }
        if let steps, steps <= 0 { throw bad("steps", "must be positive") }
        if let evalEvery, evalEvery <= 0 { throw bad("eval-every", "must be positive") }
        if let saveEvery, saveEvery <= 0 { throw bad("save-every", "must be positive") }
        guard keepCheckpoints > 0 else { throw bad("keep-checkpoints", "must be positive") }
        if let targets, targets.isEmpty { throw bad("targets", "must name at least one module") }
    }

    /// The learning rate at optimizer step `step` (0-based) of `total`.
    public func learningRate(atStep step: Int, of total: Int) -> Double {
        let warmupSteps = warmup < 1 ? Int((warmup * Double(total)).rounded(.up)) : Int(warmup)
        if step < warmupSteps { return learningRate * Double(step + 1) / Double(warmupSteps) }
        let span = max(total - warmupSteps, 1)
        let progress = min(Double(step - warmupSteps) / Double(span), 1)
        switch schedule {
        case .constant: return learningRate
        case .linear: return learningRate * (1 - progress)
        case .cosine: return learningRate * 0.5 * (1 + cos(Double.pi * progress))
        }
    }
}

public enum TrainingError: Error, CustomStringConvertible {
    case invalidConfiguration(String)
    case diverged(step: Int, lastCheckpoint: String?)
    case checkpoint(path: String, reason: String)
    /// A file of the output folder (adapter, metrics, loss curve) could not be written.
    case output(path: String, reason: String)
    case data(String)

    public var description: String {
        switch self {
        case .invalidConfiguration(let why): "invalid training settings: \(why)"
        case let .diverged(step, last):
            "training diverged: loss or gradients were not finite for several steps in a row, up to step \(step)"
                + (last.map { "; the last good checkpoint is \($0)" } ?? "; no checkpoint was written yet")
        case let .checkpoint(path, reason): "checkpoint \(path): \(reason)"
        case let .output(path, reason): "\(path): \(reason)"
        case .data(let why): why
        }
    }
}
