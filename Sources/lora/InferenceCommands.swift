import ArgumentParser
import Foundation
import Formats
import Kernels
import ModelStore
import Models
import Tokenizers

struct Inspect: ParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Show a model's architecture, configuration, parameter count and tensor types; --modules lists what LoRA can adapt.")
    @OptionGroup var model: ModelOption
    @Flag(help: "List the linear modules LoRA can adapt (the names --targets takes) with their shapes.") var modules = false
    @Flag(help: "Print one JSON object.") var json = false

    struct Module: Encodable {
        /// The name --targets takes (the path after the layer index).
        let name: String
        let inFeatures: Int
        let outFeatures: Int
        /// How many modules of the model have this name (one per layer).
        let count: Int
        let example: String
        enum CodingKeys: String, CodingKey { case name, inFeatures = "in_features", outFeatures = "out_features", count, example }
    }

    struct Report: Encodable {
        let source: String
        let architecture: String
        let configuration: [String: JSONValue]
        let parameters: Int
        let tensorTypes: [String: Int]
        let vocabularySize: Int
        let chatTemplate: String
        let metadata: [String: String]
        let newlyInitialized: [String]
        let modules: [Module]?
        enum CodingKeys: String, CodingKey {
            case source, architecture, configuration, parameters, tensorTypes = "tensor_types", vocabularySize = "vocabulary_size"
            case chatTemplate = "chat_template", metadata, newlyInitialized = "newly_initialized", modules
        }
    }

    /// The adaptable modules grouped by the name `--targets` takes.
    static func moduleList(_ model: some AdaptableModel) -> [Module] {
        let forms = model.adaptableModuleForms
        return forms.map { form in
            let matching = model.linearModules.filter { $0.name == form || $0.name.hasSuffix("." + form) }
            let first = matching.first
            return Module(name: form, inFeatures: first?.inFeatures ?? 0, outFeatures: first?.outFeatures ?? 0,
                          count: matching.count, example: first?.name ?? form)
        }
    }

    func run() throws {
        let pretrained = try model.load()
        let configuration = try pretrained.model.configurationJSON()
        let config = (try? JSONDecoder().decode([String: JSONValue].self, from: configuration)) ?? [:]
        var types: [String: Int] = [:]
        for (_, type) in pretrained.report.storedTypes { types[type, default: 0] += 1 }
        let parameters = pretrained.model.namedParameters.reduce(0) { $0 + $1.parameter.count }
        let template: String = switch pretrained.chatTemplate {
        case .success(let template): template.description
        case .failure(let error): error.description
        }
        let moduleList = Self.moduleList(pretrained.model)
        let report = Report(source: pretrained.report.source, architecture: pretrained.model.architecture,
                            configuration: config, parameters: parameters, tensorTypes: types,
                            vocabularySize: pretrained.tokenizer.vocabularySize, chatTemplate: template,
                            metadata: pretrained.report.metadata, newlyInitialized: pretrained.report.newlyInitialized,
                            modules: modules ? moduleList : nil)
        if json { return try printJSON(report) }
        if modules {
            print("adaptable modules (the names --targets takes; a name matches a module path or its end after a dot):")
            let width = moduleList.map(\.name.count).max() ?? 0
            for m in moduleList {
                print("  \(m.name.padding(toLength: width, withPad: " ", startingAt: 0))  \(m.inFeatures) → \(m.outFeatures)  ×\(m.count)  (e.g. \(m.example))")
            }
            print("all-linear: every module above\(pretrained.model.task == .sequenceClassification ? " except classifier" : ""). Embeddings and the LM head are not adaptable.")
            return
        }
        print("source:        \(report.source)")
        print("architecture:  \(report.architecture)")
        print("parameters:    \(parameters.formatted())")
        print("tensor types:  \(types.sorted { $0.key < $1.key }.map { "\($0.key) × \($0.value)" }.joined(separator: ", "))")
        print("vocabulary:    \(report.vocabularySize)")
        print("chat template: \(template)")
        print("modules:       \(moduleList.map(\.name).joined(separator: ", ")) (lora inspect --modules for shapes)")
        print("configuration:")
        for (key, value) in config.sorted(by: { $0.key < $1.key }) { print("  \(key): \(value)") }
        for (key, value) in report.metadata.sorted(by: { $0.key < $1.key }) { print("  \(key): \(value)") }
    }
}

