import Foundation
import Formats
import Kernels
import OrderedJSON

/// Writing Stable Diffusion adapter files from resolved modules, preserving every module's ΔW and
/// alpha exactly:
///
/// - **kohya**: `lora_unet_<diffusers path with _>`, `lora_te_` (`lora_te1_` beside a second
///   encoder) / `lora_te2_` + `text_model_…`; `lora_down` / `lora_up` / `lora_mid` and `alpha` for
///   LoRA and LoCon (alpha = rank where the source had none: scale 1, as it was), and LyCORIS's own
///   tensors (`hada_*`, `lokr_*`, `diff`, `dora_scale`); `ss_network_*` metadata ("Dynamic" when
///   ranks or alphas differ), the source's other `ss_*` / `modelspec.*` kept.
/// - **diffusers**: what diffusers saves today: `<component>.<path>.lora_A.weight` / `lora_B` (text
///   encoders without transformers' `text_model.` wrapper, as transformers 5 names them), with
///   `lora_adapter_metadata` giving each component's r, lora_alpha, rank_pattern, alpha_pattern and
///   target modules (so a non-default alpha survives, unlike diffusers' own converter). LoRA and
///   LoCon only: what diffusers cannot hold (LoHa, LoKr, Tucker, full diffs, DoRA, explicit scales)
///   is refused naming the module.
public enum DiffusionAdapterWriter {
    public enum Format: String, CaseIterable, Sendable {
        case kohya, diffusers
    }

    public struct Module {
        public let module: DiffusionModuleIndex.Module
        public let delta: WeightDelta
        /// How the source file spelled it (for errors).
        public let spelling: String
        public init(module: DiffusionModuleIndex.Module, delta: WeightDelta, spelling: String) {
            self.module = module
            self.delta = delta
            self.spelling = spelling
        }
    }

    /// A file's modules resolved to a base's modules (`index`, exact) or, without one, by their
    /// names' structure (`DiffusionNames.canonical`), then the contents of `format`. Every module
    /// must resolve (and fit its weight, with an index): one that does not is an error naming it.
    public static func convert(_ file: DiffusionAdapterFile, to format: Format, index: DiffusionModuleIndex?,
                               layersPerBlock: Int = 2) throws(AdapterFormatError) -> (tensors: [String: Tensor], metadata: [String: String], modules: [Module]) {
        var modules: [Module] = [], unresolved: [String] = []
        for (spelling, delta) in file.modules {
            guard let module = index.map({ $0.resolve(spelling) }) ?? DiffusionNames.canonical(spelling, layersPerBlock: layersPerBlock) else {
                unresolved.append(spelling)
                continue
            }
            if let index, let shape = index.shapes[module], let problem = delta.shapeProblem(for: shape) {
                throw .invalid(path: file.url.path, reason: "\(spelling) does not fit \(module) (weight \(shape)): \(problem)")
            }
            modules.append(.init(module: module, delta: delta, spelling: spelling))
        }
        guard unresolved.isEmpty else {
            throw .unsupported("\(file.url.path): \(unresolved.count) module\(unresolved.count == 1 ? "" : "s") cannot be converted: "
                + unresolved.prefix(3).joined(separator: ", ") + (unresolved.count > 3 ? ", …" : "")
                + (index == nil ? " (no Stable Diffusion module has such a name; give the base model whose names they are)"
                    : " (no module of the base model has such a name)"))
        }
        let (tensors, metadata) = try contents(modules, format: format, sourceMetadata: file.metadata)
        return (tensors, metadata, modules)
    }

    /// The tensors and header metadata of the file.
    public static func contents(_ modules: [Module], format: Format, sourceMetadata: [String: String] = [:]) throws(AdapterFormatError)
        -> (tensors: [String: Tensor], metadata: [String: String]) {
        var seen = Set<DiffusionModuleIndex.Module>()
        for m in modules where !seen.insert(m.module).inserted {
            throw .invalid(path: m.spelling, reason: "two of the file's modules are \(m.module)")
        }
        switch format {
        case .kohya: return kohya(modules, sourceMetadata: sourceMetadata)
        case .diffusers: return try diffusers(modules)
        }
    }

    static func kohyaKey(_ m: DiffusionModuleIndex.Module, secondEncoder: Bool) -> String {
        switch m.component {
        case "unet": return "lora_unet_" + DiffusionModuleIndex.underscored(m.path)
        case "text_encoder_2": return "lora_te2_" + DiffusionModuleIndex.underscored(wrapped(m.path))
        default: return (secondEncoder ? "lora_te1_" : "lora_te_") + DiffusionModuleIndex.underscored(wrapped(m.path))
        }
    }

    static func wrapped(_ path: String) -> String { path.hasPrefix("text_model.") ? path : "text_model." + path }

    static func scalar(_ x: Float) -> Tensor { Tensor(shape: [], values: [x]) }

