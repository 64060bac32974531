import Foundation

// Writing tokenizers out as Hugging Face files (`tokenizer.json`, `tokenizer_config.json`,
// `special_tokens_map.json`), so that a model directory written by swift-lora (an adapter merged
// into a GGUF base model, say) loads in transformers with the same ids. The files follow what
// `tokenizers` 0.22/0.23 and transformers 5 write, and `loadTokenizer(huggingFaceDirectory:)`
// reads them back to an identical tokenizer.
//
// `tokenizer_class` is "PreTrainedTokenizerFast": transformers then takes every component from
// tokenizer.json as written (a model-specific class such as GPT2Tokenizer or BertTokenizer may
// rebuild the pre-tokenizer or normalizer from its own defaults; GPT2Tokenizer would drop the
// Digits step of SmolLM2's pre-tokenizer).

extension ByteLevelBPETokenizer {
    /// Hugging Face files for this tokenizer: name → contents (`tokenizer.json`, `tokenizer_config.json`, `special_tokens_map.json`).
    /// `chatTemplate` goes into tokenizer_config.json as "chat_template" when given;
    /// `modelMaxLength` as "model_max_length" (absent: transformers' "no limit").
    ///
    /// A BOS and/or EOS put around the text becomes `add_bos_token`/`add_eos_token` and the
    /// TemplateProcessing transformers itself builds from them; any other template is written
    /// as TemplateProcessing and the two flags are left out (so transformers keeps it).
    public func huggingFaceFiles(chatTemplate: String?, modelMaxLength: Int? = nil) throws(TokenizerError) -> [String: Data] {
        func name(_ id: Int, _ role: String) throws(TokenizerError) -> String {
            guard let t = token(of: id) else { throw exportError(role, "has the id \(id), which has no token") }
            return t
        }
        var bos: String? = nil, eos: String? = nil, unk: String? = nil, pad: String? = nil
        if let id = bosTokenId { bos = try name(id, "bos") }
        if let id = eosTokenId { eos = try name(id, "eos") }
        if let id = unknownTokenId { unk = try name(id, "unk") }
        if let id = padTokenId { pad = try name(id, "pad") }

        // BOS? $A EOS? with the named BOS/EOS: what transformers' add_bos_token/add_eos_token build.
        var plain: (bos: Bool, eos: Bool)? = nil
        let single = template.single
        if let a = single.firstIndex(where: { if case .sequence(false, 0) = $0 { true } else { false } }), single.count <= 3 {
            func isSpecial(_ item: Template.Item, _ id: Int?) -> Bool {
                if case .special(let ids, 0) = item, let id, ids == [id] { return true }
                return false
            }
            let before = single[..<a], after = single[(a + 1)...]
            if before.count <= 1, after.count <= 1, before.allSatisfy({ isSpecial($0, bosTokenId) }), after.allSatisfy({ isSpecial($0, eosTokenId) }) {
                plain = (!before.isEmpty, !after.isEmpty)
            }
        }
        let postProcessor: JSON
        switch plain {
        case (false, false)?:
            postProcessor = obj(["type": .string("ByteLevel"), "add_prefix_space": .bool(true), "trim_offsets": .bool(false), "use_regex": .bool(true)])
        case let (addBOS, addEOS)?:
            // transformers' update_post_processor: "bos:0 $A:0 eos:0" and "… bos:1 $B:1 eos:1".
            var single: [Template.Item] = [], pair: [Template.Item] = []
            if addBOS, let b = bosTokenId { single.append(.special(ids: [b], typeId: 0)) }
            single.append(.sequence(second: false, typeId: 0))
            if addEOS, let e = eosTokenId { single.append(.special(ids: [e], typeId: 0)) }
            pair = single
            if addBOS, let b = bosTokenId { pair.append(.special(ids: [b], typeId: 1)) }
            pair.append(.sequence(second: true, typeId: 1))
            if addEOS, let e = eosTokenId { pair.append(.special(ids: [e], typeId: 1)) }
            postProcessor = try templateProcessing(Template(single: single, pair: pair), token: token(of:))
        case nil:
            postProcessor = try templateProcessing(template, token: token(of:))
        }

        let byteLevel = obj(["type": .string("ByteLevel"), "add_prefix_space": .bool(preTokenizer.addPrefixSpace), "trim_offsets": .bool(true),
                             "use_regex": .bool(preTokenizer.gpt2Regex)])
        let preTokenizerJSON: JSON = switch preTokenizer.digits {
        case .none: byteLevel
        case .individual, .contiguous:
            obj(["type": .string("Sequence"), "pretokenizers": .array([
                obj(["type": .string("Digits"), "individual_digits": .bool(preTokenizer.digits == .individual)]), byteLevel])])
        }

        var merges: [(rank: Int32, left: Int, right: Int)] = []
        merges.reserveCapacity(model.merges.count)
        for (key, m) in model.merges { merges.append((m.rank, Int(key >> 32), Int(key & 0xFFFF_FFFF))) }
        merges.sort { $0.rank < $1.rank }
        var mergeList: [JSON] = []
        mergeList.reserveCapacity(merges.count)
        for m in merges {
            guard let l = vocabulary.token(m.left), let r = vocabulary.token(m.right) else {
                throw exportError("merge of rank \(m.rank)", "names an id with no token")
            }
            mergeList.append(.array([.string(l), .string(r)]))
        }
        var modelUnknown = JSON.null
        if let u = model.unknown {
            guard let t = vocabulary.token(u) else { throw exportError("model unk", "has the id \(u), which has no token") }
            modelUnknown = .string(t)
        }
        let tokenizerJSON = obj([
            "version": .string("1.0"),
            "truncation": .null,
            "padding": .null,
            "added_tokens": addedTokensJSON(addedTokens),
            "normalizer": .null,
            "pre_tokenizer": preTokenizerJSON,
            "post_processor": postProcessor,
            "decoder": obj(["type": .string("ByteLevel"), "add_prefix_space": .bool(true), "trim_offsets": .bool(true), "use_regex": .bool(true)]),
            "model": obj([
                "type": .string("BPE"), "dropout": .null, "unk_token": modelUnknown,
                "continuing_subword_prefix": .null, "end_of_word_suffix": .null,
                "fuse_unk": .bool(model.fuseUnknown), "byte_fallback": .bool(false), "ignore_merges": .bool(model.ignoreMerges),
                "vocab": vocabularyJSON(vocabulary), "merges": .array(mergeList),
            ]),
        ])

        var config: [(key: String, value: JSON)] = [
            ("tokenizer_class", .string("PreTrainedTokenizerFast")),
            ("bos_token", bos.map(JSON.string) ?? .null), ("eos_token", eos.map(JSON.string) ?? .null),
            ("unk_token", unk.map(JSON.string) ?? .null), ("pad_token", pad.map(JSON.string) ?? .null),
        ]
        if let plain {
            config.append(("add_bos_token", .bool(plain.bos)))
            config.append(("add_eos_token", .bool(plain.eos)))
        }
        config.append(("clean_up_tokenization_spaces", .bool(false)))
        if let modelMaxLength { config.append(("model_max_length", .number(Double(modelMaxLength)))) }
        if let chatTemplate { config.append(("chat_template", .string(chatTemplate))) }

        let map = [("bos_token", bos), ("eos_token", eos), ("unk_token", unk), ("pad_token", pad)]
            .compactMap { k, v in v.map { (key: k, value: JSON.string($0)) } }
        return ["tokenizer.json": serialize(tokenizerJSON),
                "tokenizer_config.json": serialize(.object(config)),
                "special_tokens_map.json": serialize(.object(map))]
    }
}

