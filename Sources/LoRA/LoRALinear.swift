import Kernels
import Layers

/// How `A` is initialised (`B` always starts at zero, so training starts from the base model).
public enum LoRAInitialization: String, Sendable, Codable {
    /// The paper's choice, as PEFT's `init_lora_weights="gaussian"`: A ~ N(0, (1/r)²).
    case gaussian
    /// PEFT's default (`init_lora_weights=True`): Kaiming-uniform with a = √5, i.e. U(−1/√in, 1/√in).
    case kaimingUniform
}

/// The hyper-parameters of one adapter on one layer.
public struct LoRASettings: Sendable, Equatable {
    public var rank: Int
    public var alpha: Float
    public var dropout: Float
    /// rsLoRA: scale α/√r instead of α/r.
    public var useRSLoRA: Bool
    public var initialization: LoRAInitialization

    public init(rank: Int, alpha: Float, dropout: Float = 0, useRSLoRA: Bool = false,
                initialization: LoRAInitialization = .gaussian) {
        self.rank = rank
        self.alpha = alpha
        self.dropout = dropout
        self.useRSLoRA = useRSLoRA
        self.initialization = initialization
    }

    public static let maximumRank = 1 << 16

    /// The factor on the low-rank path: α/r, or α/√r with rsLoRA.
    public var scale: Float { useRSLoRA ? alpha / Float(rank).squareRoot() : alpha / Float(rank) }

    public func validate() throws(LoRAError) {
        guard rank > 0 && rank <= Self.maximumRank else { throw .invalidSettings("rank must be in 1...\(Self.maximumRank), got \(rank)") }
        guard alpha.isFinite else { throw .invalidSettings("alpha must be finite, got \(alpha)") }
        guard dropout >= 0 && dropout < 1 else { throw .invalidSettings("dropout must be in [0, 1), got \(dropout)") }
    }
}

public enum LoRAError: Error, Equatable, CustomStringConvertible {
    case invalidSettings(String)
    case shapeMismatch(layer: String, tensor: String, expected: [Int], got: [Int])
    case noSuchModule(String)
    case noAdapter(layer: String)
    case alreadyMerged(layer: String)
    case adapterAlreadyAttached(layer: String)
    case notMerged(layer: String)
    case nonFiniteMerge(layer: String)
    case packedBase(layer: String, encoding: String)
    /// A per-row forward named an adapter this layer does not have.
    case noSuchAdapter(layer: String, adapter: String)

    public var description: String {
        switch self {
        case .invalidSettings(let why): "invalid LoRA settings: \(why)"
        case let .shapeMismatch(layer, tensor, expected, got): "\(layer): \(tensor) has shape \(got), expected \(expected)"
        case .noSuchModule(let name): "no linear module matches '\(name)'"
        case .noAdapter(let layer): "\(layer): no LoRA adapter attached"
        case let .noSuchAdapter(layer, adapter): "\(layer): no adapter named '\(adapter)'"
        case .alreadyMerged(let layer): "\(layer): the adapter is already merged"
        case .adapterAlreadyAttached(let layer): "\(layer): an adapter is already attached (detach it first)"
        case .notMerged(let layer): "\(layer): the adapter is not merged"
        case .nonFiniteMerge(let layer): "\(layer): merging would produce non-finite weights; the base weight was left unchanged"
        case let .packedBase(layer, encoding): "\(layer): the base weight is stored as \(encoding); merging needs it in fp32 (load the model with --precision fp32)"
        }
    }
}

/// The low-rank pair of one adapted layer, A: [r, in] and B: [out, r] (trainable), with its
/// settings: weights only, shared by every run of the model. Each run's work buffers and dropout
/// state live in its `LoRALinear` (`LoRAWorkspace`).
public final class LoRAWeights {
    public let settings: LoRASettings
    public let a: Parameter
    public let b: Parameter
    /// Where a run's dropout generator starts for this adapter.
    public let dropoutSeed: UInt64

