import Foundation

/// A parsed JSON value. Objects keep their members in file order and compare keys byte for byte:
/// JSONSerialization and Swift dictionaries merge canonically equivalent keys (`"é"` and
/// `"e\u{301}"`), which would silently drop vocabulary entries.
public enum JSON: Sendable {
    case null
    case bool(Bool)
    case number(Double)
    case string(String)
    case array([JSON])
    case object([(key: String, value: JSON)])

    public struct ParseError: Error, CustomStringConvertible {
        public let offset: Int
        public let reason: String
        public var description: String { "\(reason) at byte \(offset)" }
    }

    public static func parse(_ data: Data) throws(ParseError) -> JSON {
        var parser = Parser(bytes: [UInt8](data))
        parser.skipWhitespace()
        let value = try parser.value(depth: 0)
        parser.skipWhitespace()
        guard parser.i == parser.bytes.count else { throw ParseError(offset: parser.i, reason: "unexpected content after the value") }
        return value
    }

    public subscript(key: String) -> JSON? {
        guard case .object(let members) = self else { return nil }
        let wanted = Array(key.utf8)
        return members.first { $0.key.utf8.elementsEqual(wanted) }?.value
    }

    public var object: [(key: String, value: JSON)]? { if case .object(let m) = self { m } else { nil } }
    public var array: [JSON]? { if case .array(let a) = self { a } else { nil } }
    public var string: String? { if case .string(let s) = self { s } else { nil } }
    public var bool: Bool? { if case .bool(let b) = self { b } else { nil } }
    public var number: Double? { if case .number(let d) = self { d } else { nil } }
    public var isNull: Bool { if case .null = self { true } else { false } }
    /// The number when it is an integer that fits an Int exactly.
    public var int: Int? {
        guard case .number(let d) = self, d.rounded() == d, abs(d) < 9.0e15 else { return nil }
        return Int(d)
    }

    private struct Parser {
        let bytes: [UInt8]
        var i = 0
        static let maximumDepth = 512

        mutating func skipWhitespace() {
            while i < bytes.count, bytes[i] == 0x20 || bytes[i] == 0x0A || bytes[i] == 0x0D || bytes[i] == 0x09 { i += 1 }
        }

        mutating func value(depth: Int) throws(ParseError) -> JSON {
            guard depth < Self.maximumDepth else { throw ParseError(offset: i, reason: "nesting deeper than \(Self.maximumDepth)") }
            guard i < bytes.count else { throw ParseError(offset: i, reason: "unexpected end of input") }
            switch bytes[i] {
            case UInt8(ascii: "{"): return try object(depth: depth)
            case UInt8(ascii: "["): return try array(depth: depth)
            case UInt8(ascii: "\""): return .string(try string())
            case UInt8(ascii: "t"): try literal("true"); return .bool(true)
            case UInt8(ascii: "f"): try literal("false"); return .bool(false)
            case UInt8(ascii: "n"): try literal("null"); return .null
            case UInt8(ascii: "-"), UInt8(ascii: "0")...UInt8(ascii: "9"): return try number()
            default: throw ParseError(offset: i, reason: "unexpected character '\(Unicode.Scalar(bytes[i]))'")
            }
        }

        mutating func literal(_ word: StaticString) throws(ParseError) {
            let n = word.utf8CodeUnitCount
            let expected = UnsafeBufferPointer(start: word.utf8Start, count: n)
            guard i + n <= bytes.count, bytes[i..<(i + n)].elementsEqual(expected) else {
                throw ParseError(offset: i, reason: "invalid literal")
            }
            i += n
        }

        mutating func object(depth: Int) throws(ParseError) -> JSON {
            i += 1
            var members: [(key: String, value: JSON)] = []
            skipWhitespace()
            if i < bytes.count, bytes[i] == UInt8(ascii: "}") { i += 1; return .object(members) }
            while true {
                skipWhitespace()
                guard i < bytes.count, bytes[i] == UInt8(ascii: "\"") else { throw ParseError(offset: i, reason: "expected a member name") }
                let key = try string()
                skipWhitespace()
                guard i < bytes.count, bytes[i] == UInt8(ascii: ":") else { throw ParseError(offset: i, reason: "expected ':'") }
                i += 1
                skipWhitespace()
                members.append((key, try value(depth: depth + 1)))
                skipWhitespace()
                guard i < bytes.count else { throw ParseError(offset: i, reason: "unterminated object") }
                if bytes[i] == UInt8(ascii: ",") { i += 1; continue }
                if bytes[i] == UInt8(ascii: "}") { i += 1; return .object(members) }
                throw ParseError(offset: i, reason: "expected ',' or '}'")
            }
        }

        mutating func array(depth: Int) throws(ParseError) -> JSON {
            i += 1
            var elements: [JSON] = []
            skipWhitespace()
            if i < bytes.count, bytes[i] == UInt8(ascii: "]") { i += 1; return .array(elements) }
            while true {
                skipWhitespace()
                elements.append(try value(depth: depth + 1))
                skipWhitespace()
                guard i < bytes.count else { throw ParseError(offset: i, reason: "unterminated array") }
                if bytes[i] == UInt8(ascii: ",") { i += 1; continue }
                if bytes[i] == UInt8(ascii: "]") { i += 1; return .array(elements) }
                throw ParseError(offset: i, reason: "expected ',' or ']'")
            }
        }