struct Tokenize: ParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Token ids of a text, as transformers' tokenizer(text)[\"input_ids\"] gives them.")
    @OptionGroup var model: ModelOption
    @Option(help: "The text to tokenise.") var text: String
    @Flag(help: "Print one JSON object: {\"ids\": [Int]}.") var json = false

    func run() throws {
        // The tokenizer alone: no weights are loaded.
        let location = try ModelStore().resolve(model.model) { note($0) }
        let tokenizer: any Tokenizer
        do {
            tokenizer = location.format == .gguf ? try ggufTokenizer(GGUFFile(url: location.url))
                                                 : try loadTokenizer(huggingFaceDirectory: location.url)
        } catch {
            throw CommandError("\(location.url.path): \(error)")
        }
        let ids = tokenizer.encode(text, addSpecialTokens: true)
        if json { return try printJSON(["ids": ids]) }
        for id in ids { print("\(id)\t\(tokenizer.token(of: id)?.debugDescription ?? "?")") }
    }
}

struct Score: ParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Per-token log-probabilities of a text under a causal language model.",
        discussion: "logprobs[i] = log p(ids[i+1] | ids[0...i]); there is one fewer than ids.")
    @OptionGroup var model: ModelOption
    @OptionGroup var adapterOptions: AdapterOptions
    @Option(help: "The text to score.") var text: String
    @Flag(help: "Print one JSON object: {\"ids\": [Int], \"logprobs\": [Double]}.") var json = false

    struct Output: Encodable { let ids: [Int]; let logprobs: [Double] }

    func run() throws {
        let pretrained = try model.loadCausalLM(adapters: adapterOptions)
        let ids = pretrained.tokenizer.encode(text, addSpecialTokens: true)
        let logprobs = try pretrained.model.tokenLogProbabilities(ids)
        if json { return try printJSON(Output(ids: ids, logprobs: logprobs)) }
        for (i, lp) in logprobs.enumerated() {
            print(String(format: "%8.4f  ", lp) + (pretrained.tokenizer.token(of: ids[i + 1])?.debugDescription ?? "?"))
        }
        print(String(format: "total %.4f over %d tokens", logprobs.reduce(0, +), logprobs.count))
    }
}

