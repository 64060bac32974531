import Foundation

/// Everything that can be wrong with a tokenizer's files, naming the file (or the source the
/// arrays came from) and the field or entry at fault.
public enum TokenizerError: Error, Equatable, CustomStringConvertible {
    case cannotRead(path: String, reason: String)
    /// Not JSON; `reason` gives the byte offset.
    case invalidJSON(file: String, reason: String)
    case missingField(file: String, field: String)
    case invalidField(file: String, field: String, reason: String)
    /// `model.type` names a model this package does not implement (Unigram, WordLevel, …).
    case unsupportedModel(file: String, type: String)
    /// A normalizer, pre-tokenizer, post-processor, decoder or option this package does not implement.
    case unsupportedComponent(file: String, component: String, detail: String)
    /// `merges[index]` names a token that is not in the vocabulary (or its result is not).
    case unknownTokenInMerge(file: String, index: Int, merge: String, token: String)
    /// `merges[index]` is not two tokens separated by one space.
    case invalidMerge(file: String, index: Int, merge: String)
    /// A special token (`unk_token`, a template's `[CLS]`, a BOS id, …) that the vocabulary lacks.
    case unknownSpecialToken(file: String, role: String, token: String)
    case emptyVocabulary(file: String)
    /// The directory has neither `tokenizer.json` nor `vocab.txt`.
    case noTokenizer(directory: String)

    public var description: String {
        switch self {
        case let .cannotRead(path, reason): "cannot read \(path): \(reason)"
        case let .invalidJSON(file, reason): "\(file): invalid JSON (\(reason))"
        case let .missingField(file, field): "\(file): missing \(field)"
        case let .invalidField(file, field, reason): "\(file): \(field) \(reason)"
        case let .unsupportedModel(file, type): "\(file): unsupported tokenizer model type \"\(type)\" (supported: BPE, WordPiece)"
        case let .unsupportedComponent(file, component, detail): "\(file): unsupported \(component): \(detail)"
        case let .unknownTokenInMerge(file, index, merge, token): "\(file): merges[\(index)] \"\(merge)\" uses \"\(token)\", which is not in the vocabulary"
        case let .invalidMerge(file, index, merge): "\(file): merges[\(index)] \"\(merge)\" is not two tokens separated by a space"
        case let .unknownSpecialToken(file, role, token): "\(file): \(role) \"\(token)\" is not in the vocabulary"
        case let .emptyVocabulary(file): "\(file): the vocabulary is empty"
        case let .noTokenizer(directory): "\(directory) has neither tokenizer.json nor vocab.txt"
        }
    }
}

/// Text to token ids and back, exactly as Hugging Face transformers does it for the same files.
public protocol Tokenizer: Sendable {
    /// Every id the tokenizer can produce is below this: transformers' `len(tokenizer)`, or one
    /// past the largest id when the vocabulary's ids are not contiguous.
    var vocabularySize: Int { get }
    /// transformers' `tokenizer(text)["input_ids"]` when `addSpecialTokens` (BERT: `[CLS] … [SEP]`;
    /// SmolLM2: no BOS); `tokenizer(text, add_special_tokens=False)` otherwise.
    func encode(_ text: String, addSpecialTokens: Bool) -> [Int]
    /// transformers' `tokenizer.decode(ids, skip_special_tokens:)`; ids it does not know are skipped.
    func decode(_ ids: [Int], skipSpecialTokens: Bool) -> String
    func id(of token: String) -> Int?
    func token(of id: Int) -> String?
    var bosTokenId: Int? { get }
    var eosTokenId: Int? { get }
    var padTokenId: Int? { get }
    var unknownTokenId: Int? { get }
}

extension Tokenizer {
    /// `tokenizer(text)["input_ids"]`.
    public func encode(_ text: String) -> [Int] { encode(text, addSpecialTokens: true) }
    /// `tokenizer.decode(ids)`.
    public func decode(_ ids: [Int]) -> String { decode(ids, skipSpecialTokens: false) }
}

