import Foundation
import LoRA
import OrderedJSON

public enum LoRAConfigError: Error, Equatable, CustomStringConvertible {
    case invalid(file: String, key: String, reason: String)
    case unsupported(file: String, key: String, reason: String)

    public var description: String {
        switch self {
        case let .invalid(file, key, reason): "\(file): '\(key)' \(reason)"
        case let .unsupported(file, key, reason): "\(file): '\(key)' is not supported: \(reason)"
        }
    }
}

/// Which modules an adapter covers, as PEFT's `target_modules` says it.
public enum LoRATargets: Sendable, Equatable {
    /// Module names matched exactly or by suffix after a dot (`q_proj` ⊂ `model.layers.0.self_attn.q_proj`).
    case names([String])
    /// A regular expression that must match the whole module path.
    case regex(String)
    /// Every linear module except the output layer (and, for classification, the head).
    case allLinear
}

extension LoRATargets: CustomStringConvertible {
    /// As a user wrote it: `q_proj, v_proj`, `regex '.*q_proj'`, `all-linear`.
    public var description: String {
        switch self {
        case .names(let names): names.joined(separator: ", ")
        case .regex(let r): "regex '\(r)'"
        case .allLinear: "all-linear"
        }
    }
}

/// PEFT's `LoraConfig` as stored in `adapter_config.json`. Keys this class does not model are
/// kept (and written back) untouched; keys that would change the math and are not implemented
/// (`use_dora`, `lora_bias`, PiSSA/OLoRA/LoftQ init, …) are refused by name.
public struct LoRAConfig: Sendable {
    public var rank: Int
    public var alpha: Double
    public var dropout: Double
    public var targets: LoRATargets
    public var excludeModules: LoRATargets?
    public var layersToTransform: [Int]?
    public var layersPattern: [String]?
    public var useRSLoRA: Bool
    /// Per-module overrides, keys matched in file order as PEFT's `get_pattern_key`
    /// (`(.*\.)?(key)$` on the module path).
    public var rankPattern: [(key: String, value: Int)]
    public var alphaPattern: [(key: String, value: Double)]
    public var initialization: LoRAInitialization
    public var modulesToSave: [String]?
    public var taskType: String?
    public var baseModelNameOrPath: String?
    /// Every other key of the file, in file order, for a faithful round trip.
    public var otherKeys: [(key: String, value: JSON)]

    public init(rank: Int, alpha: Double, dropout: Double = 0, targets: LoRATargets, useRSLoRA: Bool = false,
                initialization: LoRAInitialization = .gaussian, modulesToSave: [String]? = nil, taskType: String? = nil) {
        self.rank = rank
        self.alpha = alpha
        self.dropout = dropout
        self.targets = targets
        self.useRSLoRA = useRSLoRA
        self.initialization = initialization
        self.modulesToSave = modulesToSave
        self.taskType = taskType
        rankPattern = []
        alphaPattern = []
        otherKeys = []
    }

    static let modelledKeys: Set<String> = [
        "r", "lora_alpha", "lora_dropout", "target_modules", "exclude_modules", "layers_to_transform", "layers_pattern",
        "use_rslora", "rank_pattern", "alpha_pattern", "init_lora_weights", "modules_to_save", "task_type",
        "base_model_name_or_path", "peft_type", "bias", "fan_in_fan_out", "use_dora", "lora_bias",
    ]

    /// Keys whose non-default values change what the adapter computes and are not implemented.
    static let refusedWhenSet: [(key: String, isDefault: @Sendable (JSON) -> Bool, why: String)] = [
        ("use_dora", { $0.isNull || $0.bool == false }, "DoRA (weight-decomposed LoRA) is not implemented"),
        ("lora_bias", { $0.isNull || $0.bool == false }, "LoRA bias terms are not implemented"),
        ("fan_in_fan_out", { $0.isNull || $0.bool == false }, "fan_in_fan_out (GPT-2 Conv1D layout) is not supported"),
        ("layer_replication", { $0.isNull }, "layer replication is not supported"),
        ("use_qalora", { $0.isNull || $0.bool == false }, "QA-LoRA is not supported"),
        ("target_parameters", { $0.isNull || $0.array?.isEmpty == true }, "parameter targeting is not supported"),
        ("trainable_token_indices", { $0.isNull }, "trainable tokens are not supported"),
        ("alora_invocation_tokens", { $0.isNull }, "activated LoRA is not supported"),
        ("megatron_config", { $0.isNull }, "Megatron layers are not supported"),
    ]

