/// A Python `re` pattern over module paths (PEFT's `target_modules` regex, `exclude_modules`,
/// `rank_pattern` / `alpha_pattern` keys, `modules_to_save` and `layers_pattern` names), matched
/// by simulating its NFA: time grows with path length × pattern size, never exponentially.
///
/// Patterns come from `adapter_config.json` files written by strangers. A backtracking engine
/// (Swift's `Regex`, Python's `re`) takes exponential time on patterns such as `(.*)*x` or
/// `(\w|\W|.)*Q` — minutes for one 30-character path — so a hostile config could hang the
/// process. Here every match is a Pike-VM run (Thompson's construction), with lookaheads as
/// sub-runs.
///
/// Supported: literals, `.`, classes `[a-z_\d]` / `[^…]`, `\d \w \s \D \W \S`, escaped
/// punctuation, groups `( )` `(?: )` `(?P<name> )`, `|`, `* + ? {m} {m,} {m,n}` (lazy forms
/// too: for a yes/no match laziness changes nothing), `^ $ \A \Z`, lookaheads `(?= )` `(?! )`.
/// Refused with a clear error: back-references, lookbehinds, inline flags, `\b`, possessive
/// quantifiers, and patterns that compile to more than `maximumProgramSize` instructions.
public struct ModulePattern: Sendable, Equatable {
    public let source: String
    private let program: Program

    /// Largest compiled pattern accepted (`x{1000}{1000}` would otherwise be a million states).
    public static let maximumProgramSize = 20_000

    public init(_ source: String) throws(ModulePatternError) {
        self.source = source
        var parser = Parser(Array(source.unicodeScalars))
        let node = try parser.parseAll()
        do {
            program = try Program(node)
        } catch .tooLarge(_, let size) {
            throw .tooLarge(pattern: source, instructions: size)
        } catch {
            throw error
        }
    }

    /// Whether the whole of `path` matches (Python's `re.fullmatch`).
    public func fullMatch(_ path: String) -> Bool {
        let input = Array(path.unicodeScalars)
        return program.run(input, from: 0, requireEnd: true).contains(input.count)
    }

    /// Every end offset (in Unicode scalars) of a match that starts at the beginning of `path`.
    public func prefixMatchEnds(_ path: String) -> [Int] {
        let input = Array(path.unicodeScalars)
        return program.run(input, from: 0, requireEnd: false).sorted()
    }

    public static func == (a: ModulePattern, b: ModulePattern) -> Bool { a.source == b.source }
}

public enum ModulePatternError: Error, Equatable, CustomStringConvertible {
    case invalid(pattern: String, offset: Int, reason: String)
    case unsupported(pattern: String, feature: String)
    case tooLarge(pattern: String, instructions: Int)

    public var description: String {
        switch self {
        case let .invalid(pattern, offset, reason): "'\(pattern)' is not a valid regular expression: \(reason) at position \(offset)"
        case let .unsupported(pattern, feature):
            "'\(pattern)' uses \(feature), which swift-lora does not match (module patterns are matched in linear time)"
        case let .tooLarge(pattern, n): "'\(pattern)' compiles to \(n) states, more than \(ModulePattern.maximumProgramSize)"
        }
    }
}

// MARK: - Syntax

/// A set of scalars: ranges, the `\d \w \s` classes, possibly negated.
struct ScalarClass: Sendable {
    enum Item: Sendable { case range(UInt32, UInt32), digit(Bool), word(Bool), space(Bool) }
    var items: [Item] = []
    var negated = false

    func contains(_ s: Unicode.Scalar) -> Bool {
        let hit = items.contains { item in
            switch item {
            case let .range(lo, hi): lo <= s.value && s.value <= hi
            case let .digit(yes): Self.isDigit(s) == yes
            case let .word(yes): Self.isWord(s) == yes
            case let .space(yes): Self.isSpace(s) == yes
            }
        }
        return hit != negated
    }

    // Python's str-pattern classes: Unicode digits, letters/digits/underscore, whitespace.
    static func isDigit(_ s: Unicode.Scalar) -> Bool { s.properties.numericType == .decimal }
    static func isWord(_ s: Unicode.Scalar) -> Bool { s == "_" || s.properties.isAlphabetic || s.properties.numericType != nil }
    static func isSpace(_ s: Unicode.Scalar) -> Bool { s.properties.isWhitespace }
}