    static func kohya(_ modules: [Module], sourceMetadata: [String: String]) -> (tensors: [String: Tensor], metadata: [String: String]) {
        let secondEncoder = modules.contains { $0.module.component == "text_encoder_2" }
        var tensors: [String: Tensor] = [:]
        var ranks = Set<Int>(), alphas = Set<Float>(), lycoris = false
        for m in modules {
            let key = kohyaKey(m.module, secondEncoder: secondEncoder)
            let d = m.delta
            func put(_ role: String, _ t: Tensor) { tensors[key + "." + role] = t }
            switch d.kind {
            case let .lora(down, up, mid):
                put("lora_down.weight", down)
                put("lora_up.weight", up)
                if let mid { put("lora_mid.weight", mid); lycoris = true }
            case let .loha(w1a, w1b, w2a, w2b, t1, t2):
                put("hada_w1_a", w1a); put("hada_w1_b", w1b); put("hada_w2_a", w2a); put("hada_w2_b", w2b)
                if let t1 { put("hada_t1", t1) }
                if let t2 { put("hada_t2", t2) }
                lycoris = true
            case let .lokr(w1, w2):
                for (f, name) in [(w1, "lokr_w1"), (w2, "lokr_w2")] {
                    switch f {
                    case .whole(let w): put(name, w)
                    case let .lowRank(a, b, t):
                        put(name + "_a", a); put(name + "_b", b)
                        if let t { put("lokr_t2", t) }
                    }
                }
                lycoris = true
            case .diff(let diff):
                put("diff", diff)
                lycoris = true
            }
            if let b = d.biasDiff { put("diff_b", b) }
            if let dora = d.doraScale { put("dora_scale", dora); lycoris = true }
            if let scale = d.scale { put("scale", scalar(scale)) }
            // kohya's loaders take a missing alpha as alpha = rank (scale 1), which is what a
            // source without alphas meant; write it so every loader agrees.
            let alpha = d.alpha ?? d.rank.map(Float.init)
            if let alpha, d.algorithm != .diff { put("alpha", scalar(alpha)) }
            if let r = d.rank { ranks.insert(r) }
            if let a = alpha { alphas.insert(a) }
        }
        var metadata = sourceMetadata.filter { ($0.key.hasPrefix("ss_") || $0.key.hasPrefix("modelspec.")) }
        metadata["ss_network_module"] = lycoris ? "lycoris.kohya" : "networks.lora"
        metadata["ss_network_dim"] = ranks.count == 1 ? String(ranks.first!) : "Dynamic"
        metadata["ss_network_alpha"] = alphas.count == 1 ? "\(alphas.first!)" : "Dynamic"
        return (tensors, metadata)
    }

    static func diffusers(_ modules: [Module]) throws(AdapterFormatError) -> (tensors: [String: Tensor], metadata: [String: String]) {
        var tensors: [String: Tensor] = [:]
        var byComponent: [String: [(path: String, rank: Int, alpha: Float)]] = [:]
        for m in modules {
            let d = m.delta
            guard case let .lora(down, up, mid) = d.kind, mid == nil, d.doraScale == nil, d.scale == nil, d.biasDiff == nil else {
                let what = d.algorithm == .lora ? (d.doraScale != nil ? "DoRA" : d.scale != nil ? "an explicit scale" : d.biasDiff != nil ? "a bias change" : "a Tucker middle (lora_mid)")
                    : d.algorithm.rawValue
                throw .unsupported("\(m.spelling) (\(m.module)) is \(what), which the diffusers format cannot hold (diffusers reads LoRA and LoCon only); convert to kohya instead")
            }
            // Text encoders as transformers ≥ 5 names their modules (no `text_model.` wrapper), which
            // is what diffusers saves and loads; as a PEFT target the name also matches the wrapped form.
            let path = m.module.component == "unet" || !m.module.path.hasPrefix("text_model.") ? m.module.path
                : String(m.module.path.dropFirst("text_model.".count))
            let prefix = m.module.component + "." + path
            tensors[prefix + ".lora_A.weight"] = down
            tensors[prefix + ".lora_B.weight"] = up
            let rank = down.shape[0]
            byComponent[m.module.component, default: []].append((path, rank, d.alpha ?? Float(rank)))
        }
        var members: [(key: String, value: JSON)] = []
        for component in byComponent.keys.sorted() {
            let entries = byComponent[component]!.sorted { $0.path < $1.path }
            let r = mostCommon(entries.map(\.rank)), alpha = mostCommon(entries.map(\.alpha))
            let rankPattern = entries.filter { $0.rank != r }.map { (key: $0.path, value: JSON.number(Double($0.rank))) }
            let alphaPattern = entries.filter { $0.alpha != alpha }.map { (key: $0.path, value: JSON.number(Double($0.alpha))) }
            members += [(component + ".alpha_pattern", .object(alphaPattern)), (component + ".lora_alpha", .number(Double(alpha))),
                        (component + ".r", .number(Double(r))), (component + ".rank_pattern", .object(rankPattern)),
                        (component + ".target_modules", .array(entries.map { .string($0.path) }))]
        }
        return (tensors, ["format": "pt", "lora_adapter_metadata": JSON.object(members).serialized()])
    }

    /// The most frequent value, the smallest among ties (diffusers takes the first most common).
    static func mostCommon<T: Hashable & Comparable>(_ values: [T]) -> T {
        var counts: [T: Int] = [:]
        for v in values { counts[v, default: 0] += 1 }
        return counts.max { a, b in a.value != b.value ? a.value < b.value : a.key > b.key }!.key
    }
}
