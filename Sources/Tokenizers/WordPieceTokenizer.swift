import Foundation

/// BERT's WordPiece tokenizer, giving the ids Hugging Face gives for the same files.
///
/// Encoding: added tokens (`[CLS]`, `[SEP]`, …) are cut out of the raw text; the rest goes
/// through BERT's normalizer (drop control characters, whitespace → space, spaces around CJK
/// ideographs, then for uncased models NFD, drop nonspacing marks, lower-case), is split on
/// whitespace and around every punctuation scalar, and each word is cut greedily into the
/// longest vocabulary pieces, later pieces prefixed `##`. A word longer than
/// `maxInputCharsPerWord` scalars, or one that cannot be cut, is `[UNK]`.
public struct WordPieceTokenizer: Tokenizer {
    /// HF's `BertNormalizer`.
    public struct Normalization: Sendable, Equatable {
        public var cleanText: Bool
        public var handleChineseChars: Bool
        /// nil: strip accents exactly when lower-casing.
        public var stripAccents: Bool?
        public var lowercase: Bool

        public init(cleanText: Bool = true, handleChineseChars: Bool = true, stripAccents: Bool? = nil, lowercase: Bool = true) {
            self.cleanText = cleanText
            self.handleChineseChars = handleChineseChars
            self.stripAccents = stripAccents
            self.lowercase = lowercase
        }

        /// The normalizer applied to a run of scalars.
        public func apply(_ text: [Unicode.Scalar]) -> [Unicode.Scalar] {
            var out: [Unicode.Scalar] = []
            out.reserveCapacity(text.count + 8)
            var ascii = true
            for var c in text {
                if cleanText {
                    if c.value == 0 || c.value == 0xFFFD || isBertControl(c) { continue }
                    if c.isWhiteSpace { c = " " }
                }
                if handleChineseChars, isChineseCharacter(c) {
                    out.append(" ")
                    out.append(c)
                    out.append(" ")
                } else {
                    out.append(c)
                }
                if c.value >= 0x80 { ascii = false }
            }
            // ASCII is its own NFD and has no marks: skip Foundation's normalization.
            if stripAccents ?? lowercase, !ascii {
                var view = String.UnicodeScalarView()
                view.append(contentsOf: out)
                out = String(view).decomposedStringWithCanonicalMapping.unicodeScalars.filter {
                    $0.properties.generalCategory != .nonspacingMark
                }
            }
            if lowercase {
                var lowered: [Unicode.Scalar] = []
                lowered.reserveCapacity(out.count)
                for c in out {
                    if c.value < 0x80 {
                        lowered.append(c.value >= 0x41 && c.value <= 0x5A ? Unicode.Scalar(UInt8(c.value + 32)) : c)
                    } else {
                        // Scalar by scalar, as Rust's char::to_lowercase: no final-sigma rule.
                        lowered.append(contentsOf: c.properties.lowercaseMapping.unicodeScalars)
                    }
                }
                out = lowered
            }
            return out
        }
    }

    public let normalization: Normalization?
    public let vocabularySize: Int
    public let bosTokenId: Int?
    public let eosTokenId: Int?
    public let padTokenId: Int?
    public let unknownTokenId: Int?
    public let classifierTokenId: Int?
    public let separatorTokenId: Int?
    public let maskTokenId: Int?
    public let maxInputCharsPerWord: Int
    public let continuingSubwordPrefix: String
    public let addedTokens: [AddedToken]

    let vocabulary: Vocabulary
    private let added: AddedVocabulary
    let template: Template
    let unknown: Int
    private let prefixBytes: [UInt8]
    /// The WordPiece decoder's prefix and cleanup; nil: tokens joined by spaces (no decoder).
    let decoder: (prefix: [UInt8], cleanup: Bool)?

    /// A Hugging Face `tokenizer.json` with a WordPiece model, a BertNormalizer (or none), the
    /// BertPreTokenizer, and TemplateProcessing/BertProcessing.
    public init(tokenizerJSON: Data, source: String = "tokenizer.json") throws(TokenizerError) {
        try self.init(json: try parseJSONObject(tokenizerJSON, file: source), file: source, names: SpecialTokenNames())
    }

