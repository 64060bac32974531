import Foundation

/// SentencePiece BPE with byte fallback, as transformers builds it from a Gemma GGUF
/// (`tokenizer.ggml.model = "llama"`, architecture gemma/gemma2/gemma3; transformers 5.24's
/// `gemma_tokenizer` in `integrations/gguf/gguf_tokenizer_mapping.py`, `GemmaTokenizer`):
///
/// - normalizer: every " " becomes "▁" (U+2581); no prefix space; the text is one word;
/// - vocabulary: the file's tokens, tokens made of spaces only respelled as that many "▁";
/// - BPE: the merges are those the vocabulary implies (every split of a token into two
///   vocabulary pieces), ranked by the merged token's position in the file (earlier first), then
///   by the longer left piece, then the longer right piece; the lowest-ranked adjacent pair is
///   merged first, leftmost on ties (HF's `merge_all`). A character outside the vocabulary
///   becomes its UTF-8 bytes as `<0xNN>` tokens, or the unknown token;
/// - added tokens: control tokens (type 3) special, user-defined ones (type 4, e.g. runs of
///   newlines) plain, both matched whole in the raw text, leftmost-longest;
/// - decoding: "▁" → " ", byte tokens fused into UTF-8 (invalid runs → U+FFFD per byte).
public struct SentencePieceBPETokenizer: Tokenizer {
    let tokens: [String]
    /// Keyed by UTF-8 bytes: canonically equivalent tokens stay apart. A token's id is also its
    /// merge priority (its index in the file; lower merges first).
    let vocabulary: Vocabulary
    let byteTokens: [Int?]
    let added: AddedVocabulary
    let addBOS: Bool
    public let bosTokenId: Int?
    public let eosTokenId: Int?
    public let padTokenId: Int?
    public let unknownTokenId: Int?
    public var vocabularySize: Int { tokens.count }

    static let space: Unicode.Scalar = "\u{2581}"

    /// From the arrays a GGUF stores: `tokenizer.ggml.tokens` and `.token_type`, and the ids.
    public init(tokens fileTokens: [String], tokenTypes: [Int]?, bos: Int?, eos: Int?, pad: Int?, unknown: Int?,
                addBOS: Bool, source: String = "tokenizer arrays") throws(TokenizerError) {
        guard !fileTokens.isEmpty else { throw .emptyVocabulary(file: source) }
        if let tokenTypes, tokenTypes.count != fileTokens.count {
            throw .invalidField(file: source, field: "token types", reason: "has \(tokenTypes.count) entries for \(fileTokens.count) tokens")
        }
        // Tokens of spaces only ("  ") are looked up as "▁▁" (transformers' respelling).
        let respelled = fileTokens.map { t in
            !t.isEmpty && t.unicodeScalars.allSatisfy { $0 == " " } ? String(repeating: "\u{2581}", count: t.unicodeScalars.count) : t
        }
        // As a Python dict built in order: a repeated spelling keeps its last index.
        let vocabulary = try Vocabulary(respelled.enumerated().map { ($0.element, $0.offset) }, file: source, field: "tokens")
        var byteTokens = [Int?](repeating: nil, count: 256)
        for b in 0..<256 { byteTokens[b] = vocabulary.id(String(format: "<0x%02X>", b)) }
        var addedTokens: [AddedToken] = []
        for (i, type) in (tokenTypes ?? []).enumerated() {
            if type == 3 {
                addedTokens.append(AddedToken(id: i, content: fileTokens[i], special: true, normalized: false))
            } else if type == 4, let id = vocabulary.id(fileTokens[i]) {
                addedTokens.append(AddedToken(id: id, content: fileTokens[i], special: false, normalized: false))
            }
        }
        for (role, id) in [("bos", bos), ("eos", eos), ("pad", pad), ("unknown", unknown)] {
            if let id, !(0..<fileTokens.count).contains(id) {
                throw .unknownSpecialToken(file: source, role: "\(role) id", token: String(id))
            }
        }
        if addBOS, bos == nil { throw .missingField(file: source, field: "BOS id (add_bos_token is set)") }
        self.tokens = respelled
        self.vocabulary = vocabulary
        self.byteTokens = byteTokens
        self.added = AddedVocabulary(addedTokens, normalize: { $0 })
        self.addBOS = addBOS
        bosTokenId = bos
        eosTokenId = eos
        padTokenId = pad
        unknownTokenId = unknown
    }

