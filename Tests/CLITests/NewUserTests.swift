import Foundation
import ModelStore
import TestSupport
import Testing

/// What a new user hit in the CLI trial (`shared/research/new-user-trial.md`, issue 14): each
/// test runs the binary as a user would and checks the behaviour that was silently wrong or
/// confusing before. One test per point of the issue, in its order.
@Suite("new-user trial: silent wrong results and confusing errors", .serialized)
struct NewUserTests {
    /// The reliability suite's work folder: the tiny Llama (a Hugging Face folder) and
    /// prompt/completion data.
    typealias Work = TrainReliabilityTests.Work

    /// Three-class sentiment rows for all-MiniLM-L6-v2.
    static func classificationData(_ work: Work, name: String) throws -> URL {
        let rows = [("what a lovely film", "positive"), ("great acting and a fine story", "positive"), ("I loved every minute", "positive"),
                    ("boring and dull", "negative"), ("a waste of time", "negative"), ("the worst film this year", "negative"),
                    ("it is a film", "neutral"), ("the film lasts two hours", "neutral"), ("it was shown on tuesday", "neutral")]
        return try work.write(name, rows.map { #"{"text": "\#($0.0)", "label": "\#($0.1)"}"# }.joined(separator: "\n") + "\n")
    }

    static func lines(_ url: URL) -> [Substring] {
        ((try? String(contentsOf: url, encoding: .utf8)) ?? "").split(separator: "\n")
    }

    /// Framework internals that must never reach a user.
    static func leaksInternals(_ text: String) -> Bool {
        ["NSCocoaErrorDomain", "Error Domain=", "DecodingError", "names([", "typeMismatch", "dataCorrupted"].contains { text.contains($0) }
    }

    // MARK: 1. A used --output folder

    @Test func usedOutputFolderIsRefusedOverwrittenOrResumed() throws {
        let work = try Work("newuser")
        defer { work.remove() }
        let out = work.url("run")
        let first = try work.train(out, ["--steps", "3", "--save-every", "1"])
        #expect(first.status == 0, "\(first.stderr)")
        let metricsBefore = Self.lines(out.appendingPathComponent("metrics.jsonl"))

        // A new run into it is refused, and nothing there changes.
        let again = try work.train(out, ["--steps", "2", "--lr", "2e-2"])
        print("second run into a used folder: status \(again.status): \(again.stderr.split(separator: "\n").last ?? "")")
        #expect(again.status != 0)
        #expect(again.stderr.contains("already holds a training run") && again.stderr.contains("--resume latest") && again.stderr.contains("--overwrite"))
        #expect(Self.lines(out.appendingPathComponent("metrics.jsonl")) == metricsBefore)

        // --overwrite clears it first: only the new run's two steps are logged.
        let overwritten = try work.train(out, ["--steps", "2", "--overwrite", "--json"])
        #expect(overwritten.status == 0, "\(overwritten.stderr)")
        #expect(Self.lines(out.appendingPathComponent("metrics.jsonl")).count == 2)
        #expect(try overwritten.json()["steps"] as? Int == 2)

        // A checkpoint at or past --steps is refused, not "resumed" over the new adapter.
        let past = try work.train(out, ["--steps", "1", "--resume", "latest"])
        #expect(past.status != 0 && past.stderr.contains("past --steps 1"), "\(past.stderr)")
        let done = try work.train(out, ["--steps", "2", "--resume", "latest"])
        #expect(done.status != 0 && done.stderr.contains("nothing is left to train"), "\(done.stderr)")

        // "latest" is the newest checkpoint written, not the highest step: after resuming step 2
        // of a 4-step run, the new step-3 checkpoint is newer than the abandoned step 4.
        let branch = work.url("branch")
        #expect(try work.train(branch, ["--steps", "4", "--save-every", "1", "--keep-checkpoints", "5"]).status == 0)
        let fromTwo = try work.train(branch, ["--steps", "3", "--save-every", "1", "--keep-checkpoints", "5",
                                              "--resume", branch.appendingPathComponent("checkpoints/step-000002").path])
        #expect(fromTwo.status == 0, "\(fromTwo.stderr)")
        let latest = try work.train(branch, ["--steps", "5", "--keep-checkpoints", "5", "--resume", "latest"])
        #expect(latest.status == 0 && (latest.stdout + latest.stderr).contains("step-000003 at step 3"), "\(latest.stdout)")
    }

    @Test func aSecondConcurrentRunFailsAtOnceNamingTheFirst() throws {
        let work = try Work("newuser")
        defer { work.remove() }
        let out = work.url("shared")
        let arguments = ["train", "--model", work.model.path, "--data", work.train.path, "--output", out.path, "--batch-size", "4",
                         "--lr", "1e-2", "--rank", "4", "--steps", "3", "--save-every", "1", "--json"]
        let first = try TrainReliabilityTests.Running(arguments, environment: ["LORA_TEST_CHECKPOINT_PAUSE_MS": "700"], logs: work.url("first"))
        #expect(first.waitFor("step 1/"))
        let start = Date()
        let second = try CLITests.lora(arguments)
        let seconds = Date().timeIntervalSince(start)
        print("second concurrent run: status \(second.status) after \(String(format: "%.2f", seconds)) s: \(second.stderr.split(separator: "\n").last ?? "")")
        #expect(second.status != 0 && second.stderr.contains("in use by another training run"))
        #expect(second.stderr.contains("pid \(first.process.processIdentifier)"))
        #expect(seconds < 5)
        let (status, exited) = first.wait()
        #expect(exited && status == 0, "\(first.stderr)")
        // The first run's metrics are whole JSON lines.
        for line in Self.lines(out.appendingPathComponent("metrics.jsonl")) {
            #expect((try? JSONSerialization.jsonObject(with: Data(line.utf8))) != nil, "not JSON: \(line)")
        }
    }

    // MARK: 2. lora eval combines several adapters

    @Test func evalCombinesSeveralAdapters() throws {
        let work = try Work("newuser")
        defer { work.remove() }
        let a = work.url("a"), b = work.url("b")
        #expect(try work.train(a, ["--steps", "4"]).status == 0)
        let otherData = try TrainCLITests.data(work.root, name: "other.jsonl", count: 24, offset: 500)
        #expect(try CLITests.lora(["train", "--model", work.model.path, "--data", otherData.path, "--output", b.path, "--batch-size", "4",
                                   "--lr", "1e-2", "--rank", "4", "--steps", "4", "--seed", "2"]).status == 0)
        func loss(_ extra: [String], model: String? = nil) throws -> (Double, String) {
            let run = try CLITests.lora(["eval", "--model", model ?? work.model.path, "--data", work.valid.path, "--json"] + extra)
            #expect(run.status == 0, "\(run.stderr)")
            return (try #require(try run.json()["loss"] as? Double), run.stderr)
        }
        let (onlyA, _) = try loss(["--adapter", a.path])
        let (onlyB, _) = try loss(["--adapter", b.path])
        let (both, said) = try loss(["--adapter", a.path + ":0.7", "--adapter", b.path + ":0.3"])
        // The same combination merged into the weights by `lora merge`.
        let merged = work.url("merged")
        let merge = try CLITests.lora(["merge", "--model", work.model.path, "--adapter", a.path + ":0.7", "--adapter", b.path + ":0.3",
                                       "--output", merged.path])
        #expect(merge.status == 0, "\(merge.stderr)")
        let (mergedLoss, _) = try loss([], model: merged.path)
        print("eval: A \(onlyA), B \(onlyB), 0.7·A + 0.3·B \(both), merged \(mergedLoss)")
        #expect(abs(both - onlyA) > 1e-4 && abs(both - onlyB) > 1e-4)
        #expect(abs(both - mergedLoss) < 1e-4)
        #expect(said.contains("combined 2 adapters") && said.contains("weight 0.7"))
    }

