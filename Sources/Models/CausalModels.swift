import Foundation
import Formats
import Tokenizers

/// A causal language model ready to run on text: the model, its tokenizer and chat template,
/// and its adaptable form (where adapters attach).
public struct LoadedCausalLM {
    public let model: any CausalLanguageModel
    public let tokenizer: any Tokenizer
    public let chatTemplate: Result<ChatTemplate, ChatTemplateError>
    public let adaptable: any AdaptableModel
    /// `general.architecture` or the Hugging Face `model_type`.
    public let architecture: String
    /// The tokenizer's end-of-sequence token.
    public var stopTokens: Set<Int> { Set([tokenizer.eosTokenId].compactMap { $0 }) }
}

/// The causal language models by architecture: Llama (GGUF or Hugging Face folder, through
/// `Pretrained`) and Gemma 3 (GGUF).
public enum CausalLanguageModels {
    public static func load(_ url: URL, frozen: FrozenPrecision = .fp32) throws(ModelError) -> LoadedCausalLM {
        if url.pathExtension.lowercased() == "gguf" {
            let gguf: GGUFFile
            do { gguf = try GGUFFile(url: url) } catch { throw .file(url, error) }
            if gguf.metadata["general.architecture"]?.string == "gemma3" {
                guard frozen == .fp32 else {
                    throw .invalidInput("--precision \(frozen.rawValue) is not available for gemma3 yet (it runs in fp32)")
                }
                let model = try Gemma3ForCausalLM.load(gguf, path: url.path)
                let tokenizer: any Tokenizer
                do { tokenizer = try ggufTokenizer(gguf) } catch { throw .file(url, error) }
                return LoadedCausalLM(model: model, tokenizer: tokenizer,
                                      chatTemplate: Pretrained.parseTemplate(gguf.metadata["tokenizer.chat_template"]?.string),
                                      adaptable: model, architecture: "gemma3")
            }
        }
        let pretrained = try Pretrained.load(url, frozen: frozen)
        guard case .llama(let llm) = pretrained.model else {
            throw .invalidInput("\(url.lastPathComponent) is a BERT-family encoder, not a causal language model")
        }
        return LoadedCausalLM(model: llm, tokenizer: pretrained.tokenizer, chatTemplate: pretrained.chatTemplate, adaptable: llm,
                              architecture: "llama")
    }
}
