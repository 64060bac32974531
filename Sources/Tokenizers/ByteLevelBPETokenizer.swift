import Foundation

/// A byte-level BPE tokenizer (GPT-2, SmolLM2, Llama 3 family vocabularies) that gives the ids
/// Hugging Face gives for the same vocabulary, merges, added tokens and pre-tokenizer.
///
/// Encoding: added tokens are cut out of the raw text first (leftmost-longest); every other
/// piece is pre-tokenized into words, each word's UTF-8 bytes are spelled in the GPT-2 byte
/// alphabet and merged by rank. Bytes without a token are dropped, or become the model's
/// unknown token when it has one. Decoding maps the characters back to bytes; invalid UTF-8
/// becomes U+FFFD per maximal ill-formed subsequence, as Rust's `from_utf8_lossy`.
public struct ByteLevelBPETokenizer: Tokenizer {
    public let preTokenizer: PreTokenizer
    public let vocabularySize: Int
    public let bosTokenId: Int?
    public let eosTokenId: Int?
    public let padTokenId: Int?
    public let unknownTokenId: Int?
    public let addedTokens: [AddedToken]
    /// Ids put around the text by `encode(_:addSpecialTokens: true)`, e.g. `[bos]` before it.
    public let prefixIds: [Int]
    public let suffixIds: [Int]

    /// Whether every byte has a token, so that encoding loses nothing (decode(encode(t)) == t).
    public var spellsEveryByte: Bool { !model.byteIds.contains(-1) }

    let vocabulary: Vocabulary
    private let added: AddedVocabulary
    let model: BPEModel
    /// The post-processor (what `prefixIds`/`suffixIds` come from), kept for the HF export.
    let template: Template
    /// The bytes each id decodes to, by id.
    private let decodedBytes: [[UInt8]?]

    /// A tokenizer from the arrays a GGUF file stores (`tokenizer.ggml.tokens`, `.merges` such as
    /// "Ġ t", `.token_type`), built as transformers' GGUF conversion builds it: tokens not spelled
    /// in the byte alphabet are re-spelled from their UTF-8; control tokens (type 3) become special
    /// added tokens and user-defined ones (type 4) plain added tokens, all matched whole in text;
    /// the BPE model has no unknown token (`unknown` is only reported). `addBOS` puts `bos` first.
    public init(tokens: [String], merges: [String], tokenTypes: [Int]?, preTokenizer: PreTokenizer,
                bos: Int?, eos: Int?, pad: Int?, unknown: Int?, addBOS: Bool,
                source: String = "tokenizer arrays") throws(TokenizerError) {
        guard !tokens.isEmpty else { throw .emptyVocabulary(file: source) }
        if let tokenTypes, tokenTypes.count != tokens.count {
            throw .invalidField(file: source, field: "token types", reason: "has \(tokenTypes.count) entries for \(tokens.count) tokens")
        }
        let spelled = tokens.map { ByteLevelAlphabet.isSpelled($0) ? $0 : ByteLevelAlphabet.spell($0.utf8) }
        let vocabulary = try Vocabulary(spelled.enumerated().map { ($0.element, $0.offset) }, file: source, field: "tokens")
        var pairs: [(String, String)] = []
        pairs.reserveCapacity(merges.count)
        for (i, m) in merges.enumerated() {
            let parts = m.split(separator: " ", omittingEmptySubsequences: false)
            guard parts.count == 2, !parts[0].isEmpty, !parts[1].isEmpty else { throw .invalidMerge(file: source, index: i, merge: m) }
            pairs.append((String(parts[0]), String(parts[1])))
        }
        var addedTokens: [AddedToken] = []
        for (i, type) in (tokenTypes ?? []).enumerated() {
            // 3 = CONTROL; one not spelled in the byte alphabet is a llama.cpp mislabel that
            // transformers skips. 4 = USER_DEFINED, added when it is in the vocabulary as written.
            if type == 3, ByteLevelAlphabet.isSpelled(tokens[i]) {
                addedTokens.append(AddedToken(id: i, content: tokens[i], special: true, normalized: false))
            } else if type == 4, let id = vocabulary.id(tokens[i]) {
                addedTokens.append(AddedToken(id: id, content: tokens[i], special: false, normalized: false))
            }
        }
        for (role, id) in [("bos", bos), ("eos", eos), ("pad", pad), ("unknown", unknown)] {
            if let id, vocabulary.token(id) == nil {
                throw .unknownSpecialToken(file: source, role: "\(role) id", token: String(id))
            }
        }
        if addBOS, bos == nil { throw .missingField(file: source, field: "BOS id (addBOS is set)") }
        try self.init(vocabulary: vocabulary, merges: pairs, addedTokens: addedTokens, preTokenizer: preTokenizer,
                      modelUnknown: nil, fuseUnknown: false, ignoreMerges: false,
                      template: addBOS ? Template(single: [.special(ids: [bos ?? 0], typeId: 0), .sequence(second: false, typeId: 0)],
                                                  pair: Template.identity.pair) : .identity,
                      bos: bos, eos: eos, pad: pad, unknown: unknown, file: source)
    }

