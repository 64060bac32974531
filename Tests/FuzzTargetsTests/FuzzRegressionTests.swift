import Foundation
import FuzzTargets
import Testing
import TestSupport

/// Replays the fuzz corpus's seeds and every input the fuzzer ever found through the same
/// harness libFuzzer drives (Sources/FuzzTargets), without libFuzzer: each found input must now
/// give the recorded outcome, and no seed may break an invariant.
@Suite struct FuzzRegressionTests {
    struct Finding: Decodable {
        let target: String, file: String, found: String, cause: String, fix: String, outcome: String, message: String
    }

    static let findingsDirectory = fixturesDirectory.appendingPathComponent("fuzz")
    static let seedsDirectory = fixturesDirectory.deletingLastPathComponent().deletingLastPathComponent()
        .appendingPathComponent("Fuzz/seeds")
    static let harness = Result { try FuzzHarness.standard(fixtures: fixturesDirectory, realModels: false).0 }

    static func findings() throws -> [Finding] {
        try JSONDecoder().decode([Finding].self, from: Data(contentsOf: findingsDirectory.appendingPathComponent("findings.json")))
    }

    static func files(in directory: URL) -> [URL] {
        ((try? FileManager.default.contentsOfDirectory(at: directory, includingPropertiesForKeys: nil)) ?? [])
            .sorted { $0.lastPathComponent < $1.lastPathComponent }
    }

    @Test func everyFoundInputGivesItsRecordedOutcome() throws {
        let harness = try Self.harness.get()
        let findings = try Self.findings()
        for finding in findings {
            let target = try #require(FuzzTarget(rawValue: finding.target), "unknown target \(finding.target)")
            let data = try Data(contentsOf: Self.findingsDirectory.appendingPathComponent(finding.file))
            let outcome = harness.run(target, data)
            print("\(finding.file) (\(data.count) bytes): \(outcome)")
            switch (finding.outcome, outcome) {
            case ("rejected", .rejected(let message)), ("accepted", .accepted(let message)):
                #expect(message.contains(finding.message), "\(finding.file): \(message)")
            default:
                Issue.record("\(finding.file): expected \(finding.outcome), got \(outcome)")
            }
        }
        // Every kept input is listed with its cause and fix.
        let listed = Set(findings.map(\.file))
        for target in FuzzTarget.allCases {
            for url in Self.files(in: Self.findingsDirectory.appendingPathComponent(target.rawValue)) {
                #expect(listed.contains("\(target.rawValue)/\(url.lastPathComponent)"), "\(url.path) is not in findings.json")
            }
        }
    }

    @Test(arguments: FuzzTarget.allCases)
    func seedsBreakNoInvariant(_ target: FuzzTarget) throws {
        let harness = try Self.harness.get()
        let seeds = Self.files(in: Self.seedsDirectory.appendingPathComponent(target.rawValue))
        #expect(!seeds.isEmpty, "no seeds for \(target.rawValue)")
        var accepted = 0
        for url in seeds {
            let outcome = harness.run(target, try Data(contentsOf: url))
            print("\(target.rawValue)/\(url.lastPathComponent): \(outcome)")
            #expect(!outcome.isFinding, "\(url.lastPathComponent): \(outcome)")
            if case .accepted = outcome { accepted += 1 }
        }
        // The corpus starts from valid files: most seeds must get past the parser.
        #expect(accepted * 2 >= seeds.count, "\(accepted) of \(seeds.count) seeds accepted")
    }

    /// The whole-model path of the gguf target: the tiny Llama seed loads to a model.
    @Test func theLlamaSeedLoadsAModel() throws {
        let harness = try Self.harness.get()
        let outcome = harness.run(.gguf, try Data(contentsOf: Self.seedsDirectory.appendingPathComponent("gguf/tiny-llama.gguf")))
        print(outcome)
        guard case .accepted(let summary) = outcome else { Issue.record("\(outcome)"); return }
        #expect(summary.contains("model of"))
        #expect(summary.contains("tokenizer of 17"))
    }
}
