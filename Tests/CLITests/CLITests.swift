import Foundation
import ModelStore
import TestSupport
import Testing

/// The `lora` binary run end to end, as a user runs it: every `--json` command prints exactly
/// one JSON object on stdout, and failures exit non-zero with a message on stderr.
@Suite("lora command line", .serialized)
struct CLITests {
    struct Run {
        let status: Int32
        let stdout: String
        let stderr: String
        func json() throws -> [String: Any] {
            let object = try JSONSerialization.jsonObject(with: Data(stdout.utf8))
            return try #require(object as? [String: Any], "stdout is not one JSON object: \(stdout.prefix(200))")
        }
    }

    /// The `lora` executable built beside the test bundle.
    static var executable: URL {
        URL(fileURLWithPath: CommandLine.arguments[0]).deletingLastPathComponent().appendingPathComponent("lora")
    }

    static func lora(_ arguments: String...) throws -> Run { try lora(arguments) }

    static func lora(_ arguments: [String]) throws -> Run {
        let process = Process()
        process.executableURL = executable
        process.arguments = arguments
        let out = Pipe(), err = Pipe()
        process.standardOutput = out
        process.standardError = err
        try process.run()
        let stdout = out.fileHandleForReading.readDataToEndOfFile(), stderr = err.fileHandleForReading.readDataToEndOfFile()
        process.waitUntilExit()
        return Run(status: process.terminationStatus, stdout: String(decoding: stdout, as: UTF8.self),
                   stderr: String(decoding: stderr, as: UTF8.self))
    }

    struct Golden: Decodable {
        struct Score: Decodable { let text: String; let ids: [Int]; let logprobs: [Double] }
        struct Greedy: Decodable { let prompt: String; let generated_ids: [Int] }
        let scores: [Score]
        let greedy: [Greedy]
    }

    @Test func versionAndHelp() throws {
        let version = try Self.lora("--version")
        #expect(version.status == 0 && version.stdout.hasPrefix("swift-lora "))
        let help = try Self.lora("--help")
        for command in ["models", "adapter", "merge", "convert", "inspect", "tokenize", "score", "generate", "classify", "embed"] {
            #expect(help.stdout.contains(command), "--help does not list \(command)")
        }
    }

    @Test func smolLM2ScoreGenerateTokenizeInspect() throws {
        _ = try realModel(.smolLM2)
        let golden = try JSONDecoder().decode(Golden.self, from: Data(contentsOf: fixturesDirectory.appendingPathComponent("models/smollm2.json")))
        let score = golden.scores[0]
        let run = try Self.lora("score", "--model", "smollm2-135m-instruct", "--text", score.text, "--json")
        #expect(run.status == 0, "\(run.stderr)")
        let json = try run.json()
        #expect(json["ids"] as? [Int] == score.ids)
        let logprobs = try #require(json["logprobs"] as? [Double])
        let e = zip(logprobs, score.logprobs).map { abs($0 - $1) }.max() ?? .infinity
        print("lora score: max |Δ log p| \(e)")
        #expect(logprobs.count == score.logprobs.count && e <= 1e-3)

        let tokenize = try Self.lora("tokenize", "--model", "smollm2-135m-instruct", "--text", score.text, "--json")
        #expect(try tokenize.json()["ids"] as? [Int] == score.ids)

        let greedy = golden.greedy[0]
        let generate = try Self.lora("generate", "--model", "smollm2-135m-instruct", "--prompt", greedy.prompt,
                                     "--max-tokens", "24", "--json")
        #expect(generate.status == 0, "\(generate.stderr)")
        #expect(try generate.json()["ids"] as? [Int] == greedy.generated_ids)

        let inspect = try Self.lora("inspect", "--model", "smollm2-135m-instruct", "--json")
        let report = try inspect.json()
        #expect(report["parameters"] as? Int == 134_515_008)
        #expect((report["architecture"] as? String)?.hasPrefix("llama") == true)
    }