    /// A Hugging Face `tokenizer.json` with a BPE model, no normalizer, a ByteLevel pre-tokenizer
    /// (alone, after `Digits`, or after a `Split` on the GPT-2 regex) and a ByteLevel decoder.
    /// BOS/EOS/PAD are not in tokenizer.json: `loadTokenizer(huggingFaceDirectory:)` reads them
    /// from tokenizer_config.json; here they are nil.
    public init(tokenizerJSON: Data, source: String = "tokenizer.json") throws(TokenizerError) {
        try self.init(json: try parseJSONObject(tokenizerJSON, file: source), file: source, names: SpecialTokenNames())
    }

    init(json root: JSON, file: String, names: SpecialTokenNames) throws(TokenizerError) {
        guard let model = root["model"], model.object != nil else { throw .missingField(file: file, field: "model") }
        let type = model["type"]?.string ?? "BPE"
        guard type == "BPE" else { throw .unsupportedModel(file: file, type: type) }
        let vocabulary = try parseVocabulary(model, file: file)
        let pairs = try parseMerges(model, file: file)
        try requireOff(model["byte_fallback"], file: file, component: "model option", detail: "byte_fallback")
        try requireOff(model["dropout"], file: file, component: "model option", detail: "dropout")
        try requireOff(model["continuing_subword_prefix"], file: file, component: "model option", detail: "continuing_subword_prefix")
        try requireOff(model["end_of_word_suffix"], file: file, component: "model option", detail: "end_of_word_suffix")
        if let normalizer = root["normalizer"], !normalizer.isNull {
            throw .unsupportedComponent(file: file, component: "normalizer", detail: normalizer["type"]?.string ?? "\(normalizer)")
        }
        let preTokenizer = try Self.parsePreTokenizer(root["pre_tokenizer"], file: file)
        let decoder = root["decoder"]
        let decoderType = decoder?["type"]?.string
        let decoderOK = decoderType == "ByteLevel"
            || (decoderType == "Sequence" && (decoder?["decoders"]?.array ?? []).allSatisfy { $0["type"]?.string == "ByteLevel" })
        guard decoderOK else {
            throw .unsupportedComponent(file: file, component: "decoder", detail: decoderType ?? "none (a byte-level tokenizer needs the ByteLevel decoder)")
        }
        var modelUnknown: Int? = nil
        if let unk = model["unk_token"]?.string {
            guard let id = vocabulary.id(unk) else { throw .unknownSpecialToken(file: file, role: "model.unk_token", token: unk) }
            modelUnknown = id
        }
        let addedTokens = try parseAddedTokens(root, file: file)
        func lookup(_ token: String) -> Int? {
            addedTokens.first { $0.content.utf8.elementsEqual(token.utf8) }?.id ?? vocabulary.id(token)
        }
        let template = try Template.parse(root["post_processor"], file: file, vocabulary: lookup)
        try self.init(vocabulary: vocabulary, merges: pairs, addedTokens: addedTokens, preTokenizer: preTokenizer,
                      modelUnknown: modelUnknown, fuseUnknown: model["fuse_unk"]?.bool ?? false,
                      ignoreMerges: model["ignore_merges"]?.bool ?? false, template: template,
                      bos: names.bos.flatMap(lookup), eos: names.eos.flatMap(lookup), pad: names.pad.flatMap(lookup),
                      unknown: names.unk.flatMap(lookup) ?? modelUnknown, file: file)
    }