    /// A fresh adapter: A drawn as `settings.initialization` says, B = 0.
    public init(inFeatures: Int, outFeatures: Int, settings: LoRASettings, generator: inout SplitMix64) throws(LoRAError) {
        try settings.validate()
        self.settings = settings
        let r = settings.rank
        let aInit: Tensor
        switch settings.initialization {
        case .gaussian:
            let std = 1 / Float(r)
            aInit = Tensor(shape: [r, inFeatures], generator: { generator.nextGaussian() * std })
        case .kaimingUniform:
            let bound = 1 / Float(inFeatures).squareRoot()
            aInit = Tensor(shape: [r, inFeatures], generator: { (2 * generator.nextUniform() - 1) * bound })
        }
        a = Parameter("lora_A", aInit, trainable: true)
        b = Parameter("lora_B", Tensor(shape: [outFeatures, r]), trainable: true)
        dropoutSeed = generator.next()
    }

    /// An adapter from given matrices (loaded from a file or combined from others).
    public init(settings: LoRASettings, a: Tensor, b: Tensor, seed: UInt64 = 0) throws(LoRAError) {
        try settings.validate()
        guard a.shape.count == 2, b.shape.count == 2, a.shape[0] == settings.rank, b.shape[1] == settings.rank else {
            throw .invalidSettings("A \(a.shape) and B \(b.shape) do not have rank \(settings.rank)")
        }
        self.settings = settings
        self.a = Parameter("lora_A", a, trainable: true)
        self.b = Parameter("lora_B", b, trainable: true)
        dropoutSeed = seed
    }

    public var parameters: [Parameter] { [a, b] }
    public var rank: Int { settings.rank }
    public var scale: Float { settings.scale }

    /// ΔW = s·B·A added into `w` ([out, in]) with an extra factor, in fp32.
    func addDelta(into w: Tensor, times factor: Float = 1) {
        let outF = b.shape[0], inF = a.shape[1]
        matmul(m: outF, n: inF, k: rank, alpha: scale * factor, b.value.data, lda: rank, a.value.data, ldb: inF,
               beta: 1, w.data, ldc: inF)
    }
}

/// One run's state for one adapter of one layer: what the forward pass saves for the backward
/// pass, the backward pass's buffers, and the dropout generator (one integer, so it can be
/// checkpointed and replayed).
final class LoRAWorkspace {
    let weights: LoRAWeights
    var dropoutGenerator: SplitMix64
    let lowRank = Tensor(shape: [0])          // h  [N, r]
    let lowRankGradient = Tensor(shape: [0])  // dh [N, r]
    let dropped = Tensor(shape: [0])          // drop(x) [N, in]
    let dropMask = Tensor(shape: [0])         // 0 or 1/(1−p), [N, in]
    let droppedGradient = Tensor(shape: [0])  // d drop(x) [N, in]
    var usedDropout = false
    // Inference only (`addRows`): the gathered rows, their h and their ΔW·x.
    private let gathered = Tensor(shape: [0]), gatheredLow = Tensor(shape: [0]), delta = Tensor(shape: [0])

    init(_ weights: LoRAWeights) {
        self.weights = weights
        dropoutGenerator = SplitMix64(seed: weights.dropoutSeed)
    }

    /// The training step's buffers; `used` says whether the step runs this adapter.
    func buffers(inFeatures: Int, used: @escaping () -> Bool) -> [WorkBuffer] {
        let r = weights.rank, dropout = weights.settings.dropout > 0
        let low = { (s: PassShape) in used() ? s.rows * r : 0 }
        let wide = { (s: PassShape) in used() && dropout ? s.rows * inFeatures : 0 }
        return [WorkBuffer(lowRank, .activation, elements: low), WorkBuffer(dropped, .activation, elements: wide),
                WorkBuffer(dropMask, .activation, elements: wide), WorkBuffer(lowRankGradient, .gradient, elements: low),
                WorkBuffer(droppedGradient, .gradient, elements: wide)]
    }

