import Foundation

/// Token strings ↔ ids, keyed by UTF-8 bytes: a `[String: Int]` would treat canonically
/// equivalent tokens (`"é"` and `"e\u{301}"`) as one, which HF does not.
struct Vocabulary: Sendable {
    private let idByBytes: [[UInt8]: Int]
    private let tokenById: [String?]

    /// Ids above this are refused: the reverse table is an array indexed by id.
    static let maximumId = 1 << 24

    /// Later entries win on duplicate tokens, as in a Python dict or HF's HashMap.
    init(_ entries: some Sequence<(token: String, id: Int)>, file: String, field: String) throws(TokenizerError) {
        var idByBytes: [[UInt8]: Int] = [:]
        var maxId = -1
        for (token, id) in entries {
            guard id >= 0, id < Self.maximumId else {
                throw .invalidField(file: file, field: field, reason: "gives \"\(token)\" the id \(id), outside 0..<\(Self.maximumId)")
            }
            idByBytes[Array(token.utf8)] = id
            maxId = max(maxId, id)
        }
        guard maxId >= 0 else { throw .emptyVocabulary(file: file) }
        // The reverse table has maxId + 1 slots: a few tokens with huge ids must not make a
        // tiny file allocate hundreds of megabytes. Real vocabularies number their tokens 0..<n.
        let limit = Self.idLimit(tokens: idByBytes.count)
        guard maxId < limit else {
            throw .invalidField(file: file, field: field, reason: "numbers its \(idByBytes.count) tokens up to \(maxId); ids must stay below \(limit) (twice the token count + 1024)")
        }
        var tokenById = [String?](repeating: nil, count: maxId + 1)
        for (bytes, id) in idByBytes { tokenById[id] = String(decoding: bytes, as: UTF8.self) }
        self.idByBytes = idByBytes
        self.tokenById = tokenById
    }

    var count: Int { idByBytes.count }
    /// Ids (of the vocabulary and of added tokens) must stay below this: tables are indexed by id.
    var idLimit: Int { Self.idLimit(tokens: count) }
    static func idLimit(tokens: Int) -> Int { min(2 * tokens + 1024, maximumId) }
    /// The largest id with a token.
    var largestId: Int { tokenById.count - 1 }
    func id(_ token: String) -> Int? { idByBytes[Array(token.utf8)] }
    func id(bytes: [UInt8]) -> Int? { idByBytes[bytes] }
    func token(_ id: Int) -> String? { id >= 0 && id < tokenById.count ? tokenById[id] : nil }
    func contains(_ token: String) -> Bool { id(token) != nil }
    /// Every (token, id), by id then token bytes.
    var entries: [(token: String, id: Int)] {
        idByBytes.sorted { $0.value != $1.value ? $0.value < $1.value : $0.key.lexicographicallyPrecedes($1.key) }
            .map { (String(decoding: $0.key, as: UTF8.self), $0.value) }
    }
}

/// A tokenizer's `vocabularySize`: transformers' `len(tokenizer)` (distinct tokens, added ones
/// included) — or, when ids skip numbers or a token appears twice (a `vocab.txt` with a repeated
/// line), one past the largest id, so that every id the tokenizer produces is below it.
func vocabularySizeBound(_ vocabulary: Vocabulary, _ addedTokens: [AddedToken]) -> Int {
    var distinct = vocabulary.count
    var largest = vocabulary.largestId
    for t in addedTokens {
        if !vocabulary.contains(t.content) { distinct += 1 }
        largest = max(largest, t.id)
    }
    return max(distinct, largest + 1)
}

/// A post-processor template (HF `TemplateProcessing`, `BertProcessing`): what surrounds the
/// sequence(s) when special tokens are added, with the token type id of every part.
struct Template: Sendable {
    enum Item: Sendable {
        case special(ids: [Int], typeId: Int)
        case sequence(second: Bool, typeId: Int)
    }
    var single: [Item]
    var pair: [Item]

    static let identity = Template(single: [.sequence(second: false, typeId: 0)],
                                   pair: [.sequence(second: false, typeId: 0), .sequence(second: true, typeId: 1)])

    static func bert(cls: Int, sep: Int) -> Template {
        Template(single: [.special(ids: [cls], typeId: 0), .sequence(second: false, typeId: 0), .special(ids: [sep], typeId: 0)],
                 pair: [.special(ids: [cls], typeId: 0), .sequence(second: false, typeId: 0), .special(ids: [sep], typeId: 0),
                        .sequence(second: true, typeId: 1), .special(ids: [sep], typeId: 1)])
    }

    /// How many ids the template adds around one sequence or a pair.
    func addedCount(pair isPair: Bool) -> Int {
        (isPair ? pair : single).reduce(0) { if case .special(let ids, _) = $1 { $0 + ids.count } else { $0 } }
    }

    func apply(_ a: [Int], _ b: [Int]?) -> (ids: [Int], typeIds: [Int]) {
        var ids: [Int] = [], types: [Int] = []
        ids.reserveCapacity(a.count + (b?.count ?? 0) + 4)
        for item in b == nil ? single : pair {
            switch item {
            case let .special(s, t):
                ids += s
                types += Array(repeating: t, count: s.count)
            case let .sequence(second, t):
                let part = second ? (b ?? []) : a
                ids += part
                types += Array(repeating: t, count: part.count)
            }
        }
        return (ids, types)
    }

    private static func validId(_ id: Int) -> Bool { id >= 0 && id < Vocabulary.maximumId }

