import Foundation
import Testing
import Tokenizers

@Suite("tokenizer speed")
struct TokenizerPerformanceTests {
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

    static func seconds(_ body: () throws -> Void) rethrows -> Double {
        let start = DispatchTime.now().uptimeNanoseconds
        try body()
        return Double(DispatchTime.now().uptimeNanoseconds - start) / 1e9
    }

    /// Prints the time per 100 KB (first call with an empty word cache, then warm). The bound is
    /// loose for debug builds; a release build takes milliseconds.
    @Test func hundredKilobytes() throws {
        let text = try Self.text()
        let kb = Double(text.utf8.count) / 1000
        // A fresh tokenizer, so that the first call starts with an empty word cache.
        let gguf = try RealTokenizers.smolLM2.get().gguf
        var built: ByteLevelBPETokenizer? = nil
        let buildTime = try Self.seconds { built = try ggufTokenizer(gguf) }
        let bpe = try #require(built)
        let bert = try RealTokenizers.miniLM.get()
        var bpeIds: [Int] = [], bertIds: [Int] = []
        let bpeCold = Self.seconds { bpeIds = bpe.encode(text, addSpecialTokens: true) }
        let bpeWarm = Self.seconds { bpeIds = bpe.encode(text, addSpecialTokens: true) }
        let bpeDecode = Self.seconds { _ = bpe.decode(bpeIds, skipSpecialTokens: false) }
        let bertTime = Self.seconds { bertIds = bert.encode(text, addSpecialTokens: true) }
        print(String(format: "tokenizer speed, %.0f KB: SmolLM2 BPE %.3f s cold, %.3f s warm (%d ids), decode %.3f s; MiniLM WordPiece %.3f s (%d ids); building SmolLM2's tokenizer from GGUF metadata %.3f s",
                     kb, bpeCold, bpeWarm, bpeIds.count, bpeDecode, bertTime, bertIds.count, buildTime))
        #expect(bpe.decode(bpeIds, skipSpecialTokens: false).utf8.count > 90_000)
        #expect(bpeCold < 30 && bertTime < 30)
    }
}
