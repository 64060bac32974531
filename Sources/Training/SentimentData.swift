import Foundation
import Kernels

/// The sentiment experiment's data: Hutto & Gilbert's ground-truth files (`id \t mean score \t
/// sentence`, scores in [−4, 4], CRLF). Label = score > 0; score = 0 is dropped (neither).
public enum SentimentData {
    public struct Sentence: Sendable, Equatable {
        public var id: String
        public var score: Double
        public var text: String
        public var label: String { score > 0 ? "positive" : "negative" }
    }

    /// Parses a ground-truth file; a line that is not `id \t number \t text` is an error with
    /// its line number. Neutral sentences (score 0) are dropped and counted.
    public static func parse(_ data: Data, file: String) throws(DataError) -> (sentences: [Sentence], neutral: Int) {
        let text = String(decoding: data, as: UTF8.self)
        var sentences: [Sentence] = [], neutral = 0
        // "\r\n" is one Character in Swift, so split on both forms of line end.
        for (index, line) in text.split(omittingEmptySubsequences: false, whereSeparator: { $0 == "\n" || $0 == "\r\n" }).enumerated() {
            if line.trimmingCharacters(in: .whitespaces).isEmpty { continue }
            let fields = line.split(separator: "\t", maxSplits: 2, omittingEmptySubsequences: false)
            guard fields.count == 3, let score = Double(fields[1]), score.isFinite, abs(score) <= 4 else {
                throw .malformed(file: file, line: index + 1, reason: "expected 'id<TAB>score in [-4, 4]<TAB>sentence'")
            }
            let sentence = fields[2].trimmingCharacters(in: .whitespaces)
            guard !sentence.isEmpty else { throw .malformed(file: file, line: index + 1, reason: "empty sentence") }
            if score == 0 { neutral += 1; continue }
            sentences.append(Sentence(id: String(fields[0]), score: score, text: sentence))
        }
        guard !sentences.isEmpty else { throw .empty(file: file) }
        return (sentences, neutral)
    }

    /// Seeded shuffle, then train / validation / test by fractions (the test split is never
    /// trained on; the validation split chooses the best checkpoint).
    public static func split(_ sentences: [Sentence], seed: UInt64, valid: Double = 0.1, test: Double = 0.1)
        -> (train: [Sentence], valid: [Sentence], test: [Sentence]) {
        var g = SplitMix64(seed: seed)
        var shuffled = sentences
        for i in stride(from: shuffled.count - 1, to: 0, by: -1) {
            let j = Int(g.next() % UInt64(i + 1))
            shuffled.swapAt(i, j)
        }
        let nTest = Int((Double(shuffled.count) * test).rounded()), nValid = Int((Double(shuffled.count) * valid).rounded())
        let testSet = Array(shuffled.prefix(nTest))
        let validSet = Array(shuffled.dropFirst(nTest).prefix(nValid))
        let trainSet = Array(shuffled.dropFirst(nTest + nValid))
        return (trainSet, validSet, testSet)
    }

    /// `{"text", "label"}` JSONL.
    public static func jsonl(_ sentences: [Sentence]) -> Data {
        var out = ""
        for s in sentences {
            let object: [String: String] = ["text": s.text, "label": s.label]
            if let data = try? JSONSerialization.data(withJSONObject: object, options: [.sortedKeys, .withoutEscapingSlashes]) {
                out += String(decoding: data, as: UTF8.self) + "\n"
            }
        }
        return Data(out.utf8)
    }

    /// Writes train / valid / test (movie reviews) and ood-test (Amazon review snippets) JSONL
    /// files into `output` from the ground-truth folder; returns a line per file with its counts.
    public static func prepare(groundTruth folder: URL, output: URL, seed: UInt64) throws -> [String] {
        func load(_ name: String) throws -> (sentences: [Sentence], neutral: Int) {
            let url = folder.appendingPathComponent(name)
            let data: Data
            do { data = try Data(contentsOf: url) } catch { throw DataError.cannotRead(file: url.path, reason: error.localizedDescription) }
            return try parse(data, file: url.path)
        }
        let movies = try load("movieReviewSnippets_GroundTruth.txt")
        let amazon = try load("amazonReviewSnippets_GroundTruth.txt")
        let (train, valid, test) = split(movies.sentences, seed: seed)
        try FileManager.default.createDirectory(at: output, withIntermediateDirectories: true)
        var lines: [String] = []
        for (name, set) in [("train", train), ("valid", valid), ("test", test), ("ood-test", amazon.sentences)] {
            try jsonl(set).write(to: output.appendingPathComponent("\(name).jsonl"), options: .atomic)
            let positive = set.filter { $0.score > 0 }.count
            lines.append("\(name).jsonl: \(set.count) sentences (\(positive) positive, \(set.count - positive) negative)")
        }
        lines.append("dropped as neutral (score 0): \(movies.neutral) movie, \(amazon.neutral) Amazon sentences; split seed \(seed)")
        return lines
    }
}
