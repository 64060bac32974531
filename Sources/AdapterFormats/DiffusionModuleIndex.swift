/// The adaptable weights of a Stable Diffusion base model, by component ("unet", "text_encoder",
/// "text_encoder_2") and diffusers module path, and every spelling adapter files use for each:
/// the design of ComfyUI's and stable-diffusion.cpp's key maps, built from the model's own
/// module names so that a spelling resolves only to a module the model has.
///
/// Spellings of a UNet module `down_blocks.1.attentions.0.transformer_blocks.0.attn2.to_k`:
/// kohya's `lora_unet_` + the path with `_` (SD1/SD2), kohya's `lora_unet_` + its SAI/SGM name with
/// `_` (SDXL: `input_blocks_4_1_…`), diffusers' and PEFT's `unet.` + path (also bare and under
/// `base_model.model.`), and the old attention processors' `….attn2.processor.to_k` (`to_out` for
/// `to_out.0`). Of a text-encoder module `encoder.layers.0.self_attn.q_proj` (transformers 5 drops
/// `text_model.`; both forms are accepted): kohya's `lora_te_` / `lora_te1_` (first encoder) or
/// `lora_te2_` + `text_model_encoder_layers_0_self_attn_q_proj`, `text_encoder.` / `text_encoder_2.`
/// + the path, and the old `….self_attn.to_q`. A spelling two modules share is ambiguous and
/// resolves to neither.
public struct DiffusionModuleIndex: Sendable {
    public struct Module: Hashable, Sendable, CustomStringConvertible, Comparable {
        public let component: String
        public let path: String
        public init(component: String, path: String) {
            self.component = component
            self.path = path
        }
        public var description: String { component + "." + path }
        public static func < (a: Module, b: Module) -> Bool { a.description < b.description }
    }

    /// Each adaptable weight's shape.
    public let shapes: [Module: [Int]]
    private var aliases: [String: Module] = [:]
    /// Spellings that name more than one module.
    public private(set) var ambiguous: Set<String> = []

    /// - Parameters:
    ///   - weights: per component, every tensor name and shape of its weights file; the
    ///     `.weight` tensors of rank ≥ 2 (linear and convolution weights) are the adaptable modules.
    ///   - unetLayersPerBlock: the UNet's `layers_per_block`, for the SAI/SGM block numbering.
    public init(weights: [String: [String: [Int]]], unetLayersPerBlock: Int?) {
        var shapes: [Module: [Int]] = [:]
        for (component, tensors) in weights {
            for (name, shape) in tensors where name.hasSuffix(".weight") && shape.count >= 2 {
                shapes[Module(component: component, path: String(name.dropLast(".weight".count)))] = shape
            }
        }
        self.shapes = shapes
        let upBlocksWithAttention = Set(shapes.keys.filter { $0.component == "unet" }.compactMap { m -> String? in
            let p = m.path.split(separator: ".")
            return p.count > 2 && p[0] == "up_blocks" && p[2] == "attentions" ? String(p[1]) : nil
        })
        for module in shapes.keys.sorted() {
            for spelling in Self.spellings(of: module, layersPerBlock: unetLayersPerBlock, upBlocksWithAttention: upBlocksWithAttention) {
                if let existing = aliases[spelling], existing != module {
                    ambiguous.insert(spelling)
                } else {
                    aliases[spelling] = module
                }
            }
        }
        for spelling in ambiguous { aliases[spelling] = nil }
    }

    public func resolve(_ spelling: String) -> Module? { aliases[spelling] }

    static func underscored(_ path: String) -> String { path.replacingOccurrences(of: ".", with: "_") }

    static func spellings(of module: Module, layersPerBlock: Int?, upBlocksWithAttention: Set<String>) -> [String] {
        let path = module.path, component = module.component
        if component == "unet" {
            var result = ["lora_unet_" + underscored(path), "unet." + path, path, "base_model.model." + path]
            if let layersPerBlock, let sgm = sgmName(path, layersPerBlock: layersPerBlock, upBlocksWithAttention: upBlocksWithAttention) {
                result.append("lora_unet_" + underscored(sgm))
            }
            if let old = oldAttentionSpelling(path) { result += ["unet." + old, old] }
            return result
        }
        // Text encoders: with and without transformers' `text_model.` wrapper.
        let bare = path.hasPrefix("text_model.") ? String(path.dropFirst("text_model.".count)) : path
        let wrapped = "text_model." + bare
        let kohya = component == "text_encoder" ? ["lora_te_", "lora_te1_"] : component == "text_encoder_2" ? ["lora_te2_"] : []
        var result: [String] = []
        for form in [wrapped, bare] {
            result += kohya.map { $0 + underscored(form) }
            result += [component + "." + form, form, "base_model.model." + form]
            if let old = oldTextEncoderSpelling(form) { result += [component + "." + old, old] }
        }
        return result
    }

