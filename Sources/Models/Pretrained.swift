import Foundation
import Formats
import Tokenizers

/// A pretrained model with everything needed to use it on text: its tokenizer and, for chat
/// models, its chat template.
public struct Pretrained {
    public let model: PretrainedModel
    public let tokenizer: any Tokenizer
    /// nil when the model has no template; `.failure` names why a template is not supported.
    public let chatTemplate: Result<ChatTemplate, ChatTemplateError>
    /// The template's source text as the model carries it (written back when exporting).
    public var chatTemplateSource: String? = nil
    public var report: LoadReport
    /// Tokens that end generation (the tokenizer's end-of-sequence token).
    public var stopTokens: Set<Int> { Set([tokenizer.eosTokenId].compactMap { $0 }) }

    /// Loads a `.gguf` file (tokenizer and template from its metadata) or a Hugging Face
    /// directory (`tokenizer.json` or `vocab.txt`, template from `tokenizer_config.json`).
    /// `frozen` stores the frozen weights packed (bf16, or a GGUF file's own quantised blocks):
    /// for LoRA training and inference only; such a model cannot be fully fine-tuned or merged.
    public static func load(_ url: URL, seed: UInt64 = 0, labels: [String]? = nil, frozen: FrozenPrecision = .fp32) throws(ModelError) -> Pretrained {
        if url.pathExtension.lowercased() == "gguf" {
            // One parse of the file serves the weights, the tokenizer and the template.
            let gguf: GGUFFile
            do { gguf = try GGUFFile(url: url) } catch { throw .file(url, error) }
            let (model, report) = try ModelLoader.loadGGUF(gguf, url: url, frozen: frozen)
            let tokenizer: any Tokenizer
            do { tokenizer = try ggufTokenizer(gguf) } catch { throw .file(url, error) }
            let template = gguf.metadata["tokenizer.chat_template"]?.string
            return Pretrained(model: model, tokenizer: tokenizer, chatTemplate: parseTemplate(template),
                              chatTemplateSource: template, report: report)
        }
        if frozen == .q { throw .invalidInput("--precision q keeps a GGUF file's quantised blocks; \(url.lastPathComponent) is not a .gguf file") }
        let (model, report) = try ModelLoader.load(url, seed: seed, labels: labels)
        try model.compressFrozenWeights(to: frozen)
        let tokenizer: any Tokenizer
        do { tokenizer = try loadTokenizer(huggingFaceDirectory: url) } catch { throw .file(url, error) }
        var template: String?
        let configURL = url.appendingPathComponent("tokenizer_config.json")
        if let data = try? Data(contentsOf: configURL),
           let json = try? JSONSerialization.jsonObject(with: data) as? [String: Any] {
            template = json["chat_template"] as? String
        }
        return Pretrained(model: model, tokenizer: tokenizer, chatTemplate: parseTemplate(template),
                          chatTemplateSource: template, report: report)
    }

    static func parseTemplate(_ source: String?) -> Result<ChatTemplate, ChatTemplateError> {
        guard let source else { return .failure(.missing) }
        do { return .success(try ChatTemplate(jinja: source)) } catch { return .failure(error) }
    }
}

/// The tokenizer a GGUF file describes (`tokenizer.ggml.*`). The pre-tokenizer follows
/// `tokenizer.ggml.pre` as llama.cpp does ("smollm": digits split first, as the upstream
/// tokenizer.json does; transformers' GGUF conversion drops that step, which only changes
/// runs of whitespace before a number).
public func ggufTokenizer(_ gguf: GGUFFile) throws(TokenizerError) -> ByteLevelBPETokenizer {
    let m = gguf.metadata
    let source = gguf.path ?? "GGUF metadata"
    let model = m["tokenizer.ggml.model"]?.string ?? "(none)"
    guard model == "gpt2" else { throw .unsupportedModel(file: source, type: "tokenizer.ggml.model \(model)") }
    guard let tokens = m["tokenizer.ggml.tokens"]?.strings else { throw .missingField(file: source, field: "tokenizer.ggml.tokens") }
    guard let merges = m["tokenizer.ggml.merges"]?.strings else { throw .missingField(file: source, field: "tokenizer.ggml.merges") }
    return try ByteLevelBPETokenizer(
        tokens: tokens, merges: merges, tokenTypes: m["tokenizer.ggml.token_type"]?.ints,
        preTokenizer: try PreTokenizer.llamaCpp(m["tokenizer.ggml.pre"]?.string ?? "default", source: source),
        bos: m["tokenizer.ggml.bos_token_id"]?.int, eos: m["tokenizer.ggml.eos_token_id"]?.int,
        pad: m["tokenizer.ggml.padding_token_id"]?.int, unknown: m["tokenizer.ggml.unknown_token_id"]?.int,
        addBOS: m["tokenizer.ggml.add_bos_token"]?.bool ?? false, source: source)
}
