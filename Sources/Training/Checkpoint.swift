import Foundation
import Formats
import Kernels
import LoRA
import Models

/// What identifies the base model a run started from, so a checkpoint is never resumed on
/// another one.
public struct BaseModelFingerprint: Sendable, Codable, Equatable {
    public var architecture: String
    public var parameters: Int
    public var configuration: String

    public init(_ model: PretrainedModel) {
        architecture = model.architecture
        parameters = model.adaptable.namedParameters.reduce(0) { $0 + $1.parameter.count }
        let encoder = JSONEncoder()
        encoder.outputFormatting = .sortedKeys
        configuration = switch model {
        case .llama(let m): (try? encoder.encode(m.config)).map { String(decoding: $0, as: UTF8.self) } ?? ""
        case .bert(let m): (try? encoder.encode(m.config)).map { String(decoding: $0, as: UTF8.self) } ?? ""
        }
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
}

/// Checkpoints under `<output>/checkpoints/step-NNNNNN/`: the adapter (PEFT files) or, for full
/// fine-tuning, every trained weight; the optimizer's moments; the trainer's state. Each is
/// written into a temporary folder and renamed into place, so a checkpoint is whole or absent.
public enum Checkpoints {
    public static func directory(_ output: URL) -> URL { output.appendingPathComponent("checkpoints") }

    /// Every complete checkpoint, oldest first.
    public static func list(_ output: URL) -> [URL] {
        let dir = directory(output)
        let names = (try? FileManager.default.contentsOfDirectory(atPath: dir.path)) ?? []
        return names.filter { $0.hasPrefix("step-") }.sorted().map { dir.appendingPathComponent($0) }
            .filter { FileManager.default.fileExists(atPath: $0.appendingPathComponent("trainer_state.json").path) }
    }

    public static func save(_ trainer: Trainer, state: TrainerState, output: URL, keep: Int) throws -> URL {
        let fm = FileManager.default
        let dir = directory(output)
        try fm.createDirectory(at: dir, withIntermediateDirectories: true)
        let final = dir.appendingPathComponent(String(format: "step-%06d", trainer.step))
        let temporary = dir.appendingPathComponent(".tmp-\(UUID().uuidString)")
        defer { try? fm.removeItem(at: temporary) }
        try fm.createDirectory(at: temporary, withIntermediateDirectories: true)
        if trainer.configuration.full {
            try writeAllWeights(trainer.model, to: temporary.appendingPathComponent("model.safetensors"))
        } else {
            try trainer.model.adaptable.savePEFTAdapter(named: "default", to: temporary)
        }
        var moments: [String: Tensor] = [:]
        for (i, m) in trainer.optimizer.moments.enumerated() {
            moments[String(format: "m.%05d", i)] = m.first
            moments[String(format: "v.%05d", i)] = m.second
        }
        try SafeTensorsWriter.write(moments, to: temporary.appendingPathComponent("optimizer.safetensors"),
                                    metadata: ["step": String(trainer.optimizer.step)])
        let encoder = JSONEncoder()
        encoder.outputFormatting = [.prettyPrinted, .sortedKeys]
        try encoder.encode(state).write(to: temporary.appendingPathComponent("trainer_state.json"))
        if fm.fileExists(atPath: final.path) { try fm.removeItem(at: final) }
        try fm.moveItem(at: temporary, to: final)
        for old in list(output).dropLast(keep) { try? fm.removeItem(at: old) }
        return final
    }

    /// Every weight of the model under its Hugging Face name (full fine-tuning's result).
    public static func writeAllWeights(_ model: PretrainedModel, to url: URL) throws {
        var weights: [String: Tensor] = [:]
        for (name, p) in model.adaptable.namedParameters { weights[name] = p.value }
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
    public static func loadWeights(_ checkpoint: URL, into model: PretrainedModel, full: Bool) throws {
        if full {
            let weights = try SafeTensorsFile(url: checkpoint.appendingPathComponent("model.safetensors")).floatTensors()
            try model.adaptable.loadWeights(weights)
            for (_, p) in model.adaptable.namedParameters { p.setTrainable(true) }
        } else {
            try model.adaptable.loadPEFTAdapter(from: checkpoint, named: "default")
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
    public static func incompatibility(_ state: TrainerState, configuration: TrainingConfiguration, model: PretrainedModel) -> String? {
        if state.baseModel != BaseModelFingerprint(model) {
            return "it was made from another base model (\(state.baseModel.architecture), \(state.baseModel.parameters) parameters)"
        }
        var a = state.configuration, b = configuration
        // How long to train and how often to report may change on resume; the rest may not.
        for c in [\TrainingConfiguration.steps, \.epochs] as [WritableKeyPath<TrainingConfiguration, Int?>] { a[keyPath: c] = nil; b[keyPath: c] = nil }
        a.evalEvery = nil; b.evalEvery = nil; a.saveEvery = nil; b.saveEvery = nil
        a.keepCheckpoints = 1; b.keepCheckpoints = 1; a.earlyStoppingPatience = nil; b.earlyStoppingPatience = nil
        if a != b {
            let encoder = JSONEncoder()
            encoder.outputFormatting = .sortedKeys
            let lhs = (try? encoder.encode(a)).map { String(decoding: $0, as: UTF8.self) } ?? ""
            let rhs = (try? encoder.encode(b)).map { String(decoding: $0, as: UTF8.self) } ?? ""
            return "its training settings differ: checkpoint \(lhs), now \(rhs)"
        }
        return nil
    }
}
