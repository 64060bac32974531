import Foundation
import ModelStore
import TestSupport
import Testing
@testable import Training

@Suite("Sentiment data preparation")
struct SentimentDataTests {
    @Test func parsesGroundTruthWithCRLFAndDropsNeutral() throws {
        let text = "1\t2.5\tA fine film.\r\n2\t0\tIt exists.\r\n3\t-1.75\tDull\tand long.\r\n\r\n"
        let (sentences, neutral) = try SentimentData.parse(Data(text.utf8), file: "t.txt")
        #expect(sentences.map(\.label) == ["positive", "negative"] && neutral == 1)
        #expect(sentences[1].text == "Dull\tand long.")
        #expect(throws: DataError.malformed(file: "t.txt", line: 2, reason: "expected 'id<TAB>score in [-4, 4]<TAB>sentence'")) {
            _ = try SentimentData.parse(Data("1\t1\tok\r\n2\tseven\tbad\r\n".utf8), file: "t.txt")
        }
        #expect(throws: DataError.self) { _ = try SentimentData.parse(Data("1\t9\ttoo high\n".utf8), file: "t.txt") }
        #expect(throws: DataError.empty(file: "t.txt")) { _ = try SentimentData.parse(Data("1\t0\tneutral\n".utf8), file: "t.txt") }
    }

    @Test func realDataSplitsAreDisjointAndReproducible() throws {
        let folder = try ModelStore().fetch(.vaderSentiment) { print("[store] \($0)") }
        let data = try Data(contentsOf: folder.appendingPathComponent("movieReviewSnippets_GroundTruth.txt"))
        let (sentences, neutral) = try SentimentData.parse(data, file: "movies")
        print("movie sentences: \(sentences.count) labelled, \(neutral) neutral dropped")
        #expect(sentences.count + neutral == 10_605)
        let a = SentimentData.split(sentences, seed: 0), b = SentimentData.split(sentences, seed: 0)
        #expect(a.train == b.train && a.test == b.test)
        let ids = [a.train, a.valid, a.test].map { Set($0.map(\.id)) }
        #expect(ids[0].isDisjoint(with: ids[2]) && ids[1].isDisjoint(with: ids[2]) && ids[0].isDisjoint(with: ids[1]))
        #expect(a.train.count + a.valid.count + a.test.count == sentences.count)
        #expect(SentimentData.split(sentences, seed: 1).test != a.test)
    }
}
