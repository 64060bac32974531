import Foundation
import Formats
import Kernels
import OrderedJSON

/// A Stable Diffusion adapter file (`.safetensors`) in any spelling users exchange, read into
/// one `WeightDelta` per module: kohya (`lora_unet_…`, `lora_te_…`, `lora_te1_/lora_te2_`;
/// `lora_down` / `lora_up` / `alpha`, LoCon's `lora_mid`), LyCORIS (`hada_*`, `lokr_*`, `diff`,
/// `dora_scale`), diffusers' and PEFT's (`….lora_A.weight` / `lora_B`, `.lora.down` / `.lora.up`,
/// `.lora_linear_layer.*`, the old `processor.to_q_lora.*`, `base_model.model.` and `.default`,
/// with `lora_adapter_metadata` in the header for r and lora_alpha).
///
/// A module is named here as the file spells it, less the tensor's role ("lora_unet_down_blocks_0_…",
/// "unet.down_blocks.0.….to_q"); `DiffusionModuleIndex` resolves spellings to a base model's modules.
public struct DiffusionAdapterFile {
    public var url: URL
    public var metadata: [String: String]
    /// Every module the file changes, by its spelling, in spelling order.
    public var modules: [(spelling: String, delta: WeightDelta)]
    /// How many tensors of each stored dtype the file holds, and its size.
    public var storedTypes: [String: Int]
    public var fileBytes: Int
    /// The spellings' families, for reports ("kohya", "diffusers", "peft").
    public var spellings: Set<String>

    /// The tensor roles a key may end with, longest first within each family, and what they are.
    enum Role: String, CaseIterable {
        case down, up, mid, alpha, scale, doraScale, diff, diffBias
        case hadaW1A, hadaW1B, hadaW2A, hadaW2B, hadaT1, hadaT2
        case lokrW1, lokrW1A, lokrW1B, lokrW2, lokrW2A, lokrW2B, lokrT2
    }

    /// (suffix, role, spelling family). Checked in order: the first suffix a key ends with wins.
    static let suffixes: [(String, Role, String)] = [
        (".lora_A.default.weight", .down, "peft"), (".lora_B.default.weight", .up, "peft"),
        (".lora_linear_layer.down.weight", .down, "diffusers"), (".lora_linear_layer.up.weight", .up, "diffusers"),
        (".lora_down.weight", .down, "kohya"), (".lora_up.weight", .up, "kohya"), (".lora_mid.weight", .mid, "kohya"),
        (".lora_A.weight", .down, "peft"), (".lora_B.weight", .up, "peft"),
        (".lora.down.weight", .down, "diffusers"), (".lora.up.weight", .up, "diffusers"),
        ("_lora.down.weight", .down, "diffusers (attention processors)"), ("_lora.up.weight", .up, "diffusers (attention processors)"),
        (".dora_scale", .doraScale, "kohya"), (".alpha", .alpha, "kohya"), (".scale", .scale, "kohya"),
        (".diff_b", .diffBias, "kohya"), (".diff", .diff, "kohya"),
        (".hada_w1_a", .hadaW1A, "kohya"), (".hada_w1_b", .hadaW1B, "kohya"), (".hada_w2_a", .hadaW2A, "kohya"),
        (".hada_w2_b", .hadaW2B, "kohya"), (".hada_t1", .hadaT1, "kohya"), (".hada_t2", .hadaT2, "kohya"),
        (".lokr_w1_a", .lokrW1A, "kohya"), (".lokr_w1_b", .lokrW1B, "kohya"), (".lokr_w2_a", .lokrW2A, "kohya"),
        (".lokr_w2_b", .lokrW2B, "kohya"), (".lokr_t2", .lokrT2, "kohya"), (".lokr_w1", .lokrW1, "kohya"), (".lokr_w2", .lokrW2, "kohya"),
    ]

    /// Splits a key into the module's spelling and the tensor's role; nil for a key of no known form.
    static func split(_ key: String) -> (spelling: String, role: Role, family: String)? {
        for (suffix, role, family) in suffixes where key.hasSuffix(suffix) && key.count > suffix.count {
            return (String(key.dropLast(suffix.count)), role, family)
        }
        return nil
    }

    public static let maximumRank = 1 << 16

    /// Reads and checks a file: every key of a known form, every module complete, every tensor
    /// floating point and finite, every alpha finite and positive, every rank at most 65,536.
    public init(url: URL) throws(AdapterFormatError) {
        let file: SafeTensorsFile
        do { file = try SafeTensorsFile(url: url) } catch { throw .invalid(path: url.path, reason: "\(error)") }
        try self.init(file, url: url)
        fileBytes = (try? FileManager.default.attributesOfItem(atPath: url.path)[.size] as? Int) ?? 0
    }

