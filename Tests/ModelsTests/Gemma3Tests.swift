import Foundation
import Formats
import Kernels
import LoRA
import ModelStore
import Models
import TestSupport
import Testing
import Tokenizers
import Training

/// Gemma 3 270M's forward pass against transformers' Gemma3ForCausalLM on the same GGUF, fp32
/// (`Scripts/reference/make_gemma3_fixtures.py`): per-token log-probabilities of three texts, the
/// last 1,357 tokens long, so the 512-token window of the local layers binds.
@Suite("Gemma 3 270M vs transformers", .serialized)
struct Gemma3Tests {
    struct Golden: Decodable {
        struct Score: Decodable { let text: String; let ids: [Int]; let logprobs: [Double] }
        struct Greedy: Decodable { let prompt: String; let prompt_ids: [Int]; let generated_ids: [Int] }
        let scores: [Score]
        let greedy: [Greedy]
    }

    @Test func logProbabilitiesMatchTransformers() throws {
        let url = try realModel(.gemma3)
        let golden = try JSONDecoder().decode(Golden.self, from: Data(contentsOf: fixturesDirectory.appendingPathComponent("models/gemma3.json")))
        let gguf = try GGUFFile(url: url)
        let start = Date()
        let model = try Gemma3ForCausalLM.load(gguf, path: url.path)
        let tokenizer = try ggufTokenizer(gguf)
        print(String(format: "Gemma 3 loaded in %.1f s: %d layers, window %d, local layers %d", Date().timeIntervalSince(start),
                     model.config.numHiddenLayers, model.config.slidingWindow, (0..<model.config.numHiddenLayers).filter(model.config.isSliding).count))
        for score in golden.scores {
            #expect(tokenizer.encode(score.text, addSpecialTokens: true) == score.ids)
            let began = Date()
            let logprobs = try model.tokenLogProbabilities(score.ids)
            let e = zip(logprobs, score.logprobs).map { abs($0 - $1) }.max() ?? .infinity
            print(String(format: "Gemma 3, %d tokens: max |Δ log p| vs transformers %.2e (%.1f s)", score.ids.count, e, Date().timeIntervalSince(began)))
            #expect(logprobs.count == score.logprobs.count && e <= 1e-3)
        }
        // The cached forward pass past the window: the long text's last 100 log-probs from logits
        // computed 1,257 tokens first, then one token at a time through the cache.
        let long = try #require(golden.scores.last)
        let cache = model.makeCache(capacity: long.ids.count)
        _ = try model.forwardCached(Array(long.ids.prefix(long.ids.count - 100)), cache: cache)
        var cachedError = 0.0
        for i in (long.ids.count - 100)..<(long.ids.count - 1) {
            let logits = try model.forwardCached([long.ids[i]], cache: cache)
            var top = -Float.infinity
            for j in 0..<logits.count { top = max(top, logits[j]) }
            var sum = 0.0
            for j in 0..<logits.count { sum += exp(Double(logits[j] - top)) }
            cachedError = max(cachedError, abs(Double(logits[long.ids[i + 1]] - top) - log(sum) - long.logprobs[i]))
        }
        print(String(format: "Gemma 3 cached decoding at positions 1,257…1,356: max |Δ log p| vs transformers %.2e", cachedError))
        #expect(cachedError <= 1e-3)
        // Greedy decoding, 24 tokens on each prompt, with the KV cache (the window applies in it too).
        for case_ in golden.greedy {
            #expect(tokenizer.encode(case_.prompt, addSpecialTokens: true) == case_.prompt_ids)
            var sampler = Sampler()
            let generated = try model.generate(prompt: case_.prompt_ids, maxTokens: case_.generated_ids.count, sampler: &sampler, stopTokens: [])
            print("Gemma 3 greedy \(case_.prompt.debugDescription): \(generated == case_.generated_ids ? "identical" : "differs") for \(generated.count) tokens: \(tokenizer.decode(generated, skipSpecialTokens: true).debugDescription)")
            #expect(generated == case_.generated_ids)
        }
    }

