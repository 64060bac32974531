import AdapterFormats
import Foundation
import Kernels

/// kohya's three SVD tools on Stable Diffusion adapters, each giving modules for
/// `DiffusionAdapterWriter`: extracting a LoRA from two checkpoints, resizing a LoRA's rank, and
/// merging several adapters into one by SVD of their summed ΔW (ΔW-exact up to the truncation,
/// unlike summing down and up tensors).
public enum DiffusionLowRankOperations {
    public struct ModuleReport: Encodable, Sendable {
        public let module: String
        public let rank: Int
        /// The share of ‖ΔW‖_F the chosen rank keeps (before any clamp).
        public let frobeniusRetained: Double
        enum CodingKeys: String, CodingKey { case module, rank, frobeniusRetained = "frobenius_retained" }
    }

    public struct Result {
        public let modules: [DiffusionAdapterWriter.Module]
        public let reports: [ModuleReport]
        public let notes: [String]
    }

    static func module(_ spelling: String, index: DiffusionModuleIndex?, layersPerBlock: Int, file: String) throws(DiffusionError) -> DiffusionModuleIndex.Module {
        guard let m = index.map({ $0.resolve(spelling) }) ?? DiffusionNames.canonical(spelling, layersPerBlock: layersPerBlock) else {
            throw .refused("\(file): \(spelling) is no module \(index == nil ? "of a Stable Diffusion model (give --model for a base whose names these are)" : "of the base")")
        }
        return m
    }

    /// A LoRA's weight shape from its own factors: [out, in(, kh, kw)].
    static func loraShape(_ delta: WeightDelta) -> [Int]? {
        guard case let .lora(down, up, nil) = delta.kind, down.shape.count >= 2, up.shape.count >= 2 else { return nil }
        return [up.shape[0]] + Array(down.shape.dropFirst())
    }

    // MARK: Resize

    /// Every LoRA module re-factored at `rank` (or the smaller rank `dynamic` chooses), its scale
    /// kept exactly: new alpha = (alpha / old rank) · new rank. Modules of other algorithms, or with
    /// a Tucker middle or DoRA, are refused by name.
    public static func resize(_ file: DiffusionAdapterFile, rank: Int, dynamic: LowRank.DynamicRule?, index: DiffusionModuleIndex?,
                              layersPerBlock: Int = 2, progress: (String) -> Void = { _ in }) throws(DiffusionError) -> Result {
        var modules: [DiffusionAdapterWriter.Module] = [], reports: [ModuleReport] = []
        for (n, (spelling, delta)) in file.modules.enumerated() {
            guard delta.doraScale == nil, delta.scale == nil, delta.biasDiff == nil, let shape = loraShape(delta) else {
                throw .refused("\(file.url.path): \(spelling) is \(delta.algorithm.rawValue)\(delta.doraScale != nil ? " with DoRA" : ""); resize takes LoRA and LoCon modules (lora_down / lora_up) only")
            }
            let m = try module(spelling, index: index, layersPerBlock: layersPerBlock, file: file.url.path)
            let w: Tensor
            do { w = try delta.delta(for: shape) } catch { throw .refused("\(file.url.path): \(spelling): \(error)") }
            guard let (up, down, s) = LowRank.factorize(w, rank: rank) else { throw .refused("\(spelling): the SVD did not converge") }
            let k = dynamic?.rank(s, maximum: min(rank, s.count)) ?? min(rank, s.count)
            let (upK, downK) = truncate(up, down, to: k)
            let alpha = delta.factor * Float(k)
            modules.append(.init(module: m, delta: LowRank.delta(up: upK, down: downK, shape: shape, alpha: alpha), spelling: spelling))
            reports.append(ModuleReport(module: m.description, rank: k, frobeniusRetained: LowRank.frobeniusRetained(s, rank: k)))
            if (n + 1) % 50 == 0 { progress("resized \(n + 1) of \(file.modules.count) modules") }
        }
        return Result(modules: modules, reports: reports, notes: [])
    }

