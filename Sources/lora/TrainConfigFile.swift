import Foundation
import Formats
import Training
import Yams

/// A `lora train --config FILE`: YAML or JSON (YAML is read for every extension, JSON being a
/// subset of it). Keys are the flags in snake_case; the spellings PEFT, transformers and mlx-lm
/// users write (`learning_rate`, `lora_alpha`, `r`, `num_train_epochs`, …) are accepted as
/// aliases; `model`, `data`, `valid`, `test` and `output` may be given here as in mlx-lm's
/// config. An unknown key is an error naming it and the closest known key — never ignored.
struct TrainConfigFile {
    var configuration = TrainingConfiguration()
    var model: String?
    var data: String?
    var valid: String?
    var test: [String] = []
    var output: String?
    /// Whether the file names the task (else it follows the model).
    var taskGiven = false

    enum Kind {
        case int, double, bool, string, strings
        var expected: String {
            switch self {
            case .int: "a whole number"
            case .double: "a number"
            case .bool: "true or false"
            case .string: "a string"
            case .strings: "a list of names or a comma-separated string"
            }
        }
    }

    /// Every key of `TrainingConfiguration` (its JSON names) with its kind.
    static let settingKeys: [String: Kind] = [
        "task": .string, "rank": .int, "alpha": .double, "dropout": .double, "targets": .strings, "init": .string,
        "rslora": .bool, "lr": .double, "epochs": .int, "steps": .int, "batch_size": .int, "grad_accum": .int,
        "max_seq_len": .int, "warmup": .double, "schedule": .string, "weight_decay": .double, "max_grad_norm": .double,
        "eval_every": .int, "save_every": .int, "keep_checkpoints": .int, "seed": .int, "full": .bool,
        "early_stopping_patience": .int, "max_non_finite_steps": .int,
    ]
    /// Paths, as in mlx-lm's config files.
    static let pathKeys: [String: Kind] = ["model": .string, "data": .string, "valid": .string, "test": .strings, "output": .string]

    /// Other spellings → the key they mean.
    static let aliases: [String: String] = [
        "learning_rate": "lr", "lora_alpha": "alpha", "r": "rank", "lora_rank": "rank", "lora_r": "rank",
        "lora_dropout": "dropout", "target_modules": "targets", "num_train_epochs": "epochs", "max_steps": "steps",
        "iters": "steps", "per_device_train_batch_size": "batch_size", "gradient_accumulation_steps": "grad_accum",
        "max_seq_length": "max_seq_len", "max_length": "max_seq_len", "warmup_steps": "warmup", "warmup_ratio": "warmup",
        "lr_scheduler_type": "schedule", "early_stopping": "early_stopping_patience", "eval_steps": "eval_every", "steps_per_eval": "eval_every",
        "save_steps": "save_every", "save_total_limit": "keep_checkpoints", "use_rslora": "rslora",
        "init_lora_weights": "init", "train": "data", "train_file": "data", "validation_file": "valid", "model_name_or_path": "model",
        "output_dir": "output", "adapter_path": "output", "batch": "batch_size",
    ]

