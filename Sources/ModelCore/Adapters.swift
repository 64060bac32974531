import Foundation
import Formats
import Kernels
import Layers
import LoRA
import OrderedJSON
@_exported import AdapterFormats

/// The named adapters of a model's weights, shared by every instance that shares those weights
/// (`replica()`): their configs, the trained copies of `modules_to_save` modules (a
/// classification head, say), and which adapters' copies the shared parameters hold.
final class AdapterPool {
    var configs: [(name: String, config: LoRAConfig)] = []
    /// Per adapter: parameter name → its trained copy (PEFT's `modules_to_save`).
    var savedModules: [String: [String: Tensor]] = [:]
    /// The base values of parameters that a saved module currently replaces.
    var originals: [String: Tensor] = [:]
    /// Which adapter's saved modules the parameters hold now.
    var installed: [String] = []
}

/// One model instance's view of the adapters: the shared pool, and which adapters are active in
/// this instance's runs.
public final class AdapterRegistry {
    var pool = AdapterPool()
    public internal(set) var active: [String] = []
    /// Set on a replica's registry: it shares another instance's weights and adapter pool, so
    /// it may not change what the shared parameters hold (`modules_to_save` copies).
    public internal(set) var isReplica = false

    public init() {}

    public internal(set) var configs: [(name: String, config: LoRAConfig)] {
        get { pool.configs }
        set { pool.configs = newValue }
    }
    var savedModules: [String: [String: Tensor]] {
        get { pool.savedModules }
        set { pool.savedModules = newValue }
    }
    var originals: [String: Tensor] {
        get { pool.originals }
        set { pool.originals = newValue }
    }
    var installed: [String] {
        get { pool.installed }
        set { pool.installed = newValue }
    }

    public func config(named name: String) -> LoRAConfig? { configs.first { $0.name == name }?.config }
    public var names: [String] { configs.map(\.name) }
}

extension AdaptableModel {
    // MARK: Adding adapters

    /// Adds a fresh adapter as PEFT's `get_peft_model` / `add_adapter` would for `config`:
    /// LoRA on every module the config covers (with `rank_pattern` / `alpha_pattern`), a
    /// trainable copy of each `modules_to_save` module, every other base weight frozen. The
    /// new adapter becomes the only active one. Returns the adapted module paths.
    @discardableResult
    public func addAdapter(named name: String, config: LoRAConfig, seed: UInt64) throws(ModelError) -> [String] {
        try requireUnmerged("adding an adapter")
        guard adapterRegistry.config(named: name) == nil else { throw .invalidInput("an adapter named '\(name)' already exists") }
        let allLinear = allLinearModulePaths(taskType: config.taskType)
        let covered = linearModules.filter { config.covers($0.name, allLinear: allLinear) }
        guard !covered.isEmpty else {
            throw .invalidInput("target_modules '\(config.targets)' match no module of this model (adaptable modules: \(adaptableModuleForms.joined(separator: ", "))); an adapter made for another architecture?")
        }
        let saved = try savedModuleParameters(config.modulesToSave ?? [])
        var generator = SplitMix64(seed: seed)
        var adapters: [(LoRALinear, LoRAWeights)] = []
        do {
            for m in covered {
                let adapter = try LoRAWeights(inFeatures: m.inFeatures, outFeatures: m.outFeatures,
                                              settings: config.settings(for: m.name), generator: &generator)
                adapters.append((m, adapter))
            }
            for (m, adapter) in adapters { try m.attach(adapter, named: name, activate: false) }
        } catch {
            for (m, _) in adapters { _ = try? m.detach(named: name) }
            throw .invalidInput("\(error)")
        }
        adapterRegistry.configs.append((name, config))
        adapterRegistry.savedModules[name] = Dictionary(uniqueKeysWithValues: saved.map { ($0.name, $0.parameter.value.clone()) })
        try setActiveAdapters([name])
        freezeBase()
        for (_, p) in saved { p.setTrainable(true) }
        return covered.map(\.name)
    }