    /// Parses `adapter_config.json`; `file` names the source in errors.
    public init(json data: Data, file: String = "adapter_config.json") throws(LoRAConfigError) {
        let root: JSON
        do { root = try JSON.parse(data) } catch {
            throw .invalid(file: file, key: "(file)", reason: "is not valid JSON: \(error)")
        }
        guard let members = root.object else { throw .invalid(file: file, key: "(file)", reason: "must be a JSON object") }
        func value(_ key: String) -> JSON? { root[key].flatMap { $0.isNull ? nil : $0 } }

        let peftType = value("peft_type")?.string ?? "LORA"
        guard peftType == "LORA" else { throw .unsupported(file: file, key: "peft_type", reason: "'\(peftType)' (only LORA)") }
        for (key, isDefault, why) in Self.refusedWhenSet {
            if let v = root[key], !isDefault(v) { throw .unsupported(file: file, key: key, reason: why) }
        }
        if let bias = value("bias")?.string, bias != "none" {
            throw .unsupported(file: file, key: "bias", reason: "'\(bias)' (only \"none\")")
        }
        guard let r = value("r")?.int, r > 0, r <= LoRASettings.maximumRank else {
            throw .invalid(file: file, key: "r", reason: "must be an integer in 1...\(LoRASettings.maximumRank)")
        }
        rank = r
        // Finite in Float32 too: the layers scale by Float(alpha).
        guard let alpha = value("lora_alpha").map({ $0.number }) ?? Double(r), Float(alpha).isFinite else {
            throw .invalid(file: file, key: "lora_alpha", reason: "must be a finite number (within Float32's range)")
        }
        self.alpha = alpha
        dropout = value("lora_dropout")?.number ?? 0
        guard dropout >= 0 && dropout < 1 else { throw .invalid(file: file, key: "lora_dropout", reason: "must be in [0, 1)") }
        guard let targetValue = value("target_modules") else {
            throw .invalid(file: file, key: "target_modules", reason: "is missing")
        }
        targets = try Self.targets(targetValue, key: "target_modules", file: file)
        if let exclude = value("exclude_modules") { excludeModules = try Self.targets(exclude, key: "exclude_modules", file: file) }
        if let layers = value("layers_to_transform") {
            if let one = layers.int { layersToTransform = [one] } else if let list = layers.array?.compactMap(\.int), list.count == layers.array?.count {
                layersToTransform = list
            } else {
                throw .invalid(file: file, key: "layers_to_transform", reason: "must be an integer or a list of integers")
            }
        }
        if let pattern = value("layers_pattern") {
            if let one = pattern.string { layersPattern = [one] } else if let list = pattern.array?.compactMap(\.string), list.count == pattern.array?.count {
                layersPattern = list
            } else {
                throw .invalid(file: file, key: "layers_pattern", reason: "must be a string or a list of strings")
            }
        }
        useRSLoRA = value("use_rslora")?.bool ?? false
        rankPattern = []
        for member in value("rank_pattern")?.object ?? [] {
            guard let v = member.value.int, v > 0, v <= LoRASettings.maximumRank else {
                throw .invalid(file: file, key: "rank_pattern.\(member.key)", reason: "must be a positive integer")
            }
            rankPattern.append((member.key, v))
        }
        alphaPattern = []
        for member in value("alpha_pattern")?.object ?? [] {
            guard let v = member.value.number, Float(v).isFinite else {
                throw .invalid(file: file, key: "alpha_pattern.\(member.key)", reason: "must be a finite number (within Float32's range)")
            }
            alphaPattern.append((member.key, v))
        }
        switch value("init_lora_weights") {
        case nil, .bool(true)?: initialization = .kaimingUniform
        case .bool(false)?: initialization = .kaimingUniform   // only affects fresh adapters; loaded weights decide
        case .string("gaussian")?: initialization = .gaussian
        case .string(let other)?:
            throw .unsupported(file: file, key: "init_lora_weights", reason: "'\(other)' changes the base weights or the init (only true and \"gaussian\")")
        default: throw .invalid(file: file, key: "init_lora_weights", reason: "must be true, false or \"gaussian\"")
        }
        if let save = value("modules_to_save") {
            guard let list = save.array?.compactMap(\.string), list.count == save.array?.count else {
                throw .invalid(file: file, key: "modules_to_save", reason: "must be a list of module names")
            }
            var seen = Set<String>()
            modulesToSave = list.filter { seen.insert($0).inserted }
            for name in modulesToSave ?? [] where Self.moduleToSaveRegex(name) == nil {
                throw .invalid(file: file, key: "modules_to_save", reason: "'\(name)' is not a valid module name pattern")
            }
        }
        taskType = value("task_type")?.string
        baseModelNameOrPath = value("base_model_name_or_path")?.string
        otherKeys = members.filter { !Self.modelledKeys.contains($0.key) }
        for (key, _) in rankPattern + alphaPattern.map({ ($0.key, 0) }) {
            do { _ = try Self.patternKeyRegex(key) } catch {
                throw .invalid(file: file, key: "rank_pattern/alpha_pattern", reason: "key: \(error)")
            }
        }
    }

