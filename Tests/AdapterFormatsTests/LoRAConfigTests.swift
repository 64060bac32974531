import Foundation
import AdapterFormats
import LoRA
import Testing

@Suite("LoRAConfig (PEFT adapter_config.json)")
struct LoRAConfigTests {
    static func config(_ json: String) throws -> LoRAConfig { try LoRAConfig(json: Data(json.utf8), file: "adapter_config.json") }

    @Test func readsPEFTKeysAndKeepsUnknownOnes() throws {
        let c = try Self.config("""
        {"peft_type": "LORA", "r": 8, "lora_alpha": 16, "lora_dropout": 0.05, "target_modules": ["q_proj", "v_proj"],
         "use_rslora": true, "rank_pattern": {"v_proj": 4}, "alpha_pattern": {"layers\\\\.1\\\\..*q_proj": 2},
         "init_lora_weights": "gaussian", "modules_to_save": ["classifier", "classifier", "score"], "task_type": "SEQ_CLS",
         "bias": "none", "use_dora": false, "fan_in_fan_out": false, "some_future_key": {"x": [1, 2]}, "eva_config": null}
        """)
        #expect(c.rank == 8 && c.alpha == 16 && c.useRSLoRA && c.initialization == .gaussian)
        #expect(c.targets == .names(["q_proj", "v_proj"]) && c.modulesToSave == ["classifier", "score"])
        #expect(c.settings(for: "model.layers.0.self_attn.v_proj").rank == 4)
        #expect(c.settings(for: "model.layers.1.self_attn.q_proj").alpha == 2)
        #expect(c.settings(for: "model.layers.0.self_attn.q_proj").scale == 16 / Float(8).squareRoot())
        // Unknown keys survive a write and read.
        let written = c.jsonText()
        #expect(written.contains("some_future_key"))
        let again = try LoRAConfig(json: Data(written.utf8))
        #expect(again.rank == 8 && again.rankPattern.map(\.key) == ["v_proj"] && again.otherKeys.contains { $0.key == "some_future_key" })
    }

    @Test func selectsModulesAsPEFTDoes() throws {
        let names = try Self.config(#"{"r": 4, "target_modules": ["dense"], "layers_to_transform": [1]}"#)
        let bert = ["bert.encoder.layer.0.attention.output.dense", "bert.encoder.layer.1.attention.output.dense",
                    "bert.encoder.layer.1.intermediate.dense", "bert.pooler.dense", "bert.encoder.layer.1.attention.self.query"]
        #expect(bert.filter { names.covers($0, allLinear: []) } == ["bert.encoder.layer.1.attention.output.dense", "bert.encoder.layer.1.intermediate.dense"])
        let regex = try Self.config(#"{"r": 4, "target_modules": ".*layer\\.0\\..*(query|dense)"}"#)
        #expect(bert.filter { regex.covers($0, allLinear: []) } == ["bert.encoder.layer.0.attention.output.dense"])
        let excluded = try Self.config(#"{"r": 4, "target_modules": ["dense"], "exclude_modules": ["pooler.dense"]}"#)
        #expect(!excluded.covers("bert.pooler.dense", allLinear: []) && excluded.covers("bert.encoder.layer.0.intermediate.dense", allLinear: []))
        let all = try Self.config(#"{"r": 4, "target_modules": "all-linear", "modules_to_save": ["pooler"]}"#)
        #expect(all.covers("x.q", allLinear: ["x.q"]) && !all.covers("x.k", allLinear: ["x.q"]))
        #expect(!all.covers("bert.pooler.dense", allLinear: ["bert.pooler.dense"]))   // modules_to_save are never adapted
    }

    @Test(arguments: [
        (#"{"r": 0, "target_modules": ["q"]}"#, "r"),
        (#"{"r": -2, "target_modules": ["q"]}"#, "r"),
        (#"{"lora_alpha": 8, "target_modules": ["q"]}"#, "r"),
        (#"{"r": 4}"#, "target_modules"),
        (#"{"r": 4, "target_modules": []}"#, "target_modules"),
        (#"{"r": 4, "target_modules": ["q"], "use_dora": true}"#, "use_dora"),
        (#"{"r": 4, "target_modules": ["q"], "lora_bias": true}"#, "lora_bias"),
        (#"{"r": 4, "target_modules": ["q"], "bias": "all"}"#, "bias"),
        (#"{"r": 4, "target_modules": ["q"], "fan_in_fan_out": true}"#, "fan_in_fan_out"),
        (#"{"r": 4, "target_modules": ["q"], "init_lora_weights": "pissa"}"#, "init_lora_weights"),
        (#"{"r": 4, "target_modules": ["q"], "peft_type": "IA3"}"#, "peft_type"),
        (#"{"r": 4, "target_modules": "(unclosed"}"#, "target_modules"),
        (#"{"r": 4, "target_modules": ["q"], "lora_dropout": 1.5}"#, "lora_dropout"),
        ("not json", "(file)"),
    ])
    func refusesByName(json: String, key: String) {
        do {
            _ = try Self.config(json)
            Issue.record("accepted \(json)")
        } catch {
            #expect("\(error)".contains("'\(key)'"), "\(error)")
            #expect("\(error)".contains("adapter_config.json"))
        }
    }
}