    @Test func miniLMEmbedClassifyTokenize() throws {
        _ = try realModel(.miniLM)
        let embed = try Self.lora("embed", "--model", "all-minilm-l6-v2", "--text", "A man is playing a guitar.", "--json")
        #expect(embed.status == 0, "\(embed.stderr)")
        let embedding = try #require(try embed.json()["embedding"] as? [Double])
        #expect(embedding.count == 384)
        #expect(abs(embedding.reduce(0) { $0 + $1 * $1 } - 1) < 1e-5)
        let classify = try Self.lora("classify", "--model", "all-minilm-l6-v2", "--text", "good", "--text", "a longer bad text", "--json")
        #expect(classify.status == 0, "\(classify.stderr)")
        let logits = try #require(try classify.json()["logits"] as? [[Double]])
        #expect(logits.count == 2 && logits.allSatisfy { $0.count == 2 })
        // The base model has no trained head: classify says its outputs are random.
        #expect(classify.stderr.contains("no trained classification head"))
        let tokenize = try Self.lora("tokenize", "--model", "all-minilm-l6-v2", "--text", "Hello, world!", "--json")
        let ids = try #require(try tokenize.json()["ids"] as? [Int])
        #expect(ids.first == 101 && ids.last == 102)
    }

    struct AdapterExpected: Decodable {
        struct Input: Decodable { let ids: [Int] }
        let inputs: [Input]
        let adapted: [[Double]]
        let merged: [[Double]]
    }

    @Test func adaptersScoreMergeAndInspect() throws {
        _ = try realModel(.smolLM2)
        let adapter = fixturesDirectory.appendingPathComponent("adapters/smollm2-qkvod")
        let expected = try JSONDecoder().decode(AdapterExpected.self, from: Data(contentsOf: adapter.appendingPathComponent("expected.json")))
        let inspect = try Self.lora("adapter", "inspect", adapter.path, "--json")
        #expect(inspect.status == 0, "\(inspect.stderr)")
        let report = try inspect.json()
        #expect(report["rank"] as? Int == 4 && report["adapted_modules"] as? Int == 150)
        // The same text the fixture scored, with the adapter, unmerged and merged.
        let tokenizer = try Self.lora("tokenize", "--model", "smollm2-135m-instruct", "--text", "The capital of France is Paris, and the capital of Italy is Rome.", "--json")
        let ids = try #require(try tokenizer.json()["ids"] as? [Int])
        guard let index = expected.inputs.firstIndex(where: { $0.ids == ids }) else {
            Issue.record("the fixture has no input with the ids of the scored text")
            return
        }
        for merge in [false, true] {
            var arguments = ["score", "--model", "smollm2-135m-instruct", "--adapter", adapter.path, "--text", "The capital of France is Paris, and the capital of Italy is Rome.", "--json"]
            if merge { arguments.append("--merge") }
            let run = try Self.lora(arguments)
            #expect(run.status == 0, "\(run.stderr)")
            let logprobs = try #require(try run.json()["logprobs"] as? [Double])
            let reference = merge ? expected.merged[index] : expected.adapted[index]
            let e = zip(logprobs, reference).map { abs($0 - $1) }.max() ?? .infinity
            print("lora score --adapter\(merge ? " --merge" : ""): max |Δ log p| vs PEFT \(e)")
            #expect(e <= 1e-3)
        }
        // lora merge writes a Hugging Face directory that lora runs like any base model.
        let out = URL(fileURLWithPath: NSTemporaryDirectory()).appendingPathComponent("lora-cli-merged-\(UUID().uuidString)")
        defer { try? FileManager.default.removeItem(at: out) }
        let merged = try Self.lora("merge", "--model", "smollm2-135m-instruct", "--adapter", adapter.path, "--output", out.path)
        #expect(merged.status == 0, "\(merged.stderr)")
        #expect(merged.stderr.contains("not re-quantised"))
        let rescored = try Self.lora("score", "--model", out.path, "--text", "The capital of France is Paris, and the capital of Italy is Rome.", "--json")
        #expect(try rescored.json()["ids"] as? [Int] == ids)
        let logprobs = try #require(try rescored.json()["logprobs"] as? [Double])
        let e = zip(logprobs, expected.merged[index]).map { abs($0 - $1) }.max() ?? .infinity
        print("merged directory scored by lora: max |Δ log p| vs PEFT merge_and_unload \(e)")
        #expect(e <= 1e-3)
        let noConfig = try Self.lora("score", "--model", "smollm2-135m-instruct", "--adapter", "/nonexistent/adapter", "--text", "x")
        #expect(noConfig.status != 0 && noConfig.stderr.contains("/nonexistent/adapter: no such folder"), "\(noConfig.stderr)")
    }

