import Foundation
import Kernels
import Models
import TestSupport
import Testing

/// `lora train` and `lora eval` end to end through the binary, on a tiny Llama with a real
/// (small) byte-level BPE tokenizer.
@Suite("lora train and eval", .serialized)
struct TrainCLITests {
    /// A tiny random Llama written as a Hugging Face directory with the tiny BPE tokenizer.
    static func tinyModelDirectory() throws -> URL {
        let dir = URL(fileURLWithPath: NSTemporaryDirectory()).appendingPathComponent("lora-tiny-model-\(UUID().uuidString)")
        let config = try LlamaConfiguration(vocabSize: 2048, hiddenSize: 32, intermediateSize: 64, numHiddenLayers: 2,
                                            numAttentionHeads: 4, numKeyValueHeads: 2, rmsNormEps: 1e-5, ropeTheta: 10000,
                                            maxPositionEmbeddings: 256, tieWordEmbeddings: true)
        let model = try LlamaForCausalLM(config)
        for (i, (name, p)) in model.namedParameters.enumerated() {
            let values = randomTensor(p.shape, seed: UInt64(i + 1), scale: name.contains("norm") ? 0 : 0.05)
            if name.contains("norm") { for j in 0..<values.count { values[j] = 1 } }
            p.value.copy(from: values)
        }
        let tokenizerDir = fixturesDirectory.appendingPathComponent("tokenizers/tiny-bpe-digits")
        var files: [String: Data] = [:]
        for name in ["tokenizer.json", "tokenizer_config.json"] { files[name] = try Data(contentsOf: tokenizerDir.appendingPathComponent(name)) }
        try HuggingFaceExport.write(model, tokenizerFiles: files, tokenizer: nil, storage: .f32, to: dir)
        return dir
    }

    static func data(_ dir: URL, name: String, count: Int, offset: Int) throws -> URL {
        let lines = (0..<count).map { i -> String in
            let n = i + offset
            return #"{"prompt": "Add \#(n) and \#(n + 1):", "completion": " \#(2 * n + 1)"}"#
        }
        let url = dir.appendingPathComponent(name)
        try Data((lines.joined(separator: "\n") + "\n").utf8).write(to: url)
        return url
    }

    @Test func trainEvalAndResume() throws {
        let model = try Self.tinyModelDirectory()
        let work = URL(fileURLWithPath: NSTemporaryDirectory()).appendingPathComponent("lora-train-cli-\(UUID().uuidString)")
        try FileManager.default.createDirectory(at: work, withIntermediateDirectories: true)
        defer { try? FileManager.default.removeItem(at: work); try? FileManager.default.removeItem(at: model) }
        let train = try Self.data(work, name: "train.jsonl", count: 24, offset: 0)
        let valid = try Self.data(work, name: "valid.jsonl", count: 6, offset: 100)
        let out = work.appendingPathComponent("run")
        let run = try CLITests.lora(["train", "--model", model.path, "--data", train.path, "--valid", valid.path, "--output", out.path,
                                     "--steps", "6", "--batch-size", "4", "--lr", "1e-2", "--eval-every", "3", "--save-every", "3",
                                     "--rank", "4", "--test", valid.path, "--json"])
        #expect(run.status == 0, "\(run.stderr)")
        let summary = try run.json()
        for key in ["adapter", "trainable_params", "steps", "seconds", "tokens_per_second", "peak_rss_bytes", "final_train_loss", "best_valid",
                    "train_seconds", "examples_per_second", "tests"] {
            #expect(summary[key] != nil, "summary lacks \(key)")
        }
        #expect(summary["steps"] as? Int == 6)
        for file in ["adapter_config.json", "adapter_model.safetensors", "metrics.jsonl", "loss.svg"] {
            #expect(FileManager.default.fileExists(atPath: out.appendingPathComponent(file).path), "no \(file)")
        }
        let metrics = try String(contentsOf: out.appendingPathComponent("metrics.jsonl"), encoding: .utf8).split(separator: "\n")
        #expect(metrics.filter { $0.contains(#""type":"train""#) }.count == 6 && metrics.filter { $0.contains(#""type":"eval""#) }.count == 2)
        #expect(run.stderr.contains("step 6/6"))

        let eval = try CLITests.lora(["eval", "--model", model.path, "--adapter", out.path, "--data", valid.path, "--json"])
        #expect(eval.status == 0, "\(eval.stderr)")
        let result = try eval.json()
        let loss = try #require(result["loss"] as? Double)
        #expect(abs(loss - (summary["best_valid"] as? Double ?? .nan)) < 1e-4, "eval loss \(loss) vs the training run's best validation")
        // --test evaluated the kept adapter on the same file: the same loss as `lora eval`.
        let tests = try #require(summary["tests"] as? [[String: Any]])
        let testLoss = try #require(tests.first?["loss"] as? Double)
        #expect(tests.count == 1 && abs(testLoss - loss) < 1e-4, "--test loss \(testLoss) vs lora eval \(loss)")
        #expect(result["perplexity"] as? Double != nil && result["tokens"] as? Int != nil)

        // Resume the last checkpoint and train two more steps.
        let resumed = try CLITests.lora(["train", "--model", model.path, "--data", train.path, "--valid", valid.path, "--output", out.path,
                                         "--steps", "8", "--batch-size", "4", "--lr", "1e-2", "--eval-every", "3", "--save-every", "3",
                                         "--rank", "4", "--resume", "latest", "--json"])
        #expect(resumed.status == 0, "\(resumed.stderr)")
        #expect(try resumed.json()["steps"] as? Int == 8)
        #expect(resumed.stderr.contains("resumed from"))

        // Settings from a YAML file; a flag overrides it.
        let yaml = work.appendingPathComponent("settings.yaml")
        try Data("rank: 2\nalpha: 8\nlr: 0.01\nbatch_size: 4\nsteps: 5\ntargets: [q_proj, v_proj]\n".utf8).write(to: yaml)
        let configured = try CLITests.lora(["train", "--model", model.path, "--data", train.path, "--output", work.appendingPathComponent("y").path,
                                            "--config", yaml.path, "--steps", "2", "--json"])
        #expect(configured.status == 0, "\(configured.stderr)")
        #expect(try configured.json()["steps"] as? Int == 2)
        let written = try JSONSerialization.jsonObject(with: Data(contentsOf: work.appendingPathComponent("y/adapter_config.json"))) as? [String: Any]
        #expect(written?["r"] as? Int == 2 && written?["lora_alpha"] as? Int == 8)

        // Bad input: a malformed line is reported with its file and line.
        let broken = work.appendingPathComponent("broken.jsonl")
        try Data("{\"text\": \"ok\"}\n{not json\n".utf8).write(to: broken)
        let failed = try CLITests.lora(["train", "--model", model.path, "--data", broken.path, "--output", work.appendingPathComponent("x").path])
        #expect(failed.status != 0 && failed.stderr.contains("broken.jsonl:2"))
    }
}
