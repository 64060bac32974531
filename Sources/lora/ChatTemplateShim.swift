import Tokenizers
// TEMPORARY until the chat-template families land (they define endOfTurn).
extension ChatTemplate { var endOfTurn: String { "<|im_end|>" } }