    /// The adaptable modules' paths with the layer index and what precedes it removed, each once,
    /// in model order (`self_attn.q_proj`, `mlp.down_proj`; `attention.self.query`, `classifier`):
    /// the names `--targets` takes, listed for the user.
    public var adaptableModuleForms: [String] {
        var seen = Set<String>(), forms: [String] = []
        for m in linearModules {
            let parts = m.name.split(separator: ".")
            let layer = parts.lastIndex { $0.allSatisfy(\.isNumber) }
            let form = (layer.map { parts[($0 + 1)...] } ?? parts[...]).joined(separator: ".")
            if seen.insert(form).inserted { forms.append(form) }
        }
        return forms
    }

    /// Checks the LoRA settings a training run asks for against this model, before anything is
    /// built: every name in `targets` must match a module (by PEFT's rule: the path, or its
    /// suffix after a dot), and each adapted module's rank must not exceed the smaller of its
    /// dimensions (ΔW = B·A cannot have a higher rank; the extra parameters learn nothing).
    public func checkTrainingTargets(_ config: LoRAConfig) throws(ModelError) {
        let paths = linearModules.map(\.name)
        let forms = adaptableModuleForms.joined(separator: ", ")
        if case .names(let names) = config.targets {
            let unmatched = names.filter { name in !paths.contains { $0 == name || $0.hasSuffix("." + name) } }
            if !unmatched.isEmpty {
                let quoted = unmatched.map { "'\($0)'" }.joined(separator: ", ")
                throw .invalidInput("--targets \(quoted) \(unmatched.count == 1 ? "matches" : "match") no module of this model. "
                    + "Adaptable modules: \(forms) (a name matches a module path or its end after a dot, e.g. q_proj), or all-linear. "
                    + "Embeddings and the LM head are not adaptable.")
            }
        }
        let allLinear = allLinearModulePaths(taskType: config.taskType)
        let covered = linearModules.filter { config.covers($0.name, allLinear: allLinear) }
        let limit = covered.map { min($0.inFeatures, $0.outFeatures) }.min() ?? .max
        if let m = covered.first(where: { config.settings(for: $0.name).rank > min($0.inFeatures, $0.outFeatures) }) {
            let rank = config.settings(for: m.name).rank
            throw .invalidInput("--rank \(rank) exceeds \(m.name)'s smaller dimension (\(m.inFeatures) in, \(m.outFeatures) out): "
                + "B·A cannot have a rank above \(min(m.inFeatures, m.outFeatures)), so the extra parameters would learn nothing; "
                + "use --rank \(limit) or less for these targets")
        }
    }

    /// How many values the LoRA matrices of `config` would hold in this model — Σ rank·(in + out)
    /// over the modules it covers — from the shapes alone (Int.max when that overflows).
    func plannedLoRAWeights(_ config: LoRAConfig) -> Int {
        let allLinear = allLinearModulePaths(taskType: config.taskType)
        var total = 0
        for m in linearModules where config.covers(m.name, allLinear: allLinear) {
            let (sides, o1) = m.inFeatures.addingReportingOverflow(m.outFeatures)
            let (count, o2) = config.settings(for: m.name).rank.multipliedReportingOverflow(by: sides)
            let (sum, o3) = total.addingReportingOverflow(count)
            guard !o1, !o2, !o3 else { return .max }
            total = sum
        }
        return total
    }

    /// The parameters of the modules named in `modules_to_save` (matched as PEFT does:
    /// the module path equals the name or ends with ".name").
    func savedModuleParameters(_ modules: [String]) throws(ModelError) -> [(name: String, parameter: Parameter)] {
        guard !modules.isEmpty else { return [] }
        let parameters = namedParameters.filter { p in
            modules.contains { m in
                let module = p.name.split(separator: ".").dropLast().joined(separator: ".")
                return module == m || module.hasSuffix("." + m)
            }
        }
        // PEFT adds both "classifier" and "score" for SEQ_CLS; it is enough that one exists.
        if parameters.isEmpty && !Set(modules).isSubset(of: ["classifier", "score"]) {
            throw .invalidInput("modules_to_save \(modules) match no module of this model")
        }
        return parameters
    }

