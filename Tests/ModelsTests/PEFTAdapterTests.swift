import Foundation
import Formats
import Kernels
import LoRA
import ModelStore
@testable import Models
import TestSupport
import Training
import Testing

/// PEFT adapter directories written by PEFT 0.21 (Scripts/reference/make_adapter_fixtures.py),
/// loaded here: the same modules adapted, PEFT's trainable-parameter report, and PEFT's outputs
/// adapted, merged and with the adapter disabled.
@Suite("PEFT adapters against PEFT", .serialized)
struct PEFTAdapterTests {
    struct Expected: Decodable {
        struct Input: Decodable { let ids: [Int]; let attention_mask: [Int]?; let token_type_ids: [Int]? }
        let base: String
        let kind: String
        let inputs: [Input]
        let adapted: [[Double]]
        let merged: [[Double]]
        let base_outputs: [[Double]]
        let trainable_report: String
        let adapted_module_names: [String]
    }

    static let adaptersDirectory = fixturesDirectory.appendingPathComponent("adapters")

    static func expected(_ name: String) throws -> Expected {
        try JSONDecoder().decode(Expected.self, from: Data(contentsOf: adaptersDirectory.appendingPathComponent("\(name)/expected.json")))
    }

    /// The base model an adapter fixture was made for.
    static func baseModel(_ base: String) throws -> any PretrainedModel { try baseModelAndReport(base).0 }

    static func baseModelAndReport(_ base: String) throws -> (any PretrainedModel, LoadReport) {
        switch base {
        case "tiny-llama", "tiny-bert":
            return try ModelLoader.loadHuggingFace(directory: fixturesDirectory.appendingPathComponent(base))
        case "smollm2-135m-instruct": return try ModelLoader.load(try realModel(.smolLM2))
        case "all-minilm-l6-v2": return try ModelLoader.load(try realModel(.miniLM))
        default: throw ModelError.invalidInput("unknown base \(base)")
        }
    }

    /// Log-probabilities (causal LM) or logits (classification), one list per input.
    static func outputs(_ model: any PretrainedModel, _ expected: Expected) throws -> [[Double]] {
        if let m = model as? any CausalLanguageModel {
            return try expected.inputs.map { try m.tokenLogProbabilities($0.ids) }
        }
        let m = try #require(model as? any SequenceClassifier)
        do {
            return try expected.inputs.map { input in
                let batch = TokenBatch(batch: 1, length: input.ids.count, inputIds: input.ids,
                                       attentionMask: input.attention_mask, tokenTypeIds: input.token_type_ids)
                let logits = try m.logits(batch)
                return (0..<logits.count).map { Double(logits[$0]) }
            }
        }
    }

    /// Max absolute difference for log-probabilities, max relative difference for logits.
    static func difference(_ ours: [[Double]], _ theirs: [[Double]], kind: String) -> Double {
        let pairs = zip(ours.joined(), theirs.joined())
        let diff = pairs.map { abs($0 - $1) }.max() ?? .infinity
        if kind == "causal-lm" { return diff }
        return diff / max(theirs.joined().map(abs).max() ?? 1, 1e-12)
    }