    /// tokenizer.json's `post_processor`: null, ByteLevel (no ids), TemplateProcessing,
    /// BertProcessing, or a Sequence of those.
    static func parse(_ json: JSON?, file: String, vocabulary: (String) -> Int?) throws(TokenizerError) -> Template {
        guard let json, !json.isNull else { return .identity }
        let type = json["type"]?.string ?? "(none)"
        switch type {
        case "ByteLevel": return .identity
        case "Sequence":
            var result = Template.identity
            for p in json["processors"]?.array ?? [] {
                let t = try parse(p, file: file, vocabulary: vocabulary)
                if p["type"]?.string != "ByteLevel" { result = t }
            }
            return result
        case "BertProcessing":
            guard let sep = json["sep"]?.array, sep.count == 2, let sepId = sep[1].int, validId(sepId),
                  let cls = json["cls"]?.array, cls.count == 2, let clsId = cls[1].int, validId(clsId)
            else { throw .invalidField(file: file, field: "post_processor", reason: "needs sep and cls as [token, id]") }
            return .bert(cls: clsId, sep: sepId)
        case "TemplateProcessing":
            var specials: [(key: String, ids: [Int])] = []
            for (key, value) in json["special_tokens"]?.object ?? [] {
                guard let list = value["ids"]?.array, case let ids = list.compactMap(\.int), ids.count == list.count, ids.allSatisfy(validId) else {
                    throw .invalidField(file: file, field: "post_processor.special_tokens.\(key)", reason: "needs ids, integers in 0..<\(Vocabulary.maximumId)")
                }
                specials.append((key, ids))
            }
            func items(_ name: String) throws(TokenizerError) -> [Item]? {
                guard let list = json[name]?.array else { return nil }
                var out: [Item] = []
                for element in list {
                    if let s = element["SpecialToken"] {
                        let id = s["id"]?.string ?? ""
                        let typeId = s["type_id"]?.int ?? 0
                        if let entry = specials.first(where: { $0.key.utf8.elementsEqual(id.utf8) }) {
                            out.append(.special(ids: entry.ids, typeId: typeId))
                        } else if let single = vocabulary(id) {
                            out.append(.special(ids: [single], typeId: typeId))
                        } else {
                            throw .unknownSpecialToken(file: file, role: "post_processor.\(name) special token", token: id)
                        }
                    } else if let s = element["Sequence"] {
                        out.append(.sequence(second: s["id"]?.string == "B", typeId: s["type_id"]?.int ?? 0))
                    } else {
                        throw .invalidField(file: file, field: "post_processor.\(name)", reason: "has an item that is neither SpecialToken nor Sequence")
                    }
                }
                return out
            }
            let single = try items("single") ?? Template.identity.single
            let pair = try items("pair") ?? (single + [.sequence(second: true, typeId: 1)])
            return Template(single: single, pair: pair)
        default:
            throw .unsupportedComponent(file: file, component: "post_processor", detail: type)
        }
    }
}

/// Reads a BPE model's `merges`, in either format: "a b" (tokenizers < 0.20) or ["a", "b"].
func parseMerges(_ model: JSON, file: String) throws(TokenizerError) -> [(String, String)] {
    guard let mergeList = model["merges"]?.array else { throw .missingField(file: file, field: "model.merges") }
    var pairs: [(String, String)] = []
    pairs.reserveCapacity(mergeList.count)
    for (i, m) in mergeList.enumerated() {
        if let s = m.string {
            let parts = s.split(separator: " ", omittingEmptySubsequences: false)
            guard parts.count == 2 else { throw .invalidMerge(file: file, index: i, merge: s) }
            pairs.append((String(parts[0]), String(parts[1])))
        } else if let a = m.array, a.count == 2, let l = a[0].string, let r = a[1].string {
            pairs.append((l, r))
        } else {
            throw .invalidMerge(file: file, index: i, merge: "\(m)")
        }
    }
    return pairs
}

/// Reads tokenizer.json's `added_tokens`.
func parseAddedTokens(_ json: JSON, file: String) throws(TokenizerError) -> [AddedToken] {
    guard let list = json["added_tokens"] else { return [] }
    if list.isNull { return [] }
    guard let array = list.array else { throw .invalidField(file: file, field: "added_tokens", reason: "is not an array") }
    var tokens: [AddedToken] = []
    for (i, entry) in array.enumerated() { tokens.append(try AddedToken(json: entry, file: file, index: i)) }
    return tokens
}

/// Reads `model.vocab`: an object of token → id.
func parseVocabulary(_ model: JSON, file: String) throws(TokenizerError) -> Vocabulary {
    guard let vocab = model["vocab"] else { throw .missingField(file: file, field: "model.vocab") }
    guard let members = vocab.object else { throw .invalidField(file: file, field: "model.vocab", reason: "is not an object of token → id") }
    var entries: [(token: String, id: Int)] = []
    entries.reserveCapacity(members.count)
    for (token, value) in members {
        guard let id = value.int else { throw .invalidField(file: file, field: "model.vocab", reason: "gives \"\(token)\" a non-integer id") }
        entries.append((token, id))
    }
    return try Vocabulary(entries, file: file, field: "model.vocab")
}

/// `value` as a boolean option that must be off (false, null, absent, or 0 for dropout).
func requireOff(_ value: JSON?, file: String, component: String, detail: String) throws(TokenizerError) {
    guard let value else { return }
    switch value {
    case .null, .bool(false): return
    case .number(let d) where d == 0: return
    case .string(let s) where s.isEmpty: return
    default: throw .unsupportedComponent(file: file, component: component, detail: detail)
    }
}
