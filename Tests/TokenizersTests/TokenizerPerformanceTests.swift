import Foundation
import Testing
import Tokenizers

/// Long inputs: 100 KB of mixed text goes through both tokenizers and back. (Speed is measured
/// by `lora-bench`, not here: tests do not time things.)
@Suite("tokenizers on long text")
struct LongTextTests {
    /// About 100 KB of mixed text: the corpus repeated, then prose with numbers.
    static func text() throws -> String {
        let corpus = try Corpus.load().map(\.text).joined(separator: "\n")
        var text = ""
        var i = 0
        while text.utf8.count < 100_000 {
            text += corpus
            text += " Paragraph \(i): the quick brown fox jumps over \(i * 7919) lazy dogs, twice.\n"
            i += 1
        }
        return text
    }

    @Test func hundredKilobytes() throws {
        let text = try Self.text()
        let bpe = try RealTokenizers.smolLM2.get().tokenizer
        let bert = try RealTokenizers.miniLM.get()
        let bpeIds = bpe.encode(text, addSpecialTokens: true)
        let bertIds = bert.encode(text, addSpecialTokens: true)
        let decoded = bpe.decode(bpeIds, skipSpecialTokens: false)
        print("100 KB: SmolLM2 BPE \(bpeIds.count) ids, MiniLM WordPiece \(bertIds.count) ids; BPE decode \(decoded.utf8.count) bytes")
        #expect(decoded.utf8.count > 90_000)
        #expect(bertIds.first == bert.classifierTokenId && bertIds.last == bert.separatorTokenId)
    }
}