    static func truncate(_ up: Tensor, _ down: Tensor, to k: Int) -> (Tensor, Tensor) {
        let r = up.shape[1], out = up.shape[0], rest = down.shape[1]
        guard k < r else { return (up, down) }
        let u = Tensor(shape: [out, k]), d = Tensor(shape: [k, rest])
        for o in 0..<out { (u.data + o * k).update(from: up.data + o * r, count: k) }
        d.data.update(from: down.data, count: k * rest)
        return (u, d)
    }

    // MARK: SVD merge

    /// Σ weight_i · factor_i · ΔW_i per module over every adapter, each sum truncated to `rank`
    /// (`convRank` for 3×3 and larger kernels), both factors clamped at `clampQuantile`, alpha =
    /// the new rank (scale 1). A module's weight shape comes from the base (`index`) or, for LoRA
    /// modules, from their own factors.
    public static func svdMerge(_ adapters: [(file: DiffusionAdapterFile, weight: Float)], rank: Int, convRank: Int?, clampQuantile: Double?,
                                index: DiffusionModuleIndex?, layersPerBlock: Int = 2,
                                progress: (String) -> Void = { _ in }) throws(DiffusionError) -> Result {
        var sums: [DiffusionModuleIndex.Module: (shape: [Int], sum: Tensor, spelling: String)] = [:]
        var order: [DiffusionModuleIndex.Module] = []
        for (file, weight) in adapters {
            for (spelling, delta) in file.modules {
                let m = try module(spelling, index: index, layersPerBlock: layersPerBlock, file: file.url.path)
                guard delta.doraScale == nil else {
                    throw .refused("\(file.url.path): \(spelling) has DoRA, whose change depends on the base weight; merge it into a checkpoint instead")
                }
                guard let shape = index?.shapes[m] ?? loraShape(delta) else {
                    throw .refused("\(file.url.path): \(spelling) is \(delta.algorithm.rawValue), whose weight shape only the base model gives: add --model")
                }
                let d: Tensor
                do { d = try delta.delta(for: shape) } catch { throw .refused("\(file.url.path): \(spelling) on \(m): \(error)") }
                let k = weight * delta.factor
                if let existing = sums[m] {
                    guard existing.shape == shape else { throw .refused("\(spelling) (\(m)): \(shape) here, \(existing.shape) in an earlier adapter") }
                    for i in 0..<d.count { existing.sum.data[i] += k * d.data[i] }
                } else {
                    for i in 0..<d.count { d.data[i] *= k }
                    sums[m] = (shape, d, spelling)
                    order.append(m)
                }
            }
        }
        var modules: [DiffusionAdapterWriter.Module] = [], reports: [ModuleReport] = []
        for (n, m) in order.enumerated() {
            guard let (shape, sum, spelling) = sums[m] else { continue }
            let conv = shape.count == 4 && shape[2] * shape[3] > 1
            let target = conv ? (convRank ?? rank) : rank
            guard let (up, down, s) = LowRank.factorize(sum, rank: target, clampQuantile: clampQuantile) else {
                throw .refused("\(m): the SVD did not converge")
            }
            let k = up.shape[1]
            modules.append(.init(module: m, delta: LowRank.delta(up: up, down: down, shape: shape, alpha: Float(k)), spelling: spelling))
            reports.append(ModuleReport(module: m.description, rank: k, frobeniusRetained: LowRank.frobeniusRetained(s, rank: k)))
            if (n + 1) % 50 == 0 { progress("merged \(n + 1) of \(order.count) modules") }
        }
        return Result(modules: modules, reports: reports, notes: [])
    }

    // MARK: Extract