    static func targets(_ value: JSON, key: String, file: String) throws(LoRAConfigError) -> LoRATargets {
        if let s = value.string {
            if s.lowercased() == "all-linear" { return .allLinear }
            do { _ = try ModulePattern(s) } catch { throw .invalid(file: file, key: key, reason: "\(error)") }
            return .regex(s)
        }
        guard let list = value.array?.compactMap(\.string), list.count == value.array?.count, !list.isEmpty else {
            throw .invalid(file: file, key: key, reason: "must be a non-empty list of module names, a regex string or \"all-linear\"")
        }
        return .names(list)
    }

    // MARK: Module selection, as PEFT's check_target_module_exists

    /// Whether the adapter covers the module at `path`. `allLinear` lists the paths that
    /// `"all-linear"` stands for in this model (every linear module but the output layer and,
    /// for sequence classification, the head).
    public func covers(_ path: String, allLinear: Set<String>) -> Bool {
        if let exclude = excludeModules, Self.matches(exclude, path, allLinear: allLinear) { return false }
        if let save = modulesToSave, save.contains(where: { name in Self.moduleToSaveRegex(name)?.fullMatch(path) ?? false }) {
            return false
        }
        switch targets {
        case .regex(let pattern):
            return (try? ModulePattern(pattern))?.fullMatch(path) ?? false
        case .allLinear:
            return allLinear.contains(path)
        case .names(let names):
            if names.contains(path) { return true }
            guard names.contains(where: { path.hasSuffix("." + $0) }) else { return false }
            guard let layers = layersToTransform, !layers.isEmpty else { return true }
            guard let index = layerIndex(of: path) else { return false }
            return layers.contains(index)
        }
    }

    static func matches(_ targets: LoRATargets, _ path: String, allLinear: Set<String>) -> Bool {
        switch targets {
        case .regex(let pattern): (try? ModulePattern(pattern))?.fullMatch(path) ?? false
        case .allLinear: allLinear.contains(path)
        case .names(let names): names.contains(path) || names.contains { path.hasSuffix("." + $0) }
        }
    }

    /// PEFT's `re.match(rf"(^|.*\.){m}($|\..*)", key)`: the name is used as a pattern (names are
    /// checked to compile when the config is read).
    static func moduleToSaveRegex(_ name: String) -> ModulePattern? {
        try? ModulePattern("(^|.*\\.)\(name)($|\\..*)")
    }