struct Generate: ParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Generate text with a causal language model (KV cache; greedy or sampled).",
        discussion: """
        --chat wraps --prompt as a user turn in the model's chat template; --system adds a system turn; \
        --messages FILE gives a whole conversation (a JSON list of {"role", "content"}, a {"messages": […]} \
        object, or JSONL with one message per line) and the reply continues it. Generation stops at the \
        end-of-sequence token, or at the template's end-of-turn token in a chat.
        """)
    @OptionGroup var model: ModelOption
    @OptionGroup var adapterOptions: AdapterOptions
    @Option(help: "The prompt ('-' reads it from standard input).") var prompt: String?
    @Flag(help: "Wrap the prompt as a user turn with the model's chat template.") var chat = false
    @Option(help: "A system prompt (implies --chat; replaces the template's default one).") var system: String?
    @Option(help: ArgumentHelp("A conversation to continue (implies --chat): JSON or JSONL messages.", valueName: "file")) var messages: String?
    @Option(help: ArgumentHelp("A Jinja chat template to use instead of the model's (ChatML, Llama-3, Gemma or Mistral; recognised, never evaluated).", valueName: "file"))
    var chatTemplate: String?
    @Flag(help: "Print the rendered prompt (after the chat template) to stderr before generating.") var showPrompt = false
    @Option(parsing: .unconditional, help: "Stop after this many new tokens.") var maxTokens = 128
    @Option(parsing: .unconditional, help: "0 = greedy; higher values sample more freely.") var temperature: Float = 0
    @Option(parsing: .unconditional, help: "Sample only among the k most likely tokens (with --temperature above 0).") var topK: Int?
    @Option(parsing: .unconditional, help: "Sample only among the most likely tokens whose probabilities add up to p (with --temperature above 0).") var topP: Float?
    @Option(parsing: .unconditional, help: "Seed of the sampler (the same seed gives the same text).") var seed: UInt64 = 0
    @Option(help: "Storage of the frozen weights: fp32, bf16 (half the memory; about 2.5× faster decoding where the CPU has AVX512-BF16), or q (a GGUF file's quantised blocks, least memory). Not with --merge.")
    var precision: FrozenPrecision = .fp32
    @Flag(help: "Print one JSON object: {\"ids\": [Int], \"text\": String, \"finish_reason\": \"stop\" or \"length\", \"prompt_tokens\": Int} (generated tokens only; the text without special tokens).") var json = false

    struct Output: Encodable {
        let ids: [Int]; let text: String; let finishReason: String; let promptTokens: Int
        enum CodingKeys: String, CodingKey { case ids, text, finishReason = "finish_reason", promptTokens = "prompt_tokens" }
    }

    func validate() throws {
        guard maxTokens > 0 else { throw ValidationError("--max-tokens must be positive") }
        if precision != .fp32 && adapterOptions.merge { throw ValidationError("--merge needs fp32 base weights (drop --precision)") }
        guard temperature >= 0, temperature.isFinite else { throw ValidationError("--temperature must be ≥ 0") }
        if let topK, topK <= 0 { throw ValidationError("--top-k must be positive") }
        if let topP, !(topP > 0 && topP <= 1) { throw ValidationError("--top-p must be in (0, 1]") }
        if prompt == nil && messages == nil { throw ValidationError("give --prompt (or --messages FILE)") }
    }

    /// The conversation: --messages, then --system and --prompt as turns.
    func conversation() throws -> [ChatMessage] {
        var turns: [ChatMessage] = []
        if let messages { turns = try Self.readMessages(messages) }
        if let system {
            if turns.first?.role == "system" { throw CommandError("--system given, but \(messages ?? "") starts with a system message already; keep one") }
            turns.insert(ChatMessage(role: "system", content: system), at: 0)
        }
        if let text = try promptText() { turns.append(ChatMessage(role: "user", content: text)) }
        guard !turns.isEmpty, turns.last?.role != "assistant" || messages != nil else { throw CommandError("nothing to reply to") }
        return turns
    }

    func promptText() throws -> String? {
        guard let prompt else { return nil }
        guard prompt == "-" else { return prompt }
        let data = FileHandle.standardInput.readDataToEndOfFile()
        return String(decoding: data, as: UTF8.self)
    }

    /// Messages from a file: a JSON list, `{"messages": [...]}`, or JSONL (one message a line).
    static func readMessages(_ path: String) throws -> [ChatMessage] {
        let url = URL(fileURLWithPath: path)
        if let why = unreadableFileReason(url) { throw CommandError("--messages \(path): \(why)") }
        let data: Data
        do { data = try Data(contentsOf: url) } catch { throw CommandError("--messages \(path): \(plainFileReason(error))") }
        func message(_ object: Any, _ where_: String) throws -> ChatMessage {
            guard let m = object as? [String: Any] else { throw CommandError("\(path): \(where_) is not an object with \"role\" and \"content\"") }
            guard let role = m["role"] as? String else { throw CommandError("\(path): \(where_) has no \"role\" string") }
            guard let content = m["content"] as? String else { throw CommandError("\(path): \(where_) has no \"content\" string") }
            guard ["system", "user", "assistant", "tool"].contains(role) else {
                throw CommandError("\(path): \(where_) has the unknown role \"\(role)\" (expected system, user, assistant or tool)")
            }
            return ChatMessage(role: role, content: content)
        }
        if let whole = try? JSONSerialization.jsonObject(with: data) {
            let list = (whole as? [Any]) ?? ((whole as? [String: Any])?["messages"] as? [Any])
            guard let list else { throw CommandError("\(path): expected a list of messages or {\"messages\": [...]}") }
            return try list.enumerated().map { try message($0.element, "message \($0.offset + 1)") }
        }
        var out: [ChatMessage] = []
        for (i, line) in String(decoding: data, as: UTF8.self).split(separator: "\n", omittingEmptySubsequences: false).enumerated() {
            let text = line.trimmingCharacters(in: .whitespacesAndNewlines)
            guard !text.isEmpty else { continue }
            guard let object = try? JSONSerialization.jsonObject(with: Data(text.utf8)) else {
                throw CommandError("\(path):\(i + 1): not JSON")
            }
            out.append(try message(object, "line \(i + 1)"))
        }
        guard !out.isEmpty else { throw CommandError("\(path): no messages") }
        return out
    }

    func run() throws {
        if temperature == 0 && (topK != nil || topP != nil) {
            note("warning: --top-k and --top-p only apply when sampling; at --temperature 0 (the default) decoding is greedy. Add e.g. --temperature 0.7")
        }
        if precision == .bf16 && !hasBF16Instructions {
            note("note: this CPU has no AVX512-BF16: bf16 weights halve the memory but decode at fp32 speed")
        }
        let pretrained = try model.loadCausalLM(precision: precision, adapters: adapterOptions)
        let isChat = chat || system != nil || messages != nil || chatTemplate != nil
        var text = try promptText() ?? ""
        var stopTokens = pretrained.stopTokens
        if isChat {
            let template = try chatTemplate.map { try lora.chatTemplate(file: $0) } ?? pretrained.chatTemplate.get()
            let turns = try conversation()
            do { try template.validate(turns) } catch { throw CommandError("the conversation does not fit the \(template.family) chat template: \(error.description)") }
            text = template.render(turns, addGenerationPrompt: true)
            // The turn ends at the template's end-of-turn token, which need not be the EOS (Gemma).
            if let id = pretrained.tokenizer.id(of: template.endOfTurn) { stopTokens.insert(id) }
        }
        if showPrompt { note("prompt:\n" + text) }
        // As `apply_chat_template(tokenize=True)`: a rendered template brings its own BOS.
        let promptIds = pretrained.tokenizer.encode(text, addSpecialTokens: !isChat)
        var sampler = Sampler(temperature: temperature, topK: topK, topP: topP, seed: seed)
        let start = Date()
        var firstToken: Date?
        var soFar: [Int] = [], shown = ""
        let ids = try pretrained.model.generate(prompt: promptIds, maxTokens: maxTokens, sampler: &sampler, stopTokens: stopTokens) { id in
            if firstToken == nil { firstToken = Date() }
            guard !json else { return }
            // Stream the text: print what the new token adds, once it decodes to whole characters.
            soFar.append(id)
            let text = pretrained.tokenizer.decode(soFar, skipSpecialTokens: true)
            if text.hasPrefix(shown), !text.hasSuffix("\u{FFFD}") {
                FileHandle.standardOutput.write(Data(text.dropFirst(shown.count).utf8))
                shown = text
            }
        }
        let finish = ids.last.map { stopTokens.contains($0) } == true ? "stop" : "length"
        if json {
            return try printJSON(Output(ids: ids, text: pretrained.tokenizer.decode(ids, skipSpecialTokens: true),
                                        finishReason: finish, promptTokens: promptIds.count))
        }
        // The rest (if the last token ended mid-character) and the newline, unbuffered like the stream.
        let rest = pretrained.tokenizer.decode(ids, skipSpecialTokens: true).dropFirst(shown.count)
        FileHandle.standardOutput.write(Data((rest + "\n").utf8))
        if let firstToken {
            let decodeSeconds = Date().timeIntervalSince(firstToken)
            note(String(format: "prompt %d tokens in %.2f s (%.1f tokens/s); %d tokens generated at %.1f tokens/s",
                        promptIds.count, firstToken.timeIntervalSince(start), Double(promptIds.count) / firstToken.timeIntervalSince(start),
                        ids.count, Double(max(ids.count - 1, 0)) / max(decodeSeconds, 1e-9)))
        }
    }
}

