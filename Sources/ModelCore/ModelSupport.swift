import Kernels
import Layers
import LoRA

public enum ModelError: Error, Equatable, CustomStringConvertible {
    case invalidConfiguration(String)
    case weights(missing: [String], unexpected: [String], mismatched: [String])
    case invalidInput(String)
    case adaptersMerged(String)
    case invalidFile(path: String, reason: String)
    case unsupportedArchitecture(String)

    public var description: String {
        switch self {
        case .invalidConfiguration(let why): "invalid model configuration: \(why)"
        case let .weights(missing, unexpected, mismatched):
            // A file for another model lists hundreds of names: the count and the first few say it.
            ([Self.list("missing tensor", missing, ", "), Self.list("unexpected tensor", unexpected, ", "),
              Self.list("shape mismatch", mismatched, "; ")].compactMap { $0 }).joined(separator: "\n")
        case .invalidInput(let why): why
        case .adaptersMerged(let what): "\(what) while adapters are merged: unmerge them first"
        case let .invalidFile(path, reason): reason.hasPrefix(path) ? reason : "\(path): \(reason)"
        case .unsupportedArchitecture(let what): "unsupported architecture: \(what)"
        }
    }

    /// An adapter file that cannot be read or written, as a model error.
    package static func adapterFile(_ error: AdapterFormatError) -> ModelError {
        switch error {
        case let .invalid(path, reason): .invalidFile(path: path, reason: reason)
        case .unsupported(let why): .invalidInput(why)
        }
    }

    /// "3 unexpected tensors: a, b, c", or the first 4 of a longer list and how many more.
    private static func list(_ noun: String, _ items: [String], _ separator: String) -> String? {
        guard !items.isEmpty else { return nil }
        let shown = items.count <= 6 ? items : Array(items.prefix(4))
        let plural = items.count == 1 ? noun : noun.hasSuffix("h") ? noun + "es" : noun + "s"
        return "\(items.count) \(plural): " + shown.joined(separator: separator)
            + (shown.count < items.count ? "\(separator)… and \(items.count - shown.count) more" : "")
    }
}

/// Largest supported model: 2^36 parameters (256 GiB of Float32).
package let maximumParameterCount = 1 << 36

/// Throws unless every dimension is positive and the parameter count — a sum of products of
/// dimensions, each computed with overflow checks — is at most `maximumParameterCount`, so a
/// configuration can never make the process allocate absurd sizes or trap. Returns the count.
@discardableResult
package func checkParameterCount(_ products: [[Int]]) throws(ModelError) -> Int {
    var total = 0
    for factors in products {
        var product = 1
        for f in factors {
            guard f >= 0 else { throw .invalidConfiguration("negative dimension \(f)") }
            let (p, overflow) = product.multipliedReportingOverflow(by: f)
            guard !overflow, p <= maximumParameterCount else {
                throw .invalidConfiguration("the configuration describes more than \(maximumParameterCount) parameters")
            }
            product = p
        }
        let (sum, overflow) = total.addingReportingOverflow(product)
        guard !overflow, sum <= maximumParameterCount else {
            throw .invalidConfiguration("the configuration describes more than \(maximumParameterCount) parameters")
        }
        total = sum
    }
    return total
}

/// Refuses a configuration that describes more weights than its file holds, before the model
/// is allocated: a few bytes of hostile metadata must not make the process reserve gigabytes.
/// `described` counts the weight matrices the file must provide (a lower bound on the model's
/// parameters); `fileValues` is every value the file's tensors hold.
package func checkFileHoldsWeights(described: Int, fileValues: Int, path: String) throws(ModelError) {
    guard described <= fileValues else {
        throw .invalidFile(path: path, reason: "the configuration describes \(described) weights but the file holds only \(fileValues) values")
    }
}

/// A batch of token sequences, [B, T] flattened row-major, as Hugging Face passes them.
public struct TokenBatch: Sendable {
    public var batch: Int
    public var length: Int
    public var inputIds: [Int]
    /// 1 = real token, 0 = padding; nil = no padding.
    public var attentionMask: [Int]?
    /// BERT's segment ids; nil = all 0.
    public var tokenTypeIds: [Int]?

    public init(batch: Int, length: Int, inputIds: [Int], attentionMask: [Int]? = nil, tokenTypeIds: [Int]? = nil) {
        self.batch = batch
        self.length = length
        self.inputIds = inputIds
        self.attentionMask = attentionMask
        self.tokenTypeIds = tokenTypeIds
    }

    /// Positions 0..<T for every row (Hugging Face's default without position_ids).
    package var positions: [Int] { (0..<batch * length).map { $0 % length } }