        mutating func number() throws(ParseError) -> JSON {
            let start = i
            if bytes[i] == UInt8(ascii: "-") { i += 1 }
            func digits() -> Int {
                let s = i
                while i < bytes.count, bytes[i] >= UInt8(ascii: "0"), bytes[i] <= UInt8(ascii: "9") { i += 1 }
                return i - s
            }
            guard digits() > 0 else { throw ParseError(offset: i, reason: "invalid number") }
            if i < bytes.count, bytes[i] == UInt8(ascii: ".") {
                i += 1
                guard digits() > 0 else { throw ParseError(offset: i, reason: "invalid number") }
            }
            if i < bytes.count, bytes[i] == UInt8(ascii: "e") || bytes[i] == UInt8(ascii: "E") {
                i += 1
                if i < bytes.count, bytes[i] == UInt8(ascii: "+") || bytes[i] == UInt8(ascii: "-") { i += 1 }
                guard digits() > 0 else { throw ParseError(offset: i, reason: "invalid number") }
            }
            guard let d = Double(String(decoding: bytes[start..<i], as: UTF8.self)) else {
                throw ParseError(offset: start, reason: "invalid number")
            }
            return .number(d)
        }

        mutating func hex4() throws(ParseError) -> UInt32 {
            guard i + 4 <= bytes.count else { throw ParseError(offset: i, reason: "truncated \\u escape") }
            var v: UInt32 = 0
            for _ in 0..<4 {
                let c = bytes[i]
                let d: UInt8
                switch c {
                case UInt8(ascii: "0")...UInt8(ascii: "9"): d = c - UInt8(ascii: "0")
                case UInt8(ascii: "a")...UInt8(ascii: "f"): d = c - UInt8(ascii: "a") + 10
                case UInt8(ascii: "A")...UInt8(ascii: "F"): d = c - UInt8(ascii: "A") + 10
                default: throw ParseError(offset: i, reason: "invalid \\u escape")
                }
                v = v << 4 | UInt32(d)
                i += 1
            }
            return v
        }

        mutating func string() throws(ParseError) -> String {
            let open = i
            i += 1
            var buffer: [UInt8] = []
            while true {
                guard i < bytes.count else { throw ParseError(offset: open, reason: "unterminated string") }
                let c = bytes[i]
                if c == UInt8(ascii: "\"") { i += 1; break }
                if c < 0x20 { throw ParseError(offset: i, reason: "control character in a string") }
                if c != UInt8(ascii: "\\") { buffer.append(c); i += 1; continue }
                i += 1
                guard i < bytes.count else { throw ParseError(offset: open, reason: "unterminated string") }
                let e = bytes[i]
                i += 1
                switch e {
                case UInt8(ascii: "\""), UInt8(ascii: "\\"), UInt8(ascii: "/"): buffer.append(e)
                case UInt8(ascii: "b"): buffer.append(0x08)
                case UInt8(ascii: "f"): buffer.append(0x0C)
                case UInt8(ascii: "n"): buffer.append(0x0A)
                case UInt8(ascii: "r"): buffer.append(0x0D)
                case UInt8(ascii: "t"): buffer.append(0x09)
                case UInt8(ascii: "u"):
                    let at = i - 2
                    var v = try hex4()
                    if (0xD800...0xDBFF).contains(v) {
                        // A UTF-16 surrogate pair; a lone surrogate is an error, as in serde_json.
                        guard i + 6 <= bytes.count, bytes[i] == UInt8(ascii: "\\"), bytes[i + 1] == UInt8(ascii: "u") else {
                            throw ParseError(offset: at, reason: "lone surrogate in \\u escape")
                        }
                        i += 2
                        let low = try hex4()
                        guard (0xDC00...0xDFFF).contains(low) else { throw ParseError(offset: at, reason: "lone surrogate in \\u escape") }
                        v = 0x10000 + ((v - 0xD800) << 10) + (low - 0xDC00)
                    }
                    guard let scalar = Unicode.Scalar(v) else { throw ParseError(offset: at, reason: "lone surrogate in \\u escape") }
                    UTF8.encode(scalar) { buffer.append($0) }
                default: throw ParseError(offset: i - 1, reason: "invalid escape")
                }
            }
            guard let s = String(validating: buffer, as: UTF8.self) else { throw ParseError(offset: open, reason: "invalid UTF-8 in a string") }
            return s
        }
    }
}

extension JSON {
    /// JSON text, objects' members in their stored order, two-space indentation (as Python's
    /// `json.dumps(indent=2)`); integral numbers print without a fraction.
    public func serialized(indent: Int = 0) -> String {
        let pad = String(repeating: " ", count: indent + 2), closing = String(repeating: " ", count: indent)
        switch self {
        case .null: return "null"
        case .bool(let b): return b ? "true" : "false"
        case .number(let d):
            if d.rounded() == d && abs(d) < 9.0e15 { return String(Int(d)) }
            return d.isFinite ? "\(d)" : "null"
        case .string(let s): return Self.quote(s)
        case .array(let a):
            if a.isEmpty { return "[]" }
            return "[\n" + a.map { pad + $0.serialized(indent: indent + 2) }.joined(separator: ",\n") + "\n" + closing + "]"
        case .object(let members):
            if members.isEmpty { return "{}" }
            return "{\n" + members.map { pad + Self.quote($0.key) + ": " + $0.value.serialized(indent: indent + 2) }
                .joined(separator: ",\n") + "\n" + closing + "}"
        }
    }

    /// A JSON string literal as Python's `json.dumps(s, ensure_ascii=False)` writes it.
    public static func quote(_ s: String) -> String {
        var out = "\""
        for scalar in s.unicodeScalars {
            switch scalar {
            case "\"": out += "\\\""
            case "\\": out += "\\\\"
            case "\n": out += "\\n"
            case "\r": out += "\\r"
            case "\t": out += "\\t"
            case "\u{08}": out += "\\b"
            case "\u{0C}": out += "\\f"
            case _ where scalar.value < 0x20: out += String(format: "\\u%04x", scalar.value)
            default: out.unicodeScalars.append(scalar)
            }
        }
        return out + "\""
    }
}