extension WordPieceTokenizer {
    /// Hugging Face files for this tokenizer: name → contents (`tokenizer.json`, `tokenizer_config.json`, `special_tokens_map.json`).
    /// `modelMaxLength` goes into tokenizer_config.json as "model_max_length" when given (BERT: 512).
    public func huggingFaceFiles(modelMaxLength: Int? = nil) throws(TokenizerError) -> [String: Data] {
        guard let unkToken = vocabulary.token(unknown) else { throw exportError("unk", "has the id \(unknown), which has no token") }
        var normalizer = JSON.null
        if let n = normalization {
            normalizer = obj(["type": .string("BertNormalizer"), "clean_text": .bool(n.cleanText), "handle_chinese_chars": .bool(n.handleChineseChars),
                              "strip_accents": n.stripAccents.map(JSON.bool) ?? .null, "lowercase": .bool(n.lowercase)])
        }
        var decoderJSON = JSON.null
        if let decoder {
            decoderJSON = obj(["type": .string("WordPiece"), "prefix": .string(String(decoding: decoder.prefix, as: UTF8.self)), "cleanup": .bool(decoder.cleanup)])
        }
        let tokenizerJSON = obj([
            "version": .string("1.0"),
            "truncation": .null,
            "padding": .null,
            "added_tokens": addedTokensJSON(addedTokens),
            "normalizer": normalizer,
            "pre_tokenizer": obj(["type": .string("BertPreTokenizer")]),
            "post_processor": try templateProcessing(template, token: token(of:)),
            "decoder": decoderJSON,
            "model": obj([
                "type": .string("WordPiece"), "unk_token": .string(unkToken), "continuing_subword_prefix": .string(continuingSubwordPrefix),
                "max_input_chars_per_word": .number(Double(maxInputCharsPerWord)), "vocab": vocabularyJSON(vocabulary),
            ]),
        ])
        var names: [(key: String, value: String)] = []
        for (key, id) in [("bos_token", bosTokenId), ("eos_token", eosTokenId), ("unk_token", unknownTokenId), ("sep_token", separatorTokenId),
                          ("pad_token", padTokenId), ("cls_token", classifierTokenId), ("mask_token", maskTokenId)] {
            guard let id else { continue }
            guard let t = token(of: id) else { throw exportError(key, "has the id \(id), which has no token") }
            names.append((key, t))
        }
        return tokenizerFiles(tokenizerJSON, names: names, modelMaxLength: modelMaxLength, chatTemplate: nil)
    }
}

