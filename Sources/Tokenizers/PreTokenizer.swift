/// How a byte-level BPE tokenizer cuts text into words before BPE: HF's `ByteLevel`
/// pre-tokenizer, optionally preceded by `Digits`. Each word is then BPE-encoded on its own.
public struct PreTokenizer: Sendable, Equatable {
    public enum Digits: Sendable, Equatable {
        /// No `Digits` step.
        case none
        /// `Digits(individual_digits: true)`: every numeric scalar (\p{N}) becomes its own piece.
        case individual
        /// `Digits(individual_digits: false)`: each run of numeric scalars becomes one piece.
        case contiguous
    }

    public var digits: Digits
    /// Split with the GPT-2 regex
    /// `'s|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+`
    /// (`ByteLevel(use_regex: true)`, or an equivalent `Split` before `ByteLevel`).
    public var gpt2Regex: Bool
    /// `ByteLevel(add_prefix_space: true)`: a space before every piece that does not start with one.
    public var addPrefixSpace: Bool

    public init(digits: Digits = .none, gpt2Regex: Bool = true, addPrefixSpace: Bool = false) {
        self.digits = digits
        self.gpt2Regex = gpt2Regex
        self.addPrefixSpace = addPrefixSpace
    }

    /// GPT-2's: the regex alone (llama.cpp pre-type "gpt2"; what transformers 5.24 builds for every
    /// GGUF byte-level tokenizer whose pre-type it has no entry for, "smollm" included).
    public static let gpt2 = PreTokenizer()

    /// SmolLM2's upstream tokenizer.json, `Sequence[Digits(individual_digits: true), ByteLevel]`,
    /// identical to llama.cpp's pre-type "smollm" (`\p{N}` isolated, then the GPT-2 regex).
    public static let smolLM = PreTokenizer(digits: .individual)

    /// The pre-tokenizer of a GGUF file's `tokenizer.ggml.pre` (llama.cpp's names).
    public static func llamaCpp(_ name: String, source: String = "GGUF metadata") throws(TokenizerError) -> PreTokenizer {
        switch name {
        case "gpt2", "default": return .gpt2
        case "smollm": return .smolLM
        default:
            throw .unsupportedComponent(file: source, component: "pre-tokenizer", detail: "tokenizer.ggml.pre \"\(name)\" (supported: gpt2, smollm)")
        }
    }

    /// The words of `text` (with no added tokens in it) that BPE encodes one by one: HF's
    /// `pre_tokenize_str` with the byte alphabet mapped back to text.
    public func split(_ text: String) -> [String] {
        var words: [String] = []
        forEachWord(Array(text.unicodeScalars)) { words.append(String(decoding: $0, as: UTF8.self)) }
        return words
    }

    /// Calls `body` with each word of `text`, as UTF-8 bytes, in order.
    func forEachWord(_ text: [Unicode.Scalar], _ body: ([UInt8]) -> Void) {
        var word: [UInt8] = []
        word.reserveCapacity(64)
        var piece: [Unicode.Scalar] = []
        var ranges: [Range<Int>] = []
        forEachDigitsPiece(text) { range in
            piece.removeAll(keepingCapacity: true)
            if addPrefixSpace, text[range.lowerBound] != " " { piece.append(" ") }
            piece.append(contentsOf: text[range])
            ranges.removeAll(keepingCapacity: true)
            if gpt2Regex { gpt2Split(piece, into: &ranges) } else { ranges.append(0..<piece.count) }
            for r in ranges {
                word.removeAll(keepingCapacity: true)
                for s in piece[r] { UTF8.encode(s) { word.append($0) } }
                body(word)
            }
        }
    }

    private func forEachDigitsPiece(_ text: [Unicode.Scalar], _ body: (Range<Int>) -> Void) {
        if digits == .none {
            if !text.isEmpty { body(0..<text.count) }
            return
        }
        var start = 0
        var i = 0
        while i < text.count {
            guard ScalarClass(text[i]) == .number else { i += 1; continue }
            if start < i { body(start..<i) }
            var end = i + 1
            if digits == .contiguous {
                while end < text.count, ScalarClass(text[end]) == .number { end += 1 }
            }
            body(i..<end)
            start = end
            i = end
        }
        if start < text.count { body(start..<text.count) }
    }
}

