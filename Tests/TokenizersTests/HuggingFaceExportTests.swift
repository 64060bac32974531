import Formats
import Foundation
import ModelStore
import TestSupport
import Testing
import Tokenizers

/// Tokenizers written out as Hugging Face files and read back: identical ids and decodes.
/// With `LORA_EXPORT_TOKENIZER_DIR` set, the files (and the expected ids of the cases that have no
/// committed fixture) are kept there for `Scripts/reference/check_exported_tokenizer.py`.
@Suite("Hugging Face export")
struct HuggingFaceExportTests {
    static let exportRoot = ProcessInfo.processInfo.environment["LORA_EXPORT_TOKENIZER_DIR"].map { URL(fileURLWithPath: $0) }

    /// Writes `files` to `$LORA_EXPORT_TOKENIZER_DIR/<name>`, or to a temporary directory that
    /// `body` gets and that is removed afterwards.
    static func withExported<T>(_ files: [String: Data], name: String, _ body: (URL) throws -> T) throws -> T {
        let fm = FileManager.default
        let directory = exportRoot?.appendingPathComponent(name)
            ?? fm.temporaryDirectory.appendingPathComponent("tok-export-\(name)-\(UUID().uuidString)")
        try? fm.removeItem(at: directory)
        try fm.createDirectory(at: directory, withIntermediateDirectories: true)
        defer { if exportRoot == nil { try? fm.removeItem(at: directory) } }
        for (file, data) in files { try data.write(to: directory.appendingPathComponent(file)) }
        return try body(directory)
    }

    /// Expected ids for the Python check, beside the exported directories.
    static func writeExpected(_ name: String, _ value: [String: Any]) throws {
        guard let root = exportRoot else { return }
        let data = try JSONSerialization.data(withJSONObject: value, options: [.prettyPrinted, .sortedKeys])
        try data.write(to: root.appendingPathComponent("\(name).expected.json"))
    }

    static func object(_ data: Data?) throws -> [String: Any] {
        let data = try #require(data)
        return try #require(try JSONSerialization.jsonObject(with: data) as? [String: Any])
    }

    static func same(_ a: String, _ b: String) -> Bool { a.unicodeScalars.elementsEqual(b.unicodeScalars) }