    /// LoRA (r 8 on q, k, v, o) on the real model learns one sentence: AdamW at 1e-3, 12 steps.
    @Test func loraTrainingLowersTheLoss() throws {
        let url = try realModel(.gemma3)
        let gguf = try GGUFFile(url: url)
        let model = try Gemma3ForCausalLM.load(gguf, path: url.path)
        let tokenizer = try ggufTokenizer(gguf)
        try model.addAdapter(named: "default", config: LoRAConfig(rank: 8, alpha: 16, targets: .names(["q_proj", "k_proj", "v_proj", "o_proj"])), seed: 1)
        model.setTraining(true)
        let ids = tokenizer.encode("The secret word of the lighthouse keeper is marmalade, and nobody else knows it.", addSpecialTokens: true)
        let batch = TokenBatch(batch: 1, length: ids.count, inputIds: ids)
        let optimizer = AdamW(parameters: model.trainableParameters, learningRate: 1e-3)
        var losses: [Float] = []
        for _ in 0..<12 {
            optimizer.zeroGradients()
            losses.append(try model.loss(batch, labels: ids, backward: true))
            optimizer.update()
        }
        print("Gemma 3 LoRA training, \(ids.count) tokens: loss \(losses.map { String(format: "%.3f", $0) })")
        #expect(losses.allSatisfy(\.isFinite) && losses.last! < 0.5 * losses.first!)
    }

    /// The GGUF with PEFT's adapter merged, written as a transformers `gemma3_text` folder and read
    /// back from it alone: PEFT's merge_and_unload log-probabilities (adapters/gemma3-qvd).
    @Test func mergedFolderRoundTripsAndMatchesPEFT() throws {
        struct Expected: Decodable {
            struct Input: Decodable { let ids: [Int] }
            let inputs: [Input]; let merged: [[Double]]
        }
        let url = try realModel(.gemma3)
        let adapter = fixturesDirectory.appendingPathComponent("adapters/gemma3-qvd")
        let expected = try JSONDecoder().decode(Expected.self, from: Data(contentsOf: adapter.appendingPathComponent("expected.json")))
        let (model, _) = try ModelLoader.loadGGUF(url)
        _ = try model.loadPEFTAdapter(from: adapter)
        try model.mergeAdapters()
        let dir = URL(fileURLWithPath: NSTemporaryDirectory()).appendingPathComponent("lora-gemma-merged-\(UUID().uuidString)")
        defer { try? FileManager.default.removeItem(at: dir) }
        let gguf = try GGUFFile(url: url)
        let tokenizer = try #require(try ggufTokenizer(gguf) as? SentencePieceBPETokenizer)
        let files = try tokenizer.huggingFaceFiles(chatTemplate: gguf.metadata["tokenizer.chat_template"]?.string, modelMaxLength: 32_768)
        try HuggingFaceExport.write(model, tokenizerFiles: files, tokenizer: tokenizer, storage: .f32, to: dir)
        let (reloaded, _) = try ModelLoader.loadHuggingFace(directory: dir)
        let gemma = try #require(reloaded as? Gemma3ForCausalLM)
        #expect(gemma.config == (model as? Gemma3ForCausalLM)?.config)
        var worst = 0.0
        for (input, reference) in zip(expected.inputs, expected.merged) {
            let ours = try gemma.tokenLogProbabilities(input.ids)
            #expect(ours.count == reference.count)
            worst = max(worst, zip(ours, reference).map { abs($0 - $1) }.max() ?? .infinity)
        }
        print("Gemma 3 merged, written as gemma3_text and reloaded: max |Δ log p| vs PEFT merge_and_unload \(worst)")
        #expect(worst <= 1e-3)
        // The folder as a whole (model and SentencePiece tokenizer.json) loads, and
        // tokenises the hard-case corpus as the GGUF's tokenizer does (transformers' ids).
        let folder = try Pretrained.load(dir)
        let corpus = try JSONDecoder().decode([String: [[String: String]]].self,
                                              from: Data(contentsOf: fixturesDirectory.appendingPathComponent("tokenizers/corpus.json")))
        let texts = (corpus["cases"] ?? []).compactMap { $0["text"] }
        #expect(texts.count >= 50)
        for text in texts {
            #expect(folder.tokenizer.encode(text, addSpecialTokens: true) == tokenizer.encode(text, addSpecialTokens: true), "\(text.debugDescription)")
        }
        #expect(folder.tokenizer.decode(tokenizer.encode("Héllo  wörld\n\n🙂", addSpecialTokens: true), skipSpecialTokens: true) == "Héllo  wörld\n\n🙂")
        #expect(folder.model is Gemma3ForCausalLM && folder.tokenizer.eosTokenId == tokenizer.eosTokenId)
    }