    /// The same from a file's bytes (`url` names it in messages).
    public init(data: Data, url: URL) throws(AdapterFormatError) {
        let file: SafeTensorsFile
        do { file = try SafeTensorsFile(data: data) } catch { throw .invalid(path: url.path, reason: "\(error)") }
        try self.init(file, url: url)
        fileBytes = data.count
    }

    init(_ file: SafeTensorsFile, url: URL) throws(AdapterFormatError) {
        self.url = url
        metadata = file.metadata
        var groups: [String: [Role: Tensor]] = [:], unknown: [String] = [], families = Set<String>()
        var types: [String: Int] = [:]
        for name in file.names {
            guard let entry = file.entries[name] else { continue }
            types[entry.dtype.rawValue, default: 0] += 1
            guard [.f32, .f16, .bf16].contains(entry.dtype) else {
                throw .invalid(path: url.path, reason: "tensor '\(name)' has dtype \(entry.dtype.rawValue); adapter tensors must be F32, F16 or BF16")
            }
            guard let (spelling, role, family) = Self.split(name) else { unknown.append(name); continue }
            let tensor: Tensor
            do { tensor = try file.tensor(name) } catch { throw .invalid(path: url.path, reason: "\(error)") }
            guard tensor.isFinite else { throw .invalid(path: url.path, reason: "tensor '\(name)' holds NaN or infinite values") }
            guard groups[spelling]?[role] == nil else { throw .invalid(path: url.path, reason: "two tensors for \(spelling) \(role.rawValue)") }
            groups[spelling, default: [:]][role] = tensor
            families.insert(family)
        }
        guard unknown.isEmpty else {
            throw .unsupported("\(url.path): \(unknown.count) key\(unknown.count == 1 ? "" : "s") of no adapter form this program reads: "
                + unknown.prefix(3).joined(separator: ", ") + (unknown.count > 3 ? ", …" : "")
                + (unknown.contains { $0.contains("lora_magnitude_vector") } ? " (PEFT's DoRA magnitude is not supported yet)" : ""))
        }
        let peftAlphas = try Self.peftAlphas(metadata, path: url.path)
        var modules: [(spelling: String, delta: WeightDelta)] = []
        for spelling in groups.keys.sorted() {
            guard let g = groups[spelling] else { continue }
            var delta = try Self.delta(spelling, g, path: url.path)
            if delta.alpha == nil, let alpha = peftAlphas.alpha(for: spelling) { delta.alpha = alpha }
            modules.append((spelling, delta))
        }
        guard !modules.isEmpty else { throw .invalid(path: url.path, reason: "no adapter tensors") }
        self.modules = modules
        storedTypes = types
        fileBytes = 0
        spellings = families
    }

