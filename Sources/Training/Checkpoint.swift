import Foundation
import Formats
import Kernels
import LoRA
import ModelCore

/// What identifies the base model a run started from, so a checkpoint is never resumed on
/// another one.
public struct BaseModelFingerprint: Sendable, Codable, Equatable {
    public var architecture: String
    public var parameters: Int
    public var configuration: String

    public init(_ model: any PretrainedModel) {
        architecture = model.architecture
        parameters = model.namedParameters.reduce(0) { $0 + $1.parameter.count }
        configuration = (try? model.configurationJSON()).map { String(decoding: $0, as: UTF8.self) } ?? ""
    }
}

/// `trainer_state.json` of a checkpoint.
public struct TrainerState: Sendable, Codable {
    public var step: Int
    public var batcher: Batcher.State
    /// Dropout generator states as decimal strings (JSON numbers lose bits above 2⁵³).
    public var dropout: [String]
    public var configuration: TrainingConfiguration
    public var baseModel: BaseModelFingerprint
    public var bestScore: Double?
    public var evaluationsWithoutImprovement: Int
    public var labels: [String]?
    /// The order checkpoints were written in across a run and its resumes (1, 2, …): `latest`
    /// is the highest, so resuming an older checkpoint never returns to the abandoned newer ones.
    /// Absent in checkpoints of earlier versions (ordered by step).
    public var sequence: Int?
}

/// Checkpoints under `<output>/checkpoints/step-NNNNNN/`: the adapter (PEFT files) or, for full
/// fine-tuning, every trained weight; the optimizer's moments; the trainer's state.
///
/// A checkpoint is whole or absent whenever the process dies (SIGKILL, power loss):
///
/// - its files are written into `checkpoints/.tmp-step-NNNNNN-<uuid>/` and fsynced, and that
///   folder is renamed to `step-NNNNNN` in one step, then the `checkpoints` folder is fsynced;
/// - a checkpoint of the same step that is already there is swapped with the new one atomically
///   (`renameat2(RENAME_EXCHANGE)`), so there is no moment with neither; where the file system
///   cannot swap, the old one is first renamed to `.trash-replaced-step-NNNNNN-…`, and `sweep`
///   puts it back if the process died before the new one was in place;
/// - old checkpoints are pruned by renaming them out of the `step-*` names (to `.trash-…`)
///   before deleting them, so a half-deleted checkpoint is never listed;
/// - `list` returns only checkpoints whose required files are all there;
/// - `sweep`, at the start of every run, removes `.tmp-*` and `.trash-*` leftovers.
public enum Checkpoints {
    public static func directory(_ output: URL) -> URL { output.appendingPathComponent("checkpoints") }

    /// The files a checkpoint must have: the trainer state, the optimizer state, and the
    /// weights (a PEFT adapter's two files, or `model.safetensors` for full fine-tuning).
    public static func isComplete(_ checkpoint: URL) -> Bool {
        func present(_ name: String) -> Bool {
            let path = checkpoint.appendingPathComponent(name).path
            guard let size = (try? FileManager.default.attributesOfItem(atPath: path))?[.size] as? NSNumber else { return false }
            return size.intValue > 0
        }
        return present("trainer_state.json") && present("optimizer.safetensors")
            && (present("model.safetensors") || (present("adapter_model.safetensors") && present("adapter_config.json")))
    }

    /// The step of a `step-NNNNNN` name.
    static func step(ofName name: String) -> Int? {
        guard name.hasPrefix("step-") else { return nil }
        let digits = name.dropFirst(5)
        guard !digits.isEmpty, digits.allSatisfy(\.isASCII), digits.allSatisfy(\.isNumber) else { return nil }
        return Int(digits)
    }