    /// Whether kohya's LoRA network adapts a module: every Linear and 1×1 convolution of the UNet's
    /// transformer blocks and of the text encoders' attention and MLP; with conv ranks, every
    /// weight of the resnets, downsamplers and upsamplers too.
    static func kohyaTarget(_ m: DiffusionModuleIndex.Module, shape: [Int], convolutions: Bool) -> Bool {
        let isConv3 = shape.count == 4 && shape[2] * shape[3] > 1
        if m.component == "unet" {
            if m.path.contains(".attentions.") { return !isConv3 }
            if convolutions && (m.path.contains(".resnets.") || m.path.contains(".downsamplers.") || m.path.contains(".upsamplers.")) { return true }
            return false
        }
        return ["q_proj", "k_proj", "v_proj", "out_proj", "fc1", "fc2"].contains { m.path.hasSuffix($0) }
    }

    /// A LoRA of W_tuned − W_base per kohya target module (rank ≤ `rank`, `convRank` for 3×3
    /// convolutions when given, clamped at `clampQuantile`, alpha = rank: scale 1). The text encoders
    /// are kept only when some module of theirs changes by more than `minDiff` (kohya's rule).
    /// One module's tensors in memory at a time.
    public static func extract(base: DiffusersCheckpoint, tuned: DiffusersCheckpoint, rank: Int, convRank: Int?, clampQuantile: Double?,
                               minDiff: Float, progress: (String) -> Void = { _ in }) throws(DiffusionError) -> Result {
        let baseShapes = base.tensorShapes, tunedShapes = tuned.tensorShapes
        let index = DiffusionModuleIndex(weights: baseShapes, unetLayersPerBlock: base.unetLayersPerBlock)
        let targets = index.shapes.filter { kohyaTarget($0.key, shape: $0.value, convolutions: convRank != nil) }.keys.sorted()
        for m in targets where tunedShapes[m.component]?[m.path + ".weight"] != index.shapes[m] {
            throw .refused("\(tuned.folder.path): \(m).weight is \(tunedShapes[m.component]?[m.path + ".weight"].map { "\($0)" } ?? "missing"), the base's is \(index.shapes[m]!): not the same model")
        }
        var modules: [DiffusionAdapterWriter.Module] = [], reports: [ModuleReport] = [], notes: [String] = []
        var textEncoderChange: Float = 0
        var textEncoder: [(DiffusionModuleIndex.Module, Tensor, [Int])] = []
        for (n, m) in targets.enumerated() {
            guard let shape = index.shapes[m] else { continue }
            let w0 = try base.tensor(component: m.component, name: m.path + ".weight")
            let w1 = try tuned.tensor(component: m.component, name: m.path + ".weight")
            let out = shape[0], rest = w0.count / out
            let d = Tensor(shape: [out, rest])
            var largest: Float = 0
            for i in 0..<d.count { d.data[i] = w1.data[i] - w0.data[i]; largest = max(largest, abs(d.data[i])) }
            if m.component == "unet" {
                try append(m, d, shape)
            } else {
                textEncoderChange = max(textEncoderChange, largest)
                textEncoder.append((m, d, shape))
            }
            if (n + 1) % 50 == 0 { progress("extracted \(n + 1) of \(targets.count) modules") }
        }
        if textEncoderChange > minDiff {
            for (m, d, shape) in textEncoder { try append(m, d, shape) }
        } else if !textEncoder.isEmpty {
            notes.append("the text encoders are the same (largest change \(textEncoderChange) ≤ --min-diff \(minDiff)): UNet only")
        }
        func append(_ m: DiffusionModuleIndex.Module, _ d: Tensor, _ shape: [Int]) throws(DiffusionError) {
            let conv = shape.count == 4 && shape[2] * shape[3] > 1
            let target = min(conv ? (convRank ?? rank) : rank, shape[0], d.shape[1])
            guard let (up, down, s) = LowRank.factorize(d, rank: target, clampQuantile: clampQuantile) else {
                throw .refused("\(m): the SVD did not converge")
            }
            let k = up.shape[1]
            modules.append(.init(module: m, delta: LowRank.delta(up: up, down: down, shape: shape, alpha: Float(k)), spelling: m.description))
            reports.append(ModuleReport(module: m.description, rank: k, frobeniusRetained: LowRank.frobeniusRetained(s, rank: k)))
        }
        return Result(modules: modules, reports: reports, notes: notes)
    }
}