    /// One module's tensors as a delta; throws naming the module when they do not make one.
    static func delta(_ spelling: String, _ g: [Role: Tensor], path: String) throws(AdapterFormatError) -> WeightDelta {
        func scalar(_ role: Role) throws(AdapterFormatError) -> Float? {
            guard let t = g[role] else { return nil }
            guard t.count == 1 else { throw .invalid(path: path, reason: "\(spelling).\(role.rawValue) has \(t.count) values; it must be one number") }
            return t[0]
        }
        let alpha = try scalar(.alpha), scale = try scalar(.scale)
        if let alpha, !(alpha > 0) { throw .invalid(path: path, reason: "\(spelling).alpha is \(alpha); it must be positive") }
        if let scale, !scale.isFinite { throw .invalid(path: path, reason: "\(spelling).scale is not finite") }
        func need(_ role: Role, _ name: String) throws(AdapterFormatError) -> Tensor {
            guard let t = g[role] else { throw .invalid(path: path, reason: "\(spelling) has no \(name)") }
            return t
        }
        let kind: WeightDelta.Kind
        let present = Set(g.keys)
        if present.contains(.down) || present.contains(.up) {
            kind = .lora(down: try need(.down, "down (lora_down / lora_A) tensor"), up: try need(.up, "up (lora_up / lora_B) tensor"), mid: g[.mid])
        } else if present.contains(.hadaW1A) || present.contains(.hadaW1B) {
            let t1 = g[.hadaT1], t2 = g[.hadaT2]
            guard (t1 == nil) == (t2 == nil) else { throw .invalid(path: path, reason: "\(spelling) has one of hada_t1 and hada_t2 without the other") }
            kind = .loha(w1a: try need(.hadaW1A, "hada_w1_a"), w1b: try need(.hadaW1B, "hada_w1_b"),
                         w2a: try need(.hadaW2A, "hada_w2_a"), w2b: try need(.hadaW2B, "hada_w2_b"), t1: t1, t2: t2)
        } else if !present.isDisjoint(with: [.lokrW1, .lokrW1A, .lokrW2, .lokrW2A]) {
            func factor(_ whole: Role, _ a: Role, _ b: Role, _ t: Role?, _ name: String) throws(AdapterFormatError) -> WeightDelta.Factor {
                if let w = g[whole] { return .whole(w) }
                return .lowRank(a: try need(a, name + "_a (or " + name + ")"), b: try need(b, name + "_b"), t: t.flatMap { g[$0] })
            }
            kind = .lokr(w1: try factor(.lokrW1, .lokrW1A, .lokrW1B, nil, "lokr_w1"), w2: try factor(.lokrW2, .lokrW2A, .lokrW2B, .lokrT2, "lokr_w2"))
        } else if let d = g[.diff] {
            kind = .diff(d)
        } else {
            throw .invalid(path: path, reason: "\(spelling) has only \(g.keys.map(\.rawValue).sorted().joined(separator: ", ")): no weights to apply")
        }
        let delta = WeightDelta(kind: kind, alpha: alpha, scale: scale, doraScale: g[.doraScale], biasDiff: g[.diffBias])
        if let r = delta.rank, r > maximumRank { throw .invalid(path: path, reason: "\(spelling) has rank \(r), above \(maximumRank)") }
        return delta
    }

    /// PEFT's lora_alpha (and alpha_pattern) per component from diffusers' `lora_adapter_metadata`
    /// header ({"unet.r": 4, "unet.lora_alpha": 8, "unet.alpha_pattern": {"…attn2.to_k": 4}, …}):
    /// alpha for files whose tensors carry none. A pattern key names a module path, or its end
    /// after a dot (PEFT's rule); ranks come from the tensors.
    struct PEFTAlphas {
        var byComponent: [String: (alpha: Float, patterns: [(key: String, alpha: Float)])] = [:]
        func alpha(for spelling: String) -> Float? {
            var s = spelling
            if s.hasPrefix("base_model.model.") { s.removeFirst("base_model.model.".count) }
            for (component, entry) in byComponent where s.hasPrefix(component + ".") {
                let path = s.dropFirst(component.count + 1)
                if let p = entry.patterns.first(where: { path == $0.key || path.hasSuffix("." + $0.key) }) { return p.alpha }
                return entry.alpha
            }
            return nil
        }
    }

    static func peftAlphas(_ metadata: [String: String], path: String) throws(AdapterFormatError) -> PEFTAlphas {
        guard let text = metadata["lora_adapter_metadata"] else { return PEFTAlphas() }
        guard let json = try? JSON.parse(Data(text.utf8)), let members = json.object else {
            throw .invalid(path: path, reason: "lora_adapter_metadata in the header is not a JSON object")
        }
        var result = PEFTAlphas()
        let values = Dictionary(members.map { ($0.key, $0.value) }, uniquingKeysWith: { a, _ in a })
        for (key, value) in values where key.hasSuffix(".lora_alpha") {
            let component = String(key.dropLast(".lora_alpha".count))
            guard let alpha = value.number, alpha > 0, alpha.isFinite else {
                throw .invalid(path: path, reason: "lora_adapter_metadata: \(key) must be a positive number")
            }
            var patterns: [(key: String, alpha: Float)] = []
            for (k, v) in values[component + ".alpha_pattern"]?.object ?? [] {
                guard k.allSatisfy({ $0.isLetter || $0.isNumber || $0 == "." || $0 == "_" }) else {
                    throw .unsupported("\(path): lora_adapter_metadata's \(component).alpha_pattern key '\(k)' is a regular expression, which is not supported yet (module paths are)")
                }
                guard let a = v.number, a > 0, a.isFinite else {
                    throw .invalid(path: path, reason: "lora_adapter_metadata: \(component).alpha_pattern['\(k)'] must be a positive number")
                }
                patterns.append((k, Float(a)))
            }
            if values[component + ".use_rslora"]?.bool == true {
                throw .unsupported("\(path): lora_adapter_metadata asks for rsLoRA for \(component), which is not supported for diffusion adapters yet")
            }
            result.byComponent[component] = (Float(alpha), patterns)
        }
        return result
    }
}