    /// Every complete checkpoint, oldest first: in the order they were written (`sequence`),
    /// then by step.
    public static func list(_ output: URL) -> [URL] {
        let dir = directory(output)
        let names = (try? FileManager.default.contentsOfDirectory(atPath: dir.path)) ?? []
        return names.compactMap { name in step(ofName: name).map { (step: $0, name: name) } }
            .map { (sequence: sequence(of: dir.appendingPathComponent($0.name)), step: $0.step, name: $0.name) }
            .sorted { ($0.sequence, $0.step, $0.name) < ($1.sequence, $1.step, $1.name) }
            .map { dir.appendingPathComponent($0.name) }
            .filter(isComplete)
    }

    /// The newest checkpoint written (what `--resume latest` continues), or nil.
    public static func latest(_ output: URL) -> URL? { list(output).last }

    /// A checkpoint's `sequence` (0 when absent or unreadable).
    static func sequence(of checkpoint: URL) -> Int {
        guard let data = try? Data(contentsOf: checkpoint.appendingPathComponent("trainer_state.json")),
              let object = try? JSONSerialization.jsonObject(with: data) as? [String: Any] else { return 0 }
        return object["sequence"] as? Int ?? 0
    }

    /// The sequence number for the next checkpoint of `output` (`list` is ordered by sequence,
    /// so its last has the highest).
    static func nextSequence(_ output: URL) -> Int {
        (latest(output).map(sequence(of:)) ?? 0) + 1
    }

    /// Removes what an interrupted write left behind: `checkpoints/.tmp-*` and `.trash-*`, and in
    /// `output` the adapter's `.tmp-*` folders and the writers' `.NAME.UUID.tmp` files. A
    /// checkpoint that was being replaced (`.trash-replaced-step-N-…`) is put back when its step
    /// has no complete checkpoint. Returns what it removed or restored, for the log.
    @discardableResult
    public static func sweep(_ output: URL) -> [String] {
        let fm = FileManager.default
        var done: [String] = []
        let dir = directory(output)
        for name in (try? fm.contentsOfDirectory(atPath: dir.path)) ?? [] {
            let url = dir.appendingPathComponent(name)
            if name.hasPrefix(".trash-replaced-") {
                // ".trash-replaced-step-NNNNNN-<uuid>": the old checkpoint of a replacement.
                let stepName = name.dropFirst(".trash-replaced-".count).split(separator: "-").prefix(2).joined(separator: "-")
                let final = dir.appendingPathComponent(stepName)
                if step(ofName: stepName) != nil, !isComplete(final), isComplete(url) {
                    try? fm.removeItem(at: final)
                    if (try? DurableFiles.rename(url, to: final)) != nil {
                        done.append("restored \(stepName) from \(name)")
                        continue
                    }
                }
            }
            if name.hasPrefix(".tmp-") || name.hasPrefix(".trash-") {
                try? fm.removeItem(at: url)
                done.append("removed \(url.path)")
            }
        }
        for name in (try? fm.contentsOfDirectory(atPath: output.path)) ?? [] where
            name.hasPrefix(".tmp-") || (name.hasPrefix(".") && name.hasSuffix(".tmp")) {
            let url = output.appendingPathComponent(name)
            try? fm.removeItem(at: url)
            done.append("removed \(url.path)")
        }
        if !done.isEmpty { try? DurableFiles.sync(dir) }
        return done
    }

