#if canImport(Glibc)
import Glibc
#endif
import Kernels
import Layers

/// Keys and values of every layer for one sequence, so each new token costs one position of
/// work instead of the whole prefix. Shared by the causal language models (Llama, Gemma 3).
public final class KVCache {
    public let capacity: Int
    public private(set) var length = 0
    package let keys: [Tensor]     // per layer [capacity, KV·D]
    package let values: [Tensor]
    package let scores = Tensor(shape: [0])
    package let context = Tensor(shape: [0])
    package let hidden = Tensor(shape: [0])
    package let output = Tensor(shape: [0])

    /// `width` = key/value heads × head dimension.
    public init(layers: Int, width: Int, capacity: Int) {
        self.capacity = capacity
        keys = (0..<layers).map { _ in Tensor(shape: [capacity, width]) }
        values = (0..<layers).map { _ in Tensor(shape: [capacity, width]) }
    }

    public func reset() { length = 0 }
    package func advance(by n: Int) { length += n }

    /// Appends one layer's new keys and values [T, width] after what the cache holds.
    package func store(layer: Int, keys k: Tensor, values v: Tensor) {
        let width = k.rowLength, start = length
        (keys[layer].data + start * width).update(from: k.data, count: k.count)
        (values[layer].data + start * width).update(from: v.data, count: v.count)
    }

    /// The start of a cached step for one sequence: throws unless `tokens` fit and lie in the
    /// vocabulary; returns their positions (after what the cache holds).
    package func beginStep(_ tokens: [Int], vocabularySize: Int) throws(ModelError) -> [Int] {
        try checkRoom(for: tokens.count)
        try TokenBatch(batch: 1, length: tokens.count, inputIds: tokens).validate(vocabularySize: vocabularySize, maxPositions: nil)
        return Array(length..<(length + tokens.count))
    }

    /// The end of a cached step: the new tokens join the cache; the final hidden states `h` [T, C]
    /// go through `head` [V, C] for every row (`allLogits`) or the last, into `output`.
    package func finishStep(_ h: Tensor, head: Parameter, allLogits: Bool, into output: Tensor) -> Tensor {
        let tokens = h.rowCount, c = h.rowLength, v = head.shape[0]
        advance(by: tokens)
        let rows = allLogits ? tokens : 1
        output.resize([rows, v])
        head.multiplyTransposed(h.data + (tokens - rows) * c, ldx: c, rows: rows, into: output.data, ldy: v)
        return output
    }

    /// Throws unless `count` more tokens fit.
    package func checkRoom(for count: Int) throws(ModelError) {
        guard count > 0 else { throw .invalidInput("no tokens to run") }
        guard length + count <= capacity else { throw .invalidInput("\(length + count) tokens exceed the cache's \(capacity)") }
    }
}


/// A causal language model as the commands that run one see it: cached forward passes, scoring
/// and generation (the last two written once, here, for every model).
public protocol CausalLanguageModel: AnyObject {
    var vocabularySize: Int { get }
    func makeCache(capacity: Int) -> KVCache
    /// Runs `tokens` of one sequence after what the cache holds and appends them to it. Returns
    /// logits [T, V] for every new token when `allLogits`, else [1, V] for the last one.
    func forwardCached(_ tokens: [Int], cache: KVCache, allLogits: Bool) throws(ModelError) -> Tensor
    /// `log p(ids[i+1] | ids[0...i])` for every i (length ids.count − 1), computed in Double.
    func tokenLogProbabilities(_ ids: [Int]) throws(ModelError) -> [Double]
}

extension CausalLanguageModel {
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