    init(json root: JSON, file: String, names: SpecialTokenNames) throws(TokenizerError) {
        guard let model = root["model"], model.object != nil else { throw .missingField(file: file, field: "model") }
        let type = model["type"]?.string ?? "WordPiece"
        guard type == "WordPiece" else { throw .unsupportedModel(file: file, type: type) }
        let vocabulary = try parseVocabulary(model, file: file)

        var normalization: Normalization? = nil
        if let n = root["normalizer"], !n.isNull {
            guard n["type"]?.string == "BertNormalizer" else {
                throw .unsupportedComponent(file: file, component: "normalizer", detail: n["type"]?.string ?? "\(n)")
            }
            normalization = Normalization(cleanText: n["clean_text"]?.bool ?? true, handleChineseChars: n["handle_chinese_chars"]?.bool ?? true,
                                          stripAccents: n["strip_accents"]?.bool, lowercase: n["lowercase"]?.bool ?? true)
        }
        let preType = root["pre_tokenizer"]?["type"]?.string
        guard preType == "BertPreTokenizer" else {
            throw .unsupportedComponent(file: file, component: "pre_tokenizer", detail: preType ?? "none (WordPiece needs BertPreTokenizer)")
        }
        var decoder: (prefix: [UInt8], cleanup: Bool)? = nil
        if let d = root["decoder"], !d.isNull {
            guard d["type"]?.string == "WordPiece" else {
                throw .unsupportedComponent(file: file, component: "decoder", detail: d["type"]?.string ?? "\(d)")
            }
            decoder = (Array((d["prefix"]?.string ?? "##").utf8), d["cleanup"]?.bool ?? true)
        }
        let addedTokens = try parseAddedTokens(root, file: file)
        func lookup(_ token: String) -> Int? {
            addedTokens.first { $0.content.utf8.elementsEqual(token.utf8) }?.id ?? vocabulary.id(token)
        }
        let template = try Template.parse(root["post_processor"], file: file, vocabulary: lookup)
        let unkToken = model["unk_token"]?.string ?? "[UNK]"
        guard let unknown = vocabulary.id(unkToken) else { throw .unknownSpecialToken(file: file, role: "model.unk_token", token: unkToken) }
        let maxChars = model["max_input_chars_per_word"]?.int ?? 100
        let padName = names.pad ?? root["padding"]?["pad_token"]?.string ?? "[PAD]"
        try self.init(vocabulary: vocabulary, addedTokens: addedTokens, normalization: normalization, template: template,
                      unknown: unknown, prefix: model["continuing_subword_prefix"]?.string ?? "##", maxInputCharsPerWord: maxChars,
                      decoder: decoder, bos: names.bos.flatMap(lookup), eos: names.eos.flatMap(lookup), pad: lookup(padName),
                      cls: lookup(names.cls ?? "[CLS]"), sep: lookup(names.sep ?? "[SEP]"), mask: lookup(names.mask ?? "[MASK]"), file: file)
    }

    /// BERT from a `vocab.txt` (one token per line, id = line number), as transformers'
    /// `BertTokenizer` builds it: the named special tokens present in the vocabulary become
    /// special added tokens, `[CLS] A [SEP]` / `[CLS] A [SEP] B [SEP]` around the text.
    public init(vocabTxt: String, lowercase: Bool = true, stripAccents: Bool? = nil, tokenizeChineseChars: Bool = true,
                unknown: String = "[UNK]", classifier: String = "[CLS]", separator: String = "[SEP]",
                padding: String = "[PAD]", mask: String = "[MASK]", source: String = "vocab.txt") throws(TokenizerError) {
        // Python reads the file with universal newlines: \r\n and \r end lines too.
        var lines: [String] = []
        var line = String.UnicodeScalarView()
        var afterCR = false
        for s in vocabTxt.unicodeScalars {
            if s == "\n", afterCR { afterCR = false; continue }
            afterCR = s == "\r"
            if s == "\n" || s == "\r" {
                lines.append(String(line))
                line = String.UnicodeScalarView()
            } else {
                line.append(s)
            }
        }
        if !line.isEmpty { lines.append(String(line)) }
        let vocabulary = try Vocabulary(lines.enumerated().map { ($0.element, $0.offset) }, file: source, field: "vocabulary")
        guard let unk = vocabulary.id(unknown) else { throw .unknownSpecialToken(file: source, role: "unk_token", token: unknown) }
        guard let cls = vocabulary.id(classifier) else { throw .unknownSpecialToken(file: source, role: "cls_token", token: classifier) }
        guard let sep = vocabulary.id(separator) else { throw .unknownSpecialToken(file: source, role: "sep_token", token: separator) }
        var addedTokens: [AddedToken] = []
        for name in [padding, unknown, classifier, separator, mask] {
            if let id = vocabulary.id(name), !addedTokens.contains(where: { $0.id == id }) {
                addedTokens.append(AddedToken(id: id, content: name, special: true, normalized: false))
            }
        }
        addedTokens.sort { $0.id < $1.id }
        try self.init(vocabulary: vocabulary, addedTokens: addedTokens,
                      normalization: Normalization(cleanText: true, handleChineseChars: tokenizeChineseChars, stripAccents: stripAccents, lowercase: lowercase),
                      template: .bert(cls: cls, sep: sep), unknown: unk, prefix: "##", maxInputCharsPerWord: 100,
                      decoder: (Array("##".utf8), true), bos: nil, eos: nil, pad: vocabulary.id(padding),
                      cls: cls, sep: sep, mask: vocabulary.id(mask), file: source)
    }

