import Foundation
import Kernels
import Models
import TestSupport
import Testing
@testable import Training

/// The pure parts of `lora train`'s reliability: the memory estimate and the decision it feeds,
/// and the checkpoint folder's rules (complete-only listing, sweeping, same-step replacement).
/// The end-to-end behaviour (kills, full disk, signals, divergence) is in CLITests.
@Suite("Training reliability")
struct ReliabilityTests {
    static func output() -> URL { URL(fileURLWithPath: NSTemporaryDirectory()).appendingPathComponent("lora-rel-\(UUID().uuidString)") }

    @Test func availableMemoryIsParsedAndTheLowerLimitWins() {
        let meminfo = "MemTotal:       24576000 kB\nMemFree:         1000 kB\nMemAvailable:   20480000 kB\nBuffers: 1 kB\n"
        #expect(AvailableMemory.parseMemAvailable(meminfo) == 20_480_000 * 1024)
        #expect(AvailableMemory.parseMemAvailable("MemTotal: 5 kB\n") == nil)
        #expect(AvailableMemory.parseMemAvailable("MemAvailable: lots kB\n") == nil)
        #expect(AvailableMemory.parseCgroupLimit("max\n") == nil)
        #expect(AvailableMemory.parseCgroupLimit("1073741824\n") == 1 << 30)
        #expect(AvailableMemory.parseCgroupLimit("-5") == nil && AvailableMemory.parseCgroupLimit("") == nil)
        #expect(AvailableMemory.parseByteCount("512M") == 512 << 20 && AvailableMemory.parseByteCount("2GiB") == 2 << 30)
        #expect(AvailableMemory.parseByteCount("1000") == 1000 && AvailableMemory.parseByteCount("1.5K") == 1536)
        #expect(AvailableMemory.parseByteCount("lots") == nil && AvailableMemory.parseByteCount("-1M") == nil
                && AvailableMemory.parseByteCount("1e30G") == nil)
        let both = AvailableMemory(memAvailable: 8 << 30, cgroupLimit: 2 << 30)
        #expect(both.bytes == 2 << 30 && both.source == "cgroup memory.max")
        #expect(AvailableMemory(memAvailable: 1 << 30, cgroupLimit: 2 << 30).bytes == 1 << 30)
        #expect(AvailableMemory(memAvailable: nil, cgroupLimit: nil).bytes == nil)
        let faked = AvailableMemory.current(environment: ["LORA_AVAILABLE_MEMORY": "64M"])
        #expect(faked.bytes == 64 << 20 && faked.source == "LORA_AVAILABLE_MEMORY")
        let real = AvailableMemory.current(environment: [:])
        print("this machine: MemAvailable \(real.memAvailable ?? -1) bytes, cgroup memory.max \(real.cgroupLimit.map(String.init) ?? "none")")
        #expect((real.bytes ?? 0) > 0)
    }

    @Test func theEstimateFollowsTheShapesAndTheVerdictTheLimit() throws {
        let train = TrainerTests.examples(8, seed: 1)
        let session = try TrainingSession(model: try TrainerTests.tinyLlama(), configuration: TrainerTests.configuration(), train: train,
                                          valid: [], padId: 0, output: Self.output(), labels: nil, resume: nil, events: { _ in })
        let model = session.trainer.model
        let small = MemoryEstimate.estimate(model: model, batch: 2, length: 16, recompute: false)
        let large = MemoryEstimate.estimate(model: model, batch: 8, length: 64, recompute: false)
        let recomputed = MemoryEstimate.estimate(model: model, batch: 8, length: 64, recompute: true)
        func bytes(_ e: MemoryEstimate, _ name: String) -> Int { e.items.first { $0.name == name }?.bytes ?? -1 }
        print("tiny Llama: activations 2×16 \(bytes(small, "activations")), 8×64 \(bytes(large, "activations")), "
              + "8×64 --recompute \(bytes(recomputed, "activations")) bytes; peak \(small.peakBytes), \(large.peakBytes), \(recomputed.peakBytes)")
        #expect(bytes(large, "activations") > 8 * bytes(small, "activations"))   // N × 16 and the T² terms
        #expect(bytes(recomputed, "activations") < bytes(large, "activations") && recomputed.recompute)
        // Trainable: the adapter's elements × 16 bytes; frozen: every base weight in fp32.
        let trainable = model.trainableParameters.reduce(0) { $0 + $1.value.count }
        let all = model.namedParameters.reduce(0) { $0 + $1.parameter.value.count }
        #expect(bytes(small, "trainable parameters") == 16 * trainable && bytes(small, "frozen weights") == 4 * all)
        #expect(small.peakBytes == max(small.trainingBytes, small.loadingBytes))

        // bf16 storage halves the frozen weights it packs.
        try model.compressFrozenWeights(to: .bf16)
        let packed = MemoryEstimate.estimate(model: model, batch: 2, length: 16, recompute: false)
        #expect(bytes(packed, "frozen weights") < bytes(small, "frozen weights"))

        // The verdict.
        let roomy = AvailableMemory(memAvailable: large.peakBytes, cgroupLimit: nil)
        #expect(MemoryVerdict.judge(large, available: roomy, ignoreLimit: false) == .fits)
        #expect(MemoryVerdict.judge(large, available: AvailableMemory(memAvailable: nil, cgroupLimit: nil), ignoreLimit: false) == .fits)
        let tight = AvailableMemory(memAvailable: 1 << 40, cgroupLimit: large.peakBytes - 1)
        guard case .refuse(let why) = MemoryVerdict.judge(large, available: tight, ignoreLimit: false,
                                                          alternatives: [("--recompute", recomputed.peakBytes), ("--never", 1 << 50)]) else {
            Issue.record("an estimate above the limit must be refused")
            return
        }
        print("refusal: \(why)")
        #expect(why.contains(large.peakBytes.formatted()) && why.contains((large.peakBytes - 1).formatted()) && why.contains("cgroup memory.max"))
        #expect(why.contains("--ignore-memory-limit") && why.contains("--recompute (") && !why.contains("--never"))
        guard case .proceedWithWarning(let warning) = MemoryVerdict.judge(large, available: tight, ignoreLimit: true) else {
            Issue.record("--ignore-memory-limit must proceed")
            return
        }
        #expect(warning.hasPrefix("warning:") && warning.contains("--ignore-memory-limit"))

        // BERT: no recomputation, and the estimate says so.
        let bert = try ModelLoader.loadHuggingFace(directory: fixturesDirectory.appendingPathComponent("tiny-bert")).0
        let b = MemoryEstimate.estimate(model: bert, batch: 4, length: 16, recompute: true)
        #expect(!b.recomputeApplies && !b.recompute && b.peakBytes > 0)
    }

    /// Listing, sweeping and replacing, on a real trainer's checkpoints.
    @Test func checkpointFolderRules() throws {
        let out = Self.output()
        defer { try? FileManager.default.removeItem(at: out) }
        let session = try TrainingSession(model: try TrainerTests.tinyLlama(), configuration: TrainerTests.configuration(),
                                          train: TrainerTests.examples(8, seed: 2), valid: [], padId: 0, output: out, labels: nil,
                                          resume: nil, events: { _ in })
        _ = try session.trainer.trainStep()
        try session.checkpoint()
        let dir = Checkpoints.directory(out)
        let first = try #require(Checkpoints.list(out).last)
        #expect(first.lastPathComponent == "step-000001" && Checkpoints.isComplete(first))
        let before = try Data(contentsOf: first.appendingPathComponent("adapter_model.safetensors"))

        // The same step again (as after resuming an older checkpoint): replaced whole.
        for p in session.trainer.optimizer.parameters { p.value[0] += 1 }
        try session.checkpoint()
        let after = try Data(contentsOf: first.appendingPathComponent("adapter_model.safetensors"))
        #expect(Checkpoints.list(out) == [first] && after != before && Checkpoints.isComplete(first))
        #expect(try !FileManager.default.contentsOfDirectory(atPath: dir.path).contains { $0.hasPrefix(".") })

        // Incomplete or misnamed folders are never listed.
        let fm = FileManager.default
        let partial = dir.appendingPathComponent("step-000007")
        try fm.createDirectory(at: partial, withIntermediateDirectories: true)
        try fm.copyItem(at: first.appendingPathComponent("trainer_state.json"), to: partial.appendingPathComponent("trainer_state.json"))
        try fm.copyItem(at: first, to: dir.appendingPathComponent("step-x"))
        #expect(Checkpoints.list(out) == [first])

        // Leftovers are swept; a replaced checkpoint whose new one never arrived is put back.
        try fm.createDirectory(at: dir.appendingPathComponent(".tmp-step-000002-abc"), withIntermediateDirectories: true)
        try fm.createDirectory(at: dir.appendingPathComponent(".trash-step-000000-abc"), withIntermediateDirectories: true)
        try fm.copyItem(at: first, to: dir.appendingPathComponent(".trash-replaced-step-000005-abc"))
        try Data("x".utf8).write(to: out.appendingPathComponent(".adapter_model.safetensors.1234.tmp"))
        try fm.createDirectory(at: out.appendingPathComponent(".tmp-adapter-abc"), withIntermediateDirectories: true)
        let swept = Checkpoints.sweep(out)
        print("swept: \(swept)")
        #expect(swept.count == 5)
        #expect(Checkpoints.list(out).map(\.lastPathComponent) == ["step-000001", "step-000005"])
        #expect(try !fm.contentsOfDirectory(atPath: dir.path).contains { $0.hasPrefix(".") })
        #expect(try !fm.contentsOfDirectory(atPath: out.path).contains { $0.hasPrefix(".") })
    }

    @Test func settingsThatWouldTrapAreRefused() throws {
        var c = TrainerTests.configuration()
        c.warmup = 1e30
        #expect(throws: TrainingError.self) { try c.validate() }
        c = TrainerTests.configuration()
        c.steps = nil
        c.epochs = Int.max
        #expect(throws: TrainingError.self) {
            _ = try Trainer(model: try TrainerTests.tinyLlama(), configuration: c, examples: TrainerTests.examples(8, seed: 1), padId: 0)
        }
    }
}
