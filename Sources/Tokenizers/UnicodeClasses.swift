// Character classes, each defined as the Hugging Face implementation defines it, over Unicode
// scalars (never Characters: "\r\n" and emoji sequences are several scalars to a tokenizer).
// The Unicode tables are Swift's; HF's Rust crates carry older ones, so scalars assigned in
// recent Unicode versions may be classified differently.

extension Unicode.Scalar {
    /// The White_Space property: Rust's `char::is_whitespace`, Oniguruma's `\s`.
    @inline(__always) var isWhiteSpace: Bool {
        if value < 0x80 { return value == 0x20 || (value >= 0x09 && value <= 0x0D) }
        return properties.isWhitespace
    }

    /// Rust regex's Unicode `\w`: Alphabetic, marks, decimal digits, connector punctuation, joiners.
    var isWordCharacter: Bool {
        if value < 0x80 {
            return (value >= 0x30 && value <= 0x39) || (value >= 0x41 && value <= 0x5A) || (value >= 0x61 && value <= 0x7A) || value == 0x5F
        }
        let p = properties
        if p.isAlphabetic || p.isJoinControl { return true }
        switch p.generalCategory {
        case .nonspacingMark, .spacingMark, .enclosingMark, .decimalNumber, .connectorPunctuation: return true
        default: return false
        }
    }
}

/// The classes the GPT-2 pre-tokenizer regex distinguishes: `\s`, `\p{L}`, `\p{N}`, and the rest.
enum ScalarClass: UInt8 {
    case whitespace, letter, number, other

    private static let ascii: [ScalarClass] = (0..<128).map { v in
        switch v {
        case 0x09...0x0D, 0x20: .whitespace
        case 0x30...0x39: .number
        case 0x41...0x5A, 0x61...0x7A: .letter
        default: .other
        }
    }

    @inline(__always) init(_ s: Unicode.Scalar) {
        if s.value < 0x80 { self = Self.ascii[Int(s.value)]; return }
        let p = s.properties
        if p.isWhitespace { self = .whitespace; return }
        switch p.generalCategory {
        case .uppercaseLetter, .lowercaseLetter, .titlecaseLetter, .modifierLetter, .otherLetter: self = .letter
        case .decimalNumber, .letterNumber, .otherNumber: self = .number
        default: self = .other
        }
    }
}

// MARK: - BERT (HF tokenizers' BertNormalizer and BertPreTokenizer)

/// `clean_text` removes these: Cc, Cf and Co (not unassigned scalars), except tab, LF and CR.
@inline(__always) func isBertControl(_ s: Unicode.Scalar) -> Bool {
    if s.value == 0x09 || s.value == 0x0A || s.value == 0x0D { return false }
    if s.value < 0x20 || s.value == 0x7F { return true }
    if s.value < 0x80 { return false }
    switch s.properties.generalCategory {
    case .control, .format, .privateUse: return true
    default: return false
    }
}

/// The CJK ideograph blocks that `handle_chinese_chars` surrounds with spaces. HF's ranges,
/// which differ from Python BERT's at U+2B820…U+2B91F (not included here).
@inline(__always) func isChineseCharacter(_ s: Unicode.Scalar) -> Bool {
    switch s.value {
    case 0x4E00...0x9FFF, 0x3400...0x4DBF, 0x20000...0x2A6DF, 0x2A700...0x2B73F, 0x2B740...0x2B81F,
         0x2B920...0x2CEAF, 0xF900...0xFAFF, 0x2F800...0x2FA1F: return true
    default: return false
    }
}

/// `BertPreTokenizer` isolates these: ASCII punctuation (including `$+<=>^`|~`) or Unicode P*.
@inline(__always) func isBertPunctuation(_ s: Unicode.Scalar) -> Bool {
    let v = s.value
    if v < 0x80 {
        return (v >= 33 && v <= 47) || (v >= 58 && v <= 64) || (v >= 91 && v <= 96) || (v >= 123 && v <= 126)
    }
    switch s.properties.generalCategory {
    case .connectorPunctuation, .dashPunctuation, .openPunctuation, .closePunctuation,
         .initialPunctuation, .finalPunctuation, .otherPunctuation: return true
    default: return false
    }
}