    private init(vocabulary: Vocabulary, addedTokens: [AddedToken], normalization: Normalization?, template: Template,
                 unknown: Int, prefix: String, maxInputCharsPerWord: Int, decoder: (prefix: [UInt8], cleanup: Bool)?,
                 bos: Int?, eos: Int?, pad: Int?, cls: Int?, sep: Int?, mask: Int?, file: String) throws(TokenizerError) {
        guard maxInputCharsPerWord > 0 else {
            throw .invalidField(file: file, field: "model.max_input_chars_per_word", reason: "must be positive")
        }
        self.vocabulary = vocabulary
        self.addedTokens = addedTokens
        self.normalization = normalization
        self.added = AddedVocabulary(addedTokens) { normalization?.apply($0) ?? $0 }
        self.template = template
        self.unknown = unknown
        self.continuingSubwordPrefix = prefix
        self.prefixBytes = Array(prefix.utf8)
        self.maxInputCharsPerWord = maxInputCharsPerWord
        self.decoder = decoder
        vocabularySize = vocabularySizeBound(vocabulary, addedTokens)
        bosTokenId = bos
        eosTokenId = eos
        padTokenId = pad
        unknownTokenId = unknown
        classifierTokenId = cls
        separatorTokenId = sep
        maskTokenId = mask
    }

    /// The ids of `text` without special tokens around it.
    private func tokenize(_ text: String) -> [Int] {
        var ids: [Int] = []
        ids.reserveCapacity(text.utf8.count / 4 + 2)
        for piece in added.split(text, normalize: normalization?.apply) {
            switch piece {
            case .token(let id): ids.append(id)
            case .text(let scalars):
                // BertPreTokenizer: whitespace separates words; every punctuation scalar is a word.
                var start = 0
                for (i, c) in scalars.enumerated() {
                    if c.isWhiteSpace {
                        if start < i { wordPiece(scalars[start..<i], into: &ids) }
                        start = i + 1
                    } else if isBertPunctuation(c) {
                        if start < i { wordPiece(scalars[start..<i], into: &ids) }
                        wordPiece(scalars[i..<(i + 1)], into: &ids)
                        start = i + 1
                    }
                }
                if start < scalars.count { wordPiece(scalars[start...], into: &ids) }
            }
        }
        return ids
    }

    /// Greedy longest-match-first over the word's scalars.
    private func wordPiece(_ word: ArraySlice<Unicode.Scalar>, into ids: inout [Int]) {
        if word.count > maxInputCharsPerWord { ids.append(unknown); return }
        var bytes: [UInt8] = []
        var offsets = [0]
        offsets.reserveCapacity(word.count + 1)
        for s in word {
            UTF8.encode(s) { bytes.append($0) }
            offsets.append(bytes.count)
        }
        let first = ids.count
        var start = 0
        var key: [UInt8] = []
        while start < word.count {
            var end = word.count
            var found: Int? = nil
            while start < end {
                key.removeAll(keepingCapacity: true)
                if start > 0 { key += prefixBytes }
                key += bytes[offsets[start]..<offsets[end]]
                if let id = vocabulary.id(bytes: key) { found = id; break }
                end -= 1
            }
            guard let id = found else {
                ids.removeSubrange(first...)
                ids.append(unknown)
                return
            }
            ids.append(id)
            start = end
        }
    }

    public func encode(_ text: String, addSpecialTokens: Bool) -> [Int] {
        let ids = tokenize(text)
        return addSpecialTokens ? template.apply(ids, nil).ids : ids
    }

