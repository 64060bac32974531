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

    /// The tokenizer written as `tokenizer.json` (what `lora merge` puts beside a Gemma) and read
    /// back gives transformers' ids on every case. (The same files equal, component by component and
    /// merge by merge, the tokenizer.json transformers saves from the GGUF: 514,906 merges, checked
    /// with `Scripts/reference/check_exported_tokenizer.py`.)
    @Test func exportedTokenizerJSONReadsBackToTransformersIds() throws {
        let fixture = try JSONDecoder().decode(Fixture.self, from: Data(contentsOf: fixturesDirectory.appendingPathComponent("tokenizers/gemma-3-270m.json")))
        let tokenizer = try #require(try ggufTokenizer(GGUFFile(url: try realModel(.gemma3))) as? SentencePieceBPETokenizer)
        let dir = URL(fileURLWithPath: NSTemporaryDirectory()).appendingPathComponent("lora-gemma-tokenizer-\(UUID().uuidString)")
        try FileManager.default.createDirectory(at: dir, withIntermediateDirectories: true)
        defer { try? FileManager.default.removeItem(at: dir) }
        for (name, data) in try tokenizer.huggingFaceFiles(chatTemplate: nil, modelMaxLength: 32_768) { try data.write(to: dir.appendingPathComponent(name)) }
        let reloaded = try loadTokenizer(huggingFaceDirectory: dir)
        #expect(reloaded is SentencePieceBPETokenizer && reloaded.vocabularySize == fixture.vocabulary_size)
        #expect(reloaded.bosTokenId == fixture.bos_token_id && reloaded.eosTokenId == fixture.eos_token_id && reloaded.padTokenId == fixture.pad_token_id)
        let mismatches = fixture.cases.filter { reloaded.encode($0.text, addSpecialTokens: true) != $0.ids || reloaded.decode($0.ids, skipSpecialTokens: false) != $0.decoded }
        print("Gemma 3 tokenizer.json written and read back: \(fixture.cases.count - mismatches.count)/\(fixture.cases.count) cases identical to transformers")
        #expect(mismatches.isEmpty, "\(mismatches.map(\.name))")
    }

    /// A byte-fallback tokenizer.json this implementation would tokenise differently is refused by
    /// component: merges other than the implied ones, another normalizer.
    @Test func unsupportedSentencePieceJSONIsRefused() throws {
        let tokens = ["<pad>", "<eos>", "<bos>", "<unk>", "a", "b", "ab", "\u{2581}", "\u{2581}a", "\u{2581}ab"]
        let tiny = try SentencePieceBPETokenizer(tokens: tokens, tokenTypes: [3, 3, 3, 2, 1, 1, 1, 1, 1, 1], bos: 2, eos: 1, pad: 0, unknown: 3, addBOS: true)
        let files = try tiny.huggingFaceFiles(chatTemplate: nil)
        let json = try #require(files["tokenizer.json"])
        let back = try loadTokenizer(tokenizerJSON: json)
        #expect(back.encode("ab ab", addSpecialTokens: false) == tiny.encode("ab ab", addSpecialTokens: false))
        var root = try #require(try JSONSerialization.jsonObject(with: json) as? [String: Any])
        var model = try #require(root["model"] as? [String: Any])
        var merges = try #require(model["merges"] as? [[String]])
        #expect(merges.count >= 2)
        merges.swapAt(0, 1)
        model["merges"] = merges
        root["model"] = model
        #expect { try loadTokenizer(tokenizerJSON: JSONSerialization.data(withJSONObject: root)) } throws: { "\($0)".contains("not the merges its vocabulary implies") }
        merges.swapAt(0, 1)
        model["merges"] = merges
        root["model"] = model
        root["normalizer"] = ["type": "NFKC"]
        #expect { try loadTokenizer(tokenizerJSON: JSONSerialization.data(withJSONObject: root)) } throws: { "\($0)".contains("normalizer") }
    }
}