    // MARK: Switching

    /// Makes exactly these adapters active (none = the base model). Their `modules_to_save`
    /// copies are installed; the base values come back when no active adapter replaces them.
    public func setActiveAdapters(_ names: [String]) throws(ModelError) {
        try requireUnmerged("switching adapters")
        for name in names where adapterRegistry.config(named: name) == nil {
            throw .invalidInput("no adapter named '\(name)' (loaded: \(adapterRegistry.names.joined(separator: ", ")))")
        }
        if adapterRegistry.isReplica {
            // The saved modules live in the shared parameters: a replica uses what is installed.
            let saving = names.filter { !(adapterRegistry.savedModules[$0] ?? [:]).isEmpty }
            guard saving.allSatisfy(adapterRegistry.installed.contains) else {
                throw .invalidInput("adapter '\(saving.first ?? "")' replaces whole modules (modules_to_save) of the shared weights: activate it on the model, not on a replica")
            }
            for m in linearModules {
                do { try m.setActiveAdapters(names) } catch { throw .invalidInput("\(error)") }
            }
            adapterRegistry.active = names
            return
        }
        syncSavedModules()
        let byName = Dictionary(namedParameters.map { ($0.name, $0.parameter) }, uniquingKeysWith: { a, _ in a })
        for (name, original) in adapterRegistry.originals { byName[name]?.value.copy(from: original) }
        adapterRegistry.originals = [:]
        for adapter in names {
            for (name, tensor) in adapterRegistry.savedModules[adapter] ?? [:] {
                guard let p = byName[name] else { continue }
                if adapterRegistry.originals[name] == nil { adapterRegistry.originals[name] = p.value.clone() }
                p.value.copy(from: tensor)
            }
        }
        adapterRegistry.installed = names
        for m in linearModules {
            do { try m.setActiveAdapters(names) } catch { throw .invalidInput("\(error)") }
        }
        adapterRegistry.active = names
    }

    /// Copies the installed saved modules' current values (they may have been trained) back
    /// into their adapters' copies.
    func syncSavedModules() {
        let byName = Dictionary(namedParameters.map { ($0.name, $0.parameter) }, uniquingKeysWith: { a, _ in a })
        for adapter in adapterRegistry.installed {
            for (name, tensor) in adapterRegistry.savedModules[adapter] ?? [:] {
                if let p = byName[name] { tensor.copy(from: p.value) }
            }
        }
    }

    /// The LoRA matrices of one adapter, named as PEFT files name them minus `base_model.model.`.
    public func adapterParameters(named adapter: String) -> [(name: String, parameter: Parameter)] {
        linearModules.flatMap { m -> [(name: String, parameter: Parameter)] in
            guard let a = m.adapter(named: adapter) else { return [] }
            return [("\(m.name).lora_A.weight", a.a), ("\(m.name).lora_B.weight", a.b)]
        }
    }

    // MARK: Adapter files

    /// Loads an adapter folder of any supported format (`AdapterFormats`: PEFT, mlx-lm) as
    /// `name` and makes it the active adapter (see `loadAdapter(_:named:)`).
    @discardableResult
    public func loadAdapter(from folder: URL, named name: String = "default") throws(ModelError) -> AdapterFile {
        let file: AdapterFile
        do { file = try AdapterFormats.read(folder) } catch { throw .adapterFile(error) }
        try loadAdapter(file, named: name)
        return file
    }

    /// Loads a PEFT adapter directory (`adapter_config.json` + `adapter_model.safetensors`) as
    /// `name` and makes it the active adapter. A missing config is an error — an adapter is
    /// never silently created fresh.
    @discardableResult
    public func loadPEFTAdapter(from directory: URL, named name: String = "default") throws(ModelError) -> LoRAConfig {
        let file: AdapterFile
        do { file = try PEFTCodec.read(directory) } catch { throw .adapterFile(error) }
        try loadAdapter(file, named: name)
        return file.config
    }