    public func id(of token: String) -> Int? { added.tokens.first { $0.content.utf8.elementsEqual(token.utf8) }?.id ?? vocabulary.id(token) }
    public func token(of id: Int) -> String? { tokens.indices.contains(id) ? tokens[id] : nil }

    public func encode(_ text: String, addSpecialTokens: Bool) -> [Int] {
        var out: [Int] = []
        if addSpecialTokens && addBOS, let bos = bosTokenId { out.append(bos) }
        for piece in added.split(text, normalize: nil) {
            switch piece {
            case .token(let id): out.append(id)
            case .text(let scalars): encodeWord(scalars.map { $0 == " " ? Self.space : $0 }, into: &out)
            }
        }
        return out
    }

    /// One normalized word through the BPE model.
    func encodeWord(_ word: [Unicode.Scalar], into out: inout [Int]) {
        guard !word.isEmpty else { return }
        // UTF-8 of the word and where each scalar starts in it, to look pieces up by bytes.
        var bytes: [UInt8] = [], offsets: [Int] = []
        for scalar in word {
            offsets.append(bytes.count)
            bytes.append(contentsOf: String(scalar).utf8)
        }
        offsets.append(bytes.count)
        // Symbols: scalar ranges of `word` with their ids; byte-fallback symbols never merge.
        struct Symbol { var start: Int; var end: Int; var id: Int; var prev: Int; var next: Int; var mergeable: Bool }
        var symbols: [Symbol] = []
        symbols.reserveCapacity(word.count)
        var pendingUnknown = false
        for i in word.indices {
            if let id = vocabulary.id(bytes: Array(bytes[offsets[i]..<offsets[i + 1]])) {
                symbols.append(Symbol(start: i, end: i + 1, id: id, prev: symbols.count - 1, next: symbols.count + 1, mergeable: true))
                pendingUnknown = false
                continue
            }
            let utf8 = bytes[offsets[i]..<offsets[i + 1]]
            let fallback = utf8.compactMap { byteTokens[Int($0)] }
            if fallback.count == utf8.count {
                for id in fallback {
                    symbols.append(Symbol(start: i, end: i + 1, id: id, prev: symbols.count - 1, next: symbols.count + 1, mergeable: false))
                }
                pendingUnknown = false
            } else if let unk = unknownTokenId {
                // fuse_unk: consecutive unknown characters give one unknown token.
                if pendingUnknown, var last = symbols.popLast() { last.end = i + 1; symbols.append(last); continue }
                symbols.append(Symbol(start: i, end: i + 1, id: unk, prev: symbols.count - 1, next: symbols.count + 1, mergeable: false))
                pendingUnknown = true
            }
        }
        guard !symbols.isEmpty else { return }
        symbols[symbols.count - 1].next = -1

        /// The rank of merging symbols `a` and `b` (lower first), or nil when they do not merge.
        func rank(_ a: Int, _ b: Int) -> (Int, Int, Int, Int)? {
            let l = symbols[a], r = symbols[b]
            guard l.mergeable, r.mergeable else { return nil }
            guard let id = vocabulary.id(bytes: Array(bytes[offsets[l.start]..<offsets[r.end]])) else { return nil }
            return (id, -(l.end - l.start), -(r.end - r.start), a)
        }
        var heap = MinHeap<(Int, Int, Int, Int)>(by: { $0 < $1 })
        for i in 0..<(symbols.count - 1) { if let r = rank(i, i + 1) { heap.push(r) } }
        while let top = heap.pop() {
            let a = top.3
            guard symbols[a].end > symbols[a].start, symbols[a].next >= 0 else { continue }
            let b = symbols[a].next
            // Stale entries: the pair changed since it was queued.
            guard let current = rank(a, b), current == top else { continue }
            symbols[a].end = symbols[b].end
            symbols[a].id = top.0
            symbols[a].next = symbols[b].next
            if symbols[b].next >= 0 { symbols[symbols[b].next].prev = a }
            symbols[b].end = symbols[b].start   // removed
            if symbols[a].prev >= 0, let r = rank(symbols[a].prev, a) { heap.push(r) }
            if symbols[a].next >= 0, let r = rank(a, symbols[a].next) { heap.push(r) }
        }
        var i = 0
        while i >= 0 {
            out.append(symbols[i].id)
            i = symbols[i].next
        }
    }

