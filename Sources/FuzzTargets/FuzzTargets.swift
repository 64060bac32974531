import Foundation
import AdapterFormats
import Formats
import Kernels
import LoRA
import ModelStore
import Models
import OrderedJSON
import Tokenizers
import Training

/// The parsers that read files from strangers, each as one function from bytes to an outcome.
/// libFuzzer drives them (`Fuzz/`, `make fuzz`); the regression tests replay every kept input
/// through the same functions. A thrown error is an expected outcome; a crash, a hang, a
/// sanitizer report or a broken invariant (`FuzzOutcome.invariantBroken`) is a finding.
public enum FuzzTarget: String, CaseIterable, Sendable {
    /// `GGUFFile(data:)`, every tensor dequantised, the tokenizer and chat template in its
    /// metadata, and the Llama model it describes loaded.
    case gguf
    /// `SafeTensorsFile(data:)` and every tensor converted.
    case safetensors
    /// `tokenizer.json` loaded from the bytes, then used to encode and decode.
    case tokenizerJSON = "tokenizer-json"
    /// The bytes as text through real tokenizers: ids in range, byte-level BPE lossless.
    case tokenize
    /// `adapter_config.json`: parsed, matched against module paths, written and read back.
    case adapterConfig = "adapter-config"
    /// JSONL training data, as causal-LM (with a ChatML template) and as classification data.
    case jsonl
    /// A chat template's Jinja source and a conversation (JSON), separated by the first NUL byte.
    case chatTemplate = "chat-template"
    /// A Stable Diffusion adapter file (kohya, diffusers/PEFT, LyCORIS): read, summarised, its
    /// modules resolved against a small SD-shaped module index and each fitting delta applied.
    case sdAdapter = "sd-adapter"
}

public enum FuzzOutcome: Equatable, Sendable {
    /// The input was valid; the string summarises what was read.
    case accepted(String)
    /// The input was refused with this error message.
    case rejected(String)
    /// A property that must hold for every input did not: a bug even without a crash.
    case invariantBroken(String)

    public var isFinding: Bool { if case .invariantBroken = self { true } else { false } }
}

/// Runs the targets. Tokenising targets need tokenizers, chosen by the caller (real ones for
/// long runs, the fixtures' small ones for replays).
public struct FuzzHarness: Sendable {
    /// Encoders for `tokenize`; byte-level BPE ones are also checked to round-trip exactly.
    public let tokenizers: [any Tokenizer]
    /// A small causal-LM tokenizer for `jsonl` (fast enough for millions of runs).
    public let causalTokenizer: any Tokenizer
    /// A WordPiece tokenizer for `jsonl`'s classification pass (pairs need WordPiece).
    public let classificationTokenizer: any Tokenizer

    /// Module paths of a Llama and a BERT that `adapter-config` matches against.
    static let modulePaths: [String] = (0..<2).flatMap { layer in
        ["q_proj", "k_proj", "v_proj", "o_proj"].map { "model.layers.\(layer).self_attn.\($0)" }
            + ["gate_proj", "up_proj", "down_proj"].map { "model.layers.\(layer).mlp.\($0)" }
            + ["attention.self.query", "attention.self.key", "attention.self.value", "attention.output.dense",
               "intermediate.dense", "output.dense"].map { "bert.encoder.layer.\(layer).\($0)" }
    } + ["lm_head", "classifier", "bert.pooler.dense"]

    /// Texts the `tokenizer-json` target encodes with the tokenizer it read.
    static let sampleTexts = ["Hello, world! 123", "  leading spaces\tand\nnewlines", "naïve café 東京 🙂", ""]

    public init(tokenizers: [any Tokenizer], causalTokenizer: any Tokenizer, classificationTokenizer: any Tokenizer) {
        self.tokenizers = tokenizers
        self.causalTokenizer = causalTokenizer
        self.classificationTokenizer = classificationTokenizer
    }

