import Formats
import Models
import Foundation
import ModelStore
import TestSupport
import Tokenizers

/// `Tests/Fixtures/tokenizers`, written by `Scripts/reference/make_tokenizer_fixtures.py`.
let tokenizerFixtures = fixturesDirectory.appendingPathComponent("tokenizers")

func loadFixture<T: Decodable>(_ name: String, as type: T.Type = T.self) throws -> T {
    try JSONDecoder().decode(T.self, from: Data(contentsOf: tokenizerFixtures.appendingPathComponent(name)))
}

struct Corpus: Decodable {
    struct Case: Decodable { let name: String; let text: String }
    let cases: [Case]
    static func load() throws -> [Case] { try loadFixture("corpus.json", as: Corpus.self).cases }
}

/// `smollm2-135m-instruct.json`: per corpus case, the ids of both pre-tokenizers and HF's decode.
struct SmolLM2Fixture: Decodable {
    struct Case: Decodable {
        let name: String
        let smollm_ids: [Int]
        let gpt2_ids: [Int]
        let decoded: String
        let decoded_skip_special: String
    }
    struct DecodeCase: Decodable { let name: String; let ids: [Int]; let decoded: String }
    let bos_token_id: Int?, eos_token_id: Int?, pad_token_id: Int?, unk_token_id: Int?
    let vocabulary_size: Int
    let cases_where_pre_tokenizers_differ: [String]
    let cases: [Case]
    let decode_cases: [DecodeCase]
}

/// `all-minilm-l6-v2.json`: ids and decodes per corpus case, and text pairs.
struct MiniLMFixture: Decodable {
    struct Case: Decodable { let name: String; let ids: [Int]; let decoded: String; let decoded_skip_special: String }
    struct Pair: Decodable { let a: String; let b: String?; let max_length: Int?; let ids: [Int]; let type_ids: [Int] }
    let cls_token_id: Int, sep_token_id: Int, pad_token_id: Int, unk_token_id: Int, vocabulary_size: Int
    let cases: [Case]
    let pairs: [Pair]
}

/// `tiny-bpe-*.json`: the small tokenizer.json fixtures' expected ids.
struct TinyBPEFixture: Decodable {
    struct Case: Decodable { let name: String; let text: String; let ids: [Int]; let decoded: String; let decoded_skip_special: String }
    let bos_token_id: Int?, eos_token_id: Int?, pad_token_id: Int?
    let vocabulary_size: Int
    let cases: [Case]
}

/// The real models' tokenizers, loaded once per test process.
enum RealTokenizers {
    static let smolLM2: Result<(gguf: GGUFFile, tokenizer: ByteLevelBPETokenizer), any Error> = Result {
        let gguf = try GGUFFile(url: try realModel(.smolLM2))
        guard let bpe = try ggufTokenizer(gguf) as? ByteLevelBPETokenizer else { throw TokenizerError.unsupportedModel(file: "SmolLM2", type: "not byte-level BPE") }
        return (gguf, bpe)
    }

    static let miniLM: Result<WordPieceTokenizer, any Error> = Result {
        let tokenizer = try loadTokenizer(huggingFaceDirectory: try realModel(.miniLM))
        guard let wordPiece = tokenizer as? WordPieceTokenizer else { throw TokenizerError.unsupportedModel(file: "all-MiniLM-L6-v2", type: "\(type(of: tokenizer))") }
        return wordPiece
    }
}

/// Compares `actual` with `expected` case by case; returns the names of the cases that differ.
func mismatches<C>(_ cases: [C], name: (C) -> String, _ equal: (C) -> Bool) -> [String] {
    cases.filter { !equal($0) }.map(name)
}