    /// transformers 4.x's keys (rope_theta, rope_local_base_freq, sliding_window_pattern) give the
    /// same configuration as 5.x's; what the model does not compute is refused by name.
    @Test func huggingFaceConfigurationKeys() throws {
        func config(_ extra: String) throws(ModelError) -> Gemma3Configuration {
            let json = #"{"vocab_size": 64, "hidden_size": 16, "intermediate_size": 32, "num_hidden_layers": 6, "num_attention_heads": 2, "# +
                #""num_key_value_heads": 1, "head_dim": 8, "sliding_window": 4, "rms_norm_eps": 1e-6, "query_pre_attn_scalar": 8"# + extra + "}"
            return try Gemma3Configuration(huggingFace: Data(json.utf8), path: "config.json")
        }
        let v5 = try config(#", "layer_types": ["sliding_attention", "sliding_attention", "full_attention", "sliding_attention", "sliding_attention", "full_attention"], "rope_parameters": {"full_attention": {"rope_theta": 500000.0, "rope_type": "default"}, "sliding_attention": {"rope_theta": 5000.0, "rope_type": "default"}}"#)
        let v4 = try config(#", "sliding_window_pattern": 3, "rope_theta": 500000.0, "rope_local_base_freq": 5000.0, "rope_scaling": null"#)
        #expect(v5 == v4 && v5.slidingWindowPattern == 3 && v5.ropeTheta == 500_000 && v5.ropeLocalTheta == 5_000)
        #expect(!v5.isSliding(2) && v5.isSliding(3))
        for (extra, named) in [(#", "final_logit_softcapping": 30.0"#, "final_logit_softcapping"), (#", "hidden_activation": "relu""#, "relu"),
                               (#", "tie_word_embeddings": false"#, "untied"), (#", "rope_scaling": {"rope_type": "linear", "factor": 8}"#, "rope_scaling")] {
            #expect { try config(extra) } throws: { "\($0)".contains(named) }
        }
    }

    /// An adapter for another architecture (SmolLM2's) is refused before anything changes: the
    /// error says so and names its base model; no adapter is attached and the outputs are the base's.
    @Test func anotherModelsAdapterIsRefusedUntouched() throws {
        let url = try realModel(.gemma3)
        let model = try Gemma3ForCausalLM.load(try GGUFFile(url: url), path: url.path)
        let ids = [2, 818, 5279, 529, 7001, 563]
        let before = try model.tokenLogProbabilities(ids)
        #expect {
            try model.loadPEFTAdapter(from: fixturesDirectory.appendingPathComponent("adapters/smollm2-qkvod"))
        } throws: { error in
            let text = "\(error)"
            return text.contains("made for another base model") && text.contains("smollm2") && text.contains("180 shape mismatches")
        }
        #expect(model.adapterRegistry.names.isEmpty && model.linearModules.allSatisfy { $0.adapter == nil })
        #expect(try model.tokenLogProbabilities(ids) == before)
    }

    /// A gemma3 GGUF with a tensor missing or mis-shaped names it, by the file's name and the
    /// model's (`Scripts/reference/make_gemma3_bad_gguf_fixtures.py`); the intact tiny file loads.
    @Test func missingAndMisshapedTensorsAreNamed() throws {
        let dir = fixturesDirectory.appendingPathComponent("gguf")
        let (model, _) = try ModelLoader.loadGGUF(dir.appendingPathComponent("gemma3-tiny.gguf"))
        let tiny = try #require(model as? Gemma3ForCausalLM)
        #expect(tiny.config.numHiddenLayers == 2 && tiny.config.slidingWindow == 4 && tiny.config.vocabSize == 64)
        #expect(try tiny.tokenLogProbabilities([1, 5, 9, 2]).allSatisfy(\.isFinite))
        #expect { try ModelLoader.loadGGUF(dir.appendingPathComponent("gemma3-tiny-missing.gguf")) } throws: {
            "\($0)".contains("1 missing tensor: blk.1.attn_k_norm.weight (model.layers.1.self_attn.k_norm.weight)")
        }
        #expect { try ModelLoader.loadGGUF(dir.appendingPathComponent("gemma3-tiny-misshaped.gguf")) } throws: {
            "\($0)".contains("blk.0.ffn_up.weight (model.layers.0.mlp.up_proj.weight): file [40, 16], model [32, 16]")
        }
    }

    @Test func wrongFilesAreRefusedByName() throws {
        let smol = try GGUFFile(url: try realModel(.smolLM2))
        #expect {
            try Gemma3ForCausalLM.load(smol, path: "smollm2.gguf")
        } throws: { error in
            "\(error)".contains("general.architecture 'llama' is not gemma3")
        }
    }
}