    /// h = drop(x)·Aᵀ, then y += s·h·Bᵀ.
    func forward(_ x: Tensor, into y: Tensor, training: Bool) {
        let a = weights.a, b = weights.b, settings = weights.settings
        let n = x.rowCount, inF = x.rowLength, outF = y.rowLength, r = weights.rank
        var xd = x
        usedDropout = training && settings.dropout > 0
        if usedDropout {
            let p = settings.dropout, keep = 1 / (1 - p)
            dropped.resize(x.shape)
            dropMask.resize(x.shape)
            // The generator in a local: a stored property mutated per element costs an
            // exclusivity check each time.
            var generator = dropoutGenerator
            let xs = x.data, mask = dropMask.data, out = dropped.data, drop = Float(p), keepScale = Float(keep)
            for i in 0..<x.count {
                let m: Float = generator.nextUniform() < drop ? 0 : keepScale
                mask[i] = m
                out[i] = xs[i] * m
            }
            dropoutGenerator = generator
            xd = dropped
        }
        lowRank.resize([n, r])
        matmul(transposeB: true, m: n, n: r, k: inF, xd.data, lda: inF, a.value.data, ldb: inF, lowRank.data, ldc: r)
        matmul(transposeB: true, m: n, n: outF, k: r, alpha: weights.scale, lowRank.data, lda: r, b.value.data, ldb: r,
               beta: 1, y.data, ldc: outF)
    }

    /// y[row] += s·(x[row]·Aᵀ)·Bᵀ for the given rows only (inference: no dropout, nothing saved
    /// for a backward pass). The rows are gathered into one block, so a group of rows costs two
    /// small products.
    func addRows(_ rows: [Int], of x: Tensor, into y: Tensor) {
        guard !rows.isEmpty else { return }
        let n = rows.count, inF = x.rowLength, outF = y.rowLength, r = weights.rank
        gathered.resize([n, inF])
        gatheredLow.resize([n, r])
        delta.resize([n, outF])
        for (i, row) in rows.enumerated() { (gathered.data + i * inF).update(from: x.data + row * inF, count: inF) }
        matmul(transposeB: true, m: n, n: r, k: inF, gathered.data, lda: inF, weights.a.value.data, ldb: inF, gatheredLow.data, ldc: r)
        matmul(transposeB: true, m: n, n: outF, k: r, alpha: weights.scale, gatheredLow.data, lda: r, weights.b.value.data, ldb: r,
               delta.data, ldc: outF)
        for (i, row) in rows.enumerated() {
            let dst = y.data + row * outF, src = delta.data + i * outF
            for j in 0..<outF { dst[j] += src[j] }
        }
    }

    /// dB += s·dyᵀ·h, dh = s·dy·B, dA += dhᵀ·drop(x), dx += drop′(dh·A).
    func backward(_ dy: Tensor, input x: Tensor, dx: Tensor?) {
        let a = weights.a, b = weights.b
        let n = dy.rowCount, inF = x.rowLength, outF = dy.rowLength, r = weights.rank, s = weights.scale
        let xd = usedDropout ? dropped : x
        if let dB = b.grad {
            matmul(transposeA: true, m: outF, n: r, k: n, alpha: s, dy.data, lda: outF, lowRank.data, ldb: r,
                   beta: 1, dB.data, ldc: r)
        }
        guard a.isTrainable || dx != nil else { return }
        lowRankGradient.resize([n, r])
        matmul(m: n, n: r, k: outF, alpha: s, dy.data, lda: outF, b.value.data, ldb: r, lowRankGradient.data, ldc: r)
        if let dA = a.grad {
            matmul(transposeA: true, m: r, n: inF, k: n, lowRankGradient.data, lda: r, xd.data, ldb: inF,
                   beta: 1, dA.data, ldc: inF)
        }
        guard let dx else { return }
        if usedDropout {
            droppedGradient.resize(x.shape)
            matmul(m: n, n: inF, k: r, lowRankGradient.data, lda: r, a.value.data, ldb: inF, droppedGradient.data, ldc: inF)
            let dxs = dx.data, g = droppedGradient.data, mask = dropMask.data
            parallelChunks(x.count) { range in for i in range { dxs[i] += g[i] * mask[i] } }
        } else {
            matmul(m: n, n: inF, k: r, lowRankGradient.data, lda: r, a.value.data, ldb: inF, beta: 1, dx.data, ldc: inF)
        }
    }
}

/// What every run of one adapted layer shares: its named adapters and whether they are merged
/// into the (shared) base weight, with the original W0 kept for an exact unmerge.
final class LoRAAdapterSet {
    var adapters: [(name: String, adapter: LoRAWeights)] = []
    var isMerged = false
    var originalWeight: Tensor?

    func adapter(named name: String) -> LoRAWeights? { adapters.first { $0.name == name }?.adapter }
}