struct Classify: ParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Classify texts with a sequence-classification model (BERT + head): the predicted label and the logits.",
        discussion: "The class names come from the label_map.json beside the --adapter (else the model's id2label).")
    @OptionGroup var model: ModelOption
    @OptionGroup var adapterOptions: AdapterOptions
    @Option(help: "A text to classify (repeat for several).") var text: [String]
    @Option(parsing: .unconditional, help: "Longest text in tokens, [CLS] and [SEP] included; longer ones are truncated (default: the model's positions).")
    var maxSeqLen: Int?
    @Flag(help: "Print one JSON object: {\"labels\": [String], \"predictions\": [{\"text\", \"label\", \"logits\", \"probabilities\"}], \"logits\": [[Double]]}.") var json = false

    struct Prediction: Encodable { let text: String; let label: String; let logits: [Double]; let probabilities: [Double] }
    struct Output: Encodable { let labels: [String]; let predictions: [Prediction]; let logits: [[Double]] }

    func validate() throws {
        guard !text.isEmpty else { throw ValidationError("give at least one --text") }
        if let maxSeqLen, maxSeqLen < 2 { throw ValidationError("--max-seq-len must be at least 2") }
    }

    func run() throws {
        let labels = try AdapterOptions.labels(of: adapterOptions.adapters)
        let pretrained = try model.load(labels: labels, newHead: adapterOptions.adapters.isEmpty ? .untrained : .silent)
        guard let bert = pretrained.model as? any SequenceClassifier else {
            throw CommandError("classify needs a sequence classifier, a BERT-family encoder with a classification head (such as all-minilm-l6-v2 with an adapter from lora train); \(model.model) is a \(pretrained.model.architecture) causal language model")
        }
        try adapterOptions.apply(to: bert)
        bert.setTraining(false)
        let positions = bert.hardPositionLimit ?? bert.maxPositionEmbeddings
        let limit = min(maxSeqLen ?? positions, positions)
        let (batch, truncated) = try paddedBatch(text, tokenizer: pretrained.tokenizer, padId: pretrained.tokenizer.padTokenId ?? 0, maxLength: limit)
        if truncated > 0 { note("note: \(count(truncated, "text")) longer than \(limit) tokens truncated to \(limit)") }
        let logits = try bert.logits(batch)
        let k = logits.rowLength
        let rows = (0..<batch.batch).map { b in (0..<k).map { Double(logits[b * k + $0]) } }
        let names = bert.labelNames
        let predictions = zip(text, rows).map { t, row -> Prediction in
            let best = row.indices.max { row[$0] < row[$1] } ?? 0
            let top = row.max() ?? 0
            let exps = row.map { Foundation.exp($0 - top) }
            let total = exps.reduce(0, +)
            return Prediction(text: t, label: names[best], logits: row, probabilities: exps.map { $0 / total })
        }
        if json { return try printJSON(Output(labels: names, predictions: predictions, logits: rows)) }
        for p in predictions {
            print("\(p.label)\t\(p.logits.map { String(format: "%.4f", $0) }.joined(separator: " "))\t\(p.text)")
        }
    }
}

