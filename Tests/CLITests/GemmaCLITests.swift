import Foundation
import ModelStore
import TestSupport
import Testing

/// Gemma 3 270M through the commands: `tokenize`, `score`, `generate` against transformers on the
/// same GGUF (`Tests/Fixtures/models/gemma3.json`) and PEFT (`adapters/gemma3-qvd`); `inspect`,
/// `train`, `eval`, `merge`, `convert` and `bench` through the model core like every architecture.
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

    @Test func inspectTrainEvalMergeConvertAndBench() throws {
        _ = try realModel(.gemma3)
        let work = URL(fileURLWithPath: NSTemporaryDirectory()).appendingPathComponent("lora-gemma-cli-\(UUID().uuidString)")
        try FileManager.default.createDirectory(at: work, withIntermediateDirectories: true)
        defer { try? FileManager.default.removeItem(at: work) }

        let inspect = try CLITests.lora(["inspect", "--model", "gemma-3-270m", "--modules", "--json"])
        #expect(inspect.status == 0, "\(inspect.stderr)")
        let report = try inspect.json()
        #expect(report["architecture"] as? String == "gemma3 (Gemma3ForCausalLM)")
        let modules = (report["modules"] as? [[String: Any]] ?? []).compactMap { $0["name"] as? String }
        #expect(modules == ["self_attn.q_proj", "self_attn.k_proj", "self_attn.v_proj", "self_attn.o_proj", "mlp.gate_proj", "mlp.up_proj", "mlp.down_proj"], "\(modules)")
        #expect((report["configuration"] as? [String: Any])?["layer_types"] != nil)

        // Train a LoRA adapter on a handful of examples; it must lower the loss on them.
        let lines = (0..<8).map { i in #"{"prompt": "Colour number \#(i):", "completion": " \#(["red", "green", "blue", "amber"][i % 4])"}"# }
        let data = work.appendingPathComponent("train.jsonl")
        try Data((lines.joined(separator: "\n") + "\n").utf8).write(to: data)
        let base = try CLITests.lora(["eval", "--model", "gemma-3-270m", "--data", data.path, "--json"])
        #expect(base.status == 0, "\(base.stderr)")
        let baseLoss = try #require(try base.json()["loss"] as? Double)
        let out = work.appendingPathComponent("run")
        let arguments = ["train", "--model", "gemma-3-270m", "--data", data.path, "--valid", data.path, "--output", out.path,
                         "--steps", "4", "--batch-size", "4", "--lr", "5e-3", "--rank", "4", "--json"]
        let dryRun = try CLITests.lora(arguments + ["--dry-run"])
        #expect(dryRun.status == 0, "\(dryRun.stderr)")
        let estimate = try #require((try dryRun.json()["estimate"] as? [String: Any])?["peak_bytes"] as? Int)
        let train = try CLITests.lora(arguments)
        #expect(train.status == 0, "\(train.stderr)")
        let summary = try train.json()
        #expect(summary["steps"] as? Int == 4)
        // The memory estimate holds the measured peak, at most 15% above it.
        let peak = try #require(summary["peak_rss_bytes"] as? Int)
        print("lora train on Gemma 3: estimated peak \(estimate >> 20) MiB, measured \(peak >> 20) MiB")
        #expect(estimate >= peak && Double(estimate) <= 1.15 * Double(peak))
        let config = try JSONSerialization.jsonObject(with: Data(contentsOf: out.appendingPathComponent("adapter_config.json"))) as? [String: Any]
        #expect(config?["task_type"] as? String == "CAUSAL_LM")
        #expect(Set(config?["target_modules"] as? [String] ?? []) == ["q_proj", "k_proj", "v_proj", "o_proj"])
        let eval = try CLITests.lora(["eval", "--model", "gemma-3-270m", "--adapter", out.path, "--data", data.path, "--json"])
        #expect(eval.status == 0, "\(eval.stderr)")
        let adaptedLoss = try #require(try eval.json()["loss"] as? Double)
        print("lora train on Gemma 3: eval loss \(baseLoss) → \(adaptedLoss) after 4 steps; best validation \(summary["best_valid"] ?? "-")")
        #expect(adaptedLoss < baseLoss - 0.5)
        #expect(abs(adaptedLoss - (summary["best_valid"] as? Double ?? .nan)) < 1e-3)

        // Merge: a transformers gemma3_text directory whose q_proj is W0 + (α/r)·B·A.
        let merged = work.appendingPathComponent("merged")
        let merge = try CLITests.lora(["merge", "--model", "gemma-3-270m", "--adapter", out.path, "--output", merged.path])
        #expect(merge.status == 0, "\(merge.stderr)")
        let mergedConfig = try JSONSerialization.jsonObject(with: Data(contentsOf: merged.appendingPathComponent("config.json"))) as? [String: Any]
        #expect(mergedConfig?["model_type"] as? String == "gemma3_text")
        #expect(mergedConfig?["architectures"] as? [String] == ["Gemma3ForCausalLM"])
        for file in ["model.safetensors", "tokenizer.json", "tokenizer_config.json"] {
            #expect(FileManager.default.fileExists(atPath: merged.appendingPathComponent(file).path), "no \(file)")
        }
        // The merged folder runs on its own: its tokenizer.json gives the GGUF's ids, its weights the adapted log-probs.
        let probe = "Colour number 2: blue"
        let fromFolder = try CLITests.lora(["score", "--model", merged.path, "--text", probe, "--json"])
        let withAdapter = try CLITests.lora(["score", "--model", "gemma-3-270m", "--adapter", out.path, "--text", probe, "--json"])
        #expect(fromFolder.status == 0 && withAdapter.status == 0, "\(fromFolder.stderr)")
        #expect(try fromFolder.json()["ids"] as? [Int] == (try withAdapter.json()["ids"] as? [Int]))
        let folderLogprobs = try #require(try fromFolder.json()["logprobs"] as? [Double])
        let adapterLogprobs = try #require(try withAdapter.json()["logprobs"] as? [Double])
        let gap = zip(folderLogprobs, adapterLogprobs).map { abs($0 - $1) }.max() ?? .infinity
        print("lora score on the merged Gemma folder vs the GGUF with the adapter: max |Δ log p| \(gap)")
        #expect(folderLogprobs.count == adapterLogprobs.count && gap < 1e-3)

        // Convert to mlx-lm's layout (the layer count comes from the model).
        let mlx = try CLITests.lora(["convert", "--input", out.path, "--output", work.appendingPathComponent("mlx").path, "--to", "mlx",
                                     "--model", "gemma-3-270m"])
        #expect(mlx.status == 0, "\(mlx.stderr)")

        // Packed frozen weights: the file's Q4_K blocks kept (--precision q) decode greedily as transformers does in fp32.
        let golden = try JSONDecoder().decode(Golden.self, from: Data(contentsOf: fixturesDirectory.appendingPathComponent("models/gemma3.json")))
        let greedy = golden.greedy[0]
        let q = try CLITests.lora(["generate", "--model", "gemma-3-270m", "--prompt", greedy.prompt, "--max-tokens", "24", "--precision", "q", "--json"])
        #expect(q.status == 0, "\(q.stderr)")
        #expect(try q.json()["ids"] as? [Int] == greedy.generated_ids)

        let bench = try CLITests.lora(["bench", "train", "--model", "gemma-3-270m", "--batch-size", "1", "--seq-len", "16", "--steps", "1",
                                       "--warmup", "0", "--precision", "bf16", "--json"])
        #expect(bench.status == 0, "\(bench.stderr)")
        #expect(try bench.json()["tokens_per_second"] as? Double ?? 0 > 0)
    }
}
