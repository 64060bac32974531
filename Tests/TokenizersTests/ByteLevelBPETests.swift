import Formats
import Foundation
import Synchronization
import Testing
import Tokenizers

@Suite("byte-level BPE tokenizer")
struct ByteLevelBPETests {
    @Test func gpt2RegexSplitsAsHuggingFace() {
        // Expected words from HF `pre_tokenizers.ByteLevel(use_regex=True).pre_tokenize_str`.
        let cases: [(String, [String], [String])] = [
            ("a  \n\n b\t\tc  ", ["a", "  \n\n", " b", "\t", "\t", "c", "  "], ["a", "  \n\n", " b", "\t", "\t", "c", "  "]),
            ("Hello world's 'LL x'll", ["Hello", " world", "'s", " '", "LL", " x", "'ll"], ["Hello", " world", "'s", " '", "LL", " x", "'ll"]),
            ("  1 23\n\n4", [" ", " 1", " 23", "\n", "\n", "4"], ["  ", "1", " ", "2", "3", "\n\n", "4"]),
            ("x!'s ?? ...z", ["x", "!'", "s", " ??", " ...", "z"], ["x", "!'", "s", " ??", " ...", "z"]),
            (" \u{a0} a", [" \u{a0}", " a"], [" \u{a0}", " a"]),
        ]
        for (text, gpt2, smolLM) in cases {
            #expect(PreTokenizer.gpt2.split(text) == gpt2, "\(text.debugDescription)")
            #expect(PreTokenizer.smolLM.split(text) == smolLM, "\(text.debugDescription)")
        }
        #expect(PreTokenizer.gpt2.split("") == [])
        #expect(PreTokenizer(addPrefixSpace: true).split("hi there") == [" hi", " there"])
    }

    /// SmolLM2 built from its GGUF file: every corpus case gives transformers' ids, with the
    /// upstream pre-tokenizer (`smollm`) and with the one transformers 5.24 builds from GGUF (`gpt2`).
    @Test func smolLM2MatchesTransformers() throws {
        let (gguf, tokenizer) = try RealTokenizers.smolLM2.get()
        let fixture = try loadFixture("smollm2-135m-instruct.json", as: SmolLM2Fixture.self)
        let corpus = try Corpus.load()
        try #require(corpus.count == fixture.cases.count)
        #expect(tokenizer.preTokenizer == .smolLM)
        #expect(tokenizer.vocabularySize == fixture.vocabulary_size)
        #expect(tokenizer.bosTokenId == fixture.bos_token_id && tokenizer.eosTokenId == fixture.eos_token_id)
        #expect(tokenizer.padTokenId == fixture.pad_token_id && tokenizer.unknownTokenId == fixture.unk_token_id)
        #expect(tokenizer.id(of: "<|im_start|>") == 1 && tokenizer.token(of: 2) == "<|im_end|>" && tokenizer.isSpecial(0))

        let upstream = zip(corpus, fixture.cases).filter { tokenizer.encode($0.text, addSpecialTokens: true) != $1.smollm_ids }
        for (c, f) in upstream { Issue.record("\(c.name): \(tokenizer.encode(c.text, addSpecialTokens: true)) != \(f.smollm_ids)") }
        print("SmolLM2 (smollm pre-tokenizer): \(corpus.count - upstream.count)/\(corpus.count) corpus cases identical to transformers")

        var gpt2 = try ByteLevelBPETokenizer(
            tokens: try gguf.strings("tokenizer.ggml.tokens"), merges: try gguf.strings("tokenizer.ggml.merges"),
            tokenTypes: gguf.metadata["tokenizer.ggml.token_type"]?.ints, preTokenizer: .gpt2,
            bos: 1, eos: 2, pad: 2, unknown: 0, addBOS: false)
        let asTransformers = zip(corpus, fixture.cases).filter { gpt2.encode($0.text, addSpecialTokens: true) != $1.gpt2_ids }
        for (c, f) in asTransformers { Issue.record("\(c.name) (gpt2): \(gpt2.encode(c.text, addSpecialTokens: true)) != \(f.gpt2_ids)") }
        print("SmolLM2 (gpt2 pre-tokenizer, transformers' GGUF conversion): \(corpus.count - asTransformers.count)/\(corpus.count) identical")
        #expect(fixture.cases_where_pre_tokenizers_differ.count == 2)

        // add_special_tokens: SmolLM2 adds nothing; with addBOS the BOS comes first.
        #expect(tokenizer.encode("Hello world", addSpecialTokens: false) == tokenizer.encode("Hello world", addSpecialTokens: true))
        gpt2 = try ByteLevelBPETokenizer(tokens: try gguf.strings("tokenizer.ggml.tokens"), merges: try gguf.strings("tokenizer.ggml.merges"),
                                         tokenTypes: nil, preTokenizer: .gpt2, bos: 1, eos: 2, pad: nil, unknown: nil, addBOS: true)
        #expect(gpt2.encode("Hello world", addSpecialTokens: true) == [1] + tokenizer.encode("Hello world", addSpecialTokens: false))
        // Without token types nothing is an added token: the chat markers are spelled out.
        #expect(gpt2.encode("<|im_end|>", addSpecialTokens: false).count > 1)
    }

