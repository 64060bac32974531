#if canImport(Glibc)
import Glibc
#endif
import Kernels
import Layers

/// A causal language model as the commands that run one see it: cached forward passes over one
/// or several sequences, scoring and generation (the last two written once, here, for every model).
public protocol CausalLanguageModel: AnyObject {
    var vocabularySize: Int { get }
    /// A cache for one sequence of up to `capacity` positions, each layer's the kind its
    /// attention needs.
    func makeCache(capacity: Int) -> KVCache
    /// One pass over several sequences at once: each step's tokens run after what its cache holds
    /// and join it. Returns logits for every new row (`allLogits`, [Σ T, V], in step order) or
    /// for each step's last row ([steps, V]).
    func forwardCached(_ steps: [CachedStep], adapters: AdapterSelection, allLogits: Bool) throws(ModelError) -> Tensor
    /// `log p(ids[i+1] | ids[0...i])` for every i (length ids.count − 1), computed in Double.
    func tokenLogProbabilities(_ ids: [Int]) throws(ModelError) -> [Double]
}

/// One sequence to generate in a batch (`generate(_:cache:)`).
public struct GenerationRequest: Sendable {
    public var prompt: [Int]
    public var maxTokens: Int
    /// The adapter its rows use; nil = the base model.
    public var adapter: String?
    public var sampler: Sampler
    public var stopTokens: Set<Int>

    public init(prompt: [Int], maxTokens: Int, adapter: String? = nil, sampler: Sampler = Sampler(), stopTokens: Set<Int> = []) {
        self.prompt = prompt
        self.maxTokens = maxTokens
        self.adapter = adapter
        self.sampler = sampler
        self.stopTokens = stopTokens
    }
}

extension CausalLanguageModel {
    /// One sequence's tokens after what `cache` holds, with the active adapters.
    public func forwardCached(_ tokens: [Int], cache: KVCache, allLogits: Bool = false) throws(ModelError) -> Tensor {
        try forwardCached([CachedStep(cache: cache, tokens: tokens)], adapters: .active, allLogits: allLogits)
    }

    /// `slots` sequence caches of up to `capacity` positions each, made as `makeCache` makes them.
    public func makeMultiSequenceCache(slots: Int, capacity: Int) -> MultiSequenceKVCache {
        MultiSequenceKVCache(slots: slots, capacity: capacity) { self.makeCache(capacity: $0) }
    }

    public func tokenLogProbabilities(_ ids: [Int]) throws(ModelError) -> [Double] {
        guard ids.count >= 2 else { return [] }
        let cache = makeCache(capacity: ids.count)
        let logits = try forwardCached(ids, cache: cache, allLogits: true)
        let v = vocabularySize
        return (0..<(ids.count - 1)).map { i in logProbability(of: ids[i + 1], in: logits.data + i * v, count: v) }
    }

    /// Generates up to `maxTokens` tokens after `prompt`; stops after an end-of-sequence token
    /// (which is included, as transformers' `generate` returns it). `onToken` sees each token
    /// as it is produced.
    public func generate(prompt: [Int], maxTokens: Int, sampler: inout Sampler, stopTokens: Set<Int>,
                         onToken: (Int) -> Void = { _ in }) throws(ModelError) -> [Int] {
        guard maxTokens > 0 else { return [] }
        let cache = makeCache(capacity: prompt.count + maxTokens)
        var logits = try forwardCached(prompt, cache: cache, allLogits: false)
        var generated: [Int] = []
        while true {
            let next = sampler.sample(logits.data, count: vocabularySize)
            generated.append(next)
            onToken(next)
            if stopTokens.contains(next) || generated.count == maxTokens { break }
            logits = try forwardCached([next], cache: cache, allLogits: false)
        }
        return generated
    }

