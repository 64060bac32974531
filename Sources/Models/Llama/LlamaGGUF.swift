import Foundation
import Formats
import Kernels

/// Loading llama.cpp's GGUF files into the Hugging Face–layout Llama assembly.
extension ModelLoader {
    /// Llama's Hugging Face ↔ GGUF tensor names (llama.cpp's `LLM_ARCH_LLAMA` tensors).
    public static let llamaTensorNames = GGUFTensorNames(
        global: ["model.embed_tokens.weight": "token_embd.weight", "model.norm.weight": "output_norm.weight", "lm_head.weight": "output.weight"],
        block: ["input_layernorm.weight": "attn_norm.weight", "post_attention_layernorm.weight": "ffn_norm.weight",
                "self_attn.q_proj.weight": "attn_q.weight", "self_attn.k_proj.weight": "attn_k.weight",
                "self_attn.v_proj.weight": "attn_v.weight", "self_attn.o_proj.weight": "attn_output.weight",
                "mlp.gate_proj.weight": "ffn_gate.weight", "mlp.up_proj.weight": "ffn_up.weight", "mlp.down_proj.weight": "ffn_down.weight"])

    /// The Llama configuration a GGUF file's `llama.*` metadata describes.
    public static func llamaConfiguration(_ gguf: GGUFFile, path: String) throws(ModelError) -> LlamaConfiguration {
        func value(_ key: String) -> GGUFValue? { gguf.metadata["llama." + key] }
        func required(_ key: String) throws(ModelError) -> Int {
            guard let v = value(key)?.int else { throw .invalidFile(path: path, reason: "missing metadata llama.\(key)") }
            return v
        }
        let heads = try required("attention.head_count")
        let hidden = try required("embedding_length")
        let vocabulary = value("vocab_size")?.int ?? gguf.metadata["tokenizer.ggml.tokens"]?.array?.count
        guard let vocabulary else { throw .invalidFile(path: path, reason: "no llama.vocab_size and no tokenizer.ggml.tokens") }
        if let scaling = value("rope.scaling.type")?.string, scaling != "none" {
            throw .unsupportedArchitecture("rope scaling '\(scaling)' in \(path)")
        }
        let tied = !gguf.tensorInfos.contains { $0.name == "output.weight" }
        return try LlamaConfiguration(
            vocabSize: vocabulary, hiddenSize: hidden, intermediateSize: try required("feed_forward_length"),
            numHiddenLayers: try required("block_count"), numAttentionHeads: heads,
            numKeyValueHeads: value("attention.head_count_kv")?.int ?? heads,
            headDim: value("rope.dimension_count")?.int ?? value("attention.key_length")?.int,
            rmsNormEps: Float(value("attention.layer_norm_rms_epsilon")?.double ?? 1e-5),
            ropeTheta: Float(value("rope.freq_base")?.double ?? 10000),
            maxPositionEmbeddings: value("context_length")?.int ?? 2048, tieWordEmbeddings: tied)
    }

    /// Loads a GGUF Llama, dequantising every tensor to Float32 (or packing it, with `frozen`) and
    /// undoing llama.cpp's Q/K row permutation, so the model is in Hugging Face layout and PEFT
    /// adapters apply unchanged.
    static func loadLlama(_ gguf: GGUFFile, url: URL, frozen: FrozenPrecision) throws(ModelError) -> (LlamaForCausalLM, LoadReport) {
        let config = try llamaConfiguration(gguf, path: url.path)
        // Tensor sizes are bounded by the file (GGUFFile checked them), so this sum cannot overflow.
        let fileValues = gguf.tensorInfos.reduce(0) { $0 + $1.elementCount }
        try checkFileHoldsWeights(described: config.matrixParameterCount, fileValues: fileValues, path: url.path)
        let model = try LlamaForCausalLM(config)
        let names = llamaTensorNames
        let storedTypes = try loadGGUFWeights(gguf, url: url, into: model, frozen: frozen, hfName: names.huggingFace,
                                              ggufName: names.gguf) { name, rows in
            if name.hasSuffix("self_attn.q_proj.weight") { return rotaryRowOrder(rows: rows, heads: config.numAttentionHeads) }
            if name.hasSuffix("self_attn.k_proj.weight") { return rotaryRowOrder(rows: rows, heads: config.numKeyValueHeads) }
            return nil
        }
        return (model, LoadReport(source: url.path, storedTypes: storedTypes, newlyInitialized: [], metadata: [:]))
    }

    /// llama.cpp's converter permutes the rows of Wq and Wk within each head, from Hugging Face's
    /// "rotate half" pairing (i, i + D/2) to interleaved pairs (2i, 2i + 1):
    /// GGUF row h·D + 2j + k  holds  HF row h·D + k·D/2 + j  (k ∈ {0, 1}, j < D/2).
    /// This puts them back.
    public static func unpermuteRotaryRows(_ w: Tensor, heads: Int) -> Tensor {
        reorderRows(w, rotaryRowOrder(rows: w.shape[0], heads: heads))
    }

    /// llama.cpp's Q/K row permutation as a row map: Hugging Face row `i` is GGUF row `rowOrder(i)`
    /// (see `unpermuteRotaryRows`).
    static func rotaryRowOrder(rows: Int, heads: Int) -> (Int) -> Int {
        let d = rows / heads, half = d / 2
        return { i in
            let h = i / d, within = i % d, k = within / half, j = within % half
            return h * d + 2 * j + k
        }
    }
}