    static func check(_ name: String, directory: URL? = nil) throws {
        let expected = try expected(name)
        var (model, report) = try baseModelAndReport(expected.base)
        let adaptable = model
        adaptable.setTraining(false)
        // The fixture's freshly initialised head, when the base checkpoint has none.
        let head = adaptersDirectory.appendingPathComponent("\(name)/base_classifier.safetensors")
        if FileManager.default.fileExists(atPath: head.path) {
            let tensors = try SafeTensorsFile(url: head).floatTensors()
            for (param, p) in adaptable.namedParameters where tensors[param] != nil { p.value.copy(from: tensors[param]!) }
            report.newlyInitialized = []
        }
        try adaptable.loadPEFTAdapter(from: directory ?? adaptersDirectory.appendingPathComponent(name))
        let adapted = adaptable.linearModules.filter { !$0.activeAdapters.isEmpty }.map(\.name).sorted()
        #expect(adapted == expected.adapted_module_names.sorted(), "\(name): adapted modules differ from PEFT's")
        #expect(adaptable.trainableParameterReport() == expected.trainable_report, "\(name)")
        let tolerance = expected.kind == "causal-lm" ? 1e-3 : 1e-4
        let ours = try outputs(model, expected)
        #expect(ours.map(\.count) == expected.adapted.map(\.count))
        let e = difference(ours, expected.adapted, kind: expected.kind)
        try adaptable.mergeAdapters()
        let merged = try outputs(model, expected)
        let eMerged = difference(merged, expected.merged, kind: expected.kind)
        let eMergedOurs = difference(merged, ours, kind: expected.kind)
        try adaptable.unmergeAdapters()
        let eUnmerged = difference(try outputs(model, expected), ours, kind: expected.kind)
        try adaptable.setActiveAdapters([])
        let eBase = difference(try outputs(model, expected), expected.base_outputs, kind: expected.kind)
        print("[\(name)] \(adapted.count) modules; adapted \(e), merged vs PEFT \(eMerged), merged vs unmerged \(eMergedOurs), after unmerge \(eUnmerged), disabled vs PEFT base \(eBase)")
        #expect(e <= tolerance && eMerged <= tolerance, "\(name)")
        // A head the base checkpoint lacks is freshly (randomly) initialised on both sides, so
        // the disabled outputs compare only when the base is complete.
        if report.newlyInitialized.isEmpty { #expect(eBase <= tolerance, "\(name)") }
        #expect(eMergedOurs <= 1e-4 && eUnmerged == 0, "\(name)")
    }

    @Test(arguments: ["tiny-llama-patterns", "tiny-llama-regex", "tiny-llama-layers", "tiny-llama-exclude",
                      "tiny-llama-all-linear", "tiny-bert-cls", "tiny-llama-combine/a", "tiny-llama-combine/b",
                      "tiny-llama-combine/c"])
    func tinyAdaptersMatchPEFT(name: String) throws {
        try Self.check(name)
    }

    @Test(arguments: ["smollm2-qkvod", "minilm-cls"])
    func realAdaptersMatchPEFT(name: String) throws {
        try Self.check(name)
    }

    @Test(arguments: [("cat_ab", ["a", "b"], [0.7, 0.4], AdapterCombination.cat),
                      ("linear_ac", ["a", "c"], [0.6, 0.5], .linear)])
    func weightedCombinationsMatchPEFT(name: String, sources: [String], weights: [Double], method: AdapterCombination) throws {
        let expected = try Self.expected("tiny-llama-combine/\(name)")
        let model = try Self.baseModel(expected.base)
        let adaptable = model
        for s in sources { try adaptable.loadPEFTAdapter(from: Self.adaptersDirectory.appendingPathComponent("tiny-llama-combine/\(s)"), named: s) }
        try adaptable.addWeightedAdapter(sources, weights: weights, named: name, combination: method)
        try adaptable.setActiveAdapters([name])
        let e = Self.difference(try Self.outputs(model, expected), expected.adapted, kind: expected.kind)
        // The combined matrices equal PEFT's saved ones.
        let saved = try SafeTensorsFile(url: Self.adaptersDirectory.appendingPathComponent("tiny-llama-combine/\(name)/adapter_model.safetensors"))
        var worst = 0.0
        for (param, p) in adaptable.adapterParameters(named: name) {
            worst = max(worst, relativeDifference(p.value, try saved.tensor("base_model.model." + param)))
        }
        print("[\(name)] \(method) combination: outputs vs PEFT \(e), matrices vs PEFT's \(worst)")
        #expect(e <= 1e-3 && worst <= 1e-5)
    }

    @Test func saveLoadRoundTripIsExact() throws {
        let name = "tiny-bert-cls"
        let expected = try Self.expected(name)
        let model = try Self.baseModel(expected.base)
        let config = try model.loadPEFTAdapter(from: Self.adaptersDirectory.appendingPathComponent(name))
        let dir = URL(fileURLWithPath: NSTemporaryDirectory()).appendingPathComponent("lora-roundtrip-\(UUID().uuidString)")
        defer { try? FileManager.default.removeItem(at: dir) }
        try model.savePEFTAdapter(to: dir)
        let original = try SafeTensorsFile(url: Self.adaptersDirectory.appendingPathComponent("\(name)/adapter_model.safetensors")).floatTensors()
        let written = try SafeTensorsFile(url: dir.appendingPathComponent("adapter_model.safetensors")).floatTensors()
        #expect(original.keys.sorted() == written.keys.sorted())
        for (key, t) in original { #expect(written[key]?.isBitIdentical(to: t) == true, "\(key)") }
        let reread = try LoRAConfig(json: Data(contentsOf: dir.appendingPathComponent("adapter_config.json")))
        #expect(reread.rank == config.rank && reread.alpha == config.alpha && reread.targets == config.targets
                && reread.modulesToSave == config.modulesToSave && reread.taskType == config.taskType)
        // Loading what we wrote gives PEFT's outputs again.
        try Self.check(name, directory: dir)
    }
}

@Suite("MLX adapter conversion")
struct MLXConversionTests {
    @Test(arguments: ["tiny-llama-patterns", "tiny-llama-layers", "tiny-llama-all-linear"])
    func peftToMLXToPEFTPreservesTheOutputs(name: String) throws {
        let expected = try PEFTAdapterTests.expected(name)
        let tmp = URL(fileURLWithPath: NSTemporaryDirectory()).appendingPathComponent("lora-mlx-\(UUID().uuidString)")
        defer { try? FileManager.default.removeItem(at: tmp) }
        let mlx = tmp.appendingPathComponent("mlx"), back = tmp.appendingPathComponent("peft")
        let peft = try PEFTCodec.read(PEFTAdapterTests.adaptersDirectory.appendingPathComponent(name))
        try MLXCodec.write(peft, to: mlx, base: AdapterBase(numHiddenLayers: 2))
        // mlx-lm's layout: lora_a [in, r], lora_b [r, out], one rank, keys relative to the block.
        let file = try SafeTensorsFile(url: mlx.appendingPathComponent("adapters.safetensors"))
        let q = try #require(file.names.first { $0.hasSuffix(".lora_a") })
        let rank = try file.entry(q).shape[1]
        #expect(file.names.filter { $0.hasSuffix(".lora_b") }.allSatisfy { (try? file.entry($0).shape[0]) == rank })
        try PEFTCodec.write(try AdapterFormats.read(mlx), to: back)
        #expect(AdapterFormats.detect(mlx).name == MLXCodec.name && AdapterFormats.detect(back).name == PEFTCodec.name)
        // The mlx-lm folder loads directly, and through its PEFT form, with PEFT's outputs.
        let direct = try PEFTAdapterTests.baseModel(expected.base)
        #expect(try direct.loadAdapter(from: mlx).format == "mlx-lm")
        let model = try PEFTAdapterTests.baseModel(expected.base)
        try model.loadPEFTAdapter(from: back)
        let e = PEFTAdapterTests.difference(try PEFTAdapterTests.outputs(model, expected), expected.adapted, kind: expected.kind)
        let eDirect = PEFTAdapterTests.difference(try PEFTAdapterTests.outputs(direct, expected), expected.adapted, kind: expected.kind)
        print("[\(name)] PEFT → MLX (rank \(rank)) → PEFT: log-probabilities vs PEFT's \(e); the mlx-lm folder loaded directly \(eDirect)")
        #expect(e <= 1e-4 && eDirect <= 1e-4)
    }

