import Foundation
import Formats
import Tokenizers

/// What a model is fine-tuned to do.
public enum TrainingTask: String, Sendable, Codable, CaseIterable {
    /// Next-token prediction (Llama-family decoders).
    case causalLM = "causal-lm"
    /// One label per text or text pair (BERT-family encoders).
    case classification
}

/// The JSONL layouts `Dataset.load` reads; the raw value is what `DataReport.format` says.
public enum DataFormat: String, Sendable, CaseIterable {
    /// `{"text": …}`: loss on every token.
    case text
    /// `{"prompt": …, "completion": …}`: loss on the completion and EOS.
    case completion = "prompt-completion"
    /// `{"messages": [{"role": …, "content": …}, …]}`: loss on the assistant turns.
    case chat = "messages"
    /// `{"text": …, "label": …}`, optionally with `"text_pair"`.
    case classification = "text-label"
}

/// Everything that can be wrong with a training or evaluation file. Every case names the file;
/// line-level cases give the 1-based line number and what is wrong with it.
public enum DataError: Error, Equatable, CustomStringConvertible {
    case cannotRead(file: String, reason: String)
    /// Not JSON, not an object, a missing or ill-typed field, a format that is not one of
    /// `DataFormat`, or a format different from the file's first line.
    case malformed(file: String, line: Int, reason: String)
    /// No line with an example (the file is empty or only blank lines).
    case empty(file: String)
    /// A label that the label map (from the training data or given) does not have.
    case unknownLabel(file: String, line: Int, label: String)
    /// A `messages` line, but the model has no chat template this package can render.
    case noChatTemplate(file: String, line: Int)
    /// Classification training data with fewer than two distinct labels: nothing to learn.
    case tooFewLabels(file: String, labels: [String])
    /// After truncation to `maxSequenceLength`, no example has a token to take the loss on.
    case noTrainableExamples(file: String, maxSequenceLength: Int)
    /// A loading option that cannot work (e.g. `maxSequenceLength` below 2).
    case invalidOption(file: String, reason: String)
    /// A `label_map.json` that is not `{"labels": [distinct strings]}`.
    case invalidLabelMap(file: String, reason: String)
    /// A saved `Batcher.State` that does not fit this batcher's data (a checkpoint from a
    /// different data set or batch size).
    case inconsistentBatcherState(reason: String)

    public var description: String {
        switch self {
        case let .cannotRead(file, reason): "cannot read \(file): \(reason)"
        case let .malformed(file, line, reason): "\(file):\(line): \(reason)"
        case let .empty(file): "\(file): no examples (the file is empty or has only blank lines)"
        case let .unknownLabel(file, line, label): "\(file):\(line): label \"\(label)\" is not one of the training labels"
        case let .noChatTemplate(file, line):
            "\(file):\(line): a \"messages\" example needs the model's chat template, and the model has none this package can render (supported: ChatML, Llama-3, Gemma, Mistral); give one with --chat-template FILE"
        case let .tooFewLabels(file, labels):
            "\(file): classification needs at least two distinct labels; the file has \(labels.isEmpty ? "none" : labels.map { "\"\($0)\"" }.joined(separator: ", "))"
        case let .noTrainableExamples(file, maxSequenceLength):
            "\(file): no example keeps a token to learn from after truncation to \(maxSequenceLength) tokens; raise the maximum sequence length"
        case let .invalidOption(file, reason): "\(file): \(reason)"
        case let .invalidLabelMap(file, reason): "\(file): invalid label map: \(reason)"
        case let .inconsistentBatcherState(reason): "cannot resume the batch order: \(reason)"
        }
    }
}

/// One tokenised example.
///
/// Causal LM: `labels[i]` is the target *token id at position i* — not shifted; the model
/// shifts, as Hugging Face does, so `labels[0]` never contributes — or -100 where no loss is
/// taken. Classification: `label` is the class index and `labels` is empty.
public struct Example: Sendable, Equatable {
    public var ids: [Int]
    /// Causal LM: one per id; classification: empty.
    public var labels: [Int]
    /// Classification: the class index into the `LabelMap`.
    public var label: Int?
    /// BERT's segment ids (0 for the first text, 1 for the pair), one per id.
    public var tokenTypeIds: [Int]?
    /// The 1-based source line, for messages.
    public var line: Int