    public func decode(_ ids: [Int], skipSpecialTokens: Bool) -> String {
        var out = ""
        var bytes: [UInt8] = []
        func flush() {
            guard !bytes.isEmpty else { return }
            if let s = String(validating: bytes, as: UTF8.self) { out += s } else { out += String(repeating: "\u{FFFD}", count: bytes.count) }
            bytes.removeAll()
        }
        for id in ids {
            guard tokens.indices.contains(id) else { continue }
            if skipSpecialTokens && added.specialIds.contains(id) { continue }
            let token = added.contentById[id] ?? tokens[id]
            if let byte = Self.byteValue(token) {
                bytes.append(byte)
                continue
            }
            flush()
            out += token.replacingOccurrences(of: "\u{2581}", with: " ")
        }
        flush()
        return out
    }

    /// 0xNN for a `<0xNN>` token.
    static func byteValue(_ token: String) -> UInt8? {
        let u = Array(token.utf8)
        guard u.count == 6, u[0] == UInt8(ascii: "<"), u[1] == UInt8(ascii: "0"), u[2] == UInt8(ascii: "x"), u[5] == UInt8(ascii: ">") else { return nil }
        return UInt8(String(decoding: u[3...4], as: UTF8.self), radix: 16)
    }
}

/// A binary min-heap (the merge queue).
struct MinHeap<Element> {
    private var items: [Element] = []
    private let less: (Element, Element) -> Bool
    init(by less: @escaping (Element, Element) -> Bool) { self.less = less }

    mutating func push(_ e: Element) {
        items.append(e)
        var i = items.count - 1
        while i > 0 {
            let parent = (i - 1) / 2
            guard less(items[i], items[parent]) else { break }
            items.swapAt(i, parent)
            i = parent
        }
    }

    mutating func pop() -> Element? {
        guard !items.isEmpty else { return nil }
        items.swapAt(0, items.count - 1)
        let top = items.removeLast()
        var i = 0
        while true {
            let l = 2 * i + 1, r = l + 1
            var m = i
            if l < items.count, less(items[l], items[m]) { m = l }
            if r < items.count, less(items[r], items[m]) { m = r }
            if m == i { break }
            items.swapAt(i, m)
            i = m
        }
        return top
    }
}