/// A base operation (`AdaptableOperation`: a linear layer) with named low-rank adapters — the one
/// LoRA entry point that every adapted projection of every model goes through. With no active
/// adapter it is exactly `base`.
///
///     forward:  y[N, out] = x · W0ᵀ (+ b) + Σ_active s · (drop(x) · Aᵀ) · Bᵀ     s = α/r (or α/√r)
///               h[N, r] = drop(x) · Aᵀ is saved per adapter
///     backward: dh = s · dy · B                                  [N, r]
///               dB += s · dyᵀ · h                                 [out, r]
///               dA += dhᵀ · drop(x)                               [r, in]
///               dx = dy · W0 + Σ drop′(dh · A)                    [N, in]
///     W0 gets no gradient when frozen (the usual case): the base layer skips it.
///
/// Several adapters can be attached by name; `activeAdapters` chooses which ones apply (none =
/// the base model). `merge()` replaces W0 by W0 + Σ s·B·A over the active adapters (computed in
/// fp32, refused if non-finite) and keeps the original tensor, so `unmerge()` restores it bit
/// for bit; `fuse()` merges for good.
///
/// Weights and one run's state are apart: W0, the bias and the attached adapters (with their
/// merged state) may be shared with other instances (`share(_:)`, what a model's `replica()`
/// uses), while the active adapters, the saved input, the work buffers and the dropout
/// generators are this instance's own.
public final class LoRALinear: Module {
    /// The module path, e.g. `model.layers.0.self_attn.q_proj`, given by the model's module tree;
    /// used in error messages and for matching targets.
    public package(set) var name: String
    /// The base operation (a `Linear`): this run's output buffer over the (shareable) W0 and bias.
    public private(set) var base: any AdaptableOperation
    private var shared = LoRAAdapterSet()
    /// The adapters that apply in this run, in attach order.
    public private(set) var activeAdapters: [String] = []
    /// Dropout on the low-rank path is applied only while training.
    public var isTraining = true
    private var input: Tensor?
    /// This run's state per attached adapter, by the adapter's identity.
    private var workspaces: [ObjectIdentifier: LoRAWorkspace] = [:]
    /// The adapters the last forward used, so backward matches it even if the state changed since.
    private var usedAtForward: [LoRAWorkspace] = []

    public init(name: String, base: any AdaptableOperation) {
        self.name = name
        self.base = base
    }

    public convenience init(name: String, inFeatures: Int, outFeatures: Int, bias: Bool) {
        self.init(name: name, base: Linear(inFeatures: inFeatures, outFeatures: outFeatures, bias: bias))
    }

    /// Shares `other`'s weights and adapters (attached, detached, merged and unmerged for both at
    /// once) and starts with its active adapters and mode; buffers, saved input and dropout state
    /// stay this instance's.
    public func share(_ other: LoRALinear) {
        base = other.base.sharingWeights()
        shared = other.shared
        activeAdapters = other.activeAdapters
        isTraining = other.isTraining
        workspaces = [:]
        usedAtForward = []
        input = nil
    }

    public func shareWeights(of other: any Module) {
        guard let o = other as? LoRALinear else { preconditionFailure("\(type(of: other)) is not a LoRALinear") }
        share(o)
    }

    public var inFeatures: Int { base.inFeatures }
    public var outFeatures: Int { base.outFeatures }
    public var output: Tensor { base.output }
    public var isMerged: Bool { shared.isMerged }
    /// Attached adapters in the order they were attached.
    public var adapters: [(name: String, adapter: LoRAWeights)] { shared.adapters }

    /// This run's state for an attached adapter (made on first use; states of adapters since
    /// detached are dropped then).
    private func workspace(_ adapter: LoRAWeights) -> LoRAWorkspace {
        let key = ObjectIdentifier(adapter)
        if let ws = workspaces[key] { return ws }
        let attached = Set(shared.adapters.map { ObjectIdentifier($0.adapter) })
        workspaces = workspaces.filter { attached.contains($0.key) }
        let ws = LoRAWorkspace(adapter)
        workspaces[key] = ws
        return ws
    }

    /// W0 and the bias under their Hugging Face names (the adapters' matrices are not base parameters).
    public var ownParameters: [(name: String, parameter: Parameter)] { base.ownParameters }