    // MARK: 3. classify and merge read label_map.json; 4. --full writes a model folder

    @Test func classifyMergeAndFullUseTheLabels() throws {
        _ = try realModel(.miniLM)
        let work = try Work("newuser")
        defer { work.remove() }
        let data = try Self.classificationData(work, name: "cls.jsonl")
        let adapter = work.url("cls")
        // No --task: a BERT-family encoder trains as a classifier (point 9).
        let train = try CLITests.lora(["train", "--model", "all-minilm-l6-v2", "--data", data.path, "--output", adapter.path,
                                       "--steps", "6", "--lr", "5e-3", "--batch-size", "9"])
        #expect(train.status == 0, "\(train.stderr)")
        #expect(train.stderr.contains("a new classification head") && !train.stderr.contains("freshly initialised"))
        let texts = ["what a lovely film", "boring and dull", "it is a film"]
        func classify(_ model: String, _ extra: [String]) throws -> [String: Any] {
            let run = try CLITests.lora(["classify", "--model", model, "--json"] + texts.flatMap { ["--text", $0] } + extra)
            #expect(run.status == 0, "\(run.stderr)")
            return try run.json()
        }
        let viaAdapter = try classify("all-minilm-l6-v2", ["--adapter", adapter.path])
        #expect(viaAdapter["labels"] as? [String] == ["negative", "neutral", "positive"])
        let predictions = try #require(viaAdapter["predictions"] as? [[String: Any]])
        let predicted = predictions.compactMap { $0["label"] as? String }
        print("classify with a 3-class adapter: \(predicted)")
        #expect(predicted.count == 3 && predicted.allSatisfy { ["negative", "neutral", "positive"].contains($0) })
        let text = try CLITests.lora(["classify", "--model", "all-minilm-l6-v2", "--adapter", adapter.path, "--text", texts[0]])
        #expect(text.status == 0 && text.stdout.hasPrefix(predicted[0] + "\t"))

        // merge: config.json names the classes; the merged model classifies the same.
        let merged = work.url("merged")
        let merge = try CLITests.lora(["merge", "--model", "all-minilm-l6-v2", "--adapter", adapter.path, "--output", merged.path])
        #expect(merge.status == 0, "\(merge.stderr)")
        let config = try #require(try JSONSerialization.jsonObject(with: Data(contentsOf: merged.appendingPathComponent("config.json"))) as? [String: Any])
        #expect(config["id2label"] as? [String: String] == ["0": "negative", "1": "neutral", "2": "positive"])
        #expect(config["label2id"] as? [String: Int] == ["negative": 0, "neutral": 1, "positive": 2])
        let viaMerged = try classify(merged.path, [])
        let logitsA = try #require(viaAdapter["logits"] as? [[Double]]), logitsM = try #require(viaMerged["logits"] as? [[Double]])
        let e = zip(logitsA.joined(), logitsM.joined()).map { abs($0 - $1) }.max() ?? .infinity
        print("merged classifier vs adapter: max |Δ logit| \(e)")
        #expect(e < 1e-4 && viaMerged["labels"] as? [String] == ["negative", "neutral", "positive"])

        // --full: a complete model folder that every command loads.
        let full = work.url("full")
        let fullRun = try CLITests.lora(["train", "--model", "all-minilm-l6-v2", "--data", data.path, "--output", full.path,
                                         "--steps", "2", "--lr", "5e-5", "--batch-size", "9", "--full"])
        #expect(fullRun.status == 0, "\(fullRun.stderr)")
        #expect(fullRun.stdout.contains("model: \(full.path) (a complete model folder") && !fullRun.stdout.contains("adapter:"))
        for name in ["config.json", "model.safetensors", "tokenizer.json", "vocab.txt", "label_map.json"] {
            #expect(FileManager.default.fileExists(atPath: full.appendingPathComponent(name).path), "--full wrote no \(name)")
        }
        let fullConfig = try #require(try JSONSerialization.jsonObject(with: Data(contentsOf: full.appendingPathComponent("config.json"))) as? [String: Any])
        #expect(fullConfig["id2label"] as? [String: String] == ["0": "negative", "1": "neutral", "2": "positive"])
        let viaFull = try classify(full.path, [])
        #expect(viaFull["labels"] as? [String] == ["negative", "neutral", "positive"])
        let eval = try CLITests.lora(["eval", "--model", full.path, "--data", data.path, "--json"])
        #expect(eval.status == 0, "\(eval.stderr)")
        #expect(try eval.json()["examples"] as? Int == 9)
    }

