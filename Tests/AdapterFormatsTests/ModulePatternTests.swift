import Foundation
import AdapterFormats
import LoRA
import Testing
import TestSupport

/// The linear-time module-pattern matcher against Python's `re` (what PEFT matches with), on
/// real module paths; and the patterns that make a backtracking engine take exponential time.
@Suite("Module patterns")
struct ModulePatternTests {
    struct Fixture: Decodable {
        struct Case: Decodable { let pattern: String, path: String, fullmatch: Bool, match_end: Int? }
        let python: String
        let cases: [Case]
        let invalid: [String]
    }

    static let fixture = Result {
        try JSONDecoder().decode(Fixture.self, from: Data(contentsOf: fixturesDirectory.appendingPathComponent("module-patterns.json")))
    }

    @Test func agreesWithPythonRe() throws {
        let fixture = try Self.fixture.get()
        var compiled: [String: ModulePattern] = [:]
        var disagreements = 0
        for c in fixture.cases {
            let pattern = try compiled[c.pattern] ?? ModulePattern(c.pattern)
            compiled[c.pattern] = pattern
            let full = pattern.fullMatch(c.path)
            if full != c.fullmatch { disagreements += 1 }
            #expect(full == c.fullmatch, "fullmatch(\(c.pattern), \(c.path)): \(full), Python \(c.fullmatch)")
            // re.match's end is one of the ends a match from the start can have; none when it fails.
            let ends = pattern.prefixMatchEnds(c.path)
            if let end = c.match_end {
                #expect(ends.contains(end), "match(\(c.pattern), \(c.path)) ends at \(end) in Python; ours: \(ends)")
            } else {
                #expect(ends.isEmpty, "match(\(c.pattern), \(c.path)) fails in Python; ours ends at \(ends)")
            }
        }
        print("\(fixture.cases.count) pattern × path cases against \(fixture.python): \(disagreements) disagreements")
        for pattern in fixture.invalid {
            #expect(throws: ModulePatternError.self, "\(pattern)") { try ModulePattern(pattern) }
        }
    }

    /// Patterns that send a backtracking engine (Python's re, Swift's Regex) into exponential
    /// time on a path of a few dozen characters are answered at once here. (Python needs
    /// minutes for these at 30 characters; `lora` used Swift's Regex until the fuzzing work.)
    @Test func catastrophicPatternsAreAnsweredAtOnce() throws {
        let path = "model.layers.11.self_attn.q_proj.base_layer.lora_A.default" + String(repeating: "a", count: 200)
        let start = Date()
        // None can match: the path does not end in x, .dense or query.
        for source in [#"(.*)*x"#, #"(.*.*.*)*\.dense"#, #"(\w|\W|.)*query"#, #"(a+)+$x"#, #"(a|aa)*b"#, #"((a*)*)*c"#] {
            #expect(try !ModulePattern(source).fullMatch(path), "\(source)")
        }
        // And they still match what they should.
        #expect(try ModulePattern(#"(\w|\W|.)*query"#).fullMatch(path + "query"))
        print("6 catastrophic patterns on a \(path.count)-character path: \(Date().timeIntervalSince(start)) s")
    }

    @Test func unsupportedFeaturesAndHugePatternsAreRefused() {
        for source in [#"(a)\1"#, #"(?<=x)y"#, #"(?i)q_proj"#, #"\bq"#, #"a*+"#, #"(?P=name)"#, #"(?#c)"#] {
            #expect(throws: ModulePatternError.self, "\(source)") { try ModulePattern(source) }
        }
        #expect(throws: ModulePatternError.self) { try ModulePattern("(x{1000}){1000}") }
        do {
            _ = try ModulePattern(#"(?<=self_attn\.)q_proj"#)
        } catch {
            print("refusal message: \(error)")
            #expect(error.description.contains("lookbehind"))
        }
    }
}