indirect enum PatternNode: Sendable {
    case empty
    case scalar(Unicode.Scalar)
    case any
    case set(ScalarClass)
    case concat([PatternNode])
    case alternation([PatternNode])
    case repetition(PatternNode, min: Int, max: Int?)
    case start, end
    case lookahead(PatternNode, negative: Bool)
}

/// Recursive descent over Python's regex grammar (the subset above).
private struct Parser {
    let s: [Unicode.Scalar]
    var i = 0
    var depth = 0
    let source: String

    init(_ s: [Unicode.Scalar]) {
        self.s = s
        source = String(String.UnicodeScalarView(s))
    }

    func invalid(_ why: String) -> ModulePatternError { .invalid(pattern: source, offset: i, reason: why) }
    func unsupported(_ what: String) -> ModulePatternError { .unsupported(pattern: source, feature: what) }
    var atEnd: Bool { i >= s.count }
    func peek(_ k: Int = 0) -> Unicode.Scalar? { i + k < s.count ? s[i + k] : nil }

    mutating func parseAll() throws(ModulePatternError) -> PatternNode {
        let node = try alternation()
        guard atEnd else { throw invalid("unbalanced parenthesis") }
        return node
    }

    mutating func alternation() throws(ModulePatternError) -> PatternNode {
        var branches = [try sequence()]
        while peek() == "|" {
            i += 1
            branches.append(try sequence())
        }
        return branches.count == 1 ? branches[0] : .alternation(branches)
    }

    mutating func sequence() throws(ModulePatternError) -> PatternNode {
        var items: [PatternNode] = []
        while let c = peek(), c != "|", c != ")" {
            var atom = try self.atom()
            if let q = peek(), q == "*" || q == "+" || q == "?" || (q == "{" && isCountedRepetition()) {
                switch atom {
                case .start, .end, .lookahead: throw invalid("nothing to repeat")
                default: break
                }
                let (lo, hi) = try quantifier()
                atom = .repetition(atom, min: lo, max: hi)
                if peek() == "?" { i += 1 }   // lazy: the same yes/no answer
                else if peek() == "+" { throw unsupported("a possessive quantifier") }
                if let q2 = peek(), q2 == "*" || q2 == "+" || q2 == "?" || (q2 == "{" && isCountedRepetition()) {
                    throw invalid("multiple repeat")
                }
            }
            items.append(atom)
        }
        return items.count == 1 ? items[0] : .concat(items)
    }

    /// `{m}`, `{m,}`, `{,n}`, `{m,n}`; any other `{` is a literal, as in Python.
    func isCountedRepetition() -> Bool {
        var j = i + 1, digits = 0, comma = false
        while j < s.count {
            let c = s[j]
            if c == "}" { return digits > 0 || comma }
            if c == ",", !comma { comma = true } else if ("0"..."9").contains(c) { digits += 1 } else { return false }
            j += 1
        }
        return false
    }

    mutating func quantifier() throws(ModulePatternError) -> (Int, Int?) {
        let c = s[i]
        i += 1
        switch c {
        case "*": return (0, nil)
        case "+": return (1, nil)
        case "?": return (0, 1)
        default:
            let lo = number() ?? 0
            var hi: Int? = lo
            if peek() == "," {
                i += 1
                hi = number()
            }
            i += 1   // "}"
            if let hi, hi < lo { throw invalid("min repeat greater than max repeat") }
            guard lo <= 1000, (hi ?? 0) <= 1000 else { throw unsupported("a repetition count above 1000") }
            return (lo, hi)
        }
    }

    mutating func number() -> Int? {
        var n: Int?
        while let c = peek(), ("0"..."9").contains(c) {
            n = min((n ?? 0) * 10 + Int(c.value - 48), 1_000_000)
            i += 1
        }
        return n
    }

    mutating func atom() throws(ModulePatternError) -> PatternNode {
        let c = s[i]
        i += 1
        switch c {
        case ".": return .any
        case "^": return .start
        case "$": return .end
        case "*", "+", "?": throw invalid("nothing to repeat")
        case "[": return .set(try characterClass())
        case "\\": return try escape(inClass: false).node
        case "(": return try group()
        default: return .scalar(c)
        }
    }

