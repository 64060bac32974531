/// A token matched whole in the text before any pre-tokenization (HF `AddedToken`):
/// `<|im_start|>`, `[CLS]`, or a user-defined token such as `<think>`.
public struct AddedToken: Sendable, Equatable {
    public var id: Int
    public var content: String
    /// Special tokens are dropped by `decode(_:skipSpecialTokens: true)`.
    public var special: Bool
    /// Also consume the whitespace before the token.
    public var lstrip: Bool
    /// Also consume the whitespace after the token.
    public var rstrip: Bool
    /// Match only when not inside a word (no `\w` character on either side).
    public var singleWord: Bool
    /// Match on the normalized text (after lower-casing, …) rather than the raw text.
    public var normalized: Bool

    public init(id: Int, content: String, special: Bool, lstrip: Bool = false, rstrip: Bool = false,
                singleWord: Bool = false, normalized: Bool? = nil) {
        self.id = id
        self.content = content
        self.special = special
        self.lstrip = lstrip
        self.rstrip = rstrip
        self.singleWord = singleWord
        // HF's default: special tokens are matched on the raw text.
        self.normalized = normalized ?? !special
    }

    /// One entry of tokenizer.json's `added_tokens`.
    init(json: JSON, file: String, index: Int) throws(TokenizerError) {
        let field = "added_tokens[\(index)]"
        guard let id = json["id"]?.int, id >= 0 else { throw .invalidField(file: file, field: field, reason: "needs a non-negative integer id") }
        guard let content = json["content"]?.string else { throw .invalidField(file: file, field: field, reason: "needs a string content") }
        let special = json["special"]?.bool ?? false
        self.init(id: id, content: content, special: special, lstrip: json["lstrip"]?.bool ?? false,
                  rstrip: json["rstrip"]?.bool ?? false, singleWord: json["single_word"]?.bool ?? false,
                  normalized: json["normalized"]?.bool)
    }
}

/// A piece of text after the added tokens are cut out: either an added token's id or a run of
/// scalars that still has to go through the normalizer, pre-tokenizer and model.
enum TextPiece {
    case token(Int)
    case text([Unicode.Scalar])
}

/// Finds added tokens in text as HF's `AddedVocabulary` does: leftmost-longest, non-overlapping
/// matches (Aho-Corasick semantics), then `single_word`, `lstrip` and `rstrip` applied in order.
struct AddedTokenMatcher: Sendable {
    private struct Entry: Sendable {
        let scalars: [Unicode.Scalar]
        let token: AddedToken
    }
    private let entries: [Entry]
    /// Entry indices by first scalar, longest first.
    private let byFirst: [UInt32: [Int]]

    var isEmpty: Bool { entries.isEmpty }

    /// `contents` gives the text each token is matched as (its content, or normalized content).
    init(_ tokens: [AddedToken], contents: (AddedToken) -> [Unicode.Scalar]) {
        var entries: [Entry] = []
        for t in tokens {
            let s = contents(t)
            // HF skips empty contents (nothing to match).
            if !s.isEmpty { entries.append(Entry(scalars: s, token: t)) }
        }
        var byFirst: [UInt32: [Int]] = [:]
        for (i, e) in entries.enumerated() { byFirst[e.scalars[0].value, default: []].append(i) }
        for key in byFirst.keys {
            byFirst[key]?.sort { entries[$0].scalars.count > entries[$1].scalars.count }
        }
        self.entries = entries
        self.byFirst = byFirst
    }

    /// Appends the pieces of `text` to `out`: tokens found, and the text between them.
    func split(_ text: [Unicode.Scalar], into out: inout [TextPiece]) {
        if entries.isEmpty || text.isEmpty {
            if !text.isEmpty { out.append(.text(text)) }
            return
        }
        var offset = 0
        var p = 0
        let n = text.count
        while p < n {
            guard let candidates = byFirst[text[p].value],
                  let hit = candidates.first(where: { matches(entries[$0].scalars, in: text, at: p) })
            else { p += 1; continue }
            let token = entries[hit].token
            var start = p
            var stop = p + entries[hit].scalars.count
            p = stop
            if token.singleWord {
                let before = start == 0 || !text[start - 1].isWordCharacter
                let after = stop == n || !text[stop].isWordCharacter
                if !(before && after) { continue }
            }
            if token.lstrip {
                var s = start
                while s > 0, text[s - 1].isWhiteSpace { s -= 1 }
                // The previous token may already have consumed that whitespace.
                start = max(s, offset)
            }
            if token.rstrip {
                while stop < n, text[stop].isWhiteSpace { stop += 1 }
                p = max(p, stop)
            }
            if offset < start { out.append(.text(Array(text[offset..<start]))) }
            out.append(.token(token.id))
            offset = max(offset, stop)
        }
        if offset < n { out.append(.text(Array(text[offset..<n]))) }
    }

    @inline(__always) private func matches(_ pattern: [Unicode.Scalar], in text: [Unicode.Scalar], at p: Int) -> Bool {
        guard p + pattern.count <= text.count else { return false }
        for k in 1..<pattern.count where text[p + k] != pattern[k] { return false }
        return true
    }
}

/// The added tokens of a tokenizer, with the two matchers HF runs: raw-text tokens first, then
/// normalized-text tokens on the normalized remainder.
struct AddedVocabulary: Sendable {
    let tokens: [AddedToken]
    let rawMatcher: AddedTokenMatcher
    let normalizedMatcher: AddedTokenMatcher
    let specialIds: Set<Int>
    let contentById: [Int: String]

    init(_ tokens: [AddedToken], normalize: ([Unicode.Scalar]) -> [Unicode.Scalar]) {
        self.tokens = tokens
        rawMatcher = AddedTokenMatcher(tokens.filter { !$0.normalized }) { Array($0.content.unicodeScalars) }
        normalizedMatcher = AddedTokenMatcher(tokens.filter { $0.normalized }) { normalize(Array($0.content.unicodeScalars)) }
        specialIds = Set(tokens.filter(\.special).map(\.id))
        var byId: [Int: String] = [:]
        for t in tokens { byId[t.id] = t.content }
        contentById = byId
    }

    /// Cuts the added tokens out of `text`; the text pieces come back normalized.
    func split(_ text: String, normalize: (([Unicode.Scalar]) -> [Unicode.Scalar])?) -> [TextPiece] {
        var first: [TextPiece] = []
        rawMatcher.split(Array(text.unicodeScalars), into: &first)
        var result: [TextPiece] = []
        result.reserveCapacity(first.count)
        for piece in first {
            guard case .text(let scalars) = piece else { result.append(piece); continue }
            let normalized = normalize?(scalars) ?? scalars
            normalizedMatcher.split(normalized, into: &result)
        }
        return result
    }
}