    /// The tokenizers every run uses: the small byte-level BPE of the fixtures and a WordPiece
    /// vocabulary written here; with `realModels`, also the tokenizers of the installed
    /// SmolLM2 (from its GGUF) and all-MiniLM-L6-v2 (its tokenizer.json) for `tokenize`.
    /// Returns the harness and the names of the tokenizers `tokenize` runs.
    public static func standard(fixtures: URL, realModels: Bool) throws -> (FuzzHarness, [String]) {
        let bpe = try loadTokenizer(huggingFaceDirectory: fixtures.appendingPathComponent("tokenizers/tiny-bpe-digits"))
        // "a" is also in the alphabet below: a repeated vocab.txt line, kept on purpose (see
        // Tests/Fixtures/fuzz/findings.json).
        let words = ["the", "a", "movie", "was", "good", "bad", "not", "##s", "##ly", "great", ",", ".", "!", "?", "'", "un", "##believ", "##able"]
        let vocab = (["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"] + words + (0..<10).map(String.init)
            + "abcdefghijklmnopqrstuvwxyz".map { String($0) } + "abcdefghijklmnopqrstuvwxyz".map { "##\($0)" }).joined(separator: "\n")
        let wordPiece = try WordPieceTokenizer(vocabTxt: vocab)
        var tokenizers: [any Tokenizer] = [bpe, wordPiece]
        var names = ["tiny-bpe-digits (fixture)", "WordPiece of \(wordPiece.vocabularySize) (written here)"]
        if realModels {
            let store = ModelStore()
            if let smol = store.installedLocation(of: .smolLM2) {
                tokenizers.append(try ggufTokenizer(GGUFFile(url: smol.url)))
                names.append("SmolLM2-135M-Instruct (\(smol.url.path))")
            }
            if let miniLM = store.installedLocation(of: .miniLM) {
                tokenizers.append(try loadTokenizer(huggingFaceDirectory: miniLM.url))
                names.append("all-MiniLM-L6-v2 (\(miniLM.url.path))")
            }
        }
        return (FuzzHarness(tokenizers: tokenizers, causalTokenizer: bpe, classificationTokenizer: wordPiece), names)
    }

    public func run(_ target: FuzzTarget, _ data: Data) -> FuzzOutcome {
        do {
            switch target {
            case .gguf: return try gguf(data)
            case .safetensors: return try safetensors(data)
            case .tokenizerJSON: return try tokenizerJSON(data)
            case .tokenize: return tokenize(data)
            case .adapterConfig: return try adapterConfig(data)
            case .jsonl: return try jsonl(data)
            case .chatTemplate: return try chatTemplate(data)
            case .sdAdapter: return try sdAdapter(data)
            }
        } catch {
            return .rejected("\(error)")
        }
    }

    // MARK: Targets

    func gguf(_ data: Data) throws -> FuzzOutcome {
        let file = try GGUFFile(data: data)
        var elements = 0
        for info in file.tensorInfos {
            guard let t = try? file.tensor(info.name) else { continue }
            guard t.count == info.elementCount else {
                return .invariantBroken("tensor \(info.name): \(t.count) values for \(info.dimensions)")
            }
            elements += t.count
        }
        var parts = ["\(file.tensorInfos.count) tensors, \(elements) values"]
        if let tokenizer = try? ggufTokenizer(file) {
            if let broken = Self.checkIds(tokenizer, tokenizer.encode(Self.sampleTexts[0])) { return .invariantBroken(broken) }
            parts.append("tokenizer of \(tokenizer.vocabularySize)")
        }
        if let source = file.metadata["tokenizer.chat_template"]?.string, let template = try? ChatTemplate(jinja: source) {
            parts.append("template \(template)")
        }
        // A GGUF file that is not a model swift-lora can load is still a valid file.
        do {
            let (model, _) = try ModelLoader.loadGGUF(file, url: URL(fileURLWithPath: "/fuzz/input.gguf"))
            parts.append("model of \(model.parameterCounts.all) parameters")
        } catch {
            parts.append("no model: \(error)")
        }
        return .accepted(parts.joined(separator: "; "))
    }

    func safetensors(_ data: Data) throws -> FuzzOutcome {
        let file = try SafeTensorsFile(data: data)
        var values = 0
        for name in file.names {
            let entry = try file.entry(name)
            let count = switch entry.dtype {
            case .i32, .i64: try file.integers(name).count
            default: try file.tensor(name).count
            }
            guard count * entry.dtype.byteSize == entry.range.count else {
                return .invariantBroken("tensor \(name): \(count) values from \(entry.range.count) bytes of \(entry.dtype)")
            }
            values += count
        }
        return .accepted("\(file.names.count) tensors, \(values) values")
    }