    @Test func smolLM2DecodesAsTransformers() throws {
        let (_, tokenizer) = try RealTokenizers.smolLM2.get()
        let fixture = try loadFixture("smollm2-135m-instruct.json", as: SmolLM2Fixture.self)
        let corpus = try Corpus.load()
        var matched = 0, roundTrips = 0
        for (c, f) in zip(corpus, fixture.cases) {
            let decoded = tokenizer.decode(f.smollm_ids, skipSpecialTokens: false)
            let skipped = tokenizer.decode(f.smollm_ids, skipSpecialTokens: true)
            #expect(decoded.unicodeScalars.elementsEqual(f.decoded.unicodeScalars), "\(c.name): \(decoded.debugDescription)")
            #expect(skipped.unicodeScalars.elementsEqual(f.decoded_skip_special.unicodeScalars), "\(c.name): \(skipped.debugDescription)")
            if decoded.unicodeScalars.elementsEqual(f.decoded.unicodeScalars), skipped.unicodeScalars.elementsEqual(f.decoded_skip_special.unicodeScalars) { matched += 1 }
            if tokenizer.decode(tokenizer.encode(c.text, addSpecialTokens: true), skipSpecialTokens: false).unicodeScalars.elementsEqual(c.text.unicodeScalars) { roundTrips += 1 }
        }
        // HF loses bytes that have no token (04 06 13 14 16 1D F1 F2 in SmolLM2): one case.
        #expect(roundTrips == corpus.count - 1)
        for d in fixture.decode_cases {
            #expect(tokenizer.decode(d.ids, skipSpecialTokens: false).unicodeScalars.elementsEqual(d.decoded.unicodeScalars), "\(d.name)")
        }
        #expect(tokenizer.decode([-1, 1_000_000, 28120], skipSpecialTokens: false) == tokenizer.decode([28120], skipSpecialTokens: false))
        print("SmolLM2 decode: \(matched)/\(corpus.count) identical to transformers (with and without special tokens), "
              + "\(roundTrips)/\(corpus.count) round trips, \(fixture.decode_cases.count) invalid-UTF-8 cases")
    }

    /// The two small tokenizer.json files: Digits + ByteLevel with a BOS template and added
    /// tokens using lstrip/rstrip/single_word; ByteLevel with add_prefix_space and "a b" merges.
    @Test(arguments: ["tiny-bpe-digits", "tiny-bpe-prefix-space"])
    func tokenizerJSONMatchesTransformers(_ name: String) throws {
        let loaded = try loadTokenizer(huggingFaceDirectory: tokenizerFixtures.appendingPathComponent(name))
        let tokenizer = try #require(loaded as? ByteLevelBPETokenizer)
        let fixture = try loadFixture("\(name).json", as: TinyBPEFixture.self)
        #expect(tokenizer.vocabularySize == fixture.vocabulary_size)
        #expect(tokenizer.bosTokenId == fixture.bos_token_id && tokenizer.eosTokenId == fixture.eos_token_id && tokenizer.padTokenId == fixture.pad_token_id)
        var matched = 0
        for c in fixture.cases {
            let ids = tokenizer.encode(c.text, addSpecialTokens: true)
            let decoded = tokenizer.decode(c.ids, skipSpecialTokens: false)
            let skipped = tokenizer.decode(c.ids, skipSpecialTokens: true)
            #expect(ids == c.ids, "\(name) \(c.name)")
            #expect(decoded.unicodeScalars.elementsEqual(c.decoded.unicodeScalars), "\(name) \(c.name): \(decoded.debugDescription)")
            #expect(skipped.unicodeScalars.elementsEqual(c.decoded_skip_special.unicodeScalars), "\(name) \(c.name): \(skipped.debugDescription)")
            if ids == c.ids, decoded.unicodeScalars.elementsEqual(c.decoded.unicodeScalars) { matched += 1 }
        }
        print("\(name): \(matched)/\(fixture.cases.count) cases identical to transformers (ids and decode)")

        // The same file through init(tokenizerJSON:) (no tokenizer_config.json: no BOS/EOS/PAD).
        let data = try Data(contentsOf: tokenizerFixtures.appendingPathComponent("\(name)/tokenizer.json"))
        let direct = try ByteLevelBPETokenizer(tokenizerJSON: data)
        #expect(direct.bosTokenId == nil && direct.encode("Hello 123", addSpecialTokens: true) == tokenizer.encode("Hello 123", addSpecialTokens: true))
    }

