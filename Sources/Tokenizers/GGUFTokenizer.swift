import Formats

/// The tokenizer a GGUF file describes (`tokenizer.ggml.*`), built as transformers 5.24 builds it
/// from the same file:
/// - `gpt2`: byte-level BPE with the file's merges. The pre-tokenizer follows `tokenizer.ggml.pre`
///   as llama.cpp does ("smollm": digits split first, as the upstream tokenizer.json does;
///   transformers' GGUF conversion drops that step, which only changes runs of whitespace before
///   a number).
/// - `llama` (SentencePiece) for the Gemma architectures: `SentencePieceBPETokenizer`. Other
///   SentencePiece files are refused by name: their normalizer and merge order differ.
public func ggufTokenizer(_ gguf: GGUFFile) throws(TokenizerError) -> any Tokenizer {
    let m = gguf.metadata
    let source = gguf.path ?? "GGUF metadata"
    let model = m["tokenizer.ggml.model"]?.string ?? "(none)"
    guard let tokens = m["tokenizer.ggml.tokens"]?.strings else { throw .missingField(file: source, field: "tokenizer.ggml.tokens") }
    let architecture = m["general.architecture"]?.string ?? "(none)"
    switch model {
    case "gpt2":
        guard let merges = m["tokenizer.ggml.merges"]?.strings else { throw .missingField(file: source, field: "tokenizer.ggml.merges") }
        return try ByteLevelBPETokenizer(
            tokens: tokens, merges: merges, tokenTypes: m["tokenizer.ggml.token_type"]?.ints,
            preTokenizer: try PreTokenizer.llamaCpp(m["tokenizer.ggml.pre"]?.string ?? "default", source: source),
            bos: m["tokenizer.ggml.bos_token_id"]?.int, eos: m["tokenizer.ggml.eos_token_id"]?.int,
            pad: m["tokenizer.ggml.padding_token_id"]?.int, unknown: m["tokenizer.ggml.unknown_token_id"]?.int,
            addBOS: m["tokenizer.ggml.add_bos_token"]?.bool ?? false, source: source)
    case "llama" where ["gemma", "gemma2", "gemma3"].contains(architecture):
        if m["tokenizer.ggml.add_space_prefix"]?.bool == true {
            throw .unsupportedComponent(file: source, component: "tokenizer.ggml.add_space_prefix", detail: "true (Gemma files have false)")
        }
        return try SentencePieceBPETokenizer(
            tokens: tokens, tokenTypes: m["tokenizer.ggml.token_type"]?.ints,
            bos: m["tokenizer.ggml.bos_token_id"]?.int, eos: m["tokenizer.ggml.eos_token_id"]?.int,
            pad: m["tokenizer.ggml.padding_token_id"]?.int, unknown: m["tokenizer.ggml.unknown_token_id"]?.int,
            // transformers (and llama.cpp) add BOS to a SentencePiece vocabulary unless told otherwise.
            addBOS: m["tokenizer.ggml.add_bos_token"]?.bool ?? true, source: source)
    case "llama":
        throw .unsupportedModel(file: source, type: "tokenizer.ggml.model llama (SentencePiece) for architecture \(architecture); supported: gpt2 (byte-level BPE), and llama for gemma, gemma2, gemma3")
    default:
        throw .unsupportedModel(file: source, type: "tokenizer.ggml.model \(model); supported: gpt2 (byte-level BPE), llama (SentencePiece, Gemma)")
    }
}
