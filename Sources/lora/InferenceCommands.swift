import ArgumentParser
import Foundation
import Kernels
import Models
import Tokenizers

struct Inspect: ParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Show a model's architecture, configuration, parameter count and tensor types.")
    @OptionGroup var model: ModelOption
    @Flag(help: "Print one JSON object.") var json = false

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
    }

    func run() throws {
        let pretrained = try model.load()
        let configuration: Data = switch pretrained.model {
        case .llama(let m): try JSONEncoder().encode(m.config)
        case .bert(let m): try JSONEncoder().encode(m.config)
        }
        let config = (try? JSONDecoder().decode([String: JSONValue].self, from: configuration)) ?? [:]
        var types: [String: Int] = [:]
        for (_, type) in pretrained.report.storedTypes { types[type, default: 0] += 1 }
        let parameters = pretrained.model.adaptable.namedParameters.reduce(0) { $0 + $1.parameter.count }
        let template: String = switch pretrained.chatTemplate {
        case .success(let template): template.description
        case .failure(let error): error.description
        }
        let report = Report(source: pretrained.report.source, architecture: pretrained.model.architecture,
                            configuration: config, parameters: parameters, tensorTypes: types,
                            vocabularySize: pretrained.tokenizer.vocabularySize, chatTemplate: template,
                            metadata: pretrained.report.metadata, newlyInitialized: pretrained.report.newlyInitialized)
        if json { return try printJSON(report) }
        print("source:        \(report.source)")
        print("architecture:  \(report.architecture)")
        print("parameters:    \(parameters.formatted())")
        print("tensor types:  \(types.sorted { $0.key < $1.key }.map { "\($0.key) × \($0.value)" }.joined(separator: ", "))")
        print("vocabulary:    \(report.vocabularySize)")
        print("chat template: \(template)")
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
        let tokenizer = try model.load().tokenizer
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
        let pretrained = try model.load()
        guard case .llama(let llm) = pretrained.model else { throw CommandError("score needs a causal language model (Llama family)") }
        try adapterOptions.apply(to: llm)
        llm.setTraining(false)
        let ids = pretrained.tokenizer.encode(text, addSpecialTokens: true)
        let logprobs = try llm.tokenLogProbabilities(ids)
        if json { return try printJSON(Output(ids: ids, logprobs: logprobs)) }
        for (i, lp) in logprobs.enumerated() {
            print(String(format: "%8.4f  ", lp) + (pretrained.tokenizer.token(of: ids[i + 1])?.debugDescription ?? "?"))
        }
        print(String(format: "total %.4f over %d tokens", logprobs.reduce(0, +), logprobs.count))
    }
}