    /// `tokenizer(a, b, truncation="longest_first", max_length=maxLength)`: `input_ids` and
    /// `token_type_ids`, with special tokens. An empty `b` counts as no second text, as in
    /// transformers. Truncation keeps the total at `maxLength`: only the longer text loses
    /// tokens while the shorter fits in half, otherwise both are cut to about half each.
    public func encodePair(_ a: String, _ b: String?, maxLength: Int?) -> (ids: [Int], typeIds: [Int]) {
        var first = tokenize(a)
        var second: [Int]? = nil
        if let b, !b.isEmpty { second = tokenize(b) }
        if let maxLength {
            let budget = max(0, maxLength - template.addedCount(pair: second != nil))
            if let s = second {
                let (n1, n2) = Self.longestFirst(first.count, s.count, budget: budget)
                first = Array(first.prefix(n1))
                second = Array(s.prefix(n2))
            } else {
                first = Array(first.prefix(budget))
            }
        }
        return template.apply(first, second)
    }

    /// HF's LongestFirst lengths for a pair, `budget` excluding special tokens.
    static func longestFirst(_ a: Int, _ b: Int, budget: Int) -> (Int, Int) {
        if a + b <= budget { return (a, b) }
        let swapped = a > b
        var n1 = swapped ? b : a, n2 = swapped ? a : b
        n2 = n1 > budget ? n1 : max(n1, budget - n1)
        if n1 + n2 > budget {
            n1 = budget / 2
            n2 = n1 + budget % 2
        }
        return swapped ? (n2, n1) : (n1, n2)
    }

    /// `encodePair`'s result right-padded to `length` with the pad id and type id 0, with the
    /// attention mask (1 for tokens, 0 for padding). Longer inputs are returned unchanged.
    public func pad(_ encoding: (ids: [Int], typeIds: [Int]), to length: Int) -> (ids: [Int], typeIds: [Int], attentionMask: [Int]) {
        let extra = max(0, length - encoding.ids.count)
        return (encoding.ids + Array(repeating: padTokenId ?? 0, count: extra),
                encoding.typeIds + Array(repeating: 0, count: extra),
                Array(repeating: 1, count: encoding.ids.count) + Array(repeating: 0, count: extra))
    }

    public func decode(_ ids: [Int], skipSpecialTokens: Bool) -> String {
        var out: [UInt8] = []
        var index = 0
        for id in ids {
            if skipSpecialTokens, added.specialIds.contains(id) { continue }
            guard let token = token(of: id) else { continue }
            var piece = Array(token.utf8)
            if let decoder {
                if index > 0 {
                    if piece.starts(with: decoder.prefix) { piece.removeFirst(decoder.prefix.count) } else { piece.insert(0x20, at: 0) }
                }
                if decoder.cleanup { piece = Self.cleanup(piece) }
            } else if index > 0 {
                piece.insert(0x20, at: 0)
            }
            out += piece
            index += 1
        }
        return String(decoding: out, as: UTF8.self)
    }

    /// HF's `cleanup` of decoded text: no space before . ? ! , and common English contractions.
    private static let cleanupRules: [([UInt8], [UInt8])] = [
        (" .", "."), (" ?", "?"), (" !", "!"), (" ,", ","), (" ' ", "'"), (" n't", "n't"), (" 'm", "'m"),
        (" do not", " don't"), (" 's", "'s"), (" 've", "'ve"), (" 're", "'re"),
    ].map { (Array($0.0.utf8), Array($0.1.utf8)) }

    private static func cleanup(_ text: [UInt8]) -> [UInt8] {
        var text = text
        for (target, replacement) in cleanupRules { text = replace(text, target, replacement) }
        return text
    }

    /// Every non-overlapping occurrence, left to right (Rust's `str::replace`).
    private static func replace(_ text: [UInt8], _ target: [UInt8], _ replacement: [UInt8]) -> [UInt8] {
        guard text.count >= target.count else { return text }
        var out: [UInt8] = []
        out.reserveCapacity(text.count)
        var i = 0
        while i < text.count {
            if i + target.count <= text.count, text[i..<(i + target.count)].elementsEqual(target) {
                out += replacement
                i += target.count
            } else {
                out.append(text[i])
                i += 1
            }
        }
        return out
    }

    public func id(of token: String) -> Int? {
        added.tokens.first { $0.content.utf8.elementsEqual(token.utf8) }?.id ?? vocabulary.id(token)
    }

    public func token(of id: Int) -> String? { added.contentById[id] ?? vocabulary.token(id) }

    /// Whether `id` is a special added token (what `decode(_:skipSpecialTokens: true)` drops).
    public func isSpecial(_ id: Int) -> Bool { added.specialIds.contains(id) }
}