    @Test func cachedAndUncachedEncodingsAgree() throws {
        let tokenizer = try #require(try loadTokenizer(huggingFaceDirectory: tokenizerFixtures.appendingPathComponent("tiny-bpe-digits")) as? ByteLevelBPETokenizer)
        let text = "the theory of the thermal theatre: thereafter"
        let first = tokenizer.encode(text, addSpecialTokens: false)
        let copy = tokenizer
        #expect(copy.encode(text, addSpecialTokens: false) == first)
        // The word cache is shared by copies and threads.
        let texts = (0..<64).map { "\(text) \($0) variant\($0 % 7) the\(String(repeating: "e", count: $0 % 5))" }
        let serial = texts.map { tokenizer.encode($0, addSpecialTokens: false) }
        let fresh = try #require(try loadTokenizer(huggingFaceDirectory: tokenizerFixtures.appendingPathComponent("tiny-bpe-digits")) as? ByteLevelBPETokenizer)
        let results = Mutex([[Int]](repeating: [], count: texts.count))
        DispatchQueue.concurrentPerform(iterations: texts.count * 4) { i in
            let ids = fresh.encode(texts[i % texts.count], addSpecialTokens: false)
            if i < texts.count { results.withLock { $0[i] = ids } }
        }
        #expect(results.withLock { $0 } == serial)
        // Words far longer than the cache keeps still merge (HF gives 2000 ids: one "the" each).
        let long = String(repeating: "the", count: 2000)
        let ids = tokenizer.encode(long, addSpecialTokens: false)
        #expect(tokenizer.decode(ids, skipSpecialTokens: false) == long)
        #expect(ids.count == 2000 && Set(ids) == [tokenizer.id(of: "the")])
    }

    @Test func buildsFromArraysAndRejectsBadOnes() throws {
        // A toy vocabulary in the byte alphabet: bytes a b c, merges "a b" and "ab c".
        let tokens = ["<s>", "a", "b", "c", "ab", "abc", "Ġ", "<x>", "中"]
        let t = try ByteLevelBPETokenizer(tokens: tokens, merges: ["a b", "ab c"], tokenTypes: [3, 1, 1, 1, 1, 1, 1, 4, 1],
                                          preTokenizer: .gpt2, bos: 0, eos: nil, pad: nil, unknown: nil, addBOS: true)
        #expect(t.encode("abc", addSpecialTokens: true) == [0, 5])
        #expect(t.encode("abab<x>c<s>", addSpecialTokens: false) == [4, 4, 7, 3, 0])
        // "中" is outside the alphabet: re-spelled "ä¸Ń" from its UTF-8, as transformers does.
        #expect(t.id(of: "ä¸Ń") == 8 && t.id(of: "中") == nil)
        // Its bytes have no single-byte tokens and no merges: dropped, as HF does without unk.
        #expect(t.encode("中", addSpecialTokens: false) == [])
        #expect(t.decode([0, 5, 7], skipSpecialTokens: true) == "abc<x>")

        let source = "test arrays"
        #expect(throws: TokenizerError.invalidMerge(file: source, index: 1, merge: "abc")) {
            try ByteLevelBPETokenizer(tokens: tokens, merges: ["a b", "abc"], tokenTypes: nil, preTokenizer: .gpt2,
                                      bos: nil, eos: nil, pad: nil, unknown: nil, addBOS: false, source: source)
        }
        #expect(throws: TokenizerError.unknownTokenInMerge(file: source, index: 0, merge: "a z", token: "z")) {
            try ByteLevelBPETokenizer(tokens: tokens, merges: ["a z"], tokenTypes: nil, preTokenizer: .gpt2,
                                      bos: nil, eos: nil, pad: nil, unknown: nil, addBOS: false, source: source)
        }
        #expect(throws: TokenizerError.unknownTokenInMerge(file: source, index: 0, merge: "b c", token: "bc")) {
            try ByteLevelBPETokenizer(tokens: tokens, merges: ["b c"], tokenTypes: nil, preTokenizer: .gpt2,
                                      bos: nil, eos: nil, pad: nil, unknown: nil, addBOS: false, source: source)
        }
        #expect(throws: TokenizerError.unknownSpecialToken(file: source, role: "eos id", token: "99")) {
            try ByteLevelBPETokenizer(tokens: tokens, merges: [], tokenTypes: nil, preTokenizer: .gpt2,
                                      bos: nil, eos: 99, pad: nil, unknown: nil, addBOS: false, source: source)
        }
        #expect(throws: TokenizerError.emptyVocabulary(file: source)) {
            try ByteLevelBPETokenizer(tokens: [], merges: [], tokenTypes: nil, preTokenizer: .gpt2,
                                      bos: nil, eos: nil, pad: nil, unknown: nil, addBOS: false, source: source)
        }
        #expect(throws: TokenizerError.invalidField(file: source, field: "token types", reason: "has 1 entries for 9 tokens")) {
            try ByteLevelBPETokenizer(tokens: tokens, merges: [], tokenTypes: [1], preTokenizer: .gpt2,
                                      bos: nil, eos: nil, pad: nil, unknown: nil, addBOS: false, source: source)
        }
        #expect(throws: TokenizerError.unsupportedComponent(file: "x.gguf", component: "pre-tokenizer", detail: "tokenizer.ggml.pre \"llama-bpe\" (supported: gpt2, smollm)")) {
            try PreTokenizer.llamaCpp("llama-bpe", source: "x.gguf")
        }
    }
}