    public init(ids: [Int], labels: [Int] = [], label: Int? = nil, tokenTypeIds: [Int]? = nil, line: Int = 0) {
        self.ids = ids
        self.labels = labels
        self.label = label
        self.tokenTypeIds = tokenTypeIds
        self.line = line
    }

    /// The ignored-target marker (PyTorch's `ignore_index`).
    public static let ignored = -100

    /// Positions that contribute to the causal-LM loss: a target other than -100 at position 1
    /// or later (position 0 is never predicted).
    public var targetCount: Int {
        var n = 0
        for i in labels.indices where i > 0 && labels[i] != Self.ignored { n += 1 }
        return n
    }
}

/// Class names ↔ indices, saved with the adapter as `label_map.json` (`{"labels": ["neg", "pos"]}`).
public struct LabelMap: Sendable, Equatable, Codable {
    /// Class names by index.
    public var labels: [String]

    /// `labels` should be distinct; `load` and decoding refuse duplicates.
    public init(labels: [String]) { self.labels = labels }

    public var count: Int { labels.count }

    /// The index of a class name.
    public func id(of label: String) -> Int? { labels.firstIndex(of: label) }

    /// The class name of an index.
    public func name(of id: Int) -> String? { labels.indices.contains(id) ? labels[id] : nil }

    public init(from decoder: any Decoder) throws {
        let container = try decoder.container(keyedBy: CodingKeys.self)
        labels = try container.decode([String].self, forKey: .labels)
        if let problem = Self.problem(labels) {
            throw DecodingError.dataCorruptedError(forKey: .labels, in: container, debugDescription: problem)
        }
    }

    /// The label map built from training labels: integer labels keep their value as index
    /// (names "0" … "max"); string labels are sorted (by Unicode scalars) so the indices do not
    /// depend on line order.
    public init(integerLabels: Set<Int>) {
        labels = (0...(integerLabels.max() ?? 0)).map(String.init)
    }

    public init(stringLabels: Set<String>) {
        labels = stringLabels.sorted { $0.unicodeScalars.lexicographicallyPrecedes($1.unicodeScalars) }
    }

    /// Reads `label_map.json`.
    public static func load(_ url: URL) throws(DataError) -> LabelMap {
        let data: Data
        do { data = try Data(contentsOf: url) } catch { throw .cannotRead(file: url.path, reason: error.localizedDescription) }
        let root: JSON
        do { root = try JSON.parse(data) } catch { throw .invalidLabelMap(file: url.path, reason: "not JSON (\(error.description))") }
        guard let array = root["labels"]?.array else { throw .invalidLabelMap(file: url.path, reason: "no \"labels\" array") }
        var labels: [String] = []
        for (i, value) in array.enumerated() {
            guard let s = value.string else { throw .invalidLabelMap(file: url.path, reason: "labels[\(i)] is not a string") }
            labels.append(s)
        }
        if let problem = problem(labels) { throw .invalidLabelMap(file: url.path, reason: problem) }
        return LabelMap(labels: labels)
    }

    /// `{"labels": […]}` as written to `label_map.json`.
    public func jsonData() -> Data {
        Data((JSON.object([("labels", .array(labels.map { .string($0) }))]).serialized(indent: 2) + "\n").utf8)
    }

    static func problem(_ labels: [String]) -> String? {
        if labels.isEmpty { return "no labels" }
        var seen = Set<String>()
        for (i, l) in labels.enumerated() where !seen.insert(l).inserted { return "labels[\(i)] \"\(l)\" appears twice" }
        return nil
    }
}

/// What `Dataset.load` read, for the command line to print.
public struct DataReport: Sendable {
    public var file: String
    /// Examples kept (see `skippedLines`).
    public var examples: Int
    /// A `DataFormat` raw value.
    public var format: String
    /// Tokens over all examples, after truncation.
    public var tokens: Int
    /// Causal LM: tokens the loss is taken on (`Example.targetCount` summed). Classification: 0.
    public var trainableTokens: Int
    /// Examples cut to `maxSequenceLength`.
    public var truncated: Int
    /// The longest example, in tokens, after truncation.
    public var longest: Int
    /// Causal LM: lines left out because truncation left them nothing to learn from (a prompt
    /// at least `maxSequenceLength` long). Reported so nothing is dropped silently.
    public var skippedLines: [Int]
    /// Classification: examples per class index.
    public var classCounts: [Int]?

