import Foundation
import TestSupport
import Testing
import Tokenizers

@Suite("WordPiece tokenizer")
struct WordPieceTests {
    @Test func miniLMMatchesTransformers() throws {
        let tokenizer = try RealTokenizers.miniLM.get()
        let fixture = try loadFixture("all-minilm-l6-v2.json", as: MiniLMFixture.self)
        let corpus = try Corpus.load()
        try #require(corpus.count == fixture.cases.count)
        #expect(tokenizer.vocabularySize == fixture.vocabulary_size)
        #expect(tokenizer.classifierTokenId == fixture.cls_token_id && tokenizer.separatorTokenId == fixture.sep_token_id)
        #expect(tokenizer.padTokenId == fixture.pad_token_id && tokenizer.unknownTokenId == fixture.unk_token_id)
        #expect(tokenizer.bosTokenId == nil && tokenizer.eosTokenId == nil)

        var matched = 0, decodes = 0
        for (c, f) in zip(corpus, fixture.cases) {
            let ids = tokenizer.encode(c.text, addSpecialTokens: true)
            #expect(ids == f.ids, "\(c.name)")
            if ids == f.ids { matched += 1 }
            #expect(tokenizer.encode(c.text, addSpecialTokens: false) == Array(f.ids.dropFirst().dropLast()), "\(c.name)")
            let decoded = tokenizer.decode(f.ids, skipSpecialTokens: false)
            let skipped = tokenizer.decode(f.ids, skipSpecialTokens: true)
            #expect(decoded.unicodeScalars.elementsEqual(f.decoded.unicodeScalars), "\(c.name): \(decoded.debugDescription)")
            #expect(skipped.unicodeScalars.elementsEqual(f.decoded_skip_special.unicodeScalars), "\(c.name): \(skipped.debugDescription)")
            if decoded.unicodeScalars.elementsEqual(f.decoded.unicodeScalars), skipped.unicodeScalars.elementsEqual(f.decoded_skip_special.unicodeScalars) { decodes += 1 }
        }
        print("all-MiniLM-L6-v2: \(matched)/\(corpus.count) corpus cases identical to transformers, \(decodes)/\(corpus.count) decodes")
    }

    @Test func pairsAndTruncationMatchTransformers() throws {
        let tokenizer = try RealTokenizers.miniLM.get()
        let fixture = try loadFixture("all-minilm-l6-v2.json", as: MiniLMFixture.self)
        var matched = 0
        for p in fixture.pairs {
            let (ids, typeIds) = tokenizer.encodePair(p.a, p.b, maxLength: p.max_length)
            #expect(ids == p.ids, "\(p.a) | \(p.b ?? "nil") | \(p.max_length.map(String.init) ?? "-")")
            #expect(typeIds == p.type_ids, "\(p.a) | \(p.b ?? "nil")")
            if ids == p.ids, typeIds == p.type_ids { matched += 1 }
        }
        print("all-MiniLM-L6-v2 pairs: \(matched)/\(fixture.pairs.count) identical to transformers (ids and token type ids)")

        let padded = tokenizer.pad(tokenizer.encodePair("hi", "there", maxLength: nil), to: 8)
        #expect(padded.ids == [101, 7632, 102, 2045, 102, 0, 0, 0])
        #expect(padded.typeIds == [0, 0, 0, 1, 1, 0, 0, 0] && padded.attentionMask == [1, 1, 1, 1, 1, 0, 0, 0])
    }

    /// vocab.txt + tokenizer_config.json alone (the fallback when tokenizer.json is missing)
    /// gives the same tokenizer; the script checks transformers agrees.
    @Test func vocabTxtFallbackMatches() throws {
        let directory = try realModel(.miniLM)
        let scratch = FileManager.default.temporaryDirectory.appendingPathComponent("tok-vocab-\(UUID().uuidString)")
        try FileManager.default.createDirectory(at: scratch, withIntermediateDirectories: true)
        defer { try? FileManager.default.removeItem(at: scratch) }
        for name in ["vocab.txt", "tokenizer_config.json", "special_tokens_map.json"] {
            try FileManager.default.copyItem(at: directory.appendingPathComponent(name), to: scratch.appendingPathComponent(name))
        }
        let tokenizer = try #require(try loadTokenizer(huggingFaceDirectory: scratch) as? WordPieceTokenizer)
        let fixture = try loadFixture("all-minilm-l6-v2.json", as: MiniLMFixture.self)
        let corpus = try Corpus.load()
        let failed = zip(corpus, fixture.cases).filter { tokenizer.encode($0.text, addSpecialTokens: true) != $1.ids }.map(\.0.name)
        #expect(failed.isEmpty, "\(failed)")
        for (_, f) in zip(corpus, fixture.cases) {
            #expect(tokenizer.decode(f.ids, skipSpecialTokens: false).unicodeScalars.elementsEqual(f.decoded.unicodeScalars))
        }
        for p in fixture.pairs {
            let (ids, typeIds) = tokenizer.encodePair(p.a, p.b, maxLength: p.max_length)
            #expect(ids == p.ids && typeIds == p.type_ids)
        }
        print("all-MiniLM-L6-v2 from vocab.txt: \(corpus.count - failed.count)/\(corpus.count) corpus cases identical")
    }

    @Test func smallVocabularyBehaviour() throws {
        let vocab = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", "un", "##aff", "##able", "hello", ",", "é", "e", "x"].joined(separator: "\r\n") + "\r\n"
        let uncased = try WordPieceTokenizer(vocabTxt: vocab)
        #expect(uncased.encode("UnAffable, HELLO", addSpecialTokens: true) == [2, 5, 6, 7, 9, 8, 3])
        #expect(uncased.encode("unaffablex", addSpecialTokens: false) == [1])     // cannot be cut: the whole word is [UNK]
        #expect(uncased.encode("É [MASK]", addSpecialTokens: false) == [11, 4])     // accent stripped; [MASK] matched whole
        #expect(uncased.decode([2, 5, 6, 7, 9, 8, 3], skipSpecialTokens: true) == "unaffable, hello")
        let cased = try WordPieceTokenizer(vocabTxt: vocab, lowercase: false)
        #expect(cased.encode("é E", addSpecialTokens: false) == [10, 1])
        #expect(throws: TokenizerError.unknownSpecialToken(file: "v.txt", role: "unk_token", token: "[UNK]")) {
            try WordPieceTokenizer(vocabTxt: "a\nb\n", source: "v.txt")
        }
        #expect(throws: TokenizerError.emptyVocabulary(file: "v.txt")) { try WordPieceTokenizer(vocabTxt: "", source: "v.txt") }
    }
}
