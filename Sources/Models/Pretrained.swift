import Foundation
import Formats
import Tokenizers

/// A pretrained model with everything needed to use it on text: its tokenizer and, for chat
/// models, its chat template.
public struct Pretrained {
    public let model: any PretrainedModel
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

extension HuggingFaceExport {
    /// The tokenizer files of a loaded model: copied from a Hugging Face directory, or written
    /// from the GGUF metadata's tokenizer.
    public static func tokenizerFiles(for pretrained: Pretrained) throws -> [String: Data] {
        let source = URL(fileURLWithPath: pretrained.report.source)
        var isDirectory: ObjCBool = false
        if FileManager.default.fileExists(atPath: source.path, isDirectory: &isDirectory), isDirectory.boolValue {
            var files: [String: Data] = [:]
            for name in ["tokenizer.json", "tokenizer_config.json", "special_tokens_map.json", "vocab.txt"] {
                if let data = try? Data(contentsOf: source.appendingPathComponent(name)) { files[name] = data }
            }
            return files
        }
        let contextLength = pretrained.model.maxPositionEmbeddings
        if let bpe = pretrained.tokenizer as? ByteLevelBPETokenizer {
            return try bpe.huggingFaceFiles(chatTemplate: pretrained.chatTemplateSource, modelMaxLength: contextLength)
        }
        if let sentencePiece = pretrained.tokenizer as? SentencePieceBPETokenizer {
            return try sentencePiece.huggingFaceFiles(chatTemplate: pretrained.chatTemplateSource, modelMaxLength: contextLength)
        }
        if let wordPiece = pretrained.tokenizer as? WordPieceTokenizer { return try wordPiece.huggingFaceFiles(modelMaxLength: contextLength) }
        return [:]
    }
}