    package func validate(vocabularySize: Int, maxPositions: Int?, typeVocabularySize: Int? = nil) throws(ModelError) {
        guard batch > 0, length > 0 else { throw .invalidInput("empty batch \(batch)×\(length)") }
        let (n, overflow) = batch.multipliedReportingOverflow(by: length)
        guard !overflow else { throw .invalidInput("batch \(batch)×\(length) is too large") }
        guard inputIds.count == n else { throw .invalidInput("\(inputIds.count) input ids for a \(batch)×\(length) batch") }
        if let bad = inputIds.firstIndex(where: { $0 < 0 || $0 >= vocabularySize }) {
            throw .invalidInput("token id \(inputIds[bad]) at position \(bad) is outside the vocabulary 0..<\(vocabularySize)")
        }
        if let maxPositions, length > maxPositions {
            throw .invalidInput("sequence length \(length) exceeds the model's \(maxPositions) positions")
        }
        if let mask = attentionMask {
            guard mask.count == n else { throw .invalidInput("\(mask.count) attention-mask entries for \(n) tokens") }
            guard mask.allSatisfy({ $0 == 0 || $0 == 1 }) else { throw .invalidInput("attention mask must hold 0 or 1") }
        }
        if let types = tokenTypeIds {
            guard types.count == n else { throw .invalidInput("\(types.count) token type ids for \(n) tokens") }
            let limit = typeVocabularySize ?? 1
            if let bad = types.first(where: { $0 < 0 || $0 >= limit }) {
                throw .invalidInput("token type id \(bad) outside 0..<\(limit)")
            }
        }
    }
}

/// What every model assembly offers: the root of its module tree, from which its named
/// parameters (Hugging Face names) and the linear modules LoRA can adapt are derived.
public protocol AdaptableModel: Module {
    /// Every base parameter with its Hugging Face state-dict name (tied weights listed once): the
    /// module tree's parameters unless an architecture says otherwise.
    var namedParameters: [(name: String, parameter: Parameter)] { get }
    /// Every linear module, by path (`model.layers.0.self_attn.q_proj`): the tree's `LoRALinear`s.
    var linearModules: [LoRALinear] { get }
    /// Names that may appear in a checkpoint but are not parameters (ignored when loading).
    var ignorableWeightNames: Set<String> { get }
    /// The named adapters attached to this model (configs, `modules_to_save` copies, which are active).
    var adapterRegistry: AdapterRegistry { get }
    /// Module paths that `target_modules: "all-linear"` stands for, as PEFT resolves it.
    func allLinearModulePaths(taskType: String?) -> Set<String>
}

extension AdaptableModel {
    public var ignorableWeightNames: Set<String> { [] }
    public var namedParameters: [(name: String, parameter: Parameter)] { treeParameters }
    public var linearModules: [LoRALinear] { modules(of: LoRALinear.self).map(\.module) }

    /// Names every adapted projection by its path in the tree; a model's initializer calls it
    /// once its tree is built (the tree is fixed from then on).
    public func nameModules() {
        for (path, m) in modules(of: LoRALinear.self) { m.name = path }
    }

    /// Copies weights by name; every expected tensor must be present with the right shape, and
    /// every tensor given must be expected. Nothing is modified unless all checks pass.
    public func loadWeights(_ weights: [String: Tensor]) throws(ModelError) {
        try checkWeightShapes(weights.mapValues(\.shape))
        for (name, p) in namedParameters { if let t = weights[name] { p.value.copy(from: t) } }
    }

    /// Throws unless `shapes` names exactly this model's parameters (plus ignorable names) with
    /// the right shapes, listing every missing, unexpected and mismatched tensor.
    public func checkWeightShapes(_ shapes: [String: [Int]]) throws(ModelError) {
        try requireUnmerged("loading weights")
        let expected = namedParameters
        var missing: [String] = [], mismatched: [String] = []
        for (name, p) in expected {
            guard let shape = shapes[name] else { missing.append(name); continue }
            if shape != p.shape { mismatched.append("\(name): file \(shape), model \(p.shape)") }
        }
        let known = Set(expected.map(\.name)).union(ignorableWeightNames)
        let unexpected = shapes.keys.filter { !known.contains($0) }.sorted()
        guard missing.isEmpty, unexpected.isEmpty, mismatched.isEmpty else {
            throw .weights(missing: missing, unexpected: unexpected, mismatched: mismatched)
        }
    }

    /// The linear module at exactly this path.
    public func linearModule(named path: String) throws(LoRAError) -> LoRALinear {
        guard let m = linearModules.first(where: { $0.name == path }) else { throw .noSuchModule(path) }
        return m
    }