    mutating func group() throws(ModulePatternError) -> PatternNode {
        depth += 1
        defer { depth -= 1 }
        guard depth <= 100 else { throw unsupported("groups nested more than 100 deep") }
        var lookahead: Bool?   // negative?
        if peek() == "?" {
            switch peek(1) {
            case ":": i += 2
            case "P" where peek(2) == "<":
                i += 3
                while let c = peek(), c != ">" { i += 1 }
                guard peek() == ">" else { throw invalid("missing >, unterminated name") }
                i += 1
            case "=": i += 2; lookahead = false
            case "!": i += 2; lookahead = true
            case "<" where peek(2) == "=" || peek(2) == "!": throw unsupported("a lookbehind")
            case "P" where peek(2) == "=": throw unsupported("a back-reference")
            case "#": throw unsupported("a comment group")
            default: throw unsupported("inline flags or an extension group")
            }
        }
        let inner = try alternation()
        guard peek() == ")" else { throw invalid("missing ), unterminated subpattern") }
        i += 1
        if let negative = lookahead { return .lookahead(inner, negative: negative) }
        return inner
    }

    /// After a backslash. In a class, `\b` is a backspace and the classes are items.
    mutating func escape(inClass: Bool) throws(ModulePatternError) -> (node: PatternNode, item: ScalarClass.Item?) {
        guard let c = peek() else { throw invalid("bad escape (end of pattern)") }
        i += 1
        switch c {
        case "d", "D": return (.set(ScalarClass(items: [.digit(c == "d")])), .digit(c == "d"))
        case "w", "W": return (.set(ScalarClass(items: [.word(c == "w")])), .word(c == "w"))
        case "s", "S": return (.set(ScalarClass(items: [.space(c == "s")])), .space(c == "s"))
        case "A" where !inClass: return (.start, nil)
        case "Z" where !inClass: return (.end, nil)
        case "b" where !inClass, "B" where !inClass: throw unsupported("a word boundary (\\\(c))")
        case "1"..."9" where !inClass: throw unsupported("a back-reference")
        case "n": return (.scalar("\n"), .range(10, 10))
        case "t": return (.scalar("\t"), .range(9, 9))
        case "r": return (.scalar("\r"), .range(13, 13))
        case "f": return (.scalar("\u{0C}"), .range(12, 12))
        case "v": return (.scalar("\u{0B}"), .range(11, 11))
        case "b": return (.scalar("\u{08}"), .range(8, 8))
        case "0": return (.scalar("\u{0}"), .range(0, 0))
        case "x", "u", "U":
            let width = c == "x" ? 2 : c == "u" ? 4 : 8
            var value: UInt32 = 0
            for _ in 0..<width {
                guard let h = peek(), h.isASCII, let digit = UInt32(String(h), radix: 16) else {
                    throw invalid("incomplete escape \\\(c)")
                }
                value = value * 16 + digit
                i += 1
            }
            guard let scalar = Unicode.Scalar(value) else { throw invalid("bad escape \\\(c)") }
            return (.scalar(scalar), .range(value, value))
        default:
            // Python refuses unknown ASCII-letter escapes; everything else stands for itself.
            if c.isASCII, c.properties.isAlphabetic { throw invalid("bad escape \\\(c)") }
            return (.scalar(c), .range(c.value, c.value))
        }
    }

    mutating func characterClass() throws(ModulePatternError) -> ScalarClass {
        var set = ScalarClass()
        if peek() == "^" { set.negated = true; i += 1 }
        var first = true
        while true {
            guard let c = peek() else { throw invalid("unterminated character set") }
            if c == "]" && !first { i += 1; break }
            first = false
            i += 1
            var low: UInt32
            if c == "\\" {
                let (_, item) = try escape(inClass: true)
                guard case let .range(lo, _)? = item else {
                    if let item { set.items.append(item) }
                    continue
                }
                low = lo
            } else {
                low = c.value
            }
            if peek() == "-", let next = peek(1), next != "]" {
                i += 2
                var high = next.value
                if next == "\\" {
                    let (_, item) = try escape(inClass: true)
                    guard case let .range(hi, _)? = item else { throw invalid("bad character range") }
                    high = hi
                }
                guard low <= high else { throw invalid("bad character range") }
                set.items.append(.range(low, high))
            } else {
                set.items.append(.range(low, low))
            }
        }
        return set
    }
}

// MARK: - Matching