    @Test func refusesWhatMLXCannotHold() throws {
        let tmp = URL(fileURLWithPath: NSTemporaryDirectory()).appendingPathComponent("lora-mlx-\(UUID().uuidString)")
        defer { try? FileManager.default.removeItem(at: tmp) }
        // BERT modules are not Llama blocks, and a classifier copy has no place in mlx-lm's file.
        let bert = try PEFTCodec.read(PEFTAdapterTests.adaptersDirectory.appendingPathComponent("tiny-bert-cls"))
        #expect { try MLXCodec.write(bert, to: tmp, base: AdapterBase(numHiddenLayers: 2)) } throws: { "\($0)".contains("modules_to_save") }
        let llama = try PEFTCodec.read(PEFTAdapterTests.adaptersDirectory.appendingPathComponent("tiny-llama-patterns"))
        #expect { try MLXCodec.write(llama, to: tmp, base: AdapterBase(numHiddenLayers: 1)) } throws: { "\($0)".contains("do not fit a 1-layer model") }
        #expect { try MLXCodec.write(llama, to: tmp, base: AdapterBase()) } throws: { "\($0)".contains("number of layers") }
        #expect(!FileManager.default.fileExists(atPath: tmp.path))
    }
}

/// Adapters created and trained here, written as PEFT files; reloaded here they give the same
/// outputs. With `LORA_EXPORT_ADAPTERS_DIR` set, they are also left there with
/// `swift_outputs.json` for `make_adapter_fixtures.py --check-swift` (PEFT loads them).
@Suite("Adapters written by swift-lora", .serialized)
struct WrittenAdapterTests {
    static func train(_ model: some AdaptableModel, steps: Int, loss: () throws -> Float) rethrows {
        let optimizer = AdamW(parameters: model.trainableParameters, learningRate: 1e-2, weightDecay: 0)
        for _ in 0..<steps {
            optimizer.zeroGradients()
            _ = try loss()
            optimizer.update()
        }
    }

