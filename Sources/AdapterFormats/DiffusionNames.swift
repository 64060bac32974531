/// A Stable Diffusion adapter module's spelling turned into its component and diffusers module
/// path without a base model to look names up in — for converting files when no checkpoint is at
/// hand. kohya's underscores are undone around the names the UNet and CLIP modules use
/// (`transformer_blocks`, `to_q`, `self_attn`, … kept whole; stable-diffusion.cpp's approach),
/// SGM block numbers are mapped back with `layers_per_block` (SDXL: 2), the old attention
/// processors' names are mapped to the modules they wrap. Text-encoder paths keep
/// transformers' `text_model.` wrapper. With a base, `DiffusionModuleIndex` is the exact way.
public enum DiffusionNames {
    /// Names that contain an underscore, longest first within each start.
    static let protected: Set<String> = [
        "down_blocks", "up_blocks", "mid_block", "transformer_blocks", "proj_in", "proj_out", "to_q", "to_k", "to_v", "to_out",
        "time_emb_proj", "conv_shortcut", "conv_in", "conv_out", "conv_norm_out", "time_embedding", "linear_1", "linear_2",
        "add_embedding", "input_blocks", "output_blocks", "middle_block", "time_embed", "label_emb", "in_layers", "out_layers",
        "emb_layers", "skip_connection", "text_model", "self_attn", "q_proj", "k_proj", "v_proj", "out_proj", "final_layer_norm",
        "layer_norm1", "layer_norm2", "token_embedding", "position_embedding", "text_projection",
    ]

    /// "down_blocks_0_attentions_0_transformer_blocks_0_attn2_to_k" → "down_blocks.0.attentions.0.transformer_blocks.0.attn2.to_k".
    public static func dotted(_ underscored: String) -> String {
        let tokens = underscored.split(separator: "_", omittingEmptySubsequences: false).map(String.init)
        var parts: [String] = [], i = 0
        while i < tokens.count {
            var taken = 1
            for k in stride(from: min(3, tokens.count - i), through: 2, by: -1) where protected.contains(tokens[i..<(i + k)].joined(separator: "_")) {
                taken = k
                break
            }
            parts.append(tokens[i..<(i + taken)].joined(separator: "_"))
            i += taken
        }
        return parts.joined(separator: ".")
    }

    /// The module a spelling names, or nil when it is none of the forms SD adapter files use.
    public static func canonical(_ spelling: String, layersPerBlock: Int = 2) -> DiffusionModuleIndex.Module? {
        var s = spelling
        if s.hasPrefix("base_model.model.") { s.removeFirst("base_model.model.".count) }
        let component: String, path: String
        let kohya = [("lora_unet_", "unet"), ("lora_te2_", "text_encoder_2"), ("lora_te1_", "text_encoder"), ("lora_te_", "text_encoder")]
        if let (prefix, c) = kohya.first(where: { s.hasPrefix($0.0) }) {
            component = c
            path = dotted(String(s.dropFirst(prefix.count)))
        } else if let c = ["text_encoder_2", "text_encoder", "unet"].first(where: { s.hasPrefix($0 + ".") }) {
            component = c
            path = String(s.dropFirst(c.count + 1))
        } else if s.hasPrefix("text_model.") || s.hasPrefix("encoder.layers.") {
            component = "text_encoder"
            path = s
        } else if ["down_blocks.", "mid_block.", "up_blocks.", "conv_in", "conv_out", "time_embedding.", "add_embedding."].contains(where: s.hasPrefix) {
            component = "unet"
            path = s
        } else {
            return nil
        }
        if component == "unet" {
            var p = path
            if let sgm = fromSGM(p, layersPerBlock: layersPerBlock) { p = sgm }
            if p.contains(".processor.") {
                p = p.replacingOccurrences(of: ".processor.", with: ".")
                if p.hasSuffix(".to_out") { p += ".0" }
            }
            guard p.hasPrefix("down_blocks.") || p.hasPrefix("mid_block.") || p.hasPrefix("up_blocks.")
                    || ["conv_in", "conv_out", "conv_norm_out", "time_embedding.linear_1", "time_embedding.linear_2",
                        "add_embedding.linear_1", "add_embedding.linear_2"].contains(p) else { return nil }
            return .init(component: component, path: p)
        }
        var p = path.hasPrefix("text_model.") ? path : "text_model." + path
        for (old, new) in [("self_attn.to_q", "self_attn.q_proj"), ("self_attn.to_k", "self_attn.k_proj"),
                           ("self_attn.to_v", "self_attn.v_proj"), ("self_attn.to_out", "self_attn.out_proj")] where p.hasSuffix(old) {
            p = p.dropLast(old.count) + new
        }
        guard p.hasPrefix("text_model.encoder.layers.") || p == "text_model.text_projection" else { return nil }
        return .init(component: component, path: p)
    }

    /// SGM (original LDM) UNet names back to diffusers': the inverse of `DiffusionModuleIndex.sgmName`
    /// for SDXL's layout (an output block's inner index 2 is its upsampler). Nil for a non-SGM name.
    static func fromSGM(_ path: String, layersPerBlock l: Int) -> String? {
        let simple = ["input_blocks.0.0": "conv_in", "out.2": "conv_out", "out.0": "conv_norm_out", "time_embed.0": "time_embedding.linear_1",
                      "time_embed.2": "time_embedding.linear_2", "label_emb.0.0": "add_embedding.linear_1", "label_emb.0.2": "add_embedding.linear_2"]
        if let mapped = simple[path] { return mapped }
        let p = path.split(separator: ".").map(String.init)
        guard p.count >= 3, ["input_blocks", "output_blocks", "middle_block"].contains(p[0]), let n = Int(p[1]) else { return nil }
        let per = l + 1
        func resnet(_ rest: ArraySlice<String>) -> [String] {
            let joined = rest.joined(separator: ".")
            let table = ["in_layers.2": "conv1", "out_layers.3": "conv2", "emb_layers.1": "time_emb_proj", "skip_connection": "conv_shortcut",
                         "in_layers.0": "norm1", "out_layers.0": "norm2"]
            return table[joined].map { [$0] } ?? Array(rest)
        }
        switch p[0] {
        case "input_blocks":
            guard n >= 1 else { return nil }
            let block = (n - 1) / per, j = (n - 1) % per
            if p.count >= 4, p[2] == "0", p[3] == "op" { return (["down_blocks", String(block), "downsamplers", "0", "conv"] + p.dropFirst(4)).joined(separator: ".") }
            switch p[2] {
            case "0": return (["down_blocks", String(block), "resnets", String(j)] + resnet(p[3...])).joined(separator: ".")
            case "1": return (["down_blocks", String(block), "attentions", String(j)] + p[3...]).joined(separator: ".")
            default: return nil
            }
        case "output_blocks":
            let block = n / per, j = n % per
            switch p[2] {
            case "0": return (["up_blocks", String(block), "resnets", String(j)] + resnet(p[3...])).joined(separator: ".")
            case "1": return (["up_blocks", String(block), "attentions", String(j)] + p[3...]).joined(separator: ".")
            case "2": return (["up_blocks", String(block), "upsamplers", "0"] + p[3...]).joined(separator: ".")
            default: return nil
            }
        default:
            switch n {
            case 0: return (["mid_block", "resnets", "0"] + resnet(p[2...])).joined(separator: ".")
            case 1: return (["mid_block", "attentions", "0"] + p[2...]).joined(separator: ".")
            case 2: return (["mid_block", "resnets", "1"] + resnet(p[2...])).joined(separator: ".")
            default: return nil
            }
        }
    }
}