    private init(vocabulary: Vocabulary, merges: [(String, String)], addedTokens: [AddedToken], preTokenizer: PreTokenizer,
                 modelUnknown: Int?, fuseUnknown: Bool, ignoreMerges: Bool, template: Template,
                 bos: Int?, eos: Int?, pad: Int?, unknown: Int?, file: String) throws(TokenizerError) {
        var table: [UInt64: BPEModel.Merge] = [:]
        table.reserveCapacity(merges.count)
        for (rank, (a, b)) in merges.enumerated() {
            let merge = "\(a) \(b)"
            guard let left = vocabulary.id(a) else { throw .unknownTokenInMerge(file: file, index: rank, merge: merge, token: a) }
            guard let right = vocabulary.id(b) else { throw .unknownTokenInMerge(file: file, index: rank, merge: merge, token: b) }
            guard let result = vocabulary.id(a + b) else { throw .unknownTokenInMerge(file: file, index: rank, merge: merge, token: a + b) }
            // A repeated pair keeps its last rank, as HF's map does.
            table[BPEModel.key(left, right)] = BPEModel.Merge(rank: Int32(rank), id: Int32(result))
        }
        var byteIds = [Int32](repeating: -1, count: 256)
        var spelledBytes: [[UInt8]] = []
        for b in 0..<256 {
            let spelled = Array(String(ByteLevelAlphabet.scalarForByte[b]).utf8)
            spelledBytes.append(spelled)
            if let id = vocabulary.id(bytes: spelled) { byteIds[b] = Int32(id) }
        }
        for t in addedTokens where t.id >= vocabulary.idLimit {
            throw .invalidField(file: file, field: "added token \"\(t.content)\"", reason: "has the id \(t.id), outside 0..<\(vocabulary.idLimit) (twice the vocabulary + 1024)")
        }
        let added = AddedVocabulary(addedTokens) { $0 }
        // Decoding: added tokens by content, others by vocabulary token, both through the alphabet.
        let maxId = max(addedTokens.map(\.id).max() ?? -1, vocabulary.largestId)
        var decoded = [[UInt8]?](repeating: nil, count: maxId + 1)
        for id in 0...maxId {
            if let content = added.contentById[id] {
                decoded[id] = ByteLevelAlphabet.bytes(of: content)
            } else if let token = vocabulary.token(id) {
                decoded[id] = ByteLevelAlphabet.bytes(of: token)
            }
        }
        self.preTokenizer = preTokenizer
        self.vocabulary = vocabulary
        self.added = added
        self.addedTokens = addedTokens
        self.model = BPEModel(byteIds: byteIds, merges: table, unknown: modelUnknown, fuseUnknown: fuseUnknown,
                              ignoreMerges: ignoreMerges, spelledBytes: spelledBytes, vocabulary: vocabulary)
        self.decodedBytes = decoded
        self.vocabularySize = vocabularySizeBound(vocabulary, addedTokens)
        var prefix: [Int] = [], suffix: [Int] = []
        var seenSequence = false
        for item in template.single {
            switch item {
            case .sequence: seenSequence = true
            case .special(let ids, _): if seenSequence { suffix += ids } else { prefix += ids }
            }
        }
        self.prefixIds = prefix
        self.suffixIds = suffix
        self.template = template
        bosTokenId = bos
        eosTokenId = eos
        padTokenId = pad
        unknownTokenId = unknown
    }