    public var skipped: Int { skippedLines.count }
}

/// JSONL training and evaluation data.
public enum Dataset {
    /// Reads a JSONL file into tokenised examples.
    ///
    /// Formats (detected per line from its keys, all lines must agree):
    /// - `{"text"}`: loss on every token; EOS appended as mlx-lm does (unless the text already
    ///   ends with it) when the tokenizer has one.
    /// - `{"prompt", "completion"}`: ids = encode(prompt) + encode(completion, no special tokens)
    ///   + [eos], tokenised separately so training matches generating after encode(prompt); loss
    ///   on the completion and EOS only.
    /// - `{"messages": [{"role", "content"}, …]}`: rendered with the chat template's `segments`;
    ///   each run of untrained text and each assistant content + `<|im_end|>` is tokenised
    ///   without special tokens and the pieces concatenated, so every assistant turn is trained
    ///   on the ids generation produces after the prompt it would be given. Loss on the
    ///   assistant contents and their `<|im_end|>` only. A conversation needs an assistant turn.
    ///   (The ids equal tokenising the whole rendered conversation except where an assistant
    ///   turn starts with whitespace, which a whole-text tokenisation would merge with the
    ///   header's newline.)
    /// - classification, `{"text", "label"[, "text_pair"]}`: `encodePair` for WordPiece
    ///   tokenizers (`[CLS] a [SEP] b [SEP]` with segment ids), `encode` otherwise (pairs need
    ///   WordPiece); the label an integer ≥ 0 or a string, the same kind on every line.
    ///
    /// Keys other than these are ignored (data sets often carry ids or metadata). A sequence
    /// longer than `maxSequenceLength` is cut from the end (a pair: longest first, as
    /// transformers) and counted in the report; a causal example left with no target is
    /// skipped and its line listed in the report. Blank lines are skipped; anything else that
    /// is not an example is an error naming the file and line.
    ///
    /// - Parameter labelMap: classification: the training label map when loading evaluation
    ///   data (or resuming); nil to build it from this file (then at least two distinct labels
    ///   are required). Ignored for causal LM.
    /// - Returns: the examples in file order, the report, and the label map used
    ///   (classification) or nil (causal LM).
    public static func load(_ url: URL, task: TrainingTask, tokenizer: any Tokenizer, chatTemplate: ChatTemplate?,
                            maxSequenceLength: Int, labelMap: LabelMap?) throws(DataError)
        -> (examples: [Example], report: DataReport, labelMap: LabelMap?) {
        let file = url.path
        let data: Data
        if let why = unreadableFileReason(url) { throw .cannotRead(file: file, reason: why) }
        do { data = try Data(contentsOf: url) } catch { throw .cannotRead(file: file, reason: plainFileReason(error)) }
        return try load(data, file: file, task: task, tokenizer: tokenizer, chatTemplate: chatTemplate,
                        maxSequenceLength: maxSequenceLength, labelMap: labelMap)
    }