/// The GPT-2 regex as a scanner: at each position the first alternative that matches wins, each
/// with its greedy longest match, exactly as the backtracking regex engine would choose.
func gpt2Split(_ s: [Unicode.Scalar], into out: inout [Range<Int>]) {
    let n = s.count
    var classes = [ScalarClass]()
    classes.reserveCapacity(n)
    for c in s { classes.append(ScalarClass(c)) }
    var i = 0
    while i < n {
        // 's 't 're 've 'm 'll 'd (lower case only).
        if s[i] == "'", i + 1 < n {
            let a = s[i + 1]
            if a == "s" || a == "t" || a == "m" || a == "d" { out.append(i..<(i + 2)); i += 2; continue }
            if i + 2 < n {
                let b = s[i + 2]
                if (a == "r" && b == "e") || (a == "v" && b == "e") || (a == "l" && b == "l") { out.append(i..<(i + 3)); i += 3; continue }
            }
        }
        // ` ?\p{L}+`, ` ?\p{N}+`, ` ?[^\s\p{L}\p{N}]+`: an optional U+0020, then a run of one class.
        var j = i
        if s[i] == " ", i + 1 < n, classes[i + 1] != .whitespace { j = i + 1 }
        let k = classes[j]
        if k != .whitespace {
            var end = j + 1
            while end < n, classes[end] == k { end += 1 }
            out.append(i..<end)
            i = end
            continue
        }
        // `\s+(?!\S)`: the whole run at the end of the text, else the run less its last scalar
        // (which then prefixes the next word); `\s+` for a single whitespace before a non-space.
        var end = i + 1
        while end < n, classes[end] == .whitespace { end += 1 }
        if end < n, end - i >= 2 { end -= 1 }
        out.append(i..<end)
        i = end
    }
}

/// GPT-2's reversible byte ↔ printable-character mapping: printable Latin-1 bytes stand for
/// themselves, the other 68 bytes for U+0100 onwards, so every token is a printable string.
enum ByteLevelAlphabet {
    static let scalarForByte: [Unicode.Scalar] = {
        var table = [Unicode.Scalar](repeating: " ", count: 256)
        var next: UInt32 = 256
        for b in 0..<256 {
            let printable = (0x21...0x7E).contains(b) || (0xA1...0xAC).contains(b) || (0xAE...0xFF).contains(b)
            if printable {
                table[b] = Unicode.Scalar(UInt8(b))
            } else {
                table[b] = Unicode.Scalar(next) ?? " "
                next += 1
            }
        }
        return table
    }()

    /// The byte a scalar stands for, or nil when it is outside the alphabet.
    static func byte(for s: Unicode.Scalar) -> UInt8? {
        let v = s.value
        if v < 256 {
            let b = Int(v)
            let printable = (0x21...0x7E).contains(b) || (0xA1...0xAC).contains(b) || (0xAE...0xFF).contains(b)
            return printable ? UInt8(b) : nil
        }
        return v < 256 + 68 ? nonPrintable[Int(v - 256)] : nil
    }

    private static let nonPrintable: [UInt8] = (0..<256).compactMap { b -> UInt8? in
        let printable = (0x21...0x7E).contains(b) || (0xA1...0xAC).contains(b) || (0xAE...0xFF).contains(b)
        return printable ? nil : UInt8(b)
    }

    /// The bytes a token spells: its characters mapped back when all are in the alphabet, else
    /// its own UTF-8 (HF's ByteLevel decoder does the same per token).
    static func bytes(of token: String) -> [UInt8] {
        var out: [UInt8] = []
        out.reserveCapacity(token.utf8.count)
        for s in token.unicodeScalars {
            guard let b = byte(for: s) else { return Array(token.utf8) }
            out.append(b)
        }
        return out
    }

    /// `token` spelled in the alphabet (the bytes of its UTF-8 mapped).
    static func spell(_ bytes: some Sequence<UInt8>) -> String {
        var s = String.UnicodeScalarView()
        for b in bytes { s.append(scalarForByte[Int(b)]) }
        return String(s)
    }

    static func isSpelled(_ token: String) -> Bool {
        token.unicodeScalars.allSatisfy { byte(for: $0) != nil }
    }
}