    @Test func convertBetweenPEFTAndMLX() throws {
        let adapter = fixturesDirectory.appendingPathComponent("adapters/tiny-llama-patterns")
        let tmp = URL(fileURLWithPath: NSTemporaryDirectory()).appendingPathComponent("lora-cli-convert-\(UUID().uuidString)")
        defer { try? FileManager.default.removeItem(at: tmp) }
        let toMLX = try Self.lora("convert", "--input", adapter.path, "--output", tmp.appendingPathComponent("mlx").path, "--to", "mlx", "--num-layers", "2")
        #expect(toMLX.status == 0, "\(toMLX.stderr)")
        let config = try JSONSerialization.jsonObject(with: Data(contentsOf: tmp.appendingPathComponent("mlx/adapter_config.json"))) as? [String: Any]
        #expect((config?["lora_parameters"] as? [String: Any])?["rank"] as? Int == 6 && config?["num_layers"] as? Int == 2)
        let back = try Self.lora("convert", "--input", tmp.appendingPathComponent("mlx").path, "--output", tmp.appendingPathComponent("peft").path, "--to", "peft")
        #expect(back.status == 0, "\(back.stderr)")
        #expect(FileManager.default.fileExists(atPath: tmp.appendingPathComponent("peft/adapter_model.safetensors").path))
        let missing = try Self.lora("convert", "--input", adapter.path, "--output", tmp.appendingPathComponent("x").path, "--to", "mlx")
        #expect(missing.status != 0 && missing.stderr.contains("--num-layers"))
    }

    @Test func failuresExitNonZeroWithAMessage() throws {
        let missing = try Self.lora("inspect", "--model", "/nonexistent/model.gguf")
        #expect(missing.status != 0 && missing.stdout.isEmpty && missing.stderr.contains("nonexistent"))
        let unknown = try Self.lora("inspect", "--model", "no-such-model")
        #expect(unknown.status != 0 && unknown.stderr.contains("known"))
        let wrongKind = try Self.lora("score", "--model", "all-minilm-l6-v2", "--text", "x", "--json")
        #expect(wrongKind.status != 0 && wrongKind.stdout.isEmpty)
        let badOption = try Self.lora("generate", "--model", "smollm2-135m-instruct", "--prompt", "x", "--top-p", "2")
        #expect(badOption.status != 0)
    }

    /// `lora bench train|infer --json` print the keys `Benchmarks/compare.sh` reads, with sane values.
    @Test func benchTrainAndInferPrintTheirFigures() throws {
        let train = try Self.lora("bench", "train", "--model", "smollm2-135m-instruct", "--batch-size", "1", "--seq-len", "8",
                                  "--steps", "2", "--warmup", "0", "--precision", "q", "--recompute", "--json")
        #expect(train.status == 0, "\(train.stderr)")
        let t = try train.json()
        for key in ["tokens_per_second", "step_seconds_median", "time_to_first_step_seconds", "gemm_gflops_achieved", "machine_gemm_gflops"] {
            let value = try #require(t[key] as? Double, "\(key) missing")
            #expect(value > 0 && value.isFinite, "\(key) = \(value)")
        }
        #expect((t["peak_rss_bytes"] as? Int ?? 0) > 0 && t["trainable_parameters"] as? Int == 30 * 8 * (576 * 2 + 576 + 192) * 2)
        let losses = try #require(t["losses"] as? [Double])
        #expect(losses.count == 2 && losses.allSatisfy(\.isFinite))
        let infer = try Self.lora("bench", "infer", "--model", "smollm2-135m-instruct", "--prompt-tokens", "4", "--new-tokens", "2",
                                  "--repeats", "1", "--random-adapter", "--json")
        #expect(infer.status == 0, "\(infer.stderr)")
        let i = try infer.json()
        #expect(i["variant"] as? String == "unmerged" && (i["decode_tokens_per_second"] as? Double ?? 0) > 0)
        let paired = try Self.lora("bench", "infer", "--model", "smollm2-135m-instruct", "--prompt-tokens", "4", "--new-tokens", "2",
                                   "--repeats", "1", "--random-adapter", "--paired", "--json")
        #expect(paired.status == 0, "\(paired.stderr)")
        let p = try paired.json()
        for key in ["merged_over_base", "unmerged_over_base", "decode_tokens_per_second_merged"] {
            #expect((p[key] as? Double ?? 0) > 0, "\(key) missing")
        }
        let refused = try Self.lora("bench", "train", "--model", "smollm2-135m-instruct", "--full", "--precision", "bf16")
        #expect(refused.status != 0 && refused.stderr.contains("fp32"))
    }
}