    /// The base output and, per attached adapter, its saved h, dropout input and mask and their
    /// gradients, counted for the adapters a training step runs (active, unmerged).
    public var ownBuffers: [WorkBuffer] {
        base.ownBuffers + shared.adapters.flatMap { name, adapter in
            workspace(adapter).buffers(inFeatures: inFeatures) { [unowned self] in !isMerged && activeAdapters.contains(name) }
        }
    }

    /// The dropout generators of the attached adapters (this run's): saved before a forward
    /// pass and restored before recomputing it, so the recomputation draws the same masks.
    public var dropoutStates: [SplitMix64] {
        get { shared.adapters.map { workspace($0.adapter).dropoutGenerator } }
        set { for (pair, state) in zip(shared.adapters, newValue) { workspace(pair.adapter).dropoutGenerator = state } }
    }

    /// This run's dropout generator of the first active adapter (the one a training run trains).
    public var dropoutGenerator: SplitMix64? {
        get { adapter.map { workspace($0).dropoutGenerator } }
        set { if let a = adapter, let newValue { workspace(a).dropoutGenerator = newValue } }
    }

    /// The first active adapter (the only one, in the common case).
    public var adapter: LoRAWeights? { activeAdapters.first.flatMap { adapter(named: $0) } }

    public func adapter(named name: String) -> LoRAWeights? { shared.adapter(named: name) }

    /// Attaches an adapter whose A and B fit this layer under `adapterName` (activating it
    /// alongside the active ones when `activate`).
    public func attach(_ adapter: LoRAWeights, named adapterName: String = "default", activate: Bool = true) throws(LoRAError) {
        guard !isMerged else { throw .alreadyMerged(layer: name) }
        guard self.adapter(named: adapterName) == nil else { throw .adapterAlreadyAttached(layer: name) }
        let r = adapter.rank
        guard adapter.a.shape == [r, inFeatures] else {
            throw .shapeMismatch(layer: name, tensor: "lora_A", expected: [r, inFeatures], got: adapter.a.shape)
        }
        guard adapter.b.shape == [outFeatures, r] else {
            throw .shapeMismatch(layer: name, tensor: "lora_B", expected: [outFeatures, r], got: adapter.b.shape)
        }
        shared.adapters.append((adapterName, adapter))
        if activate { activeAdapters.append(adapterName) }
        usedAtForward = []
    }

    /// Removes an adapter (refused while merged: unmerge or fuse first).
    @discardableResult
    public func detach(named adapterName: String = "default") throws(LoRAError) -> LoRAWeights? {
        guard !isMerged else { throw .alreadyMerged(layer: name) }
        usedAtForward = []
        let removed = adapter(named: adapterName)
        shared.adapters.removeAll { $0.name == adapterName }
        activeAdapters.removeAll { $0 == adapterName }
        if let removed { workspaces[ObjectIdentifier(removed)] = nil }
        return removed
    }

    /// Chooses the adapters that apply; names this layer does not have are skipped (a model's
    /// adapters need not cover every layer). An empty list disables LoRA on this layer.
    public func setActiveAdapters(_ names: [String]) throws(LoRAError) {
        guard !isMerged else { throw .alreadyMerged(layer: name) }
        activeAdapters = shared.adapters.map(\.name).filter { names.contains($0) }
    }

    public func forward(_ x: Tensor) -> Tensor {
        input = x
        let y = base.forward(x)
        usedAtForward = isMerged ? [] : activeAdapters.compactMap { adapter(named: $0).map(workspace) }
        for ws in usedAtForward { ws.forward(x, into: y, training: isTraining) }
        return y
    }

    /// PEFT's mixed-batch forward (`model(x, adapter_names=[…])`), for inference: every row of
    /// `x` names its adapter (nil = the base model alone). The base product runs once for the
    /// whole batch; each adapter's low-rank products run once over the rows that chose it.
    ///
    ///     y[N, out] = x · W0ᵀ (+ b);   y[rows of a] += s_a · (x[rows of a] · A_aᵀ) · B_aᵀ
    ///
    /// Refused while merged (the merged weight holds other adapters' ΔW) and for names this
    /// layer does not have. Nothing is saved for a backward pass.
    public func forward(_ x: Tensor, rowAdapters: [String?]) throws(LoRAError) -> Tensor {
        guard !isMerged else { throw .alreadyMerged(layer: name) }
        guard rowAdapters.count == x.rowCount else {
            throw .invalidSettings("\(name): \(rowAdapters.count) row adapters for \(x.rowCount) rows")
        }
        let rows = RowAdapters(rowAdapters)
        if let missing = rows.groups.first(where: { adapter(named: $0.name) == nil }) {
            throw .noSuchAdapter(layer: name, adapter: missing.name)
        }
        return forward(x, rows: rows)
    }

