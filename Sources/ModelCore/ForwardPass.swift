import Kernels
import Layers
import LoRA

/// One sequence's part of a cached forward pass: its cache, the new tokens after what the cache
/// holds, and (with `AdapterSelection.perStep`) the adapter its rows use, nil = the base model.
public struct CachedStep {
    public var cache: KVCache
    public var tokens: [Int]
    public var adapter: String?

    public init(cache: KVCache, tokens: [Int], adapter: String? = nil) {
        self.cache = cache
        self.tokens = tokens
        self.adapter = adapter
    }
}

/// Which adapters a cached pass applies: the model's active ones on every row, or each step's own.
public enum AdapterSelection: Sendable {
    case active
    case perStep
}

/// What one forward pass of a decoder reads besides the weights: where each row's keys and
/// values come from, the rows' positions and the adapter of each row. Training, scoring and
/// cached decoding run the same block code; only this differs.
///
///     batch:  rows [B·T], self-attention within each sequence of the batch (causal, padding)
///     cached: rows [Σ Tₛ] of several sequences, each attending over its own KV cache
package final class ForwardPass {
    package enum Keys {
        case batch(batch: Int, length: Int, padding: [Int]?)
        case cached(steps: [CachedStep], rowStarts: [Int])
    }

    package let keys: Keys
    /// The absolute position of every row.
    package let positions: [Int]
    /// One adapter per row, or nil for the model's active adapters.
    package let rowAdapters: RowAdapters?
    /// The token of every row.
    package let tokens: [Int]
    /// Work buffers of a cached pass, the model instance's (a batch pass uses none).
    private let buffers: CachedPassBuffers?

    package var rows: Int { tokens.count }

    /// A training or scoring pass over a batch; `rowAdapters` names each sequence's adapter.
    package init(_ input: TokenBatch, vocabularySize: Int, sequenceAdapters: [String?]? = nil,
                 model: (any AdaptableModel)? = nil) throws(ModelError) {
        try input.validate(vocabularySize: vocabularySize, maxPositions: nil)
        keys = .batch(batch: input.batch, length: input.length, padding: input.attentionMask)
        buffers = nil
        positions = input.positions
        tokens = input.inputIds
        if let sequenceAdapters {
            guard sequenceAdapters.count == input.batch else {
                throw .invalidInput("\(sequenceAdapters.count) adapter names for \(input.batch) sequences")
            }
            try Self.check(sequenceAdapters, model: model)
            rowAdapters = RowAdapters(sequenceAdapters.flatMap { Array(repeating: $0, count: input.length) })
        } else {
            rowAdapters = nil
        }
    }

    /// A cached pass: each step's tokens after what its cache holds. Throws, before anything
    /// runs, unless every step has tokens in the vocabulary that fit its cache, no cache appears
    /// twice, and (per step) every adapter named exists and the model is not merged.
    package init(_ steps: [CachedStep], adapters: AdapterSelection, vocabularySize: Int, model: any AdaptableModel,
                 buffers: CachedPassBuffers) throws(ModelError) {
        guard !steps.isEmpty else { throw .invalidInput("no sequences to run") }
        var seen = Set<ObjectIdentifier>()
        var positions: [Int] = [], tokens: [Int] = [], starts: [Int] = [], names: [String?] = []
        for step in steps {
            guard seen.insert(ObjectIdentifier(step.cache)).inserted else { throw .invalidInput("one cache appears twice in a pass") }
            try step.cache.checkRoom(for: step.tokens.count)
            try TokenBatch(batch: 1, length: step.tokens.count, inputIds: step.tokens).validate(vocabularySize: vocabularySize, maxPositions: nil)
            starts.append(tokens.count)
            positions += step.cache.length..<(step.cache.length + step.tokens.count)
            tokens += step.tokens
            names += Array(repeating: step.adapter, count: step.tokens.count)
        }
        keys = .cached(steps: steps, rowStarts: starts)
        self.buffers = buffers
        self.positions = positions
        self.tokens = tokens
        switch adapters {
        case .active:
            rowAdapters = nil
        case .perStep:
            try Self.check(steps.map(\.adapter), model: model)
            rowAdapters = RowAdapters(names)
        }
    }

    private static func check(_ names: [String?], model: (any AdaptableModel)?) throws(ModelError) {
        guard let model else { throw .invalidInput("per-row adapters need an adaptable model") }
        let named = Set(names.compactMap { $0 })
        guard !named.isEmpty else { return }
        try model.requireUnmerged("per-row adapters")
        for name in named.sorted() {
            guard model.adapterRegistry.config(named: name) != nil else {
                let known = model.adapterRegistry.names
                throw .invalidInput("no adapter named '\(name)' is loaded (loaded: \(known.isEmpty ? "none" : known.joined(separator: ", ")))")
            }
            if !(model.adapterRegistry.savedModules[name] ?? [:]).isEmpty {
                throw .invalidInput("adapter '\(name)' replaces whole modules (modules_to_save), which one row cannot use alone")
            }
        }
    }

    /// The one self-attention of a decoder block for this pass. q [N, H·D] (rotated), k, v
    /// [N, KV·D]: within the batch (saved for the backward pass), or for a cached pass each
    /// step's rows appended to layer `layer` of its cache and attended over what it holds.
    package func selfAttention(_ attention: ScaledDotProductAttention, q: Tensor, k: Tensor, v: Tensor, layer: Int,
                               slidingWindow: Int?) -> Tensor {
        switch keys {
        case let .batch(batch, length, padding):
            let mask = AttentionMask(causal: true, keyPadding: padding, slidingWindow: slidingWindow)
            return attention.forward(q: q, k: k, v: v, batch: batch, length: length, mask: mask)
        case let .cached(steps, starts):
            guard let buffers else { preconditionFailure("a cached pass has its buffers") }
            let context = buffers.context, scores = buffers.scores
            let qWidth = q.rowLength, kvWidth = k.rowLength
            context.resize(q.shape)
            for (step, start) in zip(steps, starts) {
                let n = step.tokens.count, cache = step.cache.layers[layer]
                cache.append(keys: k.data + start * kvWidth, values: v.data + start * kvWidth, rows: n)
                let mask = AttentionMask(causal: true, slidingWindow: slidingWindow, queryOffset: cache.count - n)
                attention.attend(q: q.data + start * qWidth, queries: n, keys: cache.keys, values: cache.values, keyCount: cache.count,
                                 mask: mask, scores: scores, into: context.data + start * qWidth)
            }
            return context
        }
    }

    /// The end of a cached pass: every step's tokens join its cache, and the final hidden states
    /// `h` [N, C] go through `head` [V, C], for every row (`allLogits`) or each step's last row
    /// (in step order), into `output`.
    package func finish(_ h: Tensor, head: Parameter, allLogits: Bool, into output: Tensor) -> Tensor {
        guard case let .cached(steps, starts) = keys, let lastRows = buffers?.lastRows else { preconditionFailure("finish ends a cached pass") }
        for step in steps { step.cache.advance(by: step.tokens.count) }
        let c = h.rowLength, v = head.shape[0]
        if allLogits {
            output.resize([h.rowCount, v])
            head.multiplyTransposed(h.data, ldx: c, rows: h.rowCount, into: output.data, ldy: v)
            return output
        }
        lastRows.resize([steps.count, c])
        for (s, (step, start)) in zip(steps, starts).enumerated() {
            (lastRows.data + s * c).update(from: h.data + (start + step.tokens.count - 1) * c, count: c)
        }
        output.resize([steps.count, v])
        head.multiplyTransposed(lastRows.data, ldx: c, rows: steps.count, into: output.data, ldy: v)
        return output
    }
}

extension LoRALinear {
    /// This projection in a pass: the active adapters, or the pass's adapter per row.
    package func forward(_ x: Tensor, in pass: ForwardPass) -> Tensor { forward(x, rows: pass.rowAdapters) }
}

/// The work buffers of cached passes (attention scores, the attention context of the new rows,
/// each step's last hidden row), kept by a model instance so that decoding allocates nothing per
/// step; each replica has its own.
public final class CachedPassBuffers {
    let scores = Tensor(shape: [0])
    let context = Tensor(shape: [0])
    let lastRows = Tensor(shape: [0])
    public init() {}
}