    /// Every LoRA parameter, named as in PEFT's adapter files minus the `base_model.model.` prefix
    /// (`model.layers.0.self_attn.q_proj.lora_A.weight`).
    public var namedAdapterParameters: [(name: String, parameter: Parameter)] {
        linearModules.flatMap { m -> [(name: String, parameter: Parameter)] in
            guard let a = m.adapter else { return [] }
            return [("\(m.name).lora_A.weight", a.a), ("\(m.name).lora_B.weight", a.b)]
        }
    }

    /// Every parameter that currently has a gradient buffer: what an optimizer updates.
    public var trainableParameters: [Parameter] {
        (namedParameters.map(\.parameter) + namedAdapterParameters.map(\.parameter)).filter(\.isTrainable)
    }

    public func freezeBase() {
        for (_, p) in namedParameters { p.setTrainable(false) }
    }

    public func zeroGradients() {
        for p in trainableParameters { p.zeroGrad() }
    }

    /// Adds a fresh adapter named "default" to every linear module whose path ends with one of
    /// `targets` (`q_proj` matches `model.layers.3.self_attn.q_proj`), as PEFT's suffix matching
    /// does, and freezes every base parameter (make a head trainable again afterwards if it
    /// should be). Unlike a PEFT config, each target must match at least one module.
    /// Returns the adapted paths.
    @discardableResult
    public func addLoRA(targets: [String], settings: LoRASettings, seed: UInt64, named name: String = "default") throws(LoRAError) -> [String] {
        try settings.validate()
        guard !targets.isEmpty else { throw .invalidSettings("no target modules given") }
        let modules = linearModules
        for target in targets where !modules.contains(where: { matchesTarget($0.name, target) }) {
            throw .noSuchModule(target)
        }
        if let taken = modules.first(where: { m in m.adapter(named: name) != nil && targets.contains { matchesTarget(m.name, $0) } }) {
            throw .adapterAlreadyAttached(layer: taken.name)
        }
        var config = LoRAConfig(rank: settings.rank, alpha: Double(settings.alpha), dropout: Double(settings.dropout),
                                targets: .names(targets), useRSLoRA: settings.useRSLoRA, initialization: settings.initialization)
        config.taskType = nil
        do {
            return try addAdapter(named: name, config: config, seed: seed)
        } catch {
            throw .invalidSettings(error.description)
        }
    }

    /// Sets training mode (LoRA dropout on) or evaluation mode on every module.
    public func setTraining(_ training: Bool) {
        for m in linearModules { m.isTraining = training }
    }

    public var hasMergedAdapters: Bool { linearModules.contains { $0.isMerged } }

    /// Throws when an adapter is merged: weights loaded or trained now would be lost or wrong
    /// at unmerge.
    public func requireUnmerged(_ action: String) throws(ModelError) {
        if let m = linearModules.first(where: { $0.isMerged }) { throw .adaptersMerged("\(action) (\(m.name))") }
    }

    /// Merges every attached adapter, or none: if one merge fails (non-finite result), the
    /// modules merged before it are restored bit for bit and the error is rethrown.
    public func mergeAdapters() throws(LoRAError) {
        var merged: [LoRALinear] = []
        do {
            for m in linearModules where m.adapter != nil && !m.isMerged {
                try m.merge()
                merged.append(m)
            }
        } catch {
            for m in merged { try? m.unmerge() }
            throw error
        }
    }

    public func unmergeAdapters() throws(LoRAError) {
        for m in linearModules where m.isMerged { try m.unmerge() }
    }
}

/// PEFT's rule for a plain target name: the module path equals it or ends with ".<target>".
func matchesTarget(_ path: String, _ target: String) -> Bool {
    path == target || path.hasSuffix("." + target)
}

/// Next-token targets of a causal LM as Hugging Face builds them: position t predicts
/// labels[t + 1]; the last position of each row and labels equal to -100 are ignored. Throws
/// unless there is one label per token, each -100 or in the vocabulary.
package func nextTokenTargets(labels: [Int], input: TokenBatch, vocabularySize: Int) throws(ModelError) -> [Int] {
    guard labels.count == input.batch * input.length else {
        throw .invalidInput("\(labels.count) labels for \(input.batch)×\(input.length) tokens")
    }
    if let bad = labels.first(where: { $0 != ignoreIndex && ($0 < 0 || $0 >= vocabularySize) }) {
        throw .invalidInput("label \(bad) outside the vocabulary 0..<\(vocabularySize) (use -100 to ignore)")
    }
    let length = input.length
    return (0..<labels.count).map { i in i % length == length - 1 ? ignoreIndex : labels[i + 1] }
}