    static func load(_ path: String) throws -> TrainConfigFile {
        let text: String
        do {
            text = try String(contentsOfFile: path, encoding: .utf8)
        } catch {
            throw CommandError("cannot read the config file \(path): \(plainFileReason(error))")
        }
        let root: Any?
        do {
            root = try Yams.load(yaml: text)
        } catch {
            throw CommandError("\(path) is neither YAML nor JSON: \(yamlReason(error))")
        }
        guard let root else { return TrainConfigFile() }
        guard let mapping = root as? [String: Any] else {
            throw CommandError("\(path) must hold a mapping of settings (key: value), not \(describe(root))")
        }
        var file = TrainConfigFile()
        var normalised: [String: Any] = [:]
        var seen: [String: String] = [:]
        for key in mapping.keys.sorted() {
            let value = mapping[key]!
            let canonical = settingKeys[key] != nil || pathKeys[key] != nil ? key : aliases[key]
            guard let canonical else {
                let known = Array(settingKeys.keys) + Array(pathKeys.keys) + Array(aliases.keys)
                let hint = closest(key, in: known).map { "; did you mean '\($0)'?" } ?? ""
                throw CommandError("\(path): unknown setting '\(key)'\(hint) (settings are the flags of lora train in snake_case, e.g. lr, rank, alpha, batch_size)")
            }
            if let other = seen[canonical] {
                throw CommandError("\(path): '\(other)' and '\(key)' both set \(canonical); keep one")
            }
            seen[canonical] = key
            let kind = settingKeys[canonical] ?? pathKeys[canonical]!
            let converted = try convert(value, kind: kind, key: key, path: path)
            switch canonical {
            case "model": file.model = converted as? String
            case "data": file.data = converted as? String
            case "valid": file.valid = converted as? String
            case "output": file.output = converted as? String
            case "test": file.test = converted as? [String] ?? []
            case "init":
                // The flag's spellings and PEFT's `init_lora_weights` values.
                let spelled = converted as? String ?? ""
                switch spelled.lowercased() {
                case "gaussian": normalised["init"] = "gaussian"
                case "kaiming", "kaiming_uniform", "kaiminguniform", "true": normalised["init"] = "kaimingUniform"
                default: throw CommandError("\(path): '\(key)' must be gaussian or kaiming, got '\(spelled)'")
                }
            case "schedule":
                let spelled = (converted as? String ?? "").lowercased()
                guard LearningRateSchedule(rawValue: spelled) != nil else {
                    throw CommandError("\(path): '\(key)' must be one of \(LearningRateSchedule.allCases.map(\.rawValue).joined(separator: ", ")), got '\(spelled)'")
                }
                normalised["schedule"] = spelled
            case "task":
                let spelled = converted as? String ?? ""
                guard TrainingTask(rawValue: spelled) != nil else {
                    throw CommandError("\(path): '\(key)' must be one of \(TrainingTask.allCases.map(\.rawValue).joined(separator: ", ")), got '\(spelled)'")
                }
                normalised["task"] = spelled
                file.taskGiven = true
            default: normalised[canonical] = converted
            }
        }
        if normalised["epochs"] != nil && normalised["steps"] != nil {
            throw CommandError("\(path): give epochs or steps, not both")
        }
        do {
            let json = try JSONSerialization.data(withJSONObject: normalised)
            file.configuration = try JSONDecoder().decode(TrainingConfiguration.self, from: json)
        } catch {
            // Every value was converted to its kind above; what remains is a range (a negative
            // seed, say).
            throw CommandError("\(path): a value is out of range (\(decodingReason(error)))")
        }
        return file
    }

    /// `value` as `kind`, accepting what YAML users write: numbers as strings ("5e-4", which
    /// YAML 1.1 reads as a string), comma-separated lists.
    static func convert(_ value: Any, kind: Kind, key: String, path: String) throws -> Any {
        func bad() -> CommandError { CommandError("\(path): '\(key)' must be \(kind.expected), got \(describe(value))") }
        switch kind {
        case .int:
            if let i = value as? Int { return i }
            if let d = value as? Double, d == d.rounded(), abs(d) < 1e15 { return Int(d) }
            if let s = value as? String, let i = Int(s.trimmingCharacters(in: .whitespaces)) { return i }
            throw bad()
        case .double:
            if value is Bool { throw bad() }
            if let i = value as? Int { return Double(i) }
            if let d = value as? Double { return d }
            if let s = value as? String, let d = Double(s.trimmingCharacters(in: .whitespaces)) { return d }
            throw bad()
        case .bool:
            if let b = value as? Bool { return b }
            throw bad()
        case .string:
            if let s = value as? String { return s }
            if let b = value as? Bool, key == "init_lora_weights" { return b ? "true" : "false" }
            throw bad()
        case .strings:
            if let s = value as? String {
                return s.split(separator: ",").map { $0.trimmingCharacters(in: .whitespaces) }.filter { !$0.isEmpty }
            }
            if let list = value as? [Any] {
                return try list.map { item -> String in
                    guard let s = item as? String else { throw bad() }
                    return s
                }
            }
            throw bad()
        }
    }

    static func describe(_ value: Any) -> String {
        switch value {
        case let s as String: "'\(s)'"
        case is [Any]: "a list"
        case is [String: Any]: "a mapping"
        default: "\(value)"
        }
    }

    /// The known key nearest to `key` by edit distance, when it is near enough to be a typo.
    static func closest(_ key: String, in known: [String]) -> String? {
        let scored = known.map { ($0, editDistance(key, $0)) }.min { ($0.1, $0.0) < ($1.1, $1.0) }
        guard let (name, distance) = scored, distance <= max(2, key.count / 3) else { return nil }
        return name
    }

    static func editDistance(_ a: String, _ b: String) -> Int {
        let a = Array(a), b = Array(b)
        var previous = Array(0...b.count)
        for i in 1...max(a.count, 1) where !a.isEmpty {
            var current = [i] + [Int](repeating: 0, count: b.count)
            for j in 1...max(b.count, 1) where !b.isEmpty {
                current[j] = min(previous[j] + 1, current[j - 1] + 1, previous[j - 1] + (a[i - 1] == b[j - 1] ? 0 : 1))
            }
            previous = current
        }
        return a.isEmpty ? b.count : previous[b.count]
    }

    static func yamlReason(_ error: any Error) -> String {
        if let e = error as? YamlError {
            let text = "\(e)"
            // Yams' description holds the position and the problem on its first line.
            return text.split(separator: "\n").first.map(String.init) ?? text
        }
        return "\(error)"
    }
}