/// Thompson's construction: `split` forks, `jump` goes on, the rest consume a scalar or assert.
private struct Program: Sendable {
    enum Instruction: Sendable {
        case scalar(Unicode.Scalar), any, set(ScalarClass)
        case split(Int, Int), jump(Int)
        case start, end, match
        case lookahead(Int, negative: Bool)   // index into `lookaheads`
    }
    var code: [Instruction] = []
    var lookaheads: [Program] = []

    init(_ node: PatternNode) throws(ModulePatternError) {
        try emit(node)
        code.append(.match)
    }

    var size: Int { code.count + lookaheads.reduce(0) { $0 + $1.size } }

    mutating func emit(_ node: PatternNode) throws(ModulePatternError) {
        guard size <= ModulePattern.maximumProgramSize else { throw .tooLarge(pattern: "", instructions: size) }
        switch node {
        case .empty: break
        case .scalar(let c): code.append(.scalar(c))
        case .any: code.append(.any)
        case .set(let set): code.append(.set(set))
        case .start: code.append(.start)
        case .end: code.append(.end)
        case .concat(let items): for item in items { try emit(item) }
        case .alternation(let branches):
            // split L1, next; L1: a; jump end; next: split L2, … ; last branch.
            var jumps: [Int] = []
            for (k, branch) in branches.enumerated() {
                if k < branches.count - 1 {
                    let split = code.count
                    code.append(.split(split + 1, -1))
                    try emit(branch)
                    jumps.append(code.count)
                    code.append(.jump(-1))
                    code[split] = .split(split + 1, code.count)
                } else {
                    try emit(branch)
                }
            }
            for j in jumps { code[j] = .jump(code.count) }
        case let .repetition(inner, lo, hi):
            for _ in 0..<lo { try emit(inner) }
            if let hi {
                // Each optional copy: split into it or past all the rest.
                var splits: [Int] = []
                for _ in lo..<hi {
                    splits.append(code.count)
                    code.append(.split(code.count + 1, -1))
                    try emit(inner)
                }
                for sp in splits { code[sp] = .split(sp + 1, code.count) }
            } else {
                let loop = code.count
                code.append(.split(loop + 1, -1))
                try emit(inner)
                code.append(.jump(loop))
                code[loop] = .split(loop + 1, code.count)
            }
        case let .lookahead(inner, negative):
            let sub = try Program(inner)
            lookaheads.append(sub)
            code.append(.lookahead(lookaheads.count - 1, negative: negative))
        }
        guard size <= ModulePattern.maximumProgramSize else { throw .tooLarge(pattern: "", instructions: size) }
    }

    /// The offsets where a match starting at `from` ends (only `input.count` when `requireEnd`).
    /// Threads advance in lock step over the input: each instruction is visited at most once
    /// per position, so the work is O(input × program) plus the lookaheads' own runs — each
    /// lookahead instruction, too, runs at most once per position.
    func run(_ input: [Unicode.Scalar], from: Int, requireEnd: Bool) -> Set<Int> {
        var ends = Set<Int>()
        var current: [Int] = []
        var seen = [Int](repeating: -1, count: code.count)
        func add(_ pc: Int, _ pos: Int, _ list: inout [Int]) {
            var stack = [pc]
            while let pc = stack.popLast() {
                guard seen[pc] != pos else { continue }
                seen[pc] = pos
                switch code[pc] {
                case let .split(a, b): stack.append(b); stack.append(a)
                case let .jump(a): stack.append(a)
                case .start: if pos == 0 { stack.append(pc + 1) }
                case .end: if pos == input.count { stack.append(pc + 1) }
                case let .lookahead(k, negative):
                    let matches = !lookaheads[k].run(input, from: pos, requireEnd: false).isEmpty
                    if matches != negative { stack.append(pc + 1) }
                case .match: ends.insert(pos)
                default: list.append(pc)
                }
            }
        }
        add(0, from, &current)
        var pos = from
        while pos < input.count && !current.isEmpty {
            let c = input[pos]
            var next: [Int] = []
            pos += 1
            for pc in current {
                let ok = switch code[pc] {
                case .scalar(let s): s == c
                case .any: c != "\n"
                case .set(let set): set.contains(c)
                default: false
                }
                if ok { add(pc + 1, pos, &next) }
            }
            current = next
        }
        return requireEnd ? ends.filter { $0 == input.count } : ends
    }
}