    /// The first numbered path segment after a named one (`model.layers.3.…` → 3), or after one
    /// of `layersPattern`, as PEFT finds the layer index.
    func layerIndex(of path: String) -> Int? {
        let named = layersPattern ?? []
        let patterns = named.isEmpty ? ["[^.]*"] : named
        for p in patterns {
            let prefix = named.isEmpty ? ".*?\\." : "(?:^|.*?\\.)"
            // The shortest prefix "…<pattern>." followed by digits and a dot.
            guard let pattern = try? ModulePattern("\(prefix)\(p)\\.") else { continue }
            let scalars = Array(path.unicodeScalars)
            for end in pattern.prefixMatchEnds(path) {
                var k = end
                while k < scalars.count, ("0"..."9").contains(scalars[k]) { k += 1 }
                if k > end, k < scalars.count, scalars[k] == ".",
                   let i = Int(String(String.UnicodeScalarView(scalars[end..<k]))) { return i }
            }
        }
        return nil
    }

    /// Rank, alpha and scaling for one module, with `rank_pattern` / `alpha_pattern` applied.
    public func settings(for path: String) -> LoRASettings {
        let r = Self.patternValue(rankPattern, path) ?? rank
        let a = Self.patternValue(alphaPattern, path) ?? alpha
        return LoRASettings(rank: r, alpha: Float(a), dropout: Float(dropout), useRSLoRA: useRSLoRA, initialization: initialization)
    }

    /// PEFT's `re.fullmatch(rf"(.*\.)?({key})", path)` for `rank_pattern` / `alpha_pattern` keys.
    static func patternKeyRegex(_ key: String) throws(ModulePatternError) -> ModulePattern {
        try ModulePattern("(.*\\.)?(\(key))")
    }

    static func patternValue<V>(_ pattern: [(key: String, value: V)], _ path: String) -> V? {
        for (key, value) in pattern {
            if let regex = try? patternKeyRegex(key), regex.fullMatch(path) { return value }
        }
        return nil
    }

    // MARK: Writing

    /// `adapter_config.json` text: the modelled keys plus every kept key, sorted as PEFT writes them.
    public func jsonText() -> String {
        var members: [(key: String, value: JSON)] = otherKeys.filter { !["inference_mode", "peft_version"].contains($0.key) }
        func targetsJSON(_ t: LoRATargets) -> JSON {
            switch t {
            case .names(let names): .array(names.map(JSON.string))
            case .regex(let s): .string(s)
            case .allLinear: .string("all-linear")
            }
        }
        members += [
            ("peft_type", .string("LORA")), ("r", .number(Double(rank))), ("lora_alpha", .number(alpha)),
            ("lora_dropout", .number(dropout)), ("target_modules", targetsJSON(targets)),
            ("exclude_modules", excludeModules.map(targetsJSON) ?? .null),
            ("layers_to_transform", layersToTransform.map { .array($0.map { .number(Double($0)) }) } ?? .null),
            ("layers_pattern", layersPattern.map { .array($0.map(JSON.string)) } ?? .null),
            ("use_rslora", .bool(useRSLoRA)), ("bias", .string("none")), ("fan_in_fan_out", .bool(false)),
            ("use_dora", .bool(false)), ("lora_bias", .bool(false)),
            ("rank_pattern", .object(rankPattern.map { ($0.key, .number(Double($0.value))) })),
            ("alpha_pattern", .object(alphaPattern.map { ($0.key, .number($0.value)) })),
            ("init_lora_weights", initialization == .gaussian ? .string("gaussian") : .bool(true)),
            ("modules_to_save", modulesToSave.map { .array($0.map(JSON.string)) } ?? .null),
            ("task_type", taskType.map(JSON.string) ?? .null),
            ("base_model_name_or_path", baseModelNameOrPath.map(JSON.string) ?? .null),
            ("inference_mode", .bool(true)), ("peft_version", .string("0.21.2")),
        ]
        return JSON.object(members.sorted { $0.key < $1.key }).serialized() + "\n"
    }
}
