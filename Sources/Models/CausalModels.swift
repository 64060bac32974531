import Foundation
import Formats
import Tokenizers

/// A causal language model ready to run on text: the model, its tokenizer and chat template.
public struct LoadedCausalLM {
    public let model: any CausalLanguageModel & PretrainedModel
    public let tokenizer: any Tokenizer
    public let chatTemplate: Result<ChatTemplate, ChatTemplateError>
    public init(model: any CausalLanguageModel & PretrainedModel, tokenizer: any Tokenizer, chatTemplate: Result<ChatTemplate, ChatTemplateError>) {
        self.model = model
        self.tokenizer = tokenizer
        self.chatTemplate = chatTemplate
    }

    /// The tokenizer's end-of-sequence token.
    public var stopTokens: Set<Int> { Set([tokenizer.eosTokenId].compactMap { $0 }) }
}
