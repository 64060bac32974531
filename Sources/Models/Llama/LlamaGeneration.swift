import Kernels
import Layers

/// Llama as a `CausalLanguageModel`: its cached passes are `forwardCached(_:adapters:allLogits:)`,
/// the same blocks as training over a standard KV cache on every layer.
extension LlamaForCausalLM: CausalLanguageModel {
    public var vocabularySize: Int { config.vocabSize }

    public func makeCache(capacity: Int) -> KVCache {
        KVCache(layers: config.numHiddenLayers, width: config.numKeyValueHeads * config.headDim, capacity: capacity)
    }
}