    /// Generates for several requests at once with continuous batching: up to `cache.slotCount`
    /// sequences run together, each pass feeding the prompts of newly admitted requests and the
    /// last token of every running one (each row with its request's adapter); a finished request
    /// frees its slot for the next waiting one. Returns each request's tokens, in request order;
    /// `onToken(request, token)` sees them as they come. Throws before anything runs unless every
    /// request has a prompt and fits a slot.
    public func generate(_ requests: [GenerationRequest], cache: MultiSequenceKVCache,
                         onToken: (_ request: Int, _ token: Int) -> Void = { _, _ in }) throws(ModelError) -> [[Int]] {
        for (i, r) in requests.enumerated() {
            guard !r.prompt.isEmpty else { throw .invalidInput("request \(i) has an empty prompt") }
            guard r.maxTokens >= 0, r.prompt.count + r.maxTokens <= cache.capacity else {
                throw .invalidInput("request \(i): \(r.prompt.count) prompt + \(r.maxTokens) new tokens exceed a slot's \(cache.capacity) positions")
            }
        }
        var waiting = requests.indices.filter { requests[$0].maxTokens > 0 }[...]
        var running: [RunningSequence] = []
        var results = [[Int]](repeating: [], count: requests.count)
        defer { for r in running { cache.close(r.slot) } }
        let v = vocabularySize
        while !waiting.isEmpty || !running.isEmpty {
            while cache.freeSlots > 0, let r = waiting.popFirst() {
                let slot = try cache.open()
                running.append(RunningSequence(request: r, slot: slot, cache: try cache.cache(slot), feed: requests[r].prompt, sampler: requests[r].sampler))
            }
            let steps = running.map { CachedStep(cache: $0.cache, tokens: $0.feed, adapter: requests[$0.request].adapter) }
            let logits = try forwardCached(steps, adapters: .perStep, allLogits: false)
            var still: [RunningSequence] = []
            for (i, var live) in running.enumerated() {
                let next = live.sampler.sample(logits.data + i * v, count: v)
                results[live.request].append(next)
                onToken(live.request, next)
                let request = requests[live.request]
                if request.stopTokens.contains(next) || results[live.request].count == request.maxTokens {
                    cache.close(live.slot)
                } else {
                    live.feed = [next]
                    still.append(live)
                }
            }
            running = still
        }
        return results
    }
}

/// A request being generated by `generate(_:cache:)`: its slot and the tokens to feed next.
private struct RunningSequence {
    let request: Int
    let slot: Int
    let cache: KVCache
    var feed: [Int]
    var sampler: Sampler
}

/// log softmax(row)[target], in Double.
package func logProbability(of target: Int, in row: UnsafePointer<Float>, count v: Int) -> Double {
    var maxValue = -Float.infinity
    for j in 0..<v { maxValue = max(maxValue, row[j]) }
    var sum = 0.0
    for j in 0..<v { sum += exp(Double(row[j] - maxValue)) }
    return Double(row[target] - maxValue) - log(sum)
}

/// Chooses the next token from logits: greedy at temperature 0, else sampling with optional
/// top-k and top-p (nucleus) filtering, reproducible from a seed.
public struct Sampler: Sendable {
    public var temperature: Float
    public var topK: Int?
    public var topP: Float?
    public var generator: SplitMix64

    public init(temperature: Float = 0, topK: Int? = nil, topP: Float? = nil, seed: UInt64 = 0) {
        self.temperature = temperature
        self.topK = topK
        self.topP = topP
        generator = SplitMix64(seed: seed)
    }

    public mutating func sample(_ logits: UnsafePointer<Float>, count: Int) -> Int {
        if temperature <= 0 {
            var best = 0   // first maximum, as torch.argmax
            for j in 1..<count where logits[j] > logits[best] { best = j }
            return best
        }
        // Candidates in descending order of logit, cut by top-k.
        var order = Array(0..<count)
        order.sort { logits[$0] > logits[$1] || (logits[$0] == logits[$1] && $0 < $1) }
        if let k = topK, k > 0, k < order.count { order.removeSubrange(k...) }
        let maxValue = Double(logits[order[0]])
        var probabilities = order.map { exp((Double(logits[$0]) - maxValue) / Double(temperature)) }
        let total = probabilities.reduce(0, +)
        probabilities = probabilities.map { $0 / total }
        if let p = topP, p < 1 {
            // Keep the smallest prefix whose mass reaches p (at least one token).
            var cumulative = 0.0, keep = 0
            while keep < probabilities.count {
                cumulative += probabilities[keep]
                keep += 1
                if cumulative >= Double(p) { break }
            }
            order.removeSubrange(keep...)
            probabilities.removeSubrange(keep...)
            let kept = probabilities.reduce(0, +)
            probabilities = probabilities.map { $0 / kept }
        }
        let u = Double(generator.next() >> 11) * (1.0 / 9_007_199_254_740_992.0)
        var cumulative = 0.0
        for (i, p) in probabilities.enumerated() {
            cumulative += p
            if u < cumulative { return order[i] }
        }
        return order[order.count - 1]
    }
}