    /// SmolLM2 from its GGUF file (Digits + ByteLevel, 17 special added tokens, no BOS added):
    /// exported, reloaded, identical on the corpus; the files have the HF schema.
    @Test func smolLM2RoundTrips() throws {
        let (gguf, tokenizer) = try RealTokenizers.smolLM2.get()
        let fixture = try loadFixture("smollm2-135m-instruct.json", as: SmolLM2Fixture.self)
        let corpus = try Corpus.load()
        let chatTemplate = try #require(gguf.metadata["tokenizer.chat_template"]?.string)
        let files = try tokenizer.huggingFaceFiles(chatTemplate: chatTemplate, modelMaxLength: 8192)
        #expect(Set(files.keys) == ["tokenizer.json", "tokenizer_config.json", "special_tokens_map.json"])

        let json = try Self.object(files["tokenizer.json"])
        let model = try #require(json["model"] as? [String: Any])
        #expect(model["type"] as? String == "BPE" && model["byte_fallback"] as? Bool == false && model["unk_token"] is NSNull)
        let merges = try #require(model["merges"] as? [[String]])
        #expect(merges.first == ["Ġ", "t"] && merges.count == 48900)
        #expect(json["normalizer"] is NSNull)
        let pre = try #require(json["pre_tokenizer"] as? [String: Any])
        let steps = try #require(pre["pretokenizers"] as? [[String: Any]])
        #expect(pre["type"] as? String == "Sequence" && steps.count == 2)
        #expect(steps[0]["type"] as? String == "Digits" && steps[0]["individual_digits"] as? Bool == true)
        #expect(steps[1]["type"] as? String == "ByteLevel" && steps[1]["add_prefix_space"] as? Bool == false
                && steps[1]["trim_offsets"] as? Bool == true && steps[1]["use_regex"] as? Bool == true)
        #expect((json["decoder"] as? [String: Any])?["type"] as? String == "ByteLevel")
        #expect((json["post_processor"] as? [String: Any])?["type"] as? String == "ByteLevel")
        let added = try #require(json["added_tokens"] as? [[String: Any]])
        #expect(added.count == 17 && added.allSatisfy { $0["special"] as? Bool == true && $0["normalized"] as? Bool == false })
        #expect(added[2]["content"] as? String == "<|im_end|>" && added[2]["id"] as? Int == 2)
        let config = try Self.object(files["tokenizer_config.json"])
        #expect(config["tokenizer_class"] as? String == "PreTrainedTokenizerFast" && config["chat_template"] as? String == chatTemplate)
        #expect(config["bos_token"] as? String == "<|im_start|>" && config["eos_token"] as? String == "<|im_end|>")
        #expect(config["pad_token"] as? String == "<|im_end|>" && config["unk_token"] as? String == "<|endoftext|>")
        #expect(config["add_bos_token"] as? Bool == false && config["model_max_length"] as? Int == 8192)
        #expect(try Self.object(files["special_tokens_map.json"])["eos_token"] as? String == "<|im_end|>")
        // The template in the exported config is the one swift-lora renders.
        let rendered = try ChatTemplate(jinja: try #require(config["chat_template"] as? String))
        let messages = [ChatMessage(role: "user", content: "What is 2+2?"), ChatMessage(role: "assistant", content: "4"),
                        ChatMessage(role: "user", content: "Thanks!")]
        try Self.writeExpected("smollm2.chat", [
            "messages": messages.map { ["role": $0.role, "content": $0.content] }, "add_generation_prompt": true,
            "text": rendered.render(messages, addGenerationPrompt: true),
        ])

        try Self.withExported(files, name: "smollm2") { directory in
            let reloaded = try #require(try loadTokenizer(huggingFaceDirectory: directory) as? ByteLevelBPETokenizer)
            #expect(reloaded.preTokenizer == tokenizer.preTokenizer && reloaded.vocabularySize == tokenizer.vocabularySize)
            #expect(reloaded.bosTokenId == fixture.bos_token_id && reloaded.eosTokenId == fixture.eos_token_id)
            #expect(reloaded.padTokenId == fixture.pad_token_id && reloaded.unknownTokenId == fixture.unk_token_id)
            #expect(reloaded.addedTokens == tokenizer.addedTokens)
            #expect(reloaded.prefixIds == tokenizer.prefixIds && reloaded.suffixIds == tokenizer.suffixIds)
            var identical = 0
            for (c, f) in zip(corpus, fixture.cases) {
                let ids = reloaded.encode(c.text, addSpecialTokens: true)
                #expect(ids == f.smollm_ids && ids == tokenizer.encode(c.text, addSpecialTokens: true), "\(c.name)")
                #expect(reloaded.encode(c.text, addSpecialTokens: false) == tokenizer.encode(c.text, addSpecialTokens: false), "\(c.name)")
                let decoded = reloaded.decode(f.smollm_ids, skipSpecialTokens: false)
                let skipped = reloaded.decode(f.smollm_ids, skipSpecialTokens: true)
                #expect(Self.same(decoded, f.decoded) && Self.same(skipped, f.decoded_skip_special), "\(c.name)")
                if ids == f.smollm_ids, Self.same(decoded, f.decoded), Self.same(skipped, f.decoded_skip_special) { identical += 1 }
            }
            for d in fixture.decode_cases { #expect(Self.same(reloaded.decode(d.ids, skipSpecialTokens: false), d.decoded), "\(d.name)") }
            print("SmolLM2 exported and reloaded: \(identical)/\(corpus.count) corpus cases identical (ids and decodes)")
        }
    }

    /// A BOS added to every text (transformers' GGUF-style GPT-2 pre-tokenizer): `add_bos_token`
    /// and the TemplateProcessing transformers builds from it.
    @Test func bosTokenizerRoundTrips() throws {
        let (gguf, _) = try RealTokenizers.smolLM2.get()
        let fixture = try loadFixture("smollm2-135m-instruct.json", as: SmolLM2Fixture.self)
        let corpus = try Corpus.load()
        let tokenizer = try ByteLevelBPETokenizer(
            tokens: try gguf.strings("tokenizer.ggml.tokens"), merges: try gguf.strings("tokenizer.ggml.merges"),
            tokenTypes: gguf.metadata["tokenizer.ggml.token_type"]?.ints, preTokenizer: .gpt2,
            bos: 1, eos: 2, pad: 2, unknown: 0, addBOS: true)
        let files = try tokenizer.huggingFaceFiles(chatTemplate: nil)
        let config = try Self.object(files["tokenizer_config.json"])
        #expect(config["add_bos_token"] as? Bool == true && config["add_eos_token"] as? Bool == false && config["chat_template"] == nil)
        let post = try #require(try Self.object(files["tokenizer.json"])["post_processor"] as? [String: Any])
        #expect(post["type"] as? String == "TemplateProcessing")
        #expect((try Self.object(files["tokenizer.json"])["pre_tokenizer"] as? [String: Any])?["type"] as? String == "ByteLevel")
        let expected = fixture.cases.map { [1] + $0.gpt2_ids }
        try Self.writeExpected("smollm2-bos", [
            "bos_token_id": 1, "eos_token_id": 2, "pad_token_id": 2, "unk_token_id": 0,
            "cases": zip(corpus, expected).map { ["name": $0.name, "text": $0.text, "ids": $1] },
        ])
        try Self.withExported(files, name: "smollm2-bos") { directory in
            let reloaded = try #require(try loadTokenizer(huggingFaceDirectory: directory) as? ByteLevelBPETokenizer)
            #expect(reloaded.prefixIds == [1] && reloaded.suffixIds == [] && reloaded.preTokenizer == .gpt2)
            #expect(reloaded.bosTokenId == 1 && reloaded.eosTokenId == 2 && reloaded.padTokenId == 2 && reloaded.unknownTokenId == 0)
            let failed = zip(corpus, expected).filter { c, ids in
                reloaded.encode(c.text, addSpecialTokens: true) != ids || tokenizer.encode(c.text, addSpecialTokens: true) != ids
            }.map(\.0.name)
            #expect(failed.isEmpty, "\(failed)")
            print("SmolLM2 with BOS exported and reloaded: \(corpus.count - failed.count)/\(corpus.count) corpus cases identical")
        }
    }

    /// The two small tokenizer.json fixtures (a BOS template; lstrip/rstrip/single_word and
    /// non-special added tokens; add_prefix_space; "a b" merges) survive the round trip.
    @Test(arguments: ["tiny-bpe-digits", "tiny-bpe-prefix-space"])
    func tinyTokenizerJSONRoundTrips(_ name: String) throws {
        let tokenizer = try #require(try loadTokenizer(huggingFaceDirectory: tokenizerFixtures.appendingPathComponent(name)) as? ByteLevelBPETokenizer)
        let fixture = try loadFixture("\(name).json", as: TinyBPEFixture.self)
        try Self.withExported(try tokenizer.huggingFaceFiles(chatTemplate: nil), name: name) { directory in
            let reloaded = try #require(try loadTokenizer(huggingFaceDirectory: directory) as? ByteLevelBPETokenizer)
            #expect(reloaded.addedTokens == tokenizer.addedTokens && reloaded.preTokenizer == tokenizer.preTokenizer)
            #expect(reloaded.vocabularySize == fixture.vocabulary_size && reloaded.prefixIds == tokenizer.prefixIds)
            #expect(reloaded.bosTokenId == fixture.bos_token_id && reloaded.eosTokenId == fixture.eos_token_id && reloaded.padTokenId == fixture.pad_token_id)
            var identical = 0
            for c in fixture.cases {
                let ids = reloaded.encode(c.text, addSpecialTokens: true)
                let decoded = reloaded.decode(c.ids, skipSpecialTokens: false), skipped = reloaded.decode(c.ids, skipSpecialTokens: true)
                #expect(ids == c.ids && Self.same(decoded, c.decoded) && Self.same(skipped, c.decoded_skip_special), "\(name) \(c.name)")
                if ids == c.ids, Self.same(decoded, c.decoded), Self.same(skipped, c.decoded_skip_special) { identical += 1 }
            }
            print("\(name) exported and reloaded: \(identical)/\(fixture.cases.count) cases identical")
        }
    }

    /// all-MiniLM-L6-v2 (BertNormalizer, BertPreTokenizer, [CLS]/[SEP] template, WordPiece
    /// decoder), from tokenizer.json and from vocab.txt: identical ids, pairs and decodes.
    @Test func miniLMRoundTrips() throws {
        let fixture = try loadFixture("all-minilm-l6-v2.json", as: MiniLMFixture.self)
        let corpus = try Corpus.load()
        let vocabTxt = try String(contentsOf: try realModel(.miniLM).appendingPathComponent("vocab.txt"), encoding: .utf8)
        let sources: [(String, WordPieceTokenizer)] = [("minilm", try RealTokenizers.miniLM.get()),
                                                       ("minilm-vocab-txt", try WordPieceTokenizer(vocabTxt: vocabTxt))]
        for (name, tokenizer) in sources {
            let files = try tokenizer.huggingFaceFiles(modelMaxLength: 512)
            let json = try Self.object(files["tokenizer.json"])
            #expect((json["model"] as? [String: Any])?["type"] as? String == "WordPiece")
            #expect((json["normalizer"] as? [String: Any])?["type"] as? String == "BertNormalizer")
            #expect((json["post_processor"] as? [String: Any])?["type"] as? String == "TemplateProcessing")
            let config = try Self.object(files["tokenizer_config.json"])
            #expect(config["cls_token"] as? String == "[CLS]" && config["mask_token"] as? String == "[MASK]" && config["model_max_length"] as? Int == 512)
            try Self.withExported(files, name: name) { directory in
                let reloaded = try #require(try loadTokenizer(huggingFaceDirectory: directory) as? WordPieceTokenizer)
                #expect(reloaded.vocabularySize == fixture.vocabulary_size && reloaded.addedTokens == tokenizer.addedTokens)
                #expect(reloaded.classifierTokenId == fixture.cls_token_id && reloaded.separatorTokenId == fixture.sep_token_id)
                #expect(reloaded.padTokenId == fixture.pad_token_id && reloaded.unknownTokenId == fixture.unk_token_id)
                #expect(reloaded.maskTokenId == tokenizer.maskTokenId && reloaded.bosTokenId == nil && reloaded.eosTokenId == nil)
                #expect(reloaded.normalization == tokenizer.normalization)
                var identical = 0
                for (c, f) in zip(corpus, fixture.cases) {
                    let ids = reloaded.encode(c.text, addSpecialTokens: true)
                    let decoded = reloaded.decode(f.ids, skipSpecialTokens: false), skipped = reloaded.decode(f.ids, skipSpecialTokens: true)
                    #expect(ids == f.ids && Self.same(decoded, f.decoded) && Self.same(skipped, f.decoded_skip_special), "\(name) \(c.name)")
                    if ids == f.ids, Self.same(decoded, f.decoded), Self.same(skipped, f.decoded_skip_special) { identical += 1 }
                }
                for p in fixture.pairs {
                    let (ids, typeIds) = reloaded.encodePair(p.a, p.b, maxLength: p.max_length)
                    #expect(ids == p.ids && typeIds == p.type_ids, "\(name) \(p.a)")
                }
                print("\(name) exported and reloaded: \(identical)/\(corpus.count) corpus cases identical (ids and decodes), \(fixture.pairs.count) pairs")
            }
        }
    }

    /// Quotes, backslashes and control characters in token contents are escaped; the file
    /// reads back to the same tokens.
    @Test func escapesTokenContents() throws {
        // The 256 byte tokens in GPT-2's byte alphabet.
        var next: UInt32 = 256
        var tokens = (0..<256).map { b -> String in
            if (0x21...0x7E).contains(b) || (0xA1...0xAC).contains(b) || (0xAE...0xFF).contains(b) { return String(Character(Unicode.Scalar(UInt8(b)))) }
            defer { next += 1 }
            return String(Character(Unicode.Scalar(next)!))
        }
        tokens += ["\"\\", "<a\"b>"]
        let tokenizer = try ByteLevelBPETokenizer(
            tokens: tokens, merges: [], tokenTypes: Array(repeating: 1, count: 256) + [4, 3], preTokenizer: .gpt2,
            bos: nil, eos: 257, pad: nil, unknown: nil, addBOS: false)
        let files = try tokenizer.huggingFaceFiles(chatTemplate: "{{ '\n\t\"x\"' }}")
        let config = try Self.object(files["tokenizer_config.json"])
        #expect(config["chat_template"] as? String == "{{ '\n\t\"x\"' }}" && config["eos_token"] as? String == "<a\"b>")
        try Self.withExported(files, name: "escapes") { directory in
            let reloaded = try #require(try loadTokenizer(huggingFaceDirectory: directory) as? ByteLevelBPETokenizer)
            let text = "x\"\\y\u{1}<a\"b>\n"
            #expect(reloaded.encode(text, addSpecialTokens: true) == tokenizer.encode(text, addSpecialTokens: true))
            #expect(reloaded.addedTokens == tokenizer.addedTokens && reloaded.eosTokenId == 257)
            #expect(reloaded.decode(reloaded.encode(text, addSpecialTokens: true), skipSpecialTokens: false) == text)
        }
    }
}