struct Generate: ParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Generate text with a causal language model (KV cache; greedy or sampled).")
    @OptionGroup var model: ModelOption
    @OptionGroup var adapterOptions: AdapterOptions
    @Option(help: "The prompt.") var prompt: String
    @Flag(help: "Wrap the prompt as a user turn with the model's chat template.") var chat = false
    @Option(help: "Stop after this many new tokens.") var maxTokens = 128
    @Option(help: "0 = greedy; higher values sample more freely.") var temperature: Float = 0
    @Option(help: "Sample only among the k most likely tokens.") var topK: Int?
    @Option(help: "Sample only among the most likely tokens whose probabilities add up to p.") var topP: Float?
    @Option(help: "Seed of the sampler (the same seed gives the same text).") var seed: UInt64 = 0
    @Option(help: "Storage of the frozen weights: fp32, bf16 (about 2.5× faster decoding with AVX512-BF16), or q (a GGUF file's quantised blocks, least memory). Not with --merge.")
    var precision: FrozenPrecision = .fp32
    @Flag(help: "Print one JSON object: {\"ids\": [Int], \"text\": String} (generated tokens only).") var json = false

    struct Output: Encodable { let ids: [Int]; let text: String }

    func validate() throws {
        guard maxTokens > 0 else { throw ValidationError("--max-tokens must be positive") }
        if precision != .fp32 && adapterOptions.merge { throw ValidationError("--merge needs fp32 base weights (drop --precision)") }
        guard temperature >= 0, temperature.isFinite else { throw ValidationError("--temperature must be ≥ 0") }
        if let topK, topK <= 0 { throw ValidationError("--top-k must be positive") }
        if let topP, !(topP > 0 && topP <= 1) { throw ValidationError("--top-p must be in (0, 1]") }
    }

    func run() throws {
        let pretrained = try model.load(precision: precision)
        guard case .llama(let llm) = pretrained.model else { throw CommandError("generate needs a causal language model (Llama family)") }
        try adapterOptions.apply(to: llm)
        llm.setTraining(false)
        var text = prompt
        var stopTokens = pretrained.stopTokens
        if chat {
            let template = try pretrained.chatTemplate.get()
            text = template.render([ChatMessage(role: "user", content: prompt)], addGenerationPrompt: true)
            // The turn ends at the template's end-of-turn token, which need not be the EOS (Gemma).
            if let id = pretrained.tokenizer.id(of: template.endOfTurn) { stopTokens.insert(id) }
        }
        // As `apply_chat_template(tokenize=True)`: the rendered template brings its own BOS.
        let promptIds = pretrained.tokenizer.encode(text, addSpecialTokens: !chat)
        var sampler = Sampler(temperature: temperature, topK: topK, topP: topP, seed: seed)
        let start = Date()
        var firstToken: Date?
        var soFar: [Int] = [], shown = ""
        let ids = try llm.generate(prompt: promptIds, maxTokens: maxTokens, sampler: &sampler, stopTokens: stopTokens) { id in
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
        if json { return try printJSON(Output(ids: ids, text: pretrained.tokenizer.decode(ids, skipSpecialTokens: false))) }
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
        abstract: "Class logits of texts under a sequence-classification model (BERT + head).")
    @OptionGroup var model: ModelOption
    @OptionGroup var adapterOptions: AdapterOptions
    @Option(help: "A text to classify (repeat for several).") var text: [String]
    @Flag(help: "Print one JSON object: {\"logits\": [[Double]]}.") var json = false

    func validate() throws {
        guard !text.isEmpty else { throw ValidationError("give at least one --text") }
    }

    func run() throws {
        let pretrained = try model.load()
        guard case .bert(let bert) = pretrained.model else { throw CommandError("classify needs a BERT-family model") }
        try adapterOptions.apply(to: bert)
        bert.setTraining(false)
        let batch = try paddedBatch(text, tokenizer: pretrained.tokenizer, padId: pretrained.tokenizer.padTokenId ?? 0)
        let logits = try bert.logits(batch)
        let k = logits.rowLength
        let rows = (0..<batch.batch).map { b in (0..<k).map { Double(logits[b * k + $0]) } }
        if json { return try printJSON(["logits": rows]) }
        for (t, row) in zip(text, rows) {
            let best = row.indices.max { row[$0] < row[$1] } ?? 0
            print("\(bert.config.id2label[best] ?? String(best))\t\(row.map { String(format: "%.4f", $0) }.joined(separator: " "))\t\(t)")
        }
    }
}

struct Embed: ParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "A sentence embedding: mean-pooled, L2-normalised, as sentence-transformers computes it.")
    @OptionGroup var model: ModelOption
    @Option(help: "The text to embed.") var text: String
    @Flag(help: "Print one JSON object: {\"embedding\": [Double]}.") var json = false

    func run() throws {
        let pretrained = try model.load()
        guard case .bert(let bert) = pretrained.model else { throw CommandError("embed needs a BERT-family encoder") }
        bert.setTraining(false)
        let batch = try paddedBatch([text], tokenizer: pretrained.tokenizer, padId: pretrained.tokenizer.padTokenId ?? 0)
        let embedding = try bert.sentenceEmbeddings(batch)[0].map(Double.init)
        if json { return try printJSON(["embedding": embedding]) }
        print(embedding.map { String(format: "%.6f", $0) }.joined(separator: " "))
    }
}

/// Tokenises texts (with special tokens) into one right-padded batch with an attention mask.
func paddedBatch(_ texts: [String], tokenizer: any Tokenizer, padId: Int) throws -> TokenBatch {
    let sequences = texts.map { tokenizer.encode($0, addSpecialTokens: true) }
    let length = sequences.map(\.count).max() ?? 0
    guard length > 0 else { throw CommandError("nothing to encode") }
    var ids: [Int] = [], mask: [Int] = []
    for s in sequences {
        ids += s + [Int](repeating: padId, count: length - s.count)
        mask += [Int](repeating: 1, count: s.count) + [Int](repeating: 0, count: length - s.count)
    }
    return TokenBatch(batch: texts.count, length: length, inputIds: ids, attentionMask: mask)
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