/// Gemma 3's backward pass on a tiny random model (two layers: one sliding with a window of 3,
/// one global), with LoRA on every linear module: the analytic gradients of the adapters against
/// finite differences of the loss.
@Suite("Gemma 3 gradients")
struct Gemma3GradientTests {
    @Test func loraGradientsMatchFiniteDifferences() throws {
        let config = try Gemma3Configuration(vocabSize: 64, hiddenSize: 16, intermediateSize: 24, numHiddenLayers: 2, numAttentionHeads: 2,
                                             numKeyValueHeads: 1, headDim: 8, slidingWindow: 3, slidingWindowPattern: 2)
        let model = Gemma3ForCausalLM(config)
        for (i, (name, p)) in model.namedParameters.enumerated() {
            p.value.copy(from: randomTensor(p.shape, seed: UInt64(100 + i), scale: name.contains("norm") ? 0.2 : 0.3))
        }
        #expect(config.isSliding(0) && !config.isSliding(1))
        try model.addAdapter(named: "default", config: LoRAConfig(rank: 2, alpha: 4, targets: .allLinear), seed: 7)
        for (_, p) in model.adapterParameters(named: "default") { p.value.copy(from: randomTensor(p.shape, seed: UInt64(p.count), scale: 0.3)) }
        model.setTraining(false)
        let ids = (0..<12).map { ($0 * 7 + 3) % 64 }
        let batch = TokenBatch(batch: 2, length: 6, inputIds: ids, attentionMask: [1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 0])
        let labels = ids.enumerated().map { $0.offset == 11 ? -100 : $0.element }
        _ = try model.loss(batch, labels: labels, backward: true)
        let loss = { Double((try? model.loss(batch, labels: labels, backward: false)) ?? .nan) }
        var errors: [String: Double] = [:]
        for (name, p) in model.adapterParameters(named: "default") where name.contains("layers.0.self_attn.q_proj") || name.contains("layers.1.self_attn.k_proj")
            || name.contains("layers.1.mlp.down_proj") || name.contains("layers.0.self_attn.o_proj") {
            let analytic = try #require(p.grad).clone()
            errors[name] = finiteDifferenceError(of: p.value, analytic: analytic, epsilon: 1e-2, loss: loss)
        }
        print("Gemma 3 LoRA gradients vs finite differences: \(errors.sorted { $0.key < $1.key }.map { "\($0.key) \($0.value)" })")
        #expect(errors.count == 8 && errors.values.allSatisfy { $0 < 1e-2 })
    }

    /// Activation recomputation (with LoRA dropout on): bit-identical losses and gradients to
    /// keeping every block's activations, over two steps with different dropout masks.
    @Test func recomputationIsBitIdentical() throws {
        let config = try Gemma3Configuration(vocabSize: 64, hiddenSize: 16, intermediateSize: 24, numHiddenLayers: 3, numAttentionHeads: 2,
                                             numKeyValueHeads: 1, headDim: 8, slidingWindow: 3, slidingWindowPattern: 2)
        func run(recompute: Bool) throws -> (losses: [Float], gradients: [[Float]]) {
            let model = Gemma3ForCausalLM(config)
            for (i, (name, p)) in model.namedParameters.enumerated() {
                p.value.copy(from: randomTensor(p.shape, seed: UInt64(300 + i), scale: name.contains("norm") ? 0.2 : 0.3))
            }
            try model.addAdapter(named: "default", config: LoRAConfig(rank: 2, alpha: 4, dropout: 0.2, targets: .allLinear), seed: 9)
            // B ≠ 0, so the dropout masks change the loss from step to step.
            for (_, p) in model.adapterParameters(named: "default") { p.value.copy(from: randomTensor(p.shape, seed: UInt64(p.count + 5), scale: 0.3)) }
            model.setTraining(true)
            model.setActivationRecomputation(recompute)
            let ids = (0..<14).map { ($0 * 5 + 1) % 64 }
            let batch = TokenBatch(batch: 2, length: 7, inputIds: ids, attentionMask: [1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 0, 0])
            var losses: [Float] = []
            for _ in 0..<2 {
                model.zeroGradients()
                losses.append(try model.loss(batch, labels: ids, backward: true))
            }
            let gradients = model.adapterParameters(named: "default").map { p in (0..<p.parameter.count).map { p.parameter.grad![$0] } }
            return (losses, gradients)
        }
        let kept = try run(recompute: false), recomputed = try run(recompute: true)
        print("Gemma 3 --recompute: losses \(recomputed.losses) vs \(kept.losses)")
        #expect(kept.losses == recomputed.losses && kept.gradients == recomputed.gradients && !kept.gradients.isEmpty)
        #expect(kept.losses[0] != kept.losses[1])
    }
}