    /// The forward of a model's pass: the active adapters when `rows` is nil (as `forward(_:)`),
    /// else the mixed-batch forward above, where a row whose adapter this layer lacks gets the
    /// base product alone (a model's adapters need not cover every layer; the model checks the
    /// names and that nothing is merged before the pass).
    public func forward(_ x: Tensor, rows: RowAdapters?) -> Tensor {
        guard let rows else { return forward(x) }
        precondition(!isMerged && rows.count == x.rowCount, "\(name): a per-row forward while merged or of the wrong size")
        input = nil
        usedAtForward = []
        let y = base.forward(x)
        for g in rows.groups {
            if let adapter = adapter(named: g.name) { workspace(adapter).addRows(g.rows, of: x, into: y) }
        }
        return y
    }

    /// Writes (or adds, with `accumulate`) dx; accumulates dA and dB of the adapters the last
    /// forward used (none if they were merged then; models refuse to train while merged).
    public func backward(_ dy: Tensor, dx: Tensor?, accumulate: Bool = false) {
        guard let x = input else { preconditionFailure("LoRALinear backward before forward") }
        precondition(dy.rowCount == x.rowCount, "\(name): dy \(dy.shape) does not match the forward input \(x.shape)")
        base.backward(dy, dx: dx, accumulate: accumulate)
        for ws in usedAtForward { ws.backward(dy, input: x, dx: dx) }
    }

    /// W0 + Σ s·B·A over the active adapters, in fp32, as a new tensor; throws if any element is
    /// not finite.
    public func mergedWeight() throws(LoRAError) -> Tensor {
        let active = activeAdapters.compactMap { adapter(named: $0) }
        guard !active.isEmpty else { throw .noAdapter(layer: name) }
        if let packed = base.weight.packed { throw .packedBase(layer: name, encoding: packed.encoding) }
        let w = (shared.originalWeight ?? base.weight.value).clone()
        for adapter in active { adapter.addDelta(into: w) }
        guard w.isFinite else { throw .nonFiniteMerge(layer: name) }
        return w
    }

    /// Folds the active adapters into the weight; the original W0 is kept for `unmerge()`.
    public func merge() throws(LoRAError) {
        guard !isMerged else { throw .alreadyMerged(layer: name) }
        let merged = try mergedWeight()
        shared.originalWeight = base.weight.value
        base.weight.replaceValue(merged)
        shared.isMerged = true
    }

    /// Restores the exact original W0 (bit-identical).
    public func unmerge() throws(LoRAError) {
        guard isMerged, let originalWeight = shared.originalWeight else { throw .notMerged(layer: name) }
        base.weight.replaceValue(originalWeight)
        shared.originalWeight = nil
        shared.isMerged = false
    }

    /// Merges the active adapters for good and drops every adapter and the copy of W0 (deployment).
    public func fuse() throws(LoRAError) {
        if !isMerged { try merge() }
        shared.originalWeight = nil
        shared.isMerged = false
        shared.adapters = []
        activeAdapters = []
        workspaces = [:]
        usedAtForward = []
    }
}

/// The adapter of each row of a batch (PEFT's `adapter_names`, nil = the base model), grouped
/// once so that every layer of a pass runs one pair of low-rank products per adapter.
public struct RowAdapters: Sendable, Equatable {
    public let names: [String?]
    /// Each adapter with the rows that chose it, in order of first appearance.
    public let groups: [Group]
    public struct Group: Sendable, Equatable {
        public let name: String
        public let rows: [Int]
    }

    public init(_ names: [String?]) {
        self.names = names
        var groups: [(String, [Int])] = []
        var index: [String: Int] = [:]
        for (row, name) in names.enumerated() {
            guard let name else { continue }
            if let g = index[name] { groups[g].1.append(row); continue }
            index[name] = groups.count
            groups.append((name, [row]))
        }
        self.groups = groups.map { Group(name: $0.0, rows: $0.1) }
    }

    public var count: Int { names.count }
}