    /// The same, from the file's bytes; `file` names it in errors and the report.
    public static func load(_ data: Data, file: String, task: TrainingTask, tokenizer: any Tokenizer, chatTemplate: ChatTemplate?,
                            maxSequenceLength: Int, labelMap: LabelMap?) throws(DataError)
        -> (examples: [Example], report: DataReport, labelMap: LabelMap?) {
        guard maxSequenceLength >= 2 else {
            throw .invalidOption(file: file, reason: "the maximum sequence length must be at least 2 (is \(maxSequenceLength))")
        }
        let lines = try parseLines(data, file: file)
        guard let first = lines.first else { throw .empty(file: file) }

        var format: DataFormat?
        var examples: [Example] = []
        examples.reserveCapacity(lines.count)
        var report = DataReport(file: file, examples: 0, format: "", tokens: 0, trainableTokens: 0, truncated: 0,
                                longest: 0, skippedLines: [], classCounts: nil)
        switch task {
        case .causalLM:
            let encoder = CausalEncoder(tokenizer: tokenizer, chatTemplate: chatTemplate, maxLength: maxSequenceLength, file: file)
            for (line, object) in lines {
                let lineFormat = try causalFormat(object, file: file, line: line)
                try agree(lineFormat, with: &format, file: file, line: line, firstLine: first.line)
                var (example, truncated) = try encoder.encode(object, format: lineFormat, line: line)
                example.line = line
                if truncated { report.truncated += 1 }
                guard example.targetCount > 0 else {
                    report.skippedLines.append(line)
                    continue
                }
                report.tokens += example.ids.count
                report.trainableTokens += example.targetCount
                report.longest = max(report.longest, example.ids.count)
                examples.append(example)
            }
            guard !examples.isEmpty else {
                if report.truncated == 0 {
                    throw .invalidOption(file: file, reason: "no example has a token to learn from: the texts (or completions, or assistant turns) are empty")
                }
                throw .noTrainableExamples(file: file, maxSequenceLength: maxSequenceLength)
            }
            report.examples = examples.count
            report.format = (format ?? .text).rawValue
            return (examples, report, nil)

        case .classification:
            // Parse every line first: the label map (and so every index) depends on all labels.
            var raw: [(line: Int, text: String, pair: String?, label: RawLabel)] = []
            raw.reserveCapacity(lines.count)
            for (line, object) in lines {
                raw.append(try classificationFields(object, file: file, line: line))
                if let kind = raw.first?.label.isInteger, kind != raw[raw.count - 1].label.isInteger {
                    throw .malformed(file: file, line: line, reason: "\"label\" is \(kind ? "a string" : "an integer") here but \(kind ? "an integer" : "a string") on line \(raw[0].line); use one kind throughout")
                }
            }
            let map: LabelMap
            if let labelMap {
                map = labelMap
            } else {
                map = raw.first?.label.isInteger == true
                    ? LabelMap(integerLabels: Set(raw.compactMap { $0.label.integer }))
                    : LabelMap(stringLabels: Set(raw.map(\.label.name)))
                let distinct = Set(raw.map(\.label.name))
                guard distinct.count >= 2 else { throw .tooFewLabels(file: file, labels: distinct.sorted()) }
            }
            let wordPiece = tokenizer as? WordPieceTokenizer
            var counts = Array(repeating: 0, count: map.count)
            for r in raw {
                guard let index = map.id(of: r.label.name) else { throw .unknownLabel(file: file, line: r.line, label: r.label.name) }
                var example = Example(ids: [], label: index, line: r.line)
                var truncated = false
                if let wordPiece {
                    var encoded = wordPiece.encodePair(r.text, r.pair, maxLength: nil)
                    if encoded.ids.count > maxSequenceLength {
                        truncated = true
                        encoded = wordPiece.encodePair(r.text, r.pair, maxLength: maxSequenceLength)
                    }
                    example.ids = encoded.ids
                    example.tokenTypeIds = encoded.typeIds
                } else {
                    guard r.pair == nil else {
                        throw .malformed(file: file, line: r.line, reason: "\"text_pair\" needs a WordPiece (BERT) tokenizer, which puts [SEP] between the texts")
                    }
                    example.ids = tokenizer.encode(r.text, addSpecialTokens: true)
                    if example.ids.count > maxSequenceLength {
                        truncated = true
                        example.ids.removeLast(example.ids.count - maxSequenceLength)
                    }
                }
                guard !example.ids.isEmpty else { throw .malformed(file: file, line: r.line, reason: "\"text\" gives no tokens") }
                if truncated { report.truncated += 1 }
                report.tokens += example.ids.count
                report.longest = max(report.longest, example.ids.count)
                counts[index] += 1
                examples.append(example)
            }
            report.examples = examples.count
            report.format = DataFormat.classification.rawValue
            report.classCounts = counts
            return (examples, report, map)
        }
    }

    // MARK: Lines

    /// The non-blank lines as JSON objects with their 1-based numbers.
    static func parseLines(_ data: Data, file: String) throws(DataError) -> [(line: Int, object: JSON)] {
        var out: [(line: Int, object: JSON)] = []
        let bytes = [UInt8](data)
        var start = 0, number = 0
        while start < bytes.count {
            number += 1
            var end = start
            while end < bytes.count, bytes[end] != 0x0A { end += 1 }
            var last = end
            if last > start, bytes[last - 1] == 0x0D { last -= 1 }  // CRLF files
            let slice = bytes[start..<last]
            start = end + 1
            if slice.allSatisfy({ $0 == 0x20 || $0 == 0x09 || $0 == 0x0D }) { continue }
            if number == 1, slice.starts(with: [0xEF, 0xBB, 0xBF]) {
                throw .malformed(file: file, line: 1, reason: "the file starts with a UTF-8 byte-order mark; save it as plain UTF-8")
            }
            let value: JSON
            do { value = try JSON.parse(Data(slice)) } catch {
                throw .malformed(file: file, line: number, reason: "not JSON (\(error.reason) at column \(error.offset + 1))")
            }
            guard value.object != nil else { throw .malformed(file: file, line: number, reason: "not a JSON object") }
            out.append((number, value))
        }
        return out
    }