struct Embed: ParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "A sentence embedding, as sentence-transformers computes it.",
        discussion: """
        The model's sentence-transformers files are honoured: sentence_bert_config.json's \
        max_seq_length (longer texts are truncated, as sentence-transformers does), the pooling mode \
        of 1_Pooling/config.json and the Normalize module of modules.json. Without them: mean pooling, \
        L2-normalised.
        """)
    @OptionGroup var model: ModelOption
    @Option(help: "The text to embed.") var text: String
    @Option(parsing: .unconditional, help: "Longest text in tokens, [CLS] and [SEP] included; longer ones are truncated (default: max_seq_length of sentence_bert_config.json, else the model's positions).")
    var maxSeqLen: Int?
    @Flag(help: "Print one JSON object: {\"embedding\": [Double], \"tokens\": Int, \"truncated\": Bool}.") var json = false

    struct Output: Encodable { let embedding: [Double]; let tokens: Int; let truncated: Bool }

    func validate() throws {
        if let maxSeqLen, maxSeqLen < 2 { throw ValidationError("--max-seq-len must be at least 2") }
    }

    func run() throws {
        let pretrained = try model.load()
        guard let bert = pretrained.model as? any SentenceEncoder else {
            throw CommandError("embed needs a sentence encoder, a BERT-family model (such as all-minilm-l6-v2); \(model.model) is a \(pretrained.model.architecture) causal language model")
        }
        bert.setTraining(false)
        var isDirectory: ObjCBool = false
        let source = URL(fileURLWithPath: pretrained.report.source)
        let pooling = FileManager.default.fileExists(atPath: source.path, isDirectory: &isDirectory) && isDirectory.boolValue
            ? try SentencePooling.of(directory: source) : SentencePooling()
        let positions = bert.hardPositionLimit ?? bert.maxPositionEmbeddings
        let limit = min(maxSeqLen ?? pooling.maxSequenceLength ?? positions, positions)
        let (batch, truncated) = try paddedBatch([text], tokenizer: pretrained.tokenizer, padId: pretrained.tokenizer.padTokenId ?? 0, maxLength: limit)
        if truncated > 0 {
            let why = maxSeqLen != nil ? "--max-seq-len" : pooling.maxSequenceLength != nil ? "max_seq_length of sentence_bert_config.json, as sentence-transformers does" : "the model's positions"
            note("note: the text is longer than \(limit) tokens and was truncated to \(limit) (\(why))")
        }
        let embedding = try bert.sentenceEmbeddings(batch, pooling: pooling)[0].map(Double.init)
        if json { return try printJSON(Output(embedding: embedding, tokens: batch.length, truncated: truncated > 0)) }
        print(embedding.map { String(format: "%.6f", $0) }.joined(separator: " "))
    }
}