/// The three files for `tokenizerJSON`, with the special tokens `names` (bos_token: "<s>", …) in
/// tokenizer_config.json and special_tokens_map.json.
private func tokenizerFiles(_ tokenizerJSON: JSON, names: [(key: String, value: String)], modelMaxLength: Int?, chatTemplate: String?) -> [String: Data] {
    var config: [(key: String, value: JSON)] = [("tokenizer_class", .string("PreTrainedTokenizerFast"))]
    config += names.map { ($0.key, .string($0.value)) }
    config.append(("clean_up_tokenization_spaces", .bool(false)))
    if let modelMaxLength { config.append(("model_max_length", .number(Double(modelMaxLength)))) }
    if let chatTemplate { config.append(("chat_template", .string(chatTemplate))) }
    return ["tokenizer.json": serialize(tokenizerJSON),
            "tokenizer_config.json": serialize(.object(config)),
            "special_tokens_map.json": serialize(.object(names.map { ($0.key, .string($0.value)) }))]
}

private func exportError(_ what: String, _ reason: String) -> TokenizerError {
    .invalidField(file: "Hugging Face export", field: what, reason: reason)
}

private func obj(_ members: KeyValuePairs<String, JSON>) -> JSON {
    .object(members.map { (key: $0.key, value: $0.value) })
}

private func addedTokensJSON(_ tokens: [AddedToken]) -> JSON {
    .array(tokens.enumerated().sorted { ($0.element.id, $0.offset) < ($1.element.id, $1.offset) }.map { _, t in
        obj(["id": .number(Double(t.id)), "content": .string(t.content), "single_word": .bool(t.singleWord), "lstrip": .bool(t.lstrip),
             "rstrip": .bool(t.rstrip), "normalized": .bool(t.normalized), "special": .bool(t.special)])
    })
}

private func vocabularyJSON(_ vocabulary: Vocabulary) -> JSON {
    .object(vocabulary.entries.map { (key: $0.token, value: .number(Double($0.id))) })
}

