import Kernels

/// The shape of a training pass, which the work buffers' sizes follow: `batch` sequences of
/// `length` tokens, `rows` = batch × length rows through every projection.
public struct PassShape: Sendable, Equatable {
    public var batch: Int
    public var length: Int
    public var rows: Int { batch * length }

    public init(batch: Int, length: Int) {
        self.batch = batch
        self.length = length
    }
}

/// A work buffer of a module: the tensor, what it is for, and how many elements a training step
/// over a pass of a given shape leaves in it. The memory estimate sums the last; the blocks' buffer
/// lending (`BufferPool`) takes the tensors by role. Declared once, beside the code that fills it.
public struct WorkBuffer {
    public enum Role: Sendable {
        /// Written by the forward pass and read by the backward pass (lent from block to block
        /// when activations are recomputed).
        case activation
        /// The backward pass's own working space (always lent from block to block).
        case gradient
        /// Kept by its block for its neighbours, never lent: a block's output (the next block's
        /// input) and its input gradient (the previous block's incoming gradient).
        case retained
    }

    public let tensor: Tensor
    public let role: Role
    /// Elements held after a training step over a pass of this shape (zero when the step does
    /// not use the buffer).
    public let elements: (PassShape) -> Int

    public init(_ tensor: Tensor, _ role: Role, elements: @escaping (PassShape) -> Int) {
        self.tensor = tensor
        self.role = role
        self.elements = elements
    }
}

/// A node of a model's module tree: its children under the names Hugging Face gives them, its own
/// parameters, and its own work buffers. Every parameter name, the list of adaptable modules,
/// the buffers blocks lend each other and the training-memory estimate are derived by walking
/// the tree, so a module path or a buffer is written down once, where the module is built.
///
/// A child name may hold dots ("attention.self.query") where Hugging Face nests modules that have
/// no computation of their own; the path of a module is its ancestors' names joined by dots.
public protocol Module: AnyObject {
    /// Child modules in forward order, by name.
    var children: [(name: String, module: any Module)] { get }
    /// This module's own parameters by local name ("weight", "bias"), not its children's.
    var ownParameters: [(name: String, parameter: Parameter)] { get }
    /// This module's own work buffers, not its children's.
    var ownBuffers: [WorkBuffer] { get }
    /// The pass a child sees when this module sees `shape` (BERT's pooler sees one row per
    /// sequence); the same shape unless said.
    func shape(ofChild name: String, in shape: PassShape) -> PassShape
    /// Makes this module use `other`'s own parameters (the same objects, not copies): `other`
    /// is a module of the same type and configuration at the same place of another instance of
    /// the model (a replica: one set of weights, two runs). A module with parameters of its own
    /// implements it; the default refuses to be called on one.
    func shareWeights(of other: any Module)
}

extension Module {
    public var children: [(name: String, module: any Module)] { [] }
    public var ownParameters: [(name: String, parameter: Parameter)] { [] }
    public var ownBuffers: [WorkBuffer] { [] }
    public func shape(ofChild name: String, in shape: PassShape) -> PassShape { shape }
    public func shareWeights(of other: any Module) {
        precondition(ownParameters.isEmpty, "\(type(of: self)) has parameters but does not share them")
    }

    /// Every module of the tree, this one first ("" is its path), depth first in declaration order.
    public func namedModules(prefix: String = "") -> [(path: String, module: any Module)] {
        var result: [(path: String, module: any Module)] = []
        func visit(_ module: any Module, _ path: String) {
            result.append((path, module))
            for (name, child) in module.children { visit(child, path.isEmpty ? name : path + "." + name) }
        }
        visit(self, prefix)
        return result
    }

    /// Every parameter of the tree by its path (`model.layers.0.self_attn.q_proj.weight`); a
    /// parameter reached twice (a tied LM head) is listed once, at its first path.
    public var treeParameters: [(name: String, parameter: Parameter)] {
        var seen = Set<ObjectIdentifier>()
        var result: [(name: String, parameter: Parameter)] = []
        for (path, module) in namedModules() {
            for (name, p) in module.ownParameters where seen.insert(ObjectIdentifier(p)).inserted {
                result.append((path.isEmpty ? name : path + "." + name, p))
            }
        }
        return result
    }

    /// The modules of the tree of type `T`, with their paths, in tree order.
    public func modules<T>(of type: T.Type) -> [(path: String, module: T)] {
        namedModules().compactMap { path, module in (module as? T).map { (path, $0) } }
    }

    /// The work buffers of the whole subtree, in tree order.
    public var treeBuffers: [WorkBuffer] { namedModules().flatMap { $0.module.ownBuffers } }

    /// Every module of the subtree with the pass shape it sees when this one sees `shape`.
    public func modulesWithShapes(_ shape: PassShape) -> [(module: any Module, shape: PassShape)] {
        var result: [(module: any Module, shape: PassShape)] = []
        func visit(_ module: any Module, _ shape: PassShape) {
            result.append((module, shape))
            for (name, child) in module.children { visit(child, module.shape(ofChild: name, in: shape)) }
        }
        visit(self, shape)
        return result
    }

    /// Elements the subtree's buffers (of `roles`) hold after a training step over `shape`.
    public func bufferElements(_ shape: PassShape, roles: Set<WorkBuffer.Role> = [.activation, .gradient, .retained]) -> Int {
        modulesWithShapes(shape).reduce(0) { total, entry in
            total + entry.module.ownBuffers.reduce(0) { roles.contains($1.role) ? $0 + $1.elements(entry.shape) : $0 }
        }
    }

    /// Makes every module of this tree use the parameters of the module at the same path in
    /// `other`, a tree of the same structure (see `shareWeights(of:)`).
    public func shareTreeWeights(of other: any Module) {
        let mine = namedModules(), theirs = other.namedModules()
        precondition(mine.map(\.path) == theirs.map(\.path), "shared weights need trees of the same structure")
        for (m, o) in zip(mine, theirs) {
            precondition(type(of: m.module) == type(of: o.module), "\(m.path): \(type(of: m.module)) and \(type(of: o.module))")
            m.module.shareWeights(of: o.module)
        }
    }

    /// The subtree's buffers of one role, in tree order (what `BufferPool` lends).
    public func buffers(_ role: WorkBuffer.Role) -> [Tensor] { treeBuffers.filter { $0.role == role }.map(\.tensor) }
}

/// A module that is only a weight at a path, used through products the model makes itself: an LM
/// head ([V, C], `lm_head.weight`), which may be the embedding's own parameter (tied, then listed
/// once, at the embedding's path).
public final class WeightModule: Module {
    public private(set) var weight: Parameter

    public init(_ weight: Parameter) { self.weight = weight }

    public var ownParameters: [(name: String, parameter: Parameter)] { [("weight", weight)] }

    public func shareWeights(of other: any Module) {
        guard let o = other as? WeightModule else { preconditionFailure("\(type(of: other)) is not a WeightModule") }
        weight = o.weight
    }
}
