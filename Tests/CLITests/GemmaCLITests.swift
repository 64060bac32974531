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
        // A command that does not take Gemma 3 yet says so by name.
        let inspect = try CLITests.lora(["inspect", "--model", "gemma-3-270m"])
        #expect(inspect.status != 0 && inspect.stderr.contains("Gemma 3 runs in lora tokenize, score and generate"), "\(inspect.stderr)")
        // A PEFT-made Gemma 3 adapter (Scripts/reference/make_gemma3_adapter_fixture.py), unmerged and merged.
        struct Expected: Decodable {
            struct Input: Decodable { let text: String; let ids: [Int] }
            let inputs: [Input]; let adapted: [[Double]]; let merged: [[Double]]
        }
        let adapter = fixturesDirectory.appendingPathComponent("adapters/gemma3-qvd")
        let expected = try JSONDecoder().decode(Expected.self, from: Data(contentsOf: adapter.appendingPathComponent("expected.json")))
        for (i, input) in expected.inputs.enumerated() {
            for (merge, reference) in [(false, expected.adapted[i]), (true, expected.merged[i])] {
                let run = try CLITests.lora(["score", "--model", "gemma-3-270m", "--adapter", adapter.path, "--text", input.text, "--json"]
                                            + (merge ? ["--merge"] : []))
                #expect(run.status == 0, "\(run.stderr)")
                let lp = try #require(try run.json()["logprobs"] as? [Double])
                let e = zip(lp, reference).map { abs($0 - $1) }.max() ?? .infinity
                print("lora score on Gemma 3 with a PEFT adapter\(merge ? ", merged" : ""): max |Δ log p| vs PEFT \(e)")
                #expect(try run.json()["ids"] as? [Int] == input.ids)
                #expect(lp.count == reference.count && e <= 1e-3)
            }
        }
    }
}