/// HF `TemplateProcessing` for a template; each special part is named after its tokens.
private func templateProcessing(_ template: Template, token: (Int) -> String?) throws(TokenizerError) -> JSON {
    var specials: [(name: String, ids: [Int], tokens: [String])] = []
    func items(_ list: [Template.Item]) throws(TokenizerError) -> JSON {
        var out: [JSON] = []
        for item in list {
            switch item {
            case let .sequence(second, typeId):
                out.append(obj(["Sequence": obj(["id": .string(second ? "B" : "A"), "type_id": .number(Double(typeId))])]))
            case let .special(ids, typeId):
                var tokens: [String] = []
                for id in ids {
                    guard let t = token(id) else { throw exportError("post-processor", "uses the id \(id), which has no token") }
                    tokens.append(t)
                }
                var name = tokens.joined(separator: " ")
                if let same = specials.first(where: { $0.name == name }), same.ids != ids {
                    var k = 2
                    while specials.contains(where: { $0.name == "\(name)#\(k)" }) { k += 1 }
                    name += "#\(k)"
                }
                if !specials.contains(where: { $0.name == name }) { specials.append((name, ids, tokens)) }
                out.append(obj(["SpecialToken": obj(["id": .string(name), "type_id": .number(Double(typeId))])]))
            }
        }
        return .array(out)
    }
    let single = try items(template.single)
    let pair = try items(template.pair)
    return obj([
        "type": .string("TemplateProcessing"), "single": single, "pair": pair,
        "special_tokens": .object(specials.map { s in
            (key: s.name, value: obj(["id": .string(s.name), "ids": .array(s.ids.map { .number(Double($0)) }),
                                      "tokens": .array(s.tokens.map(JSON.string))]))
        }),
    ])
}

/// JSON text, two-space indentation, members in their stored order, strings byte for byte
/// (non-ASCII unescaped, as serde_json writes it); arrays of scalars stay on one line.
private func serialize(_ value: JSON) -> Data {
    var out: [UInt8] = []
    out.reserveCapacity(1 << 16)
    write(value, indent: 0, into: &out)
    out.append(0x0A)
    return Data(out)
}

private func write(_ value: JSON, indent: Int, into out: inout [UInt8]) {
    func newline(_ n: Int) {
        out.append(0x0A)
        out.append(contentsOf: repeatElement(0x20, count: n))
    }
    switch value {
    case .null: out += Array("null".utf8)
    case .bool(let b): out += Array((b ? "true" : "false").utf8)
    case .number(let d):
        if d.rounded() == d, abs(d) < 9.0e15 { out += Array(String(Int(d)).utf8) } else { out += Array((d.isFinite ? "\(d)" : "null").utf8) }
    case .string(let s): writeString(s, into: &out)
    case .array(let elements):
        if elements.isEmpty { out += Array("[]".utf8); return }
        let inline = elements.allSatisfy { $0.array == nil && $0.object == nil }
        out.append(UInt8(ascii: "["))
        for (i, e) in elements.enumerated() {
            if i > 0 { out.append(UInt8(ascii: ",")); if inline { out.append(0x20) } }
            if !inline { newline(indent + 2) }
            write(e, indent: indent + 2, into: &out)
        }
        if !inline { newline(indent) }
        out.append(UInt8(ascii: "]"))
    case .object(let members):
        if members.isEmpty { out += Array("{}".utf8); return }
        out.append(UInt8(ascii: "{"))
        for (i, m) in members.enumerated() {
            if i > 0 { out.append(UInt8(ascii: ",")) }
            newline(indent + 2)
            writeString(m.key, into: &out)
            out += [UInt8(ascii: ":"), 0x20]
            write(m.value, indent: indent + 2, into: &out)
        }
        newline(indent)
        out.append(UInt8(ascii: "}"))
    }
}

private func writeString(_ s: String, into out: inout [UInt8]) {
    out.append(UInt8(ascii: "\""))
    for b in s.utf8 {
        switch b {
        case UInt8(ascii: "\""): out += [0x5C, b]
        case UInt8(ascii: "\\"): out += [0x5C, 0x5C]
        case 0x0A: out += [0x5C, UInt8(ascii: "n")]
        case 0x0D: out += [0x5C, UInt8(ascii: "r")]
        case 0x09: out += [0x5C, UInt8(ascii: "t")]
        case 0x08: out += [0x5C, UInt8(ascii: "b")]
        case 0x0C: out += [0x5C, UInt8(ascii: "f")]
        case ..<0x20:
            let hex = Array("0123456789abcdef".utf8)
            out += Array("\\u00".utf8) + [hex[Int(b >> 4)], hex[Int(b & 0xF)]]
        default: out.append(b)
        }
    }
    out.append(UInt8(ascii: "\""))
}