    static func parsePreTokenizer(_ json: JSON?, file: String) throws(TokenizerError) -> PreTokenizer {
        guard let json, !json.isNull else {
            throw .unsupportedComponent(file: file, component: "pre_tokenizer", detail: "none (a byte-level BPE needs ByteLevel)")
        }
        var steps = [json]
        if json["type"]?.string == "Sequence" { steps = json["pretokenizers"]?.array ?? [] }
        var result = PreTokenizer(digits: .none, gpt2Regex: false, addPrefixSpace: false)
        var sawByteLevel = false
        var sawSplit = false
        for step in steps {
            let type = step["type"]?.string ?? "(none)"
            switch type {
            case "Digits" where !sawByteLevel && !sawSplit && result.digits == .none:
                result.digits = step["individual_digits"]?.bool == true ? .individual : .contiguous
            case "Split" where !sawByteLevel && !sawSplit:
                // A {"String": …} pattern is a literal, never the regex.
                let pattern = step["pattern"]?["Regex"]?.string
                guard let pattern, pattern == gpt2Pattern, step["behavior"]?.string == "Isolated", step["invert"]?.bool != true else {
                    let shown = pattern ?? step["pattern"]?["String"].map { "string \($0.string ?? "")" } ?? "?"
                    throw .unsupportedComponent(file: file, component: "pre_tokenizer", detail: "Split on \(shown.debugDescription) (only the GPT-2 regex, Isolated)")
                }
                result.gpt2Regex = true
                sawSplit = true
            case "ByteLevel" where !sawByteLevel:
                result.addPrefixSpace = step["add_prefix_space"]?.bool ?? true
                // The regex is on by default; a preceding Split already did the same job.
                if step["use_regex"]?.bool ?? true {
                    if sawSplit { throw .unsupportedComponent(file: file, component: "pre_tokenizer", detail: "Split followed by ByteLevel(use_regex: true)") }
                    result.gpt2Regex = true
                }
                sawByteLevel = true
            default:
                throw .unsupportedComponent(file: file, component: "pre_tokenizer", detail: steps.count > 1 ? "\(type) in this position of a Sequence" : type)
            }
        }
        guard sawByteLevel else { throw .unsupportedComponent(file: file, component: "pre_tokenizer", detail: "no ByteLevel step") }
        return result
    }

    static let gpt2Pattern = #"'s|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+"#

    public func encode(_ text: String, addSpecialTokens: Bool) -> [Int] {
        var ids: [Int] = []
        ids.reserveCapacity(text.utf8.count / 3 + 4)
        if addSpecialTokens { ids += prefixIds }
        for piece in added.split(text, normalize: nil) {
            switch piece {
            case .token(let id): ids.append(id)
            case .text(let scalars): preTokenizer.forEachWord(scalars) { model.encode($0, into: &ids) }
            }
        }
        if addSpecialTokens { ids += suffixIds }
        return ids
    }

    public func decode(_ ids: [Int], skipSpecialTokens: Bool) -> String {
        var bytes: [UInt8] = []
        for id in ids where id >= 0 && id < decodedBytes.count {
            if skipSpecialTokens, added.specialIds.contains(id) { continue }
            if let b = decodedBytes[id] { bytes += b }
        }
        return String(decoding: bytes, as: UTF8.self)
    }

    public func id(of token: String) -> Int? {
        added.tokens.first { $0.content.utf8.elementsEqual(token.utf8) }?.id ?? vocabulary.id(token)
    }

    public func token(of id: Int) -> String? { added.contentById[id] ?? vocabulary.token(id) }

    /// Whether `id` is a special added token (what `decode(_:skipSpecialTokens: true)` drops).
    public func isSpecial(_ id: Int) -> Bool { added.specialIds.contains(id) }
}

/// The BPE model proper: words (as UTF-8 bytes) to ids, by merge rank, with a word cache.
struct BPEModel: Sendable {
    struct Merge: Sendable {
        let rank: Int32
        let id: Int32
    }

    @inline(__always) static func key(_ a: Int, _ b: Int) -> UInt64 { UInt64(UInt32(a)) << 32 | UInt64(UInt32(b)) }

    let byteIds: [Int32]
    let merges: [UInt64: Merge]
    let unknown: Int?
    let fuseUnknown: Bool
    let ignoreMerges: Bool
    let spelledBytes: [[UInt8]]
    let vocabulary: Vocabulary
    let cache = WordCache()

    func encode(_ word: [UInt8], into ids: inout [Int]) {
        if let hit = cache[word] { ids += hit; return }
        let result = encodeUncached(word)
        cache[word] = result
        ids += result
    }

    private func encodeUncached(_ word: [UInt8]) -> [Int] {
        if ignoreMerges {
            var spelled: [UInt8] = []
            for b in word { spelled += spelledBytes[Int(b)] }
            if let id = vocabulary.id(bytes: spelled) { return [id] }
        }
        var symbols: [Int32] = []
        symbols.reserveCapacity(word.count)
        var pendingUnknown = false
        for b in word {
            let id = byteIds[Int(b)]
            if id >= 0 {
                symbols.append(id)
                pendingUnknown = false
            } else if let unknown {
                // HF: a byte with no token becomes unk; with fuse_unk, a run of them one unk.
                if !(fuseUnknown && pendingUnknown) { symbols.append(Int32(unknown)) }
                pendingUnknown = true
            }
        }
        if symbols.count > 1 { mergeAll(&symbols) }
        return symbols.map(Int.init)
    }