    static func agree(_ lineFormat: DataFormat, with format: inout DataFormat?, file: String, line: Int, firstLine: Int) throws(DataError) {
        if let format, format != lineFormat {
            throw .malformed(file: file, line: line, reason: "a \(lineFormat.rawValue) example, but line \(firstLine) is \(format.rawValue); all lines must use one format")
        }
        format = lineFormat
    }

    static func string(_ object: JSON, _ key: String, file: String, line: Int) throws(DataError) -> String {
        guard let value = object[key] else { throw .malformed(file: file, line: line, reason: "missing \"\(key)\"") }
        guard let s = value.string else { throw .malformed(file: file, line: line, reason: "\"\(key)\" is \(kind(of: value)), not a string") }
        return s
    }

    static func kind(of value: JSON) -> String {
        switch value {
        case .null: "null"
        case .bool: "a boolean"
        case .number: "a number"
        case .string: "a string"
        case .array: "an array"
        case .object: "an object"
        }
    }

    // MARK: Causal LM

    static func causalFormat(_ object: JSON, file: String, line: Int) throws(DataError) -> DataFormat {
        if object["messages"] != nil { return .chat }
        if object["prompt"] != nil || object["completion"] != nil { return .completion }
        if object["text"] != nil {
            if object["label"] != nil {
                throw .malformed(file: file, line: line, reason: "a \"text\" with a \"label\" is classification data, which a causal language model "
                    + "does not train on; use a BERT-family encoder (e.g. --model all-minilm-l6-v2) with --task classification, "
                    + "or drop \"label\" to train on the text")
            }
            return .text
        }
        let keys = (object.object ?? []).map { "\"\($0.key)\"" }.joined(separator: ", ")
        throw .malformed(file: file, line: line, reason: "unknown format (keys: \(keys.isEmpty ? "none" : keys)); expected \"text\", \"prompt\" and \"completion\", or \"messages\"")
    }

    struct CausalEncoder {
        let tokenizer: any Tokenizer
        let chatTemplate: ChatTemplate?
        let maxLength: Int
        let file: String

        /// The example (ids and unshifted labels) and whether it was truncated.
        func encode(_ object: JSON, format: DataFormat, line: Int) throws(DataError) -> (Example, Bool) {
            var ids: [Int] = []
            var labels: [Int] = []
            switch format {
            case .text:
                let text = try Dataset.string(object, "text", file: file, line: line)
                ids = tokenizer.encode(text, addSpecialTokens: true)
                if let eos = tokenizer.eosTokenId, ids.last != eos { ids.append(eos) }
                labels = ids
            case .completion:
                let prompt = try Dataset.string(object, "prompt", file: file, line: line)
                let completion = try Dataset.string(object, "completion", file: file, line: line)
                ids = tokenizer.encode(prompt, addSpecialTokens: true)
                labels = Array(repeating: Example.ignored, count: ids.count)
                var target = tokenizer.encode(completion, addSpecialTokens: false)
                if let eos = tokenizer.eosTokenId { target.append(eos) }
                ids += target
                labels += target
            case .chat:
                guard let template = chatTemplate else { throw .noChatTemplate(file: file, line: line) }
                let messages = try Self.messages(object, file: file, line: line)
                do { try template.validate(messages) } catch { throw .malformed(file: file, line: line, reason: error.description) }
                // Adjacent segments with the same mark are tokenised together, so the prompt part
                // up to each assistant turn has exactly the ids generation gives the rendered
                // prompt (with its generation header), and the assistant text those it generates.
                var runs: [(text: String, trainable: Bool)] = []
                for segment in template.segments(messages) {
                    if let last = runs.last, last.trainable == segment.trainable {
                        runs[runs.count - 1].text += segment.text
                    } else {
                        runs.append(segment)
                    }
                }
                for run in runs {
                    let piece = tokenizer.encode(run.text, addSpecialTokens: false)
                    ids += piece
                    labels += run.trainable ? piece : Array(repeating: Example.ignored, count: piece.count)
                }
            case .classification:
                throw .malformed(file: file, line: line, reason: "a classification example in causal-LM data")
            }
            guard !ids.isEmpty else { throw .malformed(file: file, line: line, reason: "the example gives no tokens") }
            let truncated = ids.count > maxLength
            if truncated {
                ids.removeLast(ids.count - maxLength)
                labels.removeLast(labels.count - maxLength)
            }
            return (Example(ids: ids, labels: labels, line: line), truncated)
        }