/// Tokenises texts (with special tokens) into one right-padded batch with an attention mask,
/// each text truncated to `maxLength` tokens as transformers' `truncation=True` does (a
/// WordPiece text keeps its closing [SEP]). Returns the batch and how many texts were cut.
func paddedBatch(_ texts: [String], tokenizer: any Tokenizer, padId: Int, maxLength: Int? = nil) throws -> (TokenBatch, truncated: Int) {
    var truncated = 0
    let sequences = texts.map { text -> [Int] in
        let ids = tokenizer.encode(text, addSpecialTokens: true)
        guard let maxLength, ids.count > maxLength else { return ids }
        truncated += 1
        if let wordPiece = tokenizer as? WordPieceTokenizer { return wordPiece.encodePair(text, nil, maxLength: maxLength).ids }
        return Array(ids.prefix(maxLength))
    }
    let length = sequences.map(\.count).max() ?? 0
    guard length > 0 else { throw CommandError("nothing to encode: the text gives no tokens") }
    var ids: [Int] = [], mask: [Int] = []
    for s in sequences {
        ids += s + [Int](repeating: padId, count: length - s.count)
        mask += [Int](repeating: 1, count: s.count) + [Int](repeating: 0, count: length - s.count)
    }
    return (TokenBatch(batch: texts.count, length: length, inputIds: ids, attentionMask: mask), truncated)
}

/// Any JSON value, to pass a configuration through unchanged.
enum JSONValue: Codable, CustomStringConvertible {
    case number(Double), string(String), bool(Bool), array([JSONValue]), object([String: JSONValue]), null

    init(from decoder: any Decoder) throws {
        let c = try decoder.singleValueContainer()
        if c.decodeNil() { self = .null }
        else if let b = try? c.decode(Bool.self) { self = .bool(b) }
        else if let n = try? c.decode(Double.self) { self = .number(n) }
        else if let s = try? c.decode(String.self) { self = .string(s) }
        else if let a = try? c.decode([JSONValue].self) { self = .array(a) }
        else { self = .object(try c.decode([String: JSONValue].self)) }
    }

    func encode(to encoder: any Encoder) throws {
        var c = encoder.singleValueContainer()
        switch self {
        case .number(let n): n == n.rounded() && abs(n) < 1e15 ? try c.encode(Int(n)) : try c.encode(n)
        case .string(let s): try c.encode(s)
        case .bool(let b): try c.encode(b)
        case .array(let a): try c.encode(a)
        case .object(let o): try c.encode(o)
        case .null: try c.encodeNil()
        }
    }

    var description: String {
        switch self {
        case .number(let n): n == n.rounded() && abs(n) < 1e15 ? String(Int(n)) : String(n)
        case .string(let s): s
        case .bool(let b): String(b)
        case .array(let a): "[" + a.map(\.description).joined(separator: ", ") + "]"
        case .object(let o): "{" + o.sorted { $0.key < $1.key }.map { "\($0.key): \($0.value)" }.joined(separator: ", ") + "}"
        case .null: "null"
        }
    }
}