    // MARK: 5. --targets

    @Test func everyTargetMustMatchAndInspectListsModules() throws {
        let work = try Work("newuser")
        defer { work.remove() }
        let typo = try work.train(work.url("t1"), ["--steps", "1", "--targets", "q_proj,vproj"])
        print("--targets q_proj,vproj: \(typo.stderr.split(separator: "\n").last ?? "")")
        #expect(typo.status != 0 && typo.stderr.contains("'vproj'") && typo.stderr.contains("self_attn.v_proj"))
        #expect(typo.stderr.contains("Embeddings and the LM head are not adaptable") && !Self.leaksInternals(typo.stderr))
        let head = try work.train(work.url("t2"), ["--steps", "1", "--targets", "q_proj,lm_head"])
        #expect(head.status != 0 && head.stderr.contains("'lm_head'"))
        let all = try work.train(work.url("t3"), ["--steps", "1", "--targets", "all-linear", "--json"])
        #expect(all.status == 0, "\(all.stderr)")
        let config = try #require(try JSONSerialization.jsonObject(with: Data(contentsOf: work.url("t3/adapter_config.json"))) as? [String: Any])
        #expect(config["target_modules"] as? String == "all-linear")
        // 2 layers × 7 projections, each with A [4, in] and B [out, 4].
        let tensors = try CLITests.lora(["adapter", "inspect", work.url("t3").path, "--json"])
        #expect(try tensors.json()["adapted_modules"] as? Int == 14)
        let modules = try CLITests.lora(["inspect", "--model", work.model.path, "--modules"])
        #expect(modules.status == 0 && modules.stdout.contains("self_attn.q_proj") && modules.stdout.contains("mlp.down_proj"))
        #expect(modules.stdout.contains("32 → 32") && modules.stdout.contains("not adaptable"))
        let json = try CLITests.lora(["inspect", "--model", work.model.path, "--modules", "--json"])
        let list = try #require(try json.json()["modules"] as? [[String: Any]])
        #expect(list.count == 7 && list.first?["name"] as? String == "self_attn.q_proj" && list.first?["count"] as? Int == 2)
    }