    func tokenizerJSON(_ data: Data) throws -> FuzzOutcome {
        let tokenizer = try loadTokenizer(tokenizerJSON: data, source: "fuzz/tokenizer.json")
        for text in Self.sampleTexts {
            for special in [true, false] {
                let ids = tokenizer.encode(text, addSpecialTokens: special)
                if let broken = Self.checkIds(tokenizer, ids) { return .invariantBroken(broken) }
                _ = tokenizer.decode(ids, skipSpecialTokens: !special)
            }
        }
        // Every id, and some that are not, decode without trapping.
        _ = tokenizer.decode(Array(0..<min(tokenizer.vocabularySize, 512)) + [-1, tokenizer.vocabularySize, Int.max])
        return .accepted("vocabulary of \(tokenizer.vocabularySize)")
    }

    func tokenize(_ data: Data) -> FuzzOutcome {
        let text = String(decoding: data, as: UTF8.self)
        for tokenizer in tokenizers {
            let ids = tokenizer.encode(text, addSpecialTokens: true)
            if let broken = Self.checkIds(tokenizer, ids) { return .invariantBroken(broken) }
            let plain = tokenizer.encode(text, addSpecialTokens: false)
            let decoded = tokenizer.decode(plain)
            // Byte-level BPE whose vocabulary spells every byte loses nothing: decoding gives
            // the text back. (Bytes without a token are dropped, as Hugging Face drops them.)
            if let bpe = tokenizer as? ByteLevelBPETokenizer, bpe.spellsEveryByte, decoded != text {
                return .invariantBroken("\(type(of: tokenizer)) round trip: \(Array(text.utf8)) came back as \(Array(decoded.utf8))")
            }
        }
        return .accepted("\(text.unicodeScalars.count) scalars")
    }

    func adapterConfig(_ data: Data) throws -> FuzzOutcome {
        let config = try LoRAConfig(json: data)
        let allLinear = Set(Self.modulePaths.filter { $0 != "lm_head" && $0 != "classifier" })
        var covered = 0
        for path in Self.modulePaths where config.covers(path, allLinear: allLinear) {
            covered += 1
            let s = config.settings(for: path)
            guard s.rank > 0, s.rank <= LoRASettings.maximumRank, s.alpha.isFinite else {
                return .invariantBroken("\(path): rank \(s.rank), alpha \(s.alpha)")
            }
        }
        // What we write, we read back the same.
        let text = config.jsonText()
        let again: LoRAConfig
        do { again = try LoRAConfig(json: Data(text.utf8)) } catch {
            return .invariantBroken("the written adapter_config.json does not parse: \(error)\n\(text)")
        }
        guard again.jsonText() == text else { return .invariantBroken("adapter_config.json changes when read back:\n\(text)") }
        return .accepted("rank \(config.rank), \(covered) modules covered")
    }

    func jsonl(_ data: Data) throws -> FuzzOutcome {
        var parts: [String] = []
        var firstError: (any Error)?
        let passes: [(TrainingTask, any Tokenizer, ChatTemplate?)] = [
            (.causalLM, causalTokenizer, .chatML(defaultSystemPrompt: "You are helpful.")),
            (.classification, classificationTokenizer, nil),
        ]
        for (task, tokenizer, template) in passes {
            do {
                let (examples, report, labels) = try Dataset.load(data, file: "fuzz.jsonl", task: task, tokenizer: tokenizer,
                                                                  chatTemplate: template, maxSequenceLength: 64, labelMap: nil)
                for e in examples {
                    if let broken = Self.checkIds(tokenizer, e.ids) { return .invariantBroken("line \(e.line): \(broken)") }
                    guard e.ids.count <= 64 else { return .invariantBroken("line \(e.line): \(e.ids.count) ids, more than the maximum 64") }
                    if task == .causalLM, e.labels.count != e.ids.count {
                        return .invariantBroken("line \(e.line): \(e.labels.count) labels for \(e.ids.count) ids")
                    }
                    if task == .classification, let labels, !(0..<labels.count).contains(e.label ?? -1) {
                        return .invariantBroken("line \(e.line): label \(String(describing: e.label)) outside the map of \(labels.count)")
                    }
                }
                parts.append("\(task.rawValue): \(report.examples) examples")
            } catch {
                firstError = firstError ?? error
            }
        }
        if parts.isEmpty, let firstError { throw firstError }
        return .accepted(parts.joined(separator: "; "))
    }

