import Foundation
import Testing
import Tokenizers

@Suite("tokenizer files that cannot be used")
struct TokenizerErrorTests {
    /// A minimal valid byte-level BPE tokenizer.json with `model` and top-level overrides.
    static func bpeJSON(model: String = #""type": "BPE", "vocab": {"a": 0, "b": 1, "ab": 2}, "merges": ["a b"]"#,
                        pre: String = #"{"type": "ByteLevel", "add_prefix_space": false}"#,
                        extra: String = "") -> Data {
        Data(#"{"version": "1.0", \#(extra) "added_tokens": [], "normalizer": null, "pre_tokenizer": \#(pre), "post_processor": null, "decoder": {"type": "ByteLevel"}, "model": {\#(model)}}"#.utf8)
    }

    @Test func minimalFilesWork() throws {
        let bpe = try ByteLevelBPETokenizer(tokenizerJSON: Self.bpeJSON())
        #expect(bpe.encode("abba", addSpecialTokens: true) == [2, 1, 0])
        // Both merge spellings, and the JSON escapes: "\u0120" is Ġ.
        let tuples = try ByteLevelBPETokenizer(tokenizerJSON: Self.bpeJSON(model: #""type": "BPE", "vocab": {"a": 0, "\u0120": 1, "\u0120a": 2}, "merges": [["\u0120", "a"]]"#))
        #expect(tuples.encode(" a", addSpecialTokens: true) == [2])
        // Split on the GPT-2 regex, then ByteLevel without its own regex: the same pre-tokenizer.
        let split = try ByteLevelBPETokenizer(tokenizerJSON: Self.bpeJSON(pre: #"{"type": "Sequence", "pretokenizers": [{"type": "Split", "pattern": {"Regex": "'s|'t|'re|'ve|'m|'ll|'d| ?\\p{L}+| ?\\p{N}+| ?[^\\s\\p{L}\\p{N}]+|\\s+(?!\\S)|\\s+"}, "behavior": "Isolated", "invert": false}, {"type": "ByteLevel", "add_prefix_space": false, "use_regex": false}]}"#))
        #expect(split.preTokenizer == .gpt2)
        let digits = try ByteLevelBPETokenizer(tokenizerJSON: Self.bpeJSON(pre: #"{"type": "Sequence", "pretokenizers": [{"type": "Digits", "individual_digits": false}, {"type": "ByteLevel", "add_prefix_space": true}]}"#))
        #expect(digits.preTokenizer == PreTokenizer(digits: .contiguous, gpt2Regex: true, addPrefixSpace: true))
        #expect(digits.preTokenizer.split("ab12 3") == [" ab", " 12", " ", " 3"])
    }

    static let broken: [(String, Data, TokenizerError)] = [
        ("not JSON", Data("{\"model\": ".utf8), .invalidJSON(file: "t.json", reason: "unexpected end of input at byte 10")),
        ("bad escape", Data(#"{"a": "\q"}"#.utf8), .invalidJSON(file: "t.json", reason: "invalid escape at byte 8")),
        ("lone surrogate", Data(#"{"a": "\ud800"}"#.utf8), .invalidJSON(file: "t.json", reason: "lone surrogate in \\u escape at byte 7")),
        ("top level array", Data("[1, 2]".utf8), .invalidJSON(file: "t.json", reason: "the top level is not an object")),
        ("no model", Data("{}".utf8), .missingField(file: "t.json", field: "model")),
        ("unigram", bpeJSON(model: #""type": "Unigram", "vocab": [["a", 0.0]]"#), .unsupportedModel(file: "t.json", type: "Unigram")),
        ("missing vocab", bpeJSON(model: #""type": "BPE", "merges": []"#), .missingField(file: "t.json", field: "model.vocab")),
        ("vocab not an object", bpeJSON(model: #""type": "BPE", "vocab": [1], "merges": []"#),
         .invalidField(file: "t.json", field: "model.vocab", reason: "is not an object of token → id")),
        ("empty vocab", bpeJSON(model: #""type": "BPE", "vocab": {}, "merges": []"#), .emptyVocabulary(file: "t.json")),
        ("negative id", bpeJSON(model: #""type": "BPE", "vocab": {"a": -1}, "merges": []"#),
         .invalidField(file: "t.json", field: "model.vocab", reason: "gives \"a\" the id -1, outside 0..<16777216")),
        // Resource bombs: one token numbered near 2^24 would make a few bytes allocate an
        // id-indexed table of 16 million slots.
        ("id far beyond the vocabulary", bpeJSON(model: #""type": "BPE", "vocab": {"a": 0, "b": 16000000}, "merges": []"#),
         .invalidField(file: "t.json", field: "model.vocab", reason: "numbers its 2 tokens up to 16000000; ids must stay below 1028 (twice the token count + 1024)")),
        ("added token id far beyond the vocabulary", bpeJSON(model: #""type": "BPE", "vocab": {"a": 0}, "merges": []"#,
                                                             extra: #""added_tokens": [{"id": 16000000, "content": "<s>", "special": true}],"#),
         .invalidField(file: "t.json", field: "added token \"<s>\"", reason: "has the id 16000000, outside 0..<1026 (twice the vocabulary + 1024)")),
        ("missing merges", bpeJSON(model: #""type": "BPE", "vocab": {"a": 0}"#), .missingField(file: "t.json", field: "model.merges")),
        ("unknown token in merges", bpeJSON(model: #""type": "BPE", "vocab": {"a": 0, "b": 1, "ab": 2}, "merges": ["a b", "b c"]"#),
         .unknownTokenInMerge(file: "t.json", index: 1, merge: "b c", token: "c")),
        ("malformed merge", bpeJSON(model: #""type": "BPE", "vocab": {"a": 0}, "merges": ["a b c"]"#),
         .invalidMerge(file: "t.json", index: 0, merge: "a b c")),
        ("byte fallback", bpeJSON(model: #""type": "BPE", "vocab": {"a": 0}, "merges": [], "byte_fallback": true"#),
         .unsupportedComponent(file: "t.json", component: "model option", detail: "byte_fallback")),
        ("metaspace", bpeJSON(pre: #"{"type": "Metaspace", "replacement": "▁"}"#),
         .unsupportedComponent(file: "t.json", component: "pre_tokenizer", detail: "Metaspace")),
        ("llama 3 split", bpeJSON(pre: #"{"type": "Sequence", "pretokenizers": [{"type": "Split", "pattern": {"Regex": "\\p{N}{1,3}"}, "behavior": "Isolated", "invert": false}, {"type": "ByteLevel", "use_regex": false}]}"#),
         .unsupportedComponent(file: "t.json", component: "pre_tokenizer", detail: #"Split on "\\p{N}{1,3}" (only the GPT-2 regex, Isolated)"#)),
        ("literal split", bpeJSON(pre: #"{"type": "Sequence", "pretokenizers": [{"type": "Split", "pattern": {"String": " "}, "behavior": "Isolated"}, {"type": "ByteLevel"}]}"#),
         .unsupportedComponent(file: "t.json", component: "pre_tokenizer", detail: #"Split on "string  " (only the GPT-2 regex, Isolated)"#)),
        ("digits after byte level", bpeJSON(pre: #"{"type": "Sequence", "pretokenizers": [{"type": "ByteLevel"}, {"type": "Digits"}]}"#),
         .unsupportedComponent(file: "t.json", component: "pre_tokenizer", detail: "Digits in this position of a Sequence")),
        ("normalizer", bpeJSON(extra: #""normalizer": {"type": "NFC"},"#),
         .unsupportedComponent(file: "t.json", component: "normalizer", detail: "NFC")),
        ("unknown template token", bpeJSON(extra: #""post_processor": {"type": "TemplateProcessing", "single": [{"SpecialToken": {"id": "<s>", "type_id": 0}}, {"Sequence": {"id": "A", "type_id": 0}}], "special_tokens": {}},"#),
         .unknownSpecialToken(file: "t.json", role: "post_processor.single special token", token: "<s>")),
        ("roberta processing", bpeJSON(extra: #""post_processor": {"type": "RobertaProcessing"},"#),
         .unsupportedComponent(file: "t.json", component: "post_processor", detail: "RobertaProcessing")),
        ("bad added token", bpeJSON(extra: #""added_tokens": [{"content": "<s>"}],"#),
         .invalidField(file: "t.json", field: "added_tokens[0]", reason: "needs a non-negative integer id")),
    ]

    @Test(arguments: broken.indices)
    func rejectsBrokenTokenizerJSON(_ i: Int) {
        let (what, data, expected) = Self.broken[i]
        #expect(throws: expected, "\(what)") { try ByteLevelBPETokenizer(tokenizerJSON: data, source: "t.json") }
    }

    @Test func wordPieceRejectsWhatItCannotDo() {
        let wp = { (normalizer: String, pre: String) in
            Data(#"{"normalizer": \#(normalizer), "pre_tokenizer": \#(pre), "decoder": {"type": "WordPiece"}, "model": {"type": "WordPiece", "unk_token": "[UNK]", "vocab": {"[UNK]": 0, "a": 1}}}"#.utf8)
        }
        #expect(throws: TokenizerError.unsupportedComponent(file: "w.json", component: "normalizer", detail: "Lowercase")) {
            try WordPieceTokenizer(tokenizerJSON: wp(#"{"type": "Lowercase"}"#, #"{"type": "BertPreTokenizer"}"#), source: "w.json")
        }
        #expect(throws: TokenizerError.unsupportedComponent(file: "w.json", component: "pre_tokenizer", detail: "Whitespace")) {
            try WordPieceTokenizer(tokenizerJSON: wp("null", #"{"type": "Whitespace"}"#), source: "w.json")
        }
        #expect(throws: TokenizerError.unsupportedModel(file: "w.json", type: "BPE")) {
            try WordPieceTokenizer(tokenizerJSON: TokenizerErrorTests.bpeJSON(), source: "w.json")
        }
        let noUnk = Data(#"{"pre_tokenizer": {"type": "BertPreTokenizer"}, "model": {"type": "WordPiece", "unk_token": "[UNK]", "vocab": {"a": 0}}}"#.utf8)
        #expect(throws: TokenizerError.unknownSpecialToken(file: "w.json", role: "model.unk_token", token: "[UNK]")) {
            try WordPieceTokenizer(tokenizerJSON: noUnk, source: "w.json")
        }
        // Minimal but valid: no normalizer, no decoder (tokens joined by spaces), no template.
        let minimal = Data(#"{"pre_tokenizer": {"type": "BertPreTokenizer"}, "model": {"type": "WordPiece", "vocab": {"[UNK]": 0, "a": 1, "\u0023\u0023b": 2}}}"#.utf8)
        let t = try? WordPieceTokenizer(tokenizerJSON: minimal)
        #expect(t?.encode("ab A", addSpecialTokens: true) == [1, 2, 0])
        #expect(t?.decode([1, 2, 0], skipSpecialTokens: false) == "a ##b [UNK]")
    }

    @Test func directoriesNameTheFileAtFault() throws {
        let fm = FileManager.default
        let dir = fm.temporaryDirectory.appendingPathComponent("tok-errors-\(UUID().uuidString)")
        try fm.createDirectory(at: dir, withIntermediateDirectories: true)
        defer { try? fm.removeItem(at: dir) }
        #expect(throws: TokenizerError.noTokenizer(directory: dir.path)) { try loadTokenizer(huggingFaceDirectory: dir) }

        let file = dir.appendingPathComponent("tokenizer.json")
        try Data(#"{"model": {"type": "WordLevel", "vocab": {}}}"#.utf8).write(to: file)
        #expect(throws: TokenizerError.unsupportedModel(file: file.path, type: "WordLevel")) { try loadTokenizer(huggingFaceDirectory: dir) }
        try Data("{\"model\": {".utf8).write(to: file)
        #expect(throws: TokenizerError.invalidJSON(file: file.path, reason: "expected a member name at byte 11")) { try loadTokenizer(huggingFaceDirectory: dir) }

        // A broken tokenizer_config.json is named too.
        try TokenizerErrorTests.bpeJSON().write(to: file)
        let config = dir.appendingPathComponent("tokenizer_config.json")
        try Data("not json".utf8).write(to: config)
        #expect(throws: TokenizerError.invalidJSON(file: config.path, reason: "invalid literal at byte 0")) { try loadTokenizer(huggingFaceDirectory: dir) }
        try Data(#"{"bos_token": {"content": "a"}, "eos_token": "b"}"#.utf8).write(to: config)
        let loaded = try loadTokenizer(huggingFaceDirectory: dir)
        #expect(loaded.bosTokenId == 0 && loaded.eosTokenId == 1 && loaded.padTokenId == nil)

        // A directory where tokenizer.json should be a file.
        try fm.removeItem(at: file)
        try fm.createDirectory(at: file, withIntermediateDirectories: false)
        #expect(throws: TokenizerError.self) { try loadTokenizer(huggingFaceDirectory: dir) }
    }
}