    // MARK: 6. Config files

    @Test func configFilesRefuseUnknownKeysAndTakeAliasesAndPaths() throws {
        let work = try Work("newuser")
        defer { work.remove() }
        let typo = try work.write("typo.yaml", "early_stoping: 2\n")
        let refused = try work.train(work.url("c0"), ["--config", typo.path, "--steps", "1"])
        #expect(refused.status != 0 && refused.stderr.contains("unknown setting 'early_stoping'") && refused.stderr.contains("did you mean 'early_stopping'"),
                "\(refused.stderr)")
        // PEFT / transformers spellings, a comma string for targets, and the paths in the file.
        let out = work.url("c1")
        let aliased = try work.write("peft.yaml", """
            model: \(work.model.path)
            data: \(work.train.path)
            output: \(out.path)
            learning_rate: 5e-3
            lora_alpha: 12
            r: 2
            lora_dropout: 0.0
            per_device_train_batch_size: 8
            max_steps: 3
            target_modules: q_proj, v_proj
            """)
        let run = try CLITests.lora(["train", "--config", aliased.path, "--json"])
        #expect(run.status == 0, "\(run.stderr)")
        #expect(try run.json()["steps"] as? Int == 3)
        let config = try #require(try JSONSerialization.jsonObject(with: Data(contentsOf: out.appendingPathComponent("adapter_config.json"))) as? [String: Any])
        #expect(config["r"] as? Int == 2 && config["lora_alpha"] as? Int == 12 && config["lora_dropout"] as? Double == 0)
        #expect(Set(config["target_modules"] as? [String] ?? []) == ["q_proj", "v_proj"])
        let state = try #require(try JSONSerialization.jsonObject(with: Data(contentsOf: out.appendingPathComponent("checkpoints/step-000003/trainer_state.json"))) as? [String: Any])
        let settings = try #require(state["configuration"] as? [String: Any])
        #expect(settings["lr"] as? Double == 5e-3 && settings["batch_size"] as? Int == 8)
        // num_train_epochs and a JSON file with a .txt name (YAML and JSON are both read).
        let json = try work.write("settings.txt", #"{"num_train_epochs": 1, "r": 2, "lora_dropout": 0.1}"#)
        let epochs = try work.train(work.url("c2"), ["--config", json.path, "--json"])
        #expect(epochs.status == 0, "\(epochs.stderr)")
        #expect(try epochs.json()["steps"] as? Int == 6)
        // A value of the wrong kind is named in plain words.
        let wrong = try work.write("wrong.yaml", "rank: many\n")
        let bad = try work.train(work.url("c3"), ["--config", wrong.path])
        #expect(bad.status != 0 && bad.stderr.contains("'rank' must be a whole number, got 'many'") && !Self.leaksInternals(bad.stderr), "\(bad.stderr)")
    }

    // MARK: 7. embed as sentence-transformers; truncation

    struct EmbeddingFixture: Decodable {
        struct Row: Decodable { let text: String; let tokens: Int; let embedding: [Double] }
        let rows: [Row]
    }

    @Test func embedMatchesSentenceTransformersAndTruncates() throws {
        _ = try realModel(.miniLM)
        let fixture = try JSONDecoder().decode(EmbeddingFixture.self, from: Data(contentsOf: fixturesDirectory.appendingPathComponent("embeddings/minilm.json")))
        for row in fixture.rows {
            let run = try CLITests.lora(["embed", "--model", "all-minilm-l6-v2", "--text", row.text, "--json"])
            #expect(run.status == 0, "\(run.stderr)")
            let embedding = try #require(try run.json()["embedding"] as? [Double])
            let e = zip(embedding, row.embedding).map { abs($0 - $1) }.max() ?? .infinity
            print("lora embed, \(row.tokens) tokens: max |Δ| vs sentence-transformers \(e)")
            #expect(embedding.count == row.embedding.count && e < 1e-5)
            #expect(run.stderr.contains("truncated to 256") == (row.tokens > 256))
        }
        let long = try #require(fixture.rows.last?.text)
        let classify = try CLITests.lora(["classify", "--model", "all-minilm-l6-v2", "--text", long, "--max-seq-len", "128", "--json"])
        #expect(classify.status == 0 && classify.stderr.contains("truncated to 128"), "\(classify.stderr)")
        let overPositions = try CLITests.lora(["classify", "--model", "all-minilm-l6-v2", "--text", long])
        #expect(overPositions.status == 0 && overPositions.stderr.contains("truncated to 512"), "\(overPositions.stderr)")
    }

