import Foundation
import Formats
import ModelStore
import TestSupport
import Testing
import Tokenizers

/// Gemma 3 270M's SentencePiece tokenizer, built from the GGUF's metadata, against transformers
/// building it from the same file (`Scripts/reference/make_gemma_tokenizer_fixtures.py`).
@Suite("Gemma 3 tokenizer (SentencePiece BPE from GGUF)")
struct GemmaTokenizerTests {
    struct Fixture: Decodable {
        struct Case: Decodable { let name: String; let text: String; let ids: [Int]; let decoded: String; let decoded_skip: String }
        let bos_token_id: Int, eos_token_id: Int, pad_token_id: Int, unk_token_id: Int, vocabulary_size: Int
        let cases: [Case]
    }

    @Test func idsAndDecodingMatchTransformers() throws {
        let fixture = try JSONDecoder().decode(Fixture.self, from: Data(contentsOf: fixturesDirectory.appendingPathComponent("tokenizers/gemma-3-270m.json")))
        let gguf = try GGUFFile(url: try realModel(.gemma3))
        let start = Date()
        let tokenizer = try ggufTokenizer(gguf)
        print("Gemma 3 tokenizer built in \(String(format: "%.2f", Date().timeIntervalSince(start))) s")
        #expect(tokenizer is SentencePieceBPETokenizer)
        #expect(tokenizer.bosTokenId == fixture.bos_token_id && tokenizer.eosTokenId == fixture.eos_token_id)
        #expect(tokenizer.padTokenId == fixture.pad_token_id && tokenizer.unknownTokenId == fixture.unk_token_id)
        #expect(tokenizer.vocabularySize == fixture.vocabulary_size)
        #expect(tokenizer.id(of: "<start_of_turn>") == 105 && tokenizer.id(of: "<end_of_turn>") == 106)
        var idMismatches: [String] = [], decodeMismatches: [String] = []
        var tokens = 0
        for c in fixture.cases {
            let ids = tokenizer.encode(c.text, addSpecialTokens: true)
            tokens += ids.count
            if ids != c.ids { idMismatches.append("\(c.name): \(ids.prefix(24)) vs \(c.ids.prefix(24))") }
            if tokenizer.decode(c.ids, skipSpecialTokens: false) != c.decoded || tokenizer.decode(c.ids, skipSpecialTokens: true) != c.decoded_skip {
                decodeMismatches.append(c.name)
            }
        }
        print("Gemma 3 tokenizer: \(fixture.cases.count) cases, \(tokens) ids; id mismatches \(idMismatches.count), decode mismatches \(decodeMismatches.count)")
        #expect(idMismatches.isEmpty, "\(idMismatches)")
        #expect(decodeMismatches.isEmpty, "\(decodeMismatches)")
    }
}