extension SentencePieceBPETokenizer {
    /// From a `tokenizer.json` of this kind (what `huggingFaceFiles` writes and transformers
    /// builds from a Gemma GGUF): BPE with byte fallback, the " " → "▁" normalizer, `<bos>`
    /// prepended or nothing. Every component is checked, and the merges must be exactly those the
    /// vocabulary implies in `encode`'s order; anything else is refused by name rather than
    /// tokenised differently.
    init(json root: JSON, file: String, names: SpecialTokenNames) throws(TokenizerError) {
        guard let model = root["model"], model.object != nil else { throw .missingField(file: file, field: "model") }
        let vocabulary = try parseVocabulary(model, file: file)
        func isString(_ pattern: JSON?, _ s: String) -> Bool { pattern?["String"]?.string == s }
        let normalizer = root["normalizer"]
        guard normalizer?["type"]?.string == "Replace", isString(normalizer?["pattern"], " "), normalizer?["content"]?.string == "\u{2581}" else {
            throw .unsupportedComponent(file: file, component: "normalizer", detail: "a byte-fallback BPE needs Replace \" \" → \"▁\", not \(normalizer.map { "\($0)" } ?? "none")")
        }
        if let pre = root["pre_tokenizer"], !pre.isNull {
            guard pre["type"]?.string == "Split", isString(pre["pattern"], " "), pre["behavior"]?.string == "MergedWithPrevious",
                  pre["invert"]?.bool != true else {
                throw .unsupportedComponent(file: file, component: "pre_tokenizer", detail: pre["type"]?.string ?? "\(pre)")
            }
        }
        let decoders = root["decoder"]?["decoders"]?.array ?? []
        guard root["decoder"]?["type"]?.string == "Sequence", decoders.count == 3,
              decoders[0]["type"]?.string == "Replace", isString(decoders[0]["pattern"], "\u{2581}"), decoders[0]["content"]?.string == " ",
              decoders[1]["type"]?.string == "ByteFallback", decoders[2]["type"]?.string == "Fuse" else {
            throw .unsupportedComponent(file: file, component: "decoder", detail: "a byte-fallback BPE needs Replace ▁ → \" \", ByteFallback, Fuse")
        }
        for option in ["dropout", "continuing_subword_prefix", "end_of_word_suffix"] {
            if let v = model[option], !v.isNull { throw .unsupportedComponent(file: file, component: "model option", detail: option) }
        }
        guard model["fuse_unk"]?.bool ?? true else { throw .unsupportedComponent(file: file, component: "model option", detail: "fuse_unk false") }
        guard vocabulary.count == vocabulary.largestId + 1 else {
            throw .invalidField(file: file, field: "model.vocab", reason: "ids are not 0..<\(vocabulary.count) without gaps")
        }
        let added = try parseAddedTokens(root, file: file)
        var tokens: [String] = []
        tokens.reserveCapacity(vocabulary.count)
        for id in 0..<vocabulary.count {
            guard let t = vocabulary.token(id) else { throw .invalidField(file: file, field: "model.vocab", reason: "has no token \(id)") }
            tokens.append(t)
        }
        var types = [Int](repeating: 1, count: tokens.count)
        for t in added {
            guard t.id < tokens.count, tokens[t.id] == t.content, !t.lstrip, !t.rstrip, !t.singleWord, !t.normalized else {
                throw .unsupportedComponent(file: file, component: "added token", detail: "\"\(t.content)\" (id \(t.id)) is not a plain vocabulary token")
            }
            types[t.id] = t.special ? 3 : 4
        }
        func id(_ role: String, _ token: String?) throws(TokenizerError) -> Int? {
            guard let token else { return nil }
            guard let id = vocabulary.id(token) else { throw .unknownSpecialToken(file: file, role: role, token: token) }
            return id
        }
        let bos = try id("bos_token", names.bos), eos = try id("eos_token", names.eos), pad = try id("pad_token", names.pad)
        let unknown = try id("model.unk_token", model["unk_token"]?.string ?? names.unk)
        let template = try Template.parse(root["post_processor"], file: file, vocabulary: vocabulary.id)
        let addBOS: Bool
        switch template.single.count {
        case 1: addBOS = false
        case 2:
            guard case .special(let ids, 0) = template.single[0], ids.count == 1, let b = bos ?? ids.first, ids == [b],
                  case .sequence(false, 0) = template.single[1] else {
                throw .unsupportedComponent(file: file, component: "post_processor", detail: "only <bos> before the text is supported")
            }
            addBOS = true
        default: throw .unsupportedComponent(file: file, component: "post_processor", detail: "only <bos> before the text is supported")
        }
        let bosId = bos ?? { if case .special(let ids, _)? = template.single.first { ids.first } else { nil } }()
        try self.init(tokens: tokens, tokenTypes: types, bos: bosId, eos: eos, pad: pad, unknown: unknown, addBOS: addBOS, source: file)
        // The merges must be the ones `encode` applies, in its order.
        let merges = try parseMerges(model, file: file)
        let implied = impliedMerges
        let same = merges.count == implied.count && zip(merges, implied).allSatisfy { $0.0 == $1.left && $0.1 == $1.right }
        guard same else {
            throw .unsupportedComponent(file: file, component: "model.merges",
                                        detail: "not the merges its vocabulary implies (\(merges.count) given, \(implied.count) implied): this byte-fallback BPE is not supported")
        }
    }
}
