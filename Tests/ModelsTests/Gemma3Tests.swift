import Foundation
import Formats
import Kernels
import ModelStore
import Models
import TestSupport
import Testing
import Tokenizers

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

    @Test func wrongFilesAreRefusedByName() throws {
        let smol = try GGUFFile(url: try realModel(.smolLM2))
        #expect {
            try Gemma3ForCausalLM.load(smol, path: "smollm2.gguf")
        } throws: { error in
            "\(error)".contains("general.architecture 'llama' is not gemma3")
        }
    }
}