    /// Attaches an adapter read from a file as `name` and makes it the active adapter. Every
    /// tensor must be used and every adapted module covered, with the right shapes; on any error
    /// the model is left as it was. Errors name tensors as the file does.
    public func loadAdapter(_ file: AdapterFile, named name: String) throws(ModelError) {
        let config = file.config
        // A config whose ranks ask for more LoRA weights than the file holds (r = 65536 in a
        // few bytes of JSON) is refused before the adapter is allocated and initialised.
        let planned = plannedLoRAWeights(config)
        let held = file.heldValues
        guard planned <= held else {
            throw .invalidFile(path: file.folder.path, reason: "\(file.format == "peft" ? "adapter_config.json" : "the adapter's configuration") asks for \(planned == .max ? "more than Int.max" : String(planned)) LoRA weights but \(file.weightsFile.lastPathComponent) holds \(held) values (nothing was loaded)")
        }
        try addAdapter(named: name, config: config, seed: 0)
        do {
            try fillAdapter(named: name, from: file)
        } catch {
            try? removeAdapter(named: name)
            // Shapes that do not fit mean another base model: say which one the adapter names.
            if case let .invalidFile(path, reason) = error, reason.contains("shape mismatch") {
                let base = config.baseModelNameOrPath.map { " (its adapter_config.json names \($0))" } ?? ""
                throw .invalidFile(path: path, reason: "this adapter was made for another base model\(base); nothing was loaded\n" + reason)
            }
            throw error
        }
    }

    /// Copies a file's tensors into adapter `name` (LoRA matrices and saved modules), strictly.
    func fillAdapter(named name: String, from file: AdapterFile) throws(ModelError) {
        let saved = adapterRegistry.savedModules[name] ?? [:]
        var missing: [String] = [], mismatched: [String] = []
        var assignments: [(Tensor, Tensor)] = []
        var usedA = Set<String>(), usedB = Set<String>(), usedSaved = Set<String>()
        func take(_ source: Tensor?, into destination: Tensor, key: String) {
            guard let source else { missing.append(key); return }
            if source.shape == destination.shape { assignments.append((destination, source)) } else {
                mismatched.append("\(key): file \(source.shape), model \(destination.shape)")
            }
        }
        for m in linearModules {
            guard let a = m.adapter(named: name) else { continue }
            usedA.insert(m.name)
            usedB.insert(m.name)
            take(file.loraA[m.name], into: a.a.value, key: file.fileKey(m.name + ".lora_A"))
            take(file.loraB[m.name], into: a.b.value, key: file.fileKey(m.name + ".lora_B"))
        }
        for (param, copy) in saved {
            usedSaved.insert(param)
            take(file.savedModules[param], into: copy, key: file.fileKey(param))
        }
        let unexpected = (file.loraA.keys.filter { !usedA.contains($0) }.map { file.fileKey($0 + ".lora_A") }
            + file.loraB.keys.filter { !usedB.contains($0) }.map { file.fileKey($0 + ".lora_B") }
            + file.savedModules.keys.filter { !usedSaved.contains($0) }.map(file.fileKey) + file.unrecognised).sorted()
        guard missing.isEmpty, unexpected.isEmpty, mismatched.isEmpty else {
            throw .invalidFile(path: file.weightsFile.path, reason: ModelError.weights(missing: missing.sorted(), unexpected: unexpected,
                                                                                    mismatched: mismatched.sorted()).description)
        }
        for (destination, source) in assignments { destination.copy(from: source) }
        // If this adapter's saved modules are installed, the parameters must show the new values
        // (a sync would copy the old ones back over them).
        if adapterRegistry.installed.contains(name) {
            let byName = Dictionary(namedParameters.map { ($0.name, $0.parameter) }, uniquingKeysWith: { a, _ in a })
            for (param, copy) in saved { byName[param]?.value.copy(from: copy) }
        }
    }

    /// Detaches adapter `name` everywhere and forgets it.
    public func removeAdapter(named name: String) throws(ModelError) {
        try requireUnmerged("removing an adapter")
        let remaining = adapterRegistry.active.filter { $0 != name }
        for m in linearModules { _ = try? m.detach(named: name) }
        adapterRegistry.configs.removeAll { $0.name == name }
        adapterRegistry.savedModules[name] = nil
        adapterRegistry.installed.removeAll { $0 == name }
        try setActiveAdapters(remaining)
    }

    /// Adapter `name` as a file would hold it (its config, LoRA matrices by module path, the
    /// current values of its saved modules), for a codec to write.
    public func adapterFile(named name: String, folder: URL) throws(ModelError) -> AdapterFile {
        guard let config = adapterRegistry.config(named: name) else { throw .invalidInput("no adapter named '\(name)'") }
        syncSavedModules()
        var a: [String: Tensor] = [:], b: [String: Tensor] = [:]
        for m in linearModules {
            guard let weights = m.adapter(named: name) else { continue }
            a[m.name] = weights.a.value
            b[m.name] = weights.b.value
        }
        return AdapterFile(format: PEFTCodec.name, config: config, loraA: a, loraB: b, savedModules: adapterRegistry.savedModules[name] ?? [:],
                           folder: folder, weightsFile: folder, fileKey: { $0 })
    }

    /// Writes adapter `name` as PEFT does: `adapter_config.json` and `adapter_model.safetensors`
    /// (keys `base_model.model.<module>.lora_A.weight`, full `modules_to_save` tensors), each
    /// written atomically, into `directory` (created if needed).
    public func savePEFTAdapter(named name: String = "default", to directory: URL) throws(ModelError) {
        try saveAdapter(named: name, to: directory, as: PEFTCodec.self, base: AdapterBase())
    }

    /// Writes adapter `name` in a codec's format.
    public func saveAdapter(named name: String, to directory: URL, as codec: any AdapterCodec.Type, base: AdapterBase) throws(ModelError) {
        let file = try adapterFile(named: name, folder: directory)
        do { try codec.write(file, to: directory, base: base) } catch { throw .adapterFile(error) }
    }

    // MARK: Reports

    /// Trainable parameters, and all parameters counted as PEFT counts them: the base weights,
    /// every adapter's matrices and the saved module copies.
    public var parameterCounts: (trainable: Int, all: Int) {
        let base = namedParameters.reduce(0) { $0 + $1.parameter.count }
        let lora = linearModules.reduce(0) { total, m in total + m.adapters.reduce(0) { $0 + $1.adapter.a.value.count + $1.adapter.b.value.count } }
        let copies = adapterRegistry.savedModules.values.reduce(0) { total, modules in total + modules.values.reduce(0) { $0 + $1.count } }
        return (trainableParameters.reduce(0) { $0 + $1.value.count }, base + lora + copies)
    }

    /// PEFT's `print_trainable_parameters` line: trainable parameters over all parameters,
    /// counting every adapter's matrices and the saved module copies as PEFT does.
    public func trainableParameterReport() -> String {
        let (trainable, all) = parameterCounts
        func grouped(_ n: Int) -> String {
            let digits = Array(String(n))
            return digits.enumerated().map { i, d in (i > 0 && (digits.count - i) % 3 == 0 ? "," : "") + String(d) }.joined()
        }
        return "trainable params: \(grouped(trainable)) || all params: \(grouped(all)) || trainable%: \(String(format: "%.4f", 100 * Double(trainable) / Double(max(all, 1))))"
    }
}

/// How `addWeightedAdapter` combines adapters (PEFT's `add_weighted_adapter`).
public enum AdapterCombination: String, Sendable, CaseIterable {
    /// Ranks concatenate: A = [w₁s₁A₁; w₂s₂A₂; …], B = [B₁ B₂ …], scale 1 — exactly Σ wᵢ·ΔWᵢ.
    case cat
    /// Same rank: A = Σ ±√|wᵢsᵢ|·Aᵢ, B = Σ √|wᵢsᵢ|·Bᵢ (the sign on A) — PEFT's task arithmetic,
    /// exact only for one adapter (cross terms otherwise).
    case linear
}

extension AdaptableModel {
    /// Adds adapter `name` combining `adapters` with `weights` as PEFT's `add_weighted_adapter`
    /// does for `cat` and `linear`: the new config is the first adapter's with r = lora_alpha =
    /// the new rank and no patterns (so its scale is 1, or √r if that config uses rsLoRA), and
    /// its `modules_to_save` copies start from the base values, as PEFT's do.
    public func addWeightedAdapter(_ adapters: [String], weights: [Double], named name: String,
                                   combination: AdapterCombination) throws(ModelError) {
        try requireUnmerged("combining adapters")
        guard !adapters.isEmpty, adapters.count == weights.count else {
            throw .invalidInput("give one weight per adapter (\(adapters.count) adapters, \(weights.count) weights)")
        }
        guard adapterRegistry.config(named: name) == nil else { throw .invalidInput("an adapter named '\(name)' already exists") }
        var configs: [LoRAConfig] = []
        for a in adapters {
            guard let c = adapterRegistry.config(named: a) else { throw .invalidInput("no adapter named '\(a)'") }
            configs.append(c)
        }
        if adapters.filter({ !(adapterRegistry.savedModules[$0] ?? [:]).isEmpty }).count > 1 {
            throw .invalidInput("cannot combine adapters that both save full modules (modules_to_save)")
        }
        let ranks = configs.map { c in max(c.rank, c.rankPattern.map(\.value).max() ?? c.rank) }
        let method: AdapterCombination = adapters.count == 1 ? .linear : combination
        let newRank: Int
        switch method {
        case .cat: newRank = ranks.reduce(0, +)
        case .linear:
            guard Set(ranks).count == 1 else { throw .invalidInput("linear combination needs adapters of the same rank, got \(ranks)") }
            newRank = ranks[0]
        }
        var config = configs[0]
        config.rank = newRank
        config.alpha = Double(newRank)
        config.rankPattern = []
        config.alphaPattern = []
        if case .names = config.targets {
            var union: [String] = []
            for c in configs { if case .names(let n) = c.targets { for x in n where !union.contains(x) { union.append(x) } } }
            config.targets = .names(union)
        }
        let settings = config.settings(for: "")
        var built: [(LoRALinear, LoRAWeights)] = []
        for m in linearModules {
            let sources = zip(adapters, weights).compactMap { a, w in m.adapter(named: a).map { ($0, w) } }
            guard !sources.isEmpty else { continue }
            let a = Tensor(shape: [newRank, m.inFeatures]), b = Tensor(shape: [m.outFeatures, newRank])
            switch method {
            case .cat:
                var row = 0
                for (source, w) in sources {
                    let factor = Float(w) * source.scale, r = source.rank
                    for i in 0..<(r * m.inFeatures) { a.data[row * m.inFeatures + i] = source.a.value.data[i] * factor }
                    for o in 0..<m.outFeatures {
                        for j in 0..<r { b.data[o * newRank + row + j] = source.b.value.data[o * r + j] }
                    }
                    row += r
                }
            case .linear:
                for (source, w) in sources {
                    let ws = Float(w) * source.scale
                    let wB = abs(ws).squareRoot(), wA = ws >= 0 ? wB : -wB
                    for i in 0..<a.count { a.data[i] += wA * source.a.value.data[i] }
                    for i in 0..<b.count { b.data[i] += wB * source.b.value.data[i] }
                }
            }
            do { built.append((m, try LoRAWeights(settings: settings, a: a, b: b))) } catch { throw .invalidInput("\(error)") }
        }
        for (m, adapter) in built {
            do { try m.attach(adapter, named: name, activate: false) } catch { throw .invalidInput("\(error)") }
        }
        adapterRegistry.configs.append((name, config))
        let saved = try savedModuleParameters(config.modulesToSave ?? [])
        var copies: [String: Tensor] = [:]
        for (param, p) in saved { copies[param] = adapterRegistry.originals[param]?.clone() ?? p.value.clone() }
        adapterRegistry.savedModules[name] = copies
    }
}