    /// `….attn1.to_q` → `….attn1.processor.to_q`; `….to_out.0` → `….processor.to_out` (the old
    /// attention processors' names, without their `_lora` suffix).
    static func oldAttentionSpelling(_ path: String) -> String? {
        for projection in ["to_q", "to_k", "to_v", "to_out.0"] {
            for attention in [".attn1.", ".attn2."] where path.hasSuffix(attention + projection) {
                let head = path.dropLast(projection.count)
                return head + "processor." + (projection == "to_out.0" ? "to_out" : projection)
            }
        }
        return nil
    }

    /// `….self_attn.q_proj` → `….self_attn.to_q` (`out_proj` → `to_out`).
    static func oldTextEncoderSpelling(_ path: String) -> String? {
        for (projection, old) in [("q_proj", "to_q"), ("k_proj", "to_k"), ("v_proj", "to_v"), ("out_proj", "to_out")]
        where path.hasSuffix("self_attn." + projection) {
            return path.dropLast(projection.count) + old
        }
        return nil
    }

    /// A diffusers UNet module path in SAI/SGM (original LDM) naming: `down_blocks.i.resnets.j` ↔
    /// `input_blocks.{1 + i(L+1) + j}.0`, attentions `.1`, downsamplers `input_blocks.{(i+1)(L+1)}.0.op`;
    /// `up_blocks.i.{resnets,attentions}.j` ↔ `output_blocks.{i(L+1) + j}.{0,1}`, upsamplers
    /// `output_blocks.{i(L+1) + L}.{2, or 1 in a block without attention}`; `mid_block` ↔
    /// `middle_block.{0,1,2}`; resnet internals, the time and label embeddings, conv_in/out renamed.
    public static func sgmName(_ path: String, layersPerBlock l: Int, upBlocksWithAttention: Set<String>) -> String? {
        let p = path.split(separator: ".").map(String.init)
        let per = l + 1
        func resnet(_ rest: ArraySlice<String>) -> [String] {
            let table = ["conv1": ["in_layers", "2"], "conv2": ["out_layers", "3"], "time_emb_proj": ["emb_layers", "1"],
                         "conv_shortcut": ["skip_connection"], "norm1": ["in_layers", "0"], "norm2": ["out_layers", "0"]]
            if rest.count == 1, let mapped = table[rest[rest.startIndex]] { return mapped }
            return Array(rest)
        }
        let simple = ["conv_in": "input_blocks.0.0", "conv_out": "out.2", "conv_norm_out": "out.0",
                      "time_embedding.linear_1": "time_embed.0", "time_embedding.linear_2": "time_embed.2",
                      "add_embedding.linear_1": "label_emb.0.0", "add_embedding.linear_2": "label_emb.0.2"]
        if let mapped = simple[path] { return mapped }
        guard p.count >= 3 else { return nil }
        switch p[0] {
        case "down_blocks":
            guard let i = Int(p[1]) else { return nil }
            if p[2] == "downsamplers" { return (["input_blocks", String(per * (i + 1)), "0", "op"] + p.dropFirst(5)).joined(separator: ".") }
            guard p.count >= 5, let j = Int(p[3]), ["resnets", "attentions"].contains(p[2]) else { return nil }
            let inner = p[2] == "resnets" ? "0" : "1"
            let rest = p[2] == "resnets" ? resnet(p[4...]) : Array(p[4...])
            return (["input_blocks", String(1 + per * i + j), inner] + rest).joined(separator: ".")
        case "up_blocks":
            guard let i = Int(p[1]) else { return nil }
            if p[2] == "upsamplers" {
                let inner = upBlocksWithAttention.contains(p[1]) ? "2" : "1"
                return (["output_blocks", String(per * i + l), inner] + p.dropFirst(4)).joined(separator: ".")
            }
            guard p.count >= 5, let j = Int(p[3]), ["resnets", "attentions"].contains(p[2]) else { return nil }
            let inner = p[2] == "resnets" ? "0" : "1"
            let rest = p[2] == "resnets" ? resnet(p[4...]) : Array(p[4...])
            return (["output_blocks", String(per * i + j), inner] + rest).joined(separator: ".")
        case "mid_block":
            let index: String
            switch (p[1], p[2]) {
            case ("resnets", "0"): index = "0"
            case ("attentions", "0"): index = "1"
            case ("resnets", "1"): index = "2"
            default: return nil
            }
            let rest = p[1] == "resnets" ? resnet(p[3...]) : Array(p[3...])
            return (["middle_block", index] + rest).joined(separator: ".")
        default:
            return nil
        }
    }
}
