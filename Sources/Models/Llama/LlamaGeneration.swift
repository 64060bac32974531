import Kernels
import Layers

/// Llama's cached decoding: the blocks over a KV cache, one sequence at a time.
extension LlamaAttention {
    func forwardCached(_ x: Tensor, layer: Int, cache: KVCache, positions: [Int]) -> Tensor {
        let q = qProj.forward(x), k = kProj.forward(x), v = vProj.forward(x)
        rope.apply(q, positions: positions)
        rope.apply(k, positions: positions)
        let start = cache.length
        cache.store(layer: layer, keys: k, values: v)
        cache.context.resize(q.shape)
        cachedCausalAttention(q: q, keys: cache.keys[layer].data, values: cache.values[layer].data, offset: start,
                              heads: attention.heads, kvHeads: attention.kvHeads, headDimension: attention.headDimension,
                              scores: cache.scores, into: cache.context)
        return oProj.forward(cache.context)
    }
}

extension LlamaDecoderLayer {
    func forwardCached(_ x: Tensor, layer: Int, cache: KVCache, positions: [Int]) -> Tensor {
        let a = selfAttn.forwardCached(inputLayernorm.forward(x), layer: layer, cache: cache, positions: positions)
        add(x, a, into: hidden)
        add(hidden, mlp.forward(postAttentionLayernorm.forward(hidden)), into: output)
        return output
    }
}

extension LlamaForCausalLM: CausalLanguageModel {
    public var vocabularySize: Int { config.vocabSize }

    public func makeCache(capacity: Int) -> KVCache {
        KVCache(layers: config.numHiddenLayers, width: config.numKeyValueHeads * config.headDim, capacity: capacity)
    }

    public func forwardCached(_ tokens: [Int], cache: KVCache, allLogits: Bool = false) throws(ModelError) -> Tensor {
        let positions = try cache.beginStep(tokens, vocabularySize: config.vocabSize)
        var x = embedTokens.forward(ids: tokens, shape: [tokens.count])
        for (i, layer) in layers.enumerated() { x = layer.forwardCached(x, layer: i, cache: cache, positions: positions) }
        return cache.finishStep(norm.forward(x), head: lmHead, allLogits: allLogits, into: logitsOutput)
    }
}