    /// Writes the checkpoint of the trainer's current step, replacing one of the same step, and
    /// prunes all but the newest `keep`. `pause` runs between the files (a test hook that slows
    /// the write down so that a signal can land inside it).
    public static func save(_ trainer: Trainer, state: TrainerState, output: URL, keep: Int,
                            pause: (() -> Void)? = nil) throws -> URL {
        let fm = FileManager.default
        let dir = directory(output)
        let stepName = String(format: "step-%06d", trainer.step)
        let final = dir.appendingPathComponent(stepName)
        let temporary = dir.appendingPathComponent(".tmp-\(stepName)-\(UUID().uuidString)")
        /// Any failure names the checkpoint, the file and the reason; the temporary folder goes.
        func failed(_ error: any Error, file: String? = nil) -> TrainingError {
            let name = (file ?? DurableFiles.fileNamed(in: error)).map { URL(fileURLWithPath: $0).lastPathComponent }
            let previous = list(output).last.map { "; the previous checkpoint \($0.path) is intact" } ?? ""
            return .checkpoint(path: final.path, reason: "cannot write \(name ?? "the checkpoint"): \(DurableFiles.plainReason(error))\(previous)")
        }
        defer { if fm.fileExists(atPath: temporary.path) { try? fm.removeItem(at: temporary) } }
        do {
            try fm.createDirectory(at: temporary, withIntermediateDirectories: true)
        } catch {
            throw failed(error, file: temporary.path)
        }
        do {
            if trainer.configuration.full {
                try writeAllWeights(trainer.model, to: temporary.appendingPathComponent("model.safetensors"))
            } else {
                try trainer.model.savePEFTAdapter(named: "default", to: temporary)
            }
        } catch {
            throw failed(error)
        }
        pause?()
        var moments: [String: Tensor] = [:]
        for (i, m) in trainer.optimizer.moments.enumerated() {
            moments[String(format: "m.%05d", i)] = m.first
            moments[String(format: "v.%05d", i)] = m.second
        }
        do {
            try SafeTensorsWriter.write(moments, to: temporary.appendingPathComponent("optimizer.safetensors"),
                                        metadata: ["step": String(trainer.optimizer.step)])
        } catch {
            throw failed(error, file: "optimizer.safetensors")
        }
        pause?()
        let encoder = JSONEncoder()
        encoder.outputFormatting = [.prettyPrinted, .sortedKeys]
        do {
            try atomicWrite(try encoder.encode(state), to: temporary.appendingPathComponent("trainer_state.json"))
            try DurableFiles.syncContents(of: temporary)
        } catch {
            throw failed(error)
        }
        pause?()
        do {
            if fm.fileExists(atPath: final.path) {
                // Same step again (a resume from an older checkpoint): swap, then drop the old one.
                if try DurableFiles.exchange(temporary, final) {
                    try DurableFiles.sync(dir)
                } else {
                    let old = dir.appendingPathComponent(".trash-replaced-\(stepName)-\(UUID().uuidString)")
                    try DurableFiles.rename(final, to: old)
                    try DurableFiles.rename(temporary, to: final)
                    try DurableFiles.sync(dir)
                    try? fm.removeItem(at: old)
                }
            } else {
                try DurableFiles.rename(temporary, to: final)
                try DurableFiles.sync(dir)
            }
        } catch {
            throw failed(error)
        }
        prune(output, keep: keep)
        return final
    }

    /// Removes all but the newest `keep` checkpoints: each is renamed out of the `step-*` names
    /// first, so a half-deleted one is never listed.
    static func prune(_ output: URL, keep: Int) {
        let dir = directory(output)
        let old = list(output).dropLast(keep)
        guard !old.isEmpty else { return }
        var trash: [URL] = []
        for checkpoint in old {
            let target = dir.appendingPathComponent(".trash-\(checkpoint.lastPathComponent)-\(UUID().uuidString)")
            if (try? DurableFiles.rename(checkpoint, to: target)) != nil { trash.append(target) }
        }
        try? DurableFiles.sync(dir)
        for t in trash { try? FileManager.default.removeItem(at: t) }
    }

    /// Every weight of the model under its Hugging Face name (full fine-tuning's result).
    public static func writeAllWeights(_ model: any PretrainedModel, to url: URL) throws {
        var weights: [String: Tensor] = [:]
        for (name, p) in model.namedParameters { weights[name] = p.value }
        try SafeTensorsWriter.write(weights, to: url)
    }