    static func export(_ name: String, model: any PretrainedModel, fixture: String, root: URL) throws {
        let expected = try PEFTAdapterTests.expected(fixture)
        let dir = root.appendingPathComponent(name)
        try model.savePEFTAdapter(to: dir)
        model.setTraining(false)
        let ours = try PEFTAdapterTests.outputs(model, expected)
        // Reload into a fresh base: identical outputs.
        let fresh = try PEFTAdapterTests.baseModel(expected.base)
        if let original = model as? BertForSequenceClassification, let copy = fresh as? BertForSequenceClassification {
            // The classification head of a fresh base is random: use the same one.
            copy.classifier.base.weight.value.copy(from: original.classifier.base.weight.value)
        }
        try fresh.loadPEFTAdapter(from: dir)
        let reloaded = try PEFTAdapterTests.outputs(fresh, expected)
        #expect(PEFTAdapterTests.difference(reloaded, ours, kind: expected.kind) == 0, "\(name)")
        var inputs: [[String: [Int]]] = []
        for input in expected.inputs {
            var row = ["ids": input.ids]
            if let m = input.attention_mask { row["attention_mask"] = m }
            if let t = input.token_type_ids { row["token_type_ids"] = t }
            inputs.append(row)
        }
        let json: [String: Any] = ["base": expected.base, "kind": expected.kind, "inputs": inputs, "adapted": ours,
                                   "adapted_module_names": model.linearModules.filter { !$0.activeAdapters.isEmpty }.map(\.name).sorted()]
        try JSONSerialization.data(withJSONObject: json, options: [.sortedKeys]).write(to: dir.appendingPathComponent("swift_outputs.json"))
        print("[\(name)] written to \(dir.path): \(model.trainableParameterReport())")
    }

    static var root: URL {
        if let dir = ProcessInfo.processInfo.environment["LORA_EXPORT_ADAPTERS_DIR"], !dir.isEmpty { return URL(fileURLWithPath: dir) }
        return URL(fileURLWithPath: NSTemporaryDirectory()).appendingPathComponent("lora-written-\(UUID().uuidString)")
    }

    @Test func trainedTinyAdaptersRoundTrip() throws {
        let root = Self.root
        // Llama: rank and alpha patterns, rsLoRA, several targets; trained a few steps.
        let llama = try PEFTAdapterTests.baseModel("tiny-llama")
        var config = LoRAConfig(rank: 4, alpha: 8, targets: .names(["q_proj", "v_proj", "down_proj", "gate_proj"]), useRSLoRA: true,
                                taskType: "CAUSAL_LM")
        config.rankPattern = [("v_proj", 2)]
        config.alphaPattern = [("model.layers.1.mlp.down_proj", 3)]
        try llama.addAdapter(named: "default", config: config, seed: 3)
        guard let l = llama as? LlamaForCausalLM else { return }
        try Self.train(l, steps: 5) {
            try l.loss(ModelBehaviourTests.tokensForVocabulary(256), labels: ModelBehaviourTests.tokensForVocabulary(256).inputIds, backward: true)
        }
        try Self.export("tiny-llama-trained", model: llama, fixture: "tiny-llama-patterns", root: root)

        // BERT classification: LoRA on query/value/dense + a trained classifier (modules_to_save).
        let bert = try PEFTAdapterTests.baseModel("tiny-bert")
        var bertConfig = LoRAConfig(rank: 4, alpha: 16, targets: .names(["query", "value", "dense"]), modulesToSave: ["classifier"],
                                    taskType: "SEQ_CLS")
        bertConfig.initialization = .kaimingUniform
        try bert.addAdapter(named: "default", config: bertConfig, seed: 4)
        guard let b = bert as? BertForSequenceClassification else { return }
        let expected = try PEFTAdapterTests.expected("tiny-bert-cls")
        let batch = TokenBatch(batch: expected.inputs.count, length: expected.inputs[0].ids.count,
                               inputIds: expected.inputs.flatMap(\.ids), attentionMask: expected.inputs.flatMap { $0.attention_mask ?? [] },
                               tokenTypeIds: expected.inputs.flatMap { $0.token_type_ids ?? [] })
        try Self.train(b, steps: 5) { try b.loss(batch, labels: [1, 0, 1], backward: true) }
        try Self.export("tiny-bert-trained", model: bert, fixture: "tiny-bert-cls", root: root)
        if ProcessInfo.processInfo.environment["LORA_EXPORT_ADAPTERS_DIR"] == nil { try? FileManager.default.removeItem(at: root) }
    }