/// Loads the tokenizer of a Hugging Face model directory: `tokenizer.json` (BPE, byte-level, or
/// WordPiece), else `vocab.txt` as a BERT WordPiece vocabulary configured by
/// `tokenizer_config.json`. BOS/EOS/PAD/UNK come from `tokenizer_config.json` or
/// `special_tokens_map.json`, as transformers reads them. Errors name the file at fault.
public func loadTokenizer(huggingFaceDirectory directory: URL) throws(TokenizerError) -> any Tokenizer {
    let fm = FileManager.default
    let tokenizerJSON = directory.appendingPathComponent("tokenizer.json")
    let vocabTxt = directory.appendingPathComponent("vocab.txt")
    let names = try SpecialTokenNames(directory: directory)
    if fm.fileExists(atPath: tokenizerJSON.path) {
        return try loadTokenizer(tokenizerJSON: try readFile(tokenizerJSON), source: tokenizerJSON.path, names: names)
    }
    if fm.fileExists(atPath: vocabTxt.path) {
        let data = try readFile(vocabTxt)
        let text = String(decoding: data, as: UTF8.self)
        return try WordPieceTokenizer(
            vocabTxt: text, lowercase: names.lowercase ?? true, stripAccents: names.stripAccents,
            tokenizeChineseChars: names.tokenizeChineseChars ?? true,
            unknown: names.unk ?? "[UNK]", classifier: names.cls ?? "[CLS]", separator: names.sep ?? "[SEP]",
            padding: names.pad ?? "[PAD]", mask: names.mask ?? "[MASK]", source: vocabTxt.path)
    }
    throw .noTokenizer(directory: directory.path)
}

/// A tokenizer from the bytes of a `tokenizer.json` alone (BPE or WordPiece, by `model.type`),
/// with the special tokens it declares itself. `source` names it in errors.
public func loadTokenizer(tokenizerJSON data: Data, source: String = "tokenizer.json") throws(TokenizerError) -> any Tokenizer {
    try loadTokenizer(tokenizerJSON: data, source: source, names: SpecialTokenNames())
}

func loadTokenizer(tokenizerJSON data: Data, source file: String, names: SpecialTokenNames) throws(TokenizerError) -> any Tokenizer {
    let root = try parseJSONObject(data, file: file)
    guard let model = root["model"], model.object != nil else { throw .missingField(file: file, field: "model") }
    let type = model["type"]?.string ?? (model["merges"] != nil ? "BPE" : "")
    switch type {
    case "BPE" where model["byte_fallback"]?.bool == true:
        // SentencePiece-style BPE (Gemma): byte fallback, "▁" for spaces.
        return try SentencePieceBPETokenizer(json: root, file: file, names: names)
    case "BPE": return try ByteLevelBPETokenizer(json: root, file: file, names: names)
    case "WordPiece": return try WordPieceTokenizer(json: root, file: file, names: names)
    default: throw .unsupportedModel(file: file, type: type.isEmpty ? "(none)" : type)
    }
}

func readFile(_ url: URL) throws(TokenizerError) -> Data {
    do {
        return try Data(contentsOf: url)
    } catch {
        throw .cannotRead(path: url.path, reason: error.localizedDescription)
    }
}

func parseJSONObject(_ data: Data, file: String) throws(TokenizerError) -> JSON {
    let value: JSON
    do {
        value = try JSON.parse(data)
    } catch {
        throw .invalidJSON(file: file, reason: error.description)
    }
    guard value.object != nil else { throw .invalidJSON(file: file, reason: "the top level is not an object") }
    return value
}

/// The special-token settings transformers reads beside the tokenizer: `tokenizer_config.json`
/// first, then `special_tokens_map.json`. Values are strings or `{"content": …}` objects.
struct SpecialTokenNames: Sendable {
    var bos: String?, eos: String?, pad: String?, unk: String?, cls: String?, sep: String?, mask: String?
    var lowercase: Bool?, stripAccents: Bool?, tokenizeChineseChars: Bool?

    init() {}

    init(directory: URL) throws(TokenizerError) {
        for name in ["special_tokens_map.json", "tokenizer_config.json"] {
            let url = directory.appendingPathComponent(name)
            guard FileManager.default.fileExists(atPath: url.path) else { continue }
            let root = try parseJSONObject(try readFile(url), file: url.path)
            // The later file (tokenizer_config.json) wins, as in transformers.
            func token(_ key: String) -> String? { root[key]?.string ?? root[key]?["content"]?.string }
            bos = token("bos_token") ?? bos
            eos = token("eos_token") ?? eos
            pad = token("pad_token") ?? pad
            unk = token("unk_token") ?? unk
            cls = token("cls_token") ?? cls
            sep = token("sep_token") ?? sep
            mask = token("mask_token") ?? mask
            lowercase = root["do_lower_case"]?.bool ?? lowercase
            stripAccents = root["strip_accents"]?.bool ?? stripAccents
            tokenizeChineseChars = root["tokenize_chinese_chars"]?.bool ?? tokenizeChineseChars
        }
    }
}