extension SentencePieceBPETokenizer {
    /// The merges this tokenizer applies, in rank order: every split of a vocabulary token into two
    /// vocabulary pieces, ordered as `encode` merges (the merged token's id, then the longer left
    /// piece, then the longer right one). What transformers derives from a Gemma GGUF.
    var impliedMerges: [(left: String, right: String)] {
        var merges: [(id: Int, left: Int, right: Int, pair: (String, String))] = []
        for (token, id) in vocabulary.entries {
            let scalars = Array(token.unicodeScalars)
            guard scalars.count >= 2 else { continue }
            for cut in 1..<scalars.count {
                var left = String.UnicodeScalarView(), right = String.UnicodeScalarView()
                left.append(contentsOf: scalars[..<cut])
                right.append(contentsOf: scalars[cut...])
                let l = String(left), r = String(right)
                guard vocabulary.contains(l), vocabulary.contains(r) else { continue }
                merges.append((id, cut, scalars.count - cut, (l, r)))
            }
        }
        merges.sort { ($0.id, -$0.left, -$0.right) < ($1.id, -$1.left, -$1.right) }
        return merges.map { (left: $0.pair.0, right: $0.pair.1) }
    }

    /// Hugging Face files for this tokenizer (`tokenizer.json`, `tokenizer_config.json`,
    /// `special_tokens_map.json`): BPE with byte fallback, the " " → "▁" normalizer, the implied
    /// merges, control tokens as special added tokens, and `<bos>` prepended when the tokenizer
    /// adds it — the tokenizer transformers builds from the GGUF.
    public func huggingFaceFiles(chatTemplate: String?, modelMaxLength: Int? = nil) throws(TokenizerError) -> [String: Data] {
        func name(_ id: Int?, _ role: String) throws(TokenizerError) -> String? {
            guard let id else { return nil }
            guard let t = token(of: id) else { throw exportError(role, "has the id \(id), which has no token") }
            return t
        }
        let bos = try name(bosTokenId, "bos"), eos = try name(eosTokenId, "eos"), pad = try name(padTokenId, "pad")
        let unk = try name(unknownTokenId, "unk")
        var postProcessor = JSON.null
        if addBOS, let b = bosTokenId {
            postProcessor = try templateProcessing(Template(single: [.special(ids: [b], typeId: 0), .sequence(second: false, typeId: 0)],
                                                            pair: [.special(ids: [b], typeId: 0), .sequence(second: false, typeId: 0),
                                                                   .special(ids: [b], typeId: 1), .sequence(second: true, typeId: 1)]),
                                                   token: token(of:))
        }
        let space = JSON.object([("String", .string(" "))])
        let tokenizerJSON = obj([
            "version": .string("1.0"),
            "truncation": .null,
            "padding": .null,
            "added_tokens": addedTokensJSON(added.tokens),
            "normalizer": obj(["type": .string("Replace"), "pattern": space, "content": .string("\u{2581}")]),
            "pre_tokenizer": obj(["type": .string("Split"), "pattern": space, "behavior": .string("MergedWithPrevious"), "invert": .bool(false)]),
            "post_processor": postProcessor,
            "decoder": obj(["type": .string("Sequence"), "decoders": .array([
                obj(["type": .string("Replace"), "pattern": .object([("String", .string("\u{2581}"))]), "content": .string(" ")]),
                obj(["type": .string("ByteFallback")]), obj(["type": .string("Fuse")]),
            ])]),
            "model": obj([
                "type": .string("BPE"), "dropout": .null, "unk_token": unk.map(JSON.string) ?? .null,
                "continuing_subword_prefix": .null, "end_of_word_suffix": .null, "fuse_unk": .bool(true), "byte_fallback": .bool(true),
                "ignore_merges": .bool(false), "vocab": vocabularyJSON(vocabulary),
                "merges": .array(impliedMerges.map { .array([.string($0.left), .string($0.right)]) }),
            ]),
        ])
        let names = [("bos_token", bos), ("eos_token", eos), ("unk_token", unk), ("pad_token", pad)].compactMap { k, v in v.map { (key: k, value: $0) } }
        return tokenizerFiles(tokenizerJSON, names: names, modelMaxLength: modelMaxLength, chatTemplate: chatTemplate)
    }
}