        static func messages(_ object: JSON, file: String, line: Int) throws(DataError) -> [ChatMessage] {
            guard let array = object["messages"]?.array else {
                throw .malformed(file: file, line: line, reason: "\"messages\" is \(object["messages"].map(Dataset.kind) ?? "missing"), not an array")
            }
            guard !array.isEmpty else { throw .malformed(file: file, line: line, reason: "\"messages\" is empty") }
            var out: [ChatMessage] = []
            for (i, m) in array.enumerated() {
                guard m.object != nil else { throw .malformed(file: file, line: line, reason: "messages[\(i)] is \(Dataset.kind(of: m)), not an object") }
                for key in ["role", "content"] {
                    guard let v = m[key] else { throw .malformed(file: file, line: line, reason: "messages[\(i)] has no \"\(key)\"") }
                    guard v.string != nil else {
                        throw .malformed(file: file, line: line, reason: "messages[\(i)].\(key) is \(Dataset.kind(of: v)), not a string")
                    }
                }
                let role = m["role"]?.string ?? ""
                guard ["system", "user", "assistant", "tool", "developer"].contains(role) else {
                    throw .malformed(file: file, line: line, reason: "messages[\(i)] has the unknown role \"\(role)\" (expected system, user, assistant or tool)")
                }
                out.append(ChatMessage(role: role, content: m["content"]?.string ?? ""))
            }
            guard out.contains(where: { $0.role == "assistant" }) else {
                throw .malformed(file: file, line: line, reason: "no \"assistant\" message to learn from")
            }
            return out
        }
    }

    // MARK: Classification

    /// A label as written: an integer (its own index) or a name.
    enum RawLabel {
        case integer(Int)
        case name(String)

        var isInteger: Bool { if case .integer = self { true } else { false } }
        var integer: Int? { if case .integer(let i) = self { i } else { nil } }
        /// The label-map name: integers as decimal strings.
        var name: String {
            switch self {
            case .integer(let i): String(i)
            case .name(let s): s
            }
        }
    }

    /// Integer labels index a dense map 0…max; beyond this they are surely not class indices.
    static let maximumIntegerLabel = 9_999

    static func classificationFields(_ object: JSON, file: String, line: Int) throws(DataError)
        -> (line: Int, text: String, pair: String?, label: RawLabel) {
        if object["messages"] != nil || object["prompt"] != nil || object["completion"] != nil {
            throw .malformed(file: file, line: line, reason: "classification needs {\"text\", \"label\"}, not a causal-LM example")
        }
        let text = try string(object, "text", file: file, line: line)
        var pair: String?
        if let p = object["text_pair"], !p.isNull {
            guard let s = p.string else { throw .malformed(file: file, line: line, reason: "\"text_pair\" is \(kind(of: p)), not a string") }
            pair = s
        }
        guard let value = object["label"] else { throw .malformed(file: file, line: line, reason: "missing \"label\"") }
        let label: RawLabel
        switch value {
        case .string(let s):
            guard !s.isEmpty else { throw .malformed(file: file, line: line, reason: "\"label\" is an empty string") }
            label = .name(s)
        case .number(let d):
            guard let i = value.int, i >= 0, i <= maximumIntegerLabel else {
                throw .malformed(file: file, line: line, reason: "\"label\" \(d) is not an integer in 0…\(maximumIntegerLabel)")
            }
            label = .integer(i)
        default:
            throw .malformed(file: file, line: line, reason: "\"label\" is \(kind(of: value)), not an integer or a string")
        }
        return (line, text, pair, label)
    }
}