    public static func readState(_ checkpoint: URL) throws -> TrainerState {
        let url = checkpoint.appendingPathComponent("trainer_state.json")
        do {
            return try JSONDecoder().decode(TrainerState.self, from: Data(contentsOf: url))
        } catch {
            throw TrainingError.checkpoint(path: checkpoint.path, reason: "cannot read trainer_state.json: \(error)")
        }
    }

    /// Puts a checkpoint's weights into a freshly loaded base model (adapter, or all weights).
    public static func loadWeights(_ checkpoint: URL, into model: any PretrainedModel, full: Bool) throws {
        if full {
            let weights = try SafeTensorsFile(url: checkpoint.appendingPathComponent("model.safetensors")).floatTensors()
            try model.loadWeights(weights)
            for (_, p) in model.namedParameters { p.setTrainable(true) }
        } else {
            try model.loadPEFTAdapter(from: checkpoint, named: "default")
        }
    }

    /// Restores the optimizer moments, the step, the data position and the dropout generators.
    public static func restore(_ trainer: Trainer, from checkpoint: URL, state: TrainerState) throws {
        let file = try SafeTensorsFile(url: checkpoint.appendingPathComponent("optimizer.safetensors"))
        var moments: [(first: Tensor, second: Tensor)] = []
        for i in 0..<trainer.optimizer.parameters.count {
            moments.append((try file.tensor(String(format: "m.%05d", i)), try file.tensor(String(format: "v.%05d", i))))
        }
        guard let optimizerStep = file.metadata["step"].flatMap(Int.init),
              trainer.optimizer.restore(step: optimizerStep, moments: moments) else {
            throw TrainingError.checkpoint(path: checkpoint.path, reason: "the optimizer state does not fit this model's trainable parameters")
        }
        try trainer.restore(step: state.step, batcher: state.batcher, dropout: state.dropout.compactMap(UInt64.init))
    }

    /// Why a checkpoint cannot continue this run, or nil when it can.
    public static func incompatibility(_ state: TrainerState, configuration: TrainingConfiguration, model: any PretrainedModel) -> String? {
        if state.baseModel != BaseModelFingerprint(model) {
            return "it was made from another base model (\(state.baseModel.architecture), \(state.baseModel.parameters) parameters)"
        }
        var a = state.configuration, b = configuration
        // How long to train and how often to report may change on resume; the rest may not.
        for c in [\TrainingConfiguration.steps, \.epochs] as [WritableKeyPath<TrainingConfiguration, Int?>] { a[keyPath: c] = nil; b[keyPath: c] = nil }
        a.evalEvery = nil; b.evalEvery = nil; a.saveEvery = nil; b.saveEvery = nil
        a.keepCheckpoints = 1; b.keepCheckpoints = 1; a.earlyStoppingPatience = nil; b.earlyStoppingPatience = nil
        guard a != b else { return nil }
        // Name only the settings that differ, as flags: "--rank: 8 in the checkpoint, 16 now".
        func fields(_ c: TrainingConfiguration) -> [String: String] {
            guard let data = try? JSONEncoder().encode(c),
                  let object = try? JSONSerialization.jsonObject(with: data) as? [String: Any] else { return [:] }
            return object.mapValues { value in
                if let list = value as? [String] { return list.joined(separator: ",") }
                if let s = value as? String { return s }
                return (try? JSONSerialization.data(withJSONObject: value, options: [.fragmentsAllowed]))
                    .map { String(decoding: $0, as: UTF8.self) } ?? "\(value)"
            }
        }
        let lhs = fields(a), rhs = fields(b)
        let differing = Set(lhs.keys).union(rhs.keys).sorted().filter { lhs[$0] != rhs[$0] }
        let said = differing.map { key in
            "--\(key.replacingOccurrences(of: "_", with: "-")): \(lhs[key] ?? "unset") in the checkpoint, \(rhs[key] ?? "unset") now"
        }
        return "its training settings differ (\(said.joined(separator: "; "))); resume with the checkpoint's settings, or start afresh with --overwrite"
    }
}