    func chatTemplate(_ data: Data) throws -> FuzzOutcome {
        let bytes = [UInt8](data)
        let split = bytes.firstIndex(of: 0) ?? bytes.count
        let source = String(decoding: bytes[..<split], as: UTF8.self)
        let template = try ChatTemplate(jinja: source)
        var messages = [ChatMessage(role: "user", content: "Hi"), ChatMessage(role: "assistant", content: "Hello!")]
        if split < bytes.count, let list = try? JSON.parse(Data(bytes[(split + 1)...])).array {
            messages = list.map { ChatMessage(role: $0["role"]?.string ?? "", content: $0["content"]?.string ?? "") }
        }
        let rendered = template.render(messages, addGenerationPrompt: false)
        let pieces = template.segments(messages)
        guard pieces.map(\.text).joined() == rendered else {
            return .invariantBroken("segments do not add up to the rendered conversation:\n\(rendered)")
        }
        let prompt = template.render(messages, addGenerationPrompt: true)
        guard prompt.hasPrefix(rendered) else { return .invariantBroken("the generation prompt does not extend the conversation") }
        return .accepted("\(template): \(pieces.count) pieces")
    }

    /// Why `ids` break the tokenizer's contract, or nil: every id in 0..<vocabularySize.
    static func checkIds(_ tokenizer: any Tokenizer, _ ids: [Int]) -> String? {
        guard let bad = ids.first(where: { $0 < 0 || $0 >= tokenizer.vocabularySize }) else { return nil }
        return "\(type(of: tokenizer)) produced id \(bad), outside 0..<\(tokenizer.vocabularySize)"
    }
}

extension FuzzHarness {
    /// A small SD-shaped index: a UNet attention block (linear projections, 1×1 proj_in, a 3×3
    /// resnet conv) and a text-encoder layer, so resolved deltas are cheap to apply.
    static let diffusionIndex = DiffusionModuleIndex(weights: [
        "unet": ["down_blocks.1.attentions.0.proj_in.weight": [8, 8, 1, 1],
                 "down_blocks.1.attentions.0.transformer_blocks.0.attn1.to_q.weight": [8, 8],
                 "down_blocks.1.attentions.0.transformer_blocks.0.attn2.to_k.weight": [8, 16],
                 "down_blocks.1.attentions.0.transformer_blocks.0.attn2.to_out.0.weight": [8, 8],
                 "down_blocks.1.resnets.0.conv1.weight": [8, 4, 3, 3]],
        "text_encoder": ["encoder.layers.0.self_attn.q_proj.weight": [16, 16], "encoder.layers.0.mlp.fc1.weight": [32, 16]],
    ], unetLayersPerBlock: 2)

    func sdAdapter(_ data: Data) throws -> FuzzOutcome {
        let file = try DiffusionAdapterFile(data: data, url: URL(fileURLWithPath: "/fuzz/input.safetensors"))
        let summary = DiffusionAdapterSummary(file)
        var applied = 0
        for (spelling, delta) in file.modules {
            guard let module = Self.diffusionIndex.resolve(spelling), let shape = Self.diffusionIndex.shapes[module] else { continue }
            guard delta.shapeProblem(for: shape) == nil else { continue }
            // What the shape check lets through must apply, to exactly the weight's elements.
            let w = Tensor(shape: [shape.reduce(1, *)])
            do { try delta.apply(to: w, shape: shape, multiplier: 0.5) } catch {
                return .invariantBroken("\(spelling) on \(module): the shape check passed but applying failed: \(error)")
            }
            applied += 1
        }
        return .accepted("\(summary.modules) modules (\(summary.family)), \(applied) applied")
    }
}