    /// HF's `Word::merge_all`: a min-heap of (rank, position) over adjacent pairs; stale entries
    /// (a side already merged away, or the pair now merging to a different id) are skipped.
    private func mergeAll(_ ids: inout [Int32]) {
        let n = ids.count
        var prev = [Int32](unsafeUninitializedCapacity: n) { b, c in for i in 0..<n { b[i] = Int32(i) - 1 }; c = n }
        var next = [Int32](unsafeUninitializedCapacity: n) { b, c in for i in 0..<n { b[i] = i + 1 < n ? Int32(i + 1) : -1 }; c = n }
        var alive = [Bool](repeating: true, count: n)
        var heap = MergeHeap()
        for i in 0..<(n - 1) {
            if let m = merges[Self.key(Int(ids[i]), Int(ids[i + 1]))] { heap.push(rank: m.rank, position: Int32(i), id: m.id) }
        }
        while let top = heap.pop() {
            let pos = Int(top.position)
            guard alive[pos], next[pos] >= 0 else { continue }
            let right = Int(next[pos])
            guard let m = merges[Self.key(Int(ids[pos]), Int(ids[right]))], m.id == top.id else { continue }
            ids[pos] = top.id
            alive[right] = false
            next[pos] = next[right]
            if next[right] >= 0 { prev[Int(next[right])] = Int32(pos) }
            if prev[pos] >= 0, let m = merges[Self.key(Int(ids[Int(prev[pos])]), Int(ids[pos]))] {
                heap.push(rank: m.rank, position: prev[pos], id: m.id)
            }
            if next[pos] >= 0, let m = merges[Self.key(Int(ids[pos]), Int(ids[Int(next[pos])]))] {
                heap.push(rank: m.rank, position: Int32(pos), id: m.id)
            }
        }
        var out: [Int32] = []
        out.reserveCapacity(n)
        for i in 0..<n where alive[i] { out.append(ids[i]) }
        ids = out
    }
}

/// A binary min-heap of pending merges ordered by (rank, position).
private struct MergeHeap {
    struct Entry {
        let key: UInt64
        let id: Int32
        var rank: Int32 { Int32(truncatingIfNeeded: key >> 32) }
        var position: Int32 { Int32(truncatingIfNeeded: key & 0xFFFF_FFFF) }
    }
    private var items: [Entry] = []

    mutating func push(rank: Int32, position: Int32, id: Int32) {
        items.append(Entry(key: UInt64(UInt32(rank)) << 32 | UInt64(UInt32(position)), id: id))
        var i = items.count - 1
        while i > 0 {
            let parent = (i - 1) / 2
            guard items[i].key < items[parent].key else { break }
            items.swapAt(i, parent)
            i = parent
        }
    }

    mutating func pop() -> Entry? {
        guard let first = items.first else { return nil }
        let last = items.removeLast()
        if !items.isEmpty {
            items[0] = last
            var i = 0
            while true {
                let l = 2 * i + 1, r = l + 1
                var m = i
                if l < items.count, items[l].key < items[m].key { m = l }
                if r < items.count, items[r].key < items[m].key { m = r }
                if m == i { break }
                items.swapAt(i, m)
                i = m
            }
        }
        return first
    }
}

/// Words already encoded, shared by copies of a tokenizer and safe across threads. It stops
/// growing at `capacity` words; words longer than 256 bytes are not kept.
final class WordCache: @unchecked Sendable {
    // @unchecked: every access to `storage` holds `lock`.
    private let lock = NSLock()
    private var storage: [[UInt8]: [Int]] = [:]
    let capacity = 100_000

    subscript(word: [UInt8]) -> [Int]? {
        get {
            lock.lock()
            defer { lock.unlock() }
            return storage[word]
        }
        set {
            guard word.count <= 256, let newValue else { return }
            lock.lock()
            defer { lock.unlock() }
            if storage.count < capacity { storage[word] = newValue }
        }
    }
}
