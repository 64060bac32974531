import Foundation
import ModelStore
import TestSupport
import Testing

/// Gemma 3 270M through the commands that run a causal LM (`tokenize`, `score`, `generate`),
/// against transformers on the same GGUF (`Tests/Fixtures/models/gemma3.json`).
@Suite("lora with Gemma 3", .serialized)
struct GemmaCLITests {
    struct Golden: Decodable {
        struct Score: Decodable { let text: String; let ids: [Int]; let logprobs: [Double] }
        struct Greedy: Decodable { let prompt: String; let prompt_ids: [Int]; let generated_ids: [Int] }
        let scores: [Score]
        let greedy: [Greedy]
    }

    @Test func tokenizeScoreAndGenerate() throws {
        _ = try realModel(.gemma3)
        let golden = try JSONDecoder().decode(Golden.self, from: Data(contentsOf: fixturesDirectory.appendingPathComponent("models/gemma3.json")))
        let score = golden.scores[1]
        let tokenize = try CLITests.lora(["tokenize", "--model", "gemma-3-270m", "--text", score.text, "--json"])
        #expect(tokenize.status == 0, "\(tokenize.stderr)")
        #expect(try tokenize.json()["ids"] as? [Int] == score.ids)
        let scored = try CLITests.lora(["score", "--model", "gemma-3-270m", "--text", score.text, "--json"])
        #expect(scored.status == 0, "\(scored.stderr)")
        let logprobs = try #require(try scored.json()["logprobs"] as? [Double])
        let e = zip(logprobs, score.logprobs).map { abs($0 - $1) }.max() ?? .infinity
        print("lora score on Gemma 3: max |Δ log p| vs transformers \(e)")
        #expect(logprobs.count == score.logprobs.count && e <= 1e-3)
        let greedy = golden.greedy[0]
        let generated = try CLITests.lora(["generate", "--model", "gemma-3-270m", "--prompt", greedy.prompt, "--max-tokens", "24", "--json"])
        #expect(generated.status == 0, "\(generated.stderr)")
        #expect(try generated.json()["ids"] as? [Int] == greedy.generated_ids)
        let adapter = try CLITests.lora(["score", "--model", "gemma-3-270m", "--adapter", fixturesDirectory.path, "--text", "x"])
        #expect(adapter.status != 0 && adapter.stderr.contains("take no LoRA adapters yet"), "\(adapter.stderr)")
    }
}
