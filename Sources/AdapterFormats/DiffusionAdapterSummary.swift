/// What `lora adapter inspect` says of a Stable Diffusion adapter file.
public struct DiffusionAdapterSummary: Encodable, Sendable {
    /// The spellings the keys use ("kohya", "diffusers", "peft", …).
    public let spellings: [String]
    /// sd1, sd2, sdxl, llm, or unknown (with the reason in `familyEvidence`).
    public let family: String
    public let familyEvidence: String
    /// Modules per target: unet, text_encoder, text_encoder_2 (unknown: a spelling of neither).
    public let targets: [String: Int]
    /// Modules per algorithm (lora, loha, lokr, diff; "+dora" with a dora_scale).
    public let algorithms: [String: Int]
    public let modules: Int
    /// The ranks and alphas the modules use (one value each when uniform).
    public let ranks: [Int]
    public let alphas: [Float]
    public let parameters: Int
    public let tensorTypes: [String: Int]
    public let fileBytes: Int
    /// The header's `ss_*` and `modelspec.*` metadata.
    public let metadata: [String: String]

    enum CodingKeys: String, CodingKey {
        case spellings, family, familyEvidence = "family_evidence", targets, algorithms, modules, ranks, alphas, parameters
        case tensorTypes = "tensor_types", fileBytes = "file_bytes", metadata
    }

    public init(_ file: DiffusionAdapterFile) {
        spellings = file.spellings.sorted()
        var targets: [String: Int] = [:], algorithms: [String: Int] = [:]
        var ranks = Set<Int>(), alphas = Set<Float>(), parameters = 0
        var crossAttentionWidth: Int?
        for (spelling, delta) in file.modules {
            targets[Self.target(spelling), default: 0] += 1
            algorithms[delta.algorithm.rawValue + (delta.doraScale != nil ? "+dora" : ""), default: 0] += 1
            if let r = delta.rank { ranks.insert(r) }
            if let a = delta.alpha { alphas.insert(a) }
            parameters += delta.tensors.reduce(0) { $0 + $1.count }
            // attn2.to_k reads the text encoders' hidden states: its input width tells the family.
            if crossAttentionWidth == nil, spelling.contains("attn2") && (spelling.hasSuffix("to_k") || spelling.hasSuffix("to_k_lora")),
               case let .lora(down, _, _) = delta.kind, down.shape.count >= 2 {
                crossAttentionWidth = down.shape[1]
            }
        }
        self.targets = targets
        self.algorithms = algorithms
        modules = file.modules.count
        self.ranks = ranks.sorted()
        self.alphas = alphas.sorted()
        self.parameters = parameters
        tensorTypes = file.storedTypes
        fileBytes = file.fileBytes
        metadata = file.metadata.filter { $0.key.hasPrefix("ss_") || $0.key.hasPrefix("modelspec.") }
        (family, familyEvidence) = Self.family(file, targets: targets, crossAttentionWidth: crossAttentionWidth)
    }

    /// The component a spelling names.
    static func target(_ spelling: String) -> String {
        var s = spelling
        if s.hasPrefix("base_model.model.") { s.removeFirst("base_model.model.".count) }
        if s.hasPrefix("lora_unet_") || s.hasPrefix("unet.") || ["down_blocks", "mid_block", "up_blocks", "conv_in", "conv_out", "time_embedding", "add_embedding"].contains(where: s.hasPrefix) {
            return "unet"
        }
        if s.hasPrefix("lora_te2_") || s.hasPrefix("text_encoder_2.") { return "text_encoder_2" }
        if s.hasPrefix("lora_te_") || s.hasPrefix("lora_te1_") || s.hasPrefix("text_encoder.") || s.hasPrefix("text_model.") { return "text_encoder" }
        return "unknown"
    }

    static func family(_ file: DiffusionAdapterFile, targets: [String: Int], crossAttentionWidth: Int?) -> (String, String) {
        if let version = file.metadata["ss_base_model_version"] {
            if version.hasPrefix("sdxl") { return ("sdxl", "ss_base_model_version \(version)") }
            if version.hasPrefix("sd_v2") { return ("sd2", "ss_base_model_version \(version)") }
            if version.hasPrefix("sd_v1") { return ("sd1", "ss_base_model_version \(version)") }
        }
        if let architecture = file.metadata["modelspec.architecture"] {
            if architecture.contains("stable-diffusion-xl") { return ("sdxl", "modelspec.architecture \(architecture)") }
            if architecture.contains("stable-diffusion-v2") { return ("sd2", "modelspec.architecture \(architecture)") }
            if architecture.contains("stable-diffusion-v1") { return ("sd1", "modelspec.architecture \(architecture)") }
        }
        if targets["text_encoder_2"] != nil { return ("sdxl", "a second text encoder") }
        if file.modules.contains(where: { $0.spelling.contains("input_blocks") || $0.spelling.contains("output_blocks") }) {
            return ("sdxl", "SGM block names (input_blocks, output_blocks), as kohya writes SDXL files")
        }
        if let width = crossAttentionWidth {
            switch width {
            case 768: return ("sd1", "cross-attention width 768 (CLIP ViT-L)")
            case 1024: return ("sd2", "cross-attention width 1024 (OpenCLIP ViT-H)")
            case 2048: return ("sdxl", "cross-attention width 2048")
            default: return ("unknown", "cross-attention width \(width) is none of SD1's 768, SD2's 1024, SDXL's 2048")
            }
        }
        if targets["unknown"] == file.modules.count, file.modules.contains(where: { $0.spelling.contains("layers.") && $0.spelling.contains("_proj") }) {
            return ("llm", "language-model module names (a PEFT adapter: give its folder)")
        }
        return ("unknown", "no metadata, no cross-attention module")
    }
}