    @Test func realAdapterRewritten() throws {
        let root = Self.root
        let model = try PEFTAdapterTests.baseModel("smollm2-135m-instruct")
        try model.loadPEFTAdapter(from: PEFTAdapterTests.adaptersDirectory.appendingPathComponent("smollm2-qkvod"))
        try Self.export("smollm2-rewritten", model: model, fixture: "smollm2-qkvod", root: root)
        if ProcessInfo.processInfo.environment["LORA_EXPORT_ADAPTERS_DIR"] == nil { try? FileManager.default.removeItem(at: root) }
    }
}

@Suite("Merged models written to disk")
struct MergedExportTests {
    @Test(arguments: ["tiny-llama-patterns", "tiny-bert-cls"])
    func mergedDirectoryReloadsWithPEFTsMergedOutputs(name: String) throws {
        let expected = try PEFTAdapterTests.expected(name)
        let model = try PEFTAdapterTests.baseModel(expected.base)
        try model.loadPEFTAdapter(from: PEFTAdapterTests.adaptersDirectory.appendingPathComponent(name))
        for m in model.linearModules where !m.activeAdapters.isEmpty { try m.fuse() }
        let dir = URL(fileURLWithPath: NSTemporaryDirectory()).appendingPathComponent("lora-merged-\(UUID().uuidString)")
        defer { try? FileManager.default.removeItem(at: dir) }
        try HuggingFaceExport.write(model, tokenizerFiles: [:], tokenizer: nil, storage: .f32, to: dir)
        let (reloaded, _) = try ModelLoader.loadHuggingFace(directory: dir)
        #expect(reloaded.linearModules.allSatisfy { $0.adapters.isEmpty })
        let e = PEFTAdapterTests.difference(try PEFTAdapterTests.outputs(reloaded, expected), expected.merged, kind: expected.kind)
        print("[\(name)] merged, written, reloaded: outputs vs PEFT merge_and_unload \(e)")
        #expect(e <= (expected.kind == "causal-lm" ? 1e-3 : 1e-4))
    }
}

@Suite("Several adapters on one base")
struct AdapterSwitchingTests {
    @Test func switchingBetweenNamedAdaptersAndDisabling() throws {
        let dir = PEFTAdapterTests.adaptersDirectory.appendingPathComponent("tiny-llama-combine")
        let model = try PEFTAdapterTests.baseModel("tiny-llama")
        for name in ["a", "b", "c"] { try model.loadPEFTAdapter(from: dir.appendingPathComponent(name), named: name) }
        #expect(model.adapterRegistry.names == ["a", "b", "c"])
        var worst = 0.0
        for name in ["b", "a", "c", "a"] {
            try model.setActiveAdapters([name])
            let expected = try PEFTAdapterTests.expected("tiny-llama-combine/\(name)")
            worst = max(worst, PEFTAdapterTests.difference(try PEFTAdapterTests.outputs(model, expected), expected.adapted, kind: expected.kind))
        }
        try model.setActiveAdapters([])
        let base = try PEFTAdapterTests.expected("tiny-llama-combine/a")
        let eBase = PEFTAdapterTests.difference(try PEFTAdapterTests.outputs(model, base), base.base_outputs, kind: base.kind)
        print("switching a/b/c: max difference vs PEFT \(worst); all disabled vs base \(eBase)")
        #expect(worst <= 1e-4 && eBase <= 1e-4)
        #expect(throws: ModelError.self) { try model.setActiveAdapters(["nope"]) }
        #expect(throws: ModelError.self) { try model.loadPEFTAdapter(from: dir.appendingPathComponent("a"), named: "a") }
    }

    @Test func adaptersForAnotherModelAreRefused() throws {
        // A Llama adapter on BERT, a BERT adapter on Llama: nothing matches — an error, no change.
        let bert = try PEFTAdapterTests.baseModel("tiny-bert")
        #expect(throws: ModelError.self) {
            try bert.loadPEFTAdapter(from: PEFTAdapterTests.adaptersDirectory.appendingPathComponent("tiny-llama-patterns"))
        }
        #expect(bert.adapterRegistry.names.isEmpty && bert.linearModules.allSatisfy { $0.adapters.isEmpty })
        let llama = try PEFTAdapterTests.baseModel("tiny-llama")
        #expect(throws: ModelError.self) {
            try llama.loadPEFTAdapter(from: PEFTAdapterTests.adaptersDirectory.appendingPathComponent("tiny-bert-cls"))
        }
        // An adapter for a model of the same family but other sizes: shapes do not fit.
        let other = try LlamaForCausalLM(ModelBehaviourTests.tinyLlamaConfig())
        do {
            try other.loadPEFTAdapter(from: PEFTAdapterTests.adaptersDirectory.appendingPathComponent("tiny-llama-patterns"))
            Issue.record("an adapter of another size was accepted")
        } catch {
            #expect("\(error)".contains("adapter_model.safetensors"), "\(error)")
        }
        #expect(other.adapterRegistry.names.isEmpty)
    }
}