    // MARK: 8. --alpha 0, ranks above a layer's dimensions

    @Test func alphaZeroAndOversizedRanksAreRefused() throws {
        let work = try Work("newuser")
        defer { work.remove() }
        let zero = try work.train(work.url("a0"), ["--steps", "1", "--alpha", "0"])
        #expect(zero.status != 0 && zero.stderr.contains("--alpha must be positive") && zero.stderr.contains("learn nothing"), "\(zero.stderr)")
        let big = try work.train(work.url("r64"), ["--steps", "1", "--rank", "64"])
        #expect(big.status != 0 && big.stderr.contains("--rank 64 exceeds") && big.stderr.contains("--rank 16 or less"), "\(big.stderr)")
    }

    // MARK: 9. Task mismatches

    @Test func taskMismatchesAreExplained() throws {
        let work = try Work("newuser")
        defer { work.remove() }
        let rows = try work.write("labels.jsonl", #"{"text": "good", "label": "pos"}"# + "\n" + #"{"text": "bad", "label": "neg"}"# + "\n")
        let asText = try CLITests.lora(["train", "--model", work.model.path, "--data", rows.path, "--output", work.url("x").path, "--steps", "1"])
        #expect(asText.status != 0 && asText.stderr.contains("classification data") && asText.stderr.contains("--task classification"), "\(asText.stderr)")
        let decoder = try CLITests.lora(["train", "--model", work.model.path, "--data", rows.path, "--output", work.url("y").path,
                                         "--task", "classification", "--steps", "1"])
        #expect(decoder.status != 0 && decoder.stderr.contains("needs a BERT-family encoder") && !decoder.stderr.contains("vocab.txt"), "\(decoder.stderr)")
    }

    // MARK: 10. --early-stopping

    @Test func earlyStoppingGetsEvaluationPoints() throws {
        let work = try Work("newuser")
        defer { work.remove() }
        let noValid = try work.train(work.url("e0"), ["--steps", "4", "--early-stopping", "2"])
        #expect(noValid.status != 0 && noValid.stderr.contains("--early-stopping needs --valid"))
        let out = work.url("e1")
        let run = try work.train(out, ["--epochs", "3", "--early-stopping", "50", "--valid", work.valid.path])
        #expect(run.status == 0, "\(run.stderr)")
        #expect(run.stderr.contains("--early-stopping evaluates --valid every 6 steps (once per epoch)"), "\(run.stderr)")
        let evals = Self.lines(out.appendingPathComponent("metrics.jsonl")).filter { $0.contains(#""type":"eval""#) }
        #expect(evals.count == 3)
    }

    // MARK: 11. Negative numbers

    @Test func negativeNumbersAreValues() throws {
        let work = try Work("newuser")
        defer { work.remove() }
        for (flag, expected) in [("--lr", "--lr must be positive"), ("--rank", "--rank must be in"), ("--dropout", "--dropout must be in"),
                                 ("--steps", "--steps must be positive"), ("--weight-decay", "--weight-decay must be")] {
            let run = try work.train(work.url("n"), [flag, "-1"])
            #expect(run.status != 0 && run.stderr.contains(expected) && !run.stderr.contains("Missing value"), "\(flag) -1: \(run.stderr)")
        }
        let generate = try CLITests.lora(["generate", "--model", work.model.path, "--prompt", "x", "--temperature", "-1"])
        #expect(generate.status != 0 && generate.stderr.contains("--temperature must be ≥ 0"), "\(generate.stderr)")
    }

    // MARK: 12. Error messages; data folders; mlx-lm adapters

    @Test func errorsAreReadableAndLayoutsAreRecognised() throws {
        let work = try Work("newuser")
        defer { work.remove() }
        // A folder as --data: explained, or read as mlx-lm's train/valid layout.
        let empty = work.url("empty")
        try FileManager.default.createDirectory(at: empty, withIntermediateDirectories: true)
        let noTrain = try CLITests.lora(["train", "--model", work.model.path, "--data", empty.path, "--output", work.url("d1").path])
        #expect(noTrain.status != 0 && noTrain.stderr.contains("is a folder without train.jsonl") && !Self.leaksInternals(noTrain.stderr))
        let mlxData = work.url("mlxdata")
        try FileManager.default.createDirectory(at: mlxData, withIntermediateDirectories: true)
        try FileManager.default.copyItem(at: work.train, to: mlxData.appendingPathComponent("train.jsonl"))
        try FileManager.default.copyItem(at: work.valid, to: mlxData.appendingPathComponent("valid.jsonl"))
        let mlx = try CLITests.lora(["train", "--model", work.model.path, "--data", mlxData.path, "--output", work.url("d2").path,
                                     "--steps", "2", "--rank", "4"])
        #expect(mlx.status == 0 && mlx.stderr.contains("valid.jsonl as --valid") && mlx.stderr.contains("validation: 6 examples"), "\(mlx.stderr)")
        // An --output that is a file; a config value of the wrong type; a missing --valid.
        let file = try work.write("afile.txt", "x")
        let asOutput = try CLITests.lora(["train", "--model", work.model.path, "--data", work.train.path, "--output", file.path])
        #expect(asOutput.status != 0 && asOutput.stderr.contains("is a file; give a folder") && !Self.leaksInternals(asOutput.stderr))
        let typed = try work.write("typed.yaml", "targets: 5\n")
        let badType = try work.train(work.url("d3"), ["--config", typed.path])
        #expect(badType.status != 0 && !Self.leaksInternals(badType.stderr) && badType.stderr.contains("'targets' must be"), "\(badType.stderr)")
        let missing = try work.train(work.url("d4"), ["--valid", work.url("nope.jsonl").path])
        #expect(missing.status != 0 && missing.stderr.contains("No such file") && !Self.leaksInternals(missing.stderr), "\(missing.stderr)")
        // A refused resume names only the settings that differ.
        let out = work.url("r")
        #expect(try work.train(out, ["--steps", "2"]).status == 0)
        let changed = try work.train(out, ["--steps", "3", "--rank", "8", "--resume", "latest"])
        print("resume with another rank: \(changed.stderr.split(separator: "\n").last ?? "")")
        #expect(changed.status != 0 && changed.stderr.contains("--rank: 4 in the checkpoint, 8 now") && !changed.stderr.contains("{"))
        // The path is said once.
        let truncated = try work.write("bad.gguf", "GGUF")
        let gguf = try CLITests.lora(["inspect", "--model", truncated.path])
        #expect(gguf.status != 0 && gguf.stderr.components(separatedBy: truncated.path).count == 2, "\(gguf.stderr)")
        // An mlx-lm adapter folder is taken wherever an adapter is.
        let mlxAdapter = work.url("mlx-adapter")
        let convert = try CLITests.lora(["convert", "--input", out.path, "--output", mlxAdapter.path, "--to", "mlx", "--num-layers", "2"])
        #expect(convert.status == 0, "\(convert.stderr)")
        func score(_ adapter: URL) throws -> [Double] {
            let run = try CLITests.lora(["score", "--model", work.model.path, "--adapter", adapter.path, "--text", "Add 3 and 4: 7", "--json"])
            #expect(run.status == 0, "\(run.stderr)")
            return try #require(try run.json()["logprobs"] as? [Double])
        }
        let peftScores = try score(out), mlxScores = try score(mlxAdapter)
        let e = zip(peftScores, mlxScores).map { abs($0 - $1) }.max() ?? .infinity
        print("score with the mlx-lm copy of an adapter: max |Δ log p| \(e)")
        #expect(e < 1e-5)
        let inspect = try CLITests.lora(["adapter", "inspect", mlxAdapter.path, "--json"])
        #expect(inspect.status == 0, "\(inspect.stderr)")
        #expect(try inspect.json()["layout"] as? String == "mlx-lm")
    }

    // MARK: 13. generate

    @Test func generateChatOptionsAndCleanJSON() throws {
        _ = try realModel(.smolLM2)
        let work = try Work("newuser")
        defer { work.remove() }
        let reply = try CLITests.lora(["generate", "--model", "smollm2-135m-instruct", "--chat", "--prompt", "Hello!", "--max-tokens", "48", "--json"])
        #expect(reply.status == 0, "\(reply.stderr)")
        let json = try reply.json()
        let text = try #require(json["text"] as? String)
        print("chat reply: \(text.debugDescription), finish \(json["finish_reason"] ?? "?")")
        #expect(!text.contains("<|im_end|>") && !text.contains("<|im_start|>") && json["finish_reason"] as? String == "stop")
        let system = try CLITests.lora(["generate", "--model", "smollm2-135m-instruct", "--system", "You answer in French.", "--prompt", "Hi",
                                        "--max-tokens", "2", "--show-prompt"])
        #expect(system.status == 0 && system.stderr.contains("<|im_start|>system\nYou answer in French.<|im_end|>") && !system.stderr.contains("named SmolLM"),
                "\(system.stderr)")
        let conversation = try work.write("chat.jsonl", """
            {"role": "user", "content": "My name is Ada."}
            {"role": "assistant", "content": "Hello Ada!"}
            {"role": "user", "content": "What is my name?"}
            """)
        let multi = try CLITests.lora(["generate", "--model", "smollm2-135m-instruct", "--messages", conversation.path, "--max-tokens", "2", "--show-prompt"])
        #expect(multi.status == 0 && multi.stderr.contains("<|im_start|>assistant\nHello Ada!<|im_end|>\n<|im_start|>user\nWhat is my name?"), "\(multi.stderr)")
        // --chat-template FILE for a model without one (the tiny Llama has none).
        let chatML = try work.write("chatml.jinja", #"{% for message in messages %}{{'<|im_start|>' + message['role'] + '\n' + message['content'] + '<|im_end|>' + '\n'}}{% endfor %}{% if add_generation_prompt %}{{ '<|im_start|>assistant\n' }}{% endif %}"#)
        let noTemplate = try CLITests.lora(["generate", "--model", work.model.path, "--chat", "--prompt", "hi", "--max-tokens", "2"])
        #expect(noTemplate.status != 0 && noTemplate.stderr.contains("no chat template"), "\(noTemplate.stderr)")
        let given = try CLITests.lora(["generate", "--model", work.model.path, "--chat-template", chatML.path, "--prompt", "hi",
                                       "--max-tokens", "2", "--show-prompt"])
        #expect(given.status == 0 && given.stderr.contains("<|im_start|>user\nhi<|im_end|>\n<|im_start|>assistant\n"), "\(given.stderr)")
        let code = try work.write("code.jinja", "{{ cycler.__init__.__globals__.os.popen('id').read() }}")
        let refused = try CLITests.lora(["generate", "--model", work.model.path, "--chat-template", code.path, "--prompt", "hi"])
        #expect(refused.status != 0 && refused.stderr.contains("unsupported chat template"), "\(refused.stderr)")
        // The Llama-3, Gemma and Mistral templates through the CLI, against transformers' rendering
        // of the same source (Tests/Fixtures/chat-templates, first case: one user turn, generation prompt).
        struct Family: Decodable {
            struct Template: Decodable {
                /// `expected` is absent where the template refuses the conversation.
                struct Case: Decodable { let messages: [[String: String]]; let add_generation_prompt: Bool; let expected: String? }
                let name: String; let source: String; let cases: [Case]
            }
            let templates: [Template]
        }
        var checked: [String] = []
        for family in ["llama-3", "gemma", "mistral"] {
            let fixture = try JSONDecoder().decode(Family.self, from: Data(contentsOf: fixturesDirectory.appendingPathComponent("chat-templates/\(family).json")))
            for template in fixture.templates {
                guard let c = template.cases.first(where: { $0.add_generation_prompt && $0.messages.count == 1 && $0.messages[0]["role"] == "user" }),
                      let content = c.messages[0]["content"], let expected = c.expected else { continue }
                let file = try work.write("\(family).jinja", template.source)
                let run = try CLITests.lora(["generate", "--model", work.model.path, "--chat-template", file.path, "--prompt", content,
                                             "--max-tokens", "1", "--show-prompt"])
                #expect(run.status == 0 && run.stderr.contains("prompt:\n" + expected), "\(template.name): \(run.stderr)")
                checked.append(template.name)
            }
        }
        print("generate --chat-template rendered as transformers does for \(checked.count) templates: \(checked)")
        #expect(checked.count >= 6)
        let topK = try CLITests.lora(["generate", "--model", work.model.path, "--prompt", "x", "--max-tokens", "2", "--top-k", "5"])
        #expect(topK.status == 0 && topK.stderr.contains("only apply when sampling"))
    }

    // MARK: 14. Small things

    @Test func smallThingsThatAddUp() throws {
        _ = try realModel(.miniLM)
        let work = try Work("newuser")
        defer { work.remove() }
        // loss.svg: step ticks, an honest axis label, a validation legend only with validation data.
        let out = work.url("svg")
        #expect(try work.train(out, ["--steps", "12"]).status == 0)
        let svg = try String(contentsOf: out.appendingPathComponent("loss.svg"), encoding: .utf8)
        #expect(svg.contains(">optimizer step<") && !svg.contains("last") && !svg.contains("validation loss"))
        #expect(svg.contains(">0</text>") && svg.contains(">10</text>"))
        let withValid = work.url("svg2")
        #expect(try work.train(withValid, ["--steps", "4", "--valid", work.valid.path, "--eval-every", "2"]).status == 0)
        #expect(try String(contentsOf: withValid.appendingPathComponent("loss.svg"), encoding: .utf8).contains("validation loss"))
        // base_model_name_or_path is written.
        let config = try #require(try JSONSerialization.jsonObject(with: Data(contentsOf: out.appendingPathComponent("adapter_config.json"))) as? [String: Any])
        #expect(config["base_model_name_or_path"] as? String == work.model.path)
        // The "freshly initialised" warning only where a head is used untrained.
        for command in [["inspect"], ["tokenize", "--text", "hi"], ["embed", "--text", "hi"]] {
            let run = try CLITests.lora([command[0], "--model", "all-minilm-l6-v2"] + command.dropFirst())
            #expect(run.status == 0 && !run.stderr.contains("initialised") && !run.stderr.contains("classification head"), "\(command): \(run.stderr)")
        }
        // --json keys are snake_case.
        func keys(_ object: [String: Any]) -> [String] { Array(object.keys) }
        let inspect = try CLITests.lora(["inspect", "--model", "all-minilm-l6-v2", "--json"])
        let adapter = try CLITests.lora(["adapter", "inspect", out.path, "--json"])
        let generate = try CLITests.lora(["generate", "--model", work.model.path, "--prompt", "x", "--max-tokens", "2", "--json"])
        for run in [inspect, adapter, generate] {
            let names = keys(try run.json())
            #expect(names.allSatisfy { $0 == $0.lowercased() }, "camelCase keys: \(names)")
        }
        // models list --json; an empty text is named as such, not blamed on truncation.
        let models = try CLITests.lora(["models", "list", "--json"])
        #expect(models.status == 0)
        let listed = try models.json()["models"] as? [[String: Any]]
        #expect((listed?.count ?? 0) >= 2)
        let empty = try work.write("empty-text.jsonl", #"{"text": ""}"# + "\n")
        _ = try realModel(.smolLM2)
        let emptyRun = try CLITests.lora(["train", "--model", "smollm2-135m-instruct", "--data", empty.path, "--output", work.url("et").path])
        #expect(emptyRun.status != 0 && emptyRun.stderr.contains("are empty") && !emptyRun.stderr.contains("raise the maximum"), "\(emptyRun.stderr)")
        // --help states each default once, in the parser's style "(default: X)".
        let twice = try NSRegularExpression(pattern: #"\(default[^)]*\)[^-]{0,80}\(default"#)
        for command in [["train"], ["eval"], ["generate"], ["classify"], ["embed"], ["merge"], ["bench", "train"]] {
            let help = try CLITests.lora(command + ["--help"])
            let text = help.stdout.replacingOccurrences(of: "\n", with: " ")
            #expect(help.status == 0 && (command != ["train"] || text.contains("(default: 8)")), "\(command)")
            #expect(!text.contains("(default "), "\(command) --help states a default in prose")
            #expect(twice.firstMatch(in: text, range: NSRange(text.startIndex..., in: text)) == nil, "\(command) --help states a default twice")
        }
        // Reports go under the run's folder, never into the current one.
        let experimentHelp = try CLITests.lora(["experiment", "sentiment", "--help"])
        #expect(experimentHelp.stdout.contains("EXPERIMENTS.md in --output"))
        let reportHelp = try CLITests.lora(["bench", "report", "--help"])
        #expect(reportHelp.stdout.contains("beside --results"))
    }
}

extension TrainReliabilityTests.Work {
    func url(_ name: String) -> URL { root.appendingPathComponent(name) }

    func write(_ name: String, _ text: String) throws -> URL {
        let u = url(name)
        try FileManager.default.createDirectory(at: u.deletingLastPathComponent(), withIntermediateDirectories: true)
        try Data(text.utf8).write(to: u)
        return u
    }

    /// `lora train` on the tiny Llama with small, fast settings (no --json: progress on stdout).
    func train(_ output: URL, _ extra: [String] = []) throws -> CLITests.Run {
        try CLITests.lora(["train", "--model", model.path, "--data", train.path, "--output", output.path, "--batch-size", "4",
                           "--lr", "1e-2", "--rank", "4", "--seed", "1"] + extra)
    }
}
