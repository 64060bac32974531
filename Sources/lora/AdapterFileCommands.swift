import AdapterFormats
import ArgumentParser
import Diffusion
import Foundation
import Formats
import Kernels
import Models

extension AdapterCommand {
    /// `lora adapter convert`: a Stable Diffusion adapter file into another spelling, or an
    /// adapter folder between PEFT and mlx-lm (as `lora convert`).
    struct ConvertFile: ParsableCommand {
        static let configuration = CommandConfiguration(
            commandName: "convert",
            abstract: "Convert an adapter: a Stable Diffusion file to kohya or diffusers, a folder between PEFT and mlx-lm; ΔW and alpha preserved exactly.",
            discussion: """
            A Stable Diffusion file (any spelling lora reads) is written as kohya (lora_unet_…, \
            lora_te_…; LoRA, LoCon and every LyCORIS algorithm, alpha per module) or as diffusers \
            saves it (unet.….lora_A / lora_B with r, lora_alpha, rank_pattern and alpha_pattern in \
            lora_adapter_metadata; LoRA and LoCon only). Every key is accounted for: one that cannot \
            be converted is an error naming it. Module names come from --model (a diffusers pipeline \
            folder: exact) or, without it, from the names' own structure (kohya's underscores undone \
            around the modules' names; SDXL's SGM names with --layers-per-block, default 2). An \
            adapter folder is converted as `lora convert` does (--to mlx or peft).
            """)
        @Option(help: "The adapter: a .safetensors file (Stable Diffusion) or a folder (PEFT, mlx-lm).") var input: String
        @Option(help: "Target: kohya or diffusers (a Stable Diffusion file); mlx or peft (a folder).") var to: String
        @Option(help: "Where to write the converted adapter.") var output: String
        @Option(help: "The base model: a diffusers pipeline folder (exact module names), or for a folder's mlx-lm conversion, the model whose layers it counts.")
        var model: String?
        @Option(parsing: .unconditional, help: "The UNet's layers_per_block, for SGM (input_blocks_…) names without --model (SDXL: 2).")
        var layersPerBlock: Int = 2
        @Option(help: "Storage type of the written tensors (default: the input's, when all its tensors share one; else f32).")
        var dtype: HuggingFaceExport.StorageType?
        @Flag(help: "Print one JSON object.") var json = false

        struct Report: Encodable {
            let input: String, output: String, format: String, modules: Int, names: String
            let components: [String: Int], algorithms: [String: Int], dtype: String
        }

        func run() throws {
            var isDirectory: ObjCBool = false
            guard FileManager.default.fileExists(atPath: input, isDirectory: &isDirectory) else { throw CommandError("\(input): no such file or folder") }
            if isDirectory.boolValue {
                guard Convert.AdapterLayout(rawValue: to) != nil else { throw CommandError("--to \(to): a folder converts to mlx or peft") }
                return try Convert.parse(["--input", input, "--output", output, "--to", to] + (model.map { ["--model", $0] } ?? [])).run()
            }
            guard let format = DiffusionAdapterWriter.Format(rawValue: to) else {
                throw CommandError("--to \(to): a Stable Diffusion file converts to kohya or diffusers")
            }
            guard !FileManager.default.fileExists(atPath: output) else { throw CommandError("\(output) already exists; choose another --output or remove it") }
            let file: DiffusionAdapterFile
            do { file = try DiffusionAdapterFile(url: URL(fileURLWithPath: input)) } catch { throw CommandError(error.description) }
            var index: DiffusionModuleIndex?
            if let model {
                let checkpoint: DiffusersCheckpoint
                do { checkpoint = try DiffusersCheckpoint(folder: URL(fileURLWithPath: model)) } catch { throw CommandError(error.description) }
                index = DiffusionModuleIndex(weights: checkpoint.tensorShapes, unetLayersPerBlock: checkpoint.unetLayersPerBlock)
            }
            let converted: (tensors: [String: Tensor], metadata: [String: String], modules: [DiffusionAdapterWriter.Module])
            do { converted = try DiffusionAdapterWriter.convert(file, to: format, index: index, layersPerBlock: layersPerBlock) } catch {
                throw CommandError(error.description)
            }
            let (modules, contents) = (converted.modules, (tensors: converted.tensors, metadata: converted.metadata))
            let stored = Set(file.storedTypes.keys)
            let storage: SafeTensorsWriter.StorageType = dtype.flatMap { SafeTensorsWriter.StorageType(rawValue: $0.rawValue.uppercased()) }
                ?? (stored.count == 1 ? stored.first.flatMap(SafeTensorsWriter.StorageType.init(rawValue:)) ?? .f32 : .f32)
            do {
                try SafeTensorsWriter.write(contents.tensors, to: URL(fileURLWithPath: output), as: storage, metadata: contents.metadata)
            } catch { throw CommandError("\(error)") }
            var components: [String: Int] = [:], algorithms: [String: Int] = [:]
            for m in modules {
                components[m.module.component, default: 0] += 1
                algorithms[m.delta.algorithm.rawValue + (m.delta.doraScale != nil ? "+dora" : ""), default: 0] += 1
            }
            let report = Report(input: input, output: output, format: format.rawValue, modules: modules.count,
                                names: model == nil ? "from the names (no --model)" : "from \(model!)", components: components,
                                algorithms: algorithms, dtype: storage.rawValue)
            note("wrote \(output): \(format.rawValue), \(modules.count) modules (" + components.sorted { $0.key < $1.key }.map { "\($0.key) \($0.value)" }.joined(separator: ", ")
                 + "), \(contents.tensors.count) tensors in \(storage.rawValue); module names \(report.names)")
            if json { try printJSON(report) }
        }
    }
}

extension AdapterCommand.Inspect {
    /// A Stable Diffusion adapter file: spellings, family, algorithms, ranks, alphas, targets, metadata.
    func inspectFile(_ url: URL) throws {
        let file: DiffusionAdapterFile
        do { file = try DiffusionAdapterFile(url: url) } catch { throw CommandError(error.description) }
        let summary = DiffusionAdapterSummary(file)
        if json { return try printJSON(summary) }
        func list<T: CustomStringConvertible>(_ values: [T]) -> String {
            values.count == 1 ? "\(values[0]) (all modules)" : values.isEmpty ? "none" : values.map(\.description).joined(separator: ", ") + " (per module)"
        }
        print("adapter:         \(url.path)")
        print("spelling:        \(summary.spellings.joined(separator: ", "))")
        print("base family:     \(summary.family) (\(summary.familyEvidence))")
        print("targets:         " + summary.targets.sorted { $0.key < $1.key }.map { "\($0.key) \($0.value)" }.joined(separator: ", "))
        print("algorithms:      " + summary.algorithms.sorted { $0.key < $1.key }.map { "\($0.key) \($0.value)" }.joined(separator: ", "))
        print("ranks:           \(list(summary.ranks))")
        print("alphas:          \(summary.alphas.isEmpty ? "none in the file (scale 1, or lora_adapter_metadata)" : list(summary.alphas.map { $0.formatted() }))")
        print("parameters:      \(summary.parameters.formatted()) (\(summary.tensorTypes.sorted { $0.key < $1.key }.map { "\($0.key) × \($0.value)" }.joined(separator: ", ")))")
        print("file size:       \(summary.fileBytes.formatted()) bytes")
        for (key, value) in summary.metadata.sorted(by: { $0.key < $1.key }) {
            print("  \(key): \(value.count > 100 ? String(value.prefix(100)) + "…" : value)")
        }
    }
}

/// Writing the modules a Stable Diffusion adapter operation produced: one file, atomically.
struct AdapterFileOutput: ParsableArguments {
    @Option(help: "Where to write the adapter file (.safetensors); it must not exist.") var output: String
    @Option(help: "The file's spelling: kohya or diffusers.") var format: String = "kohya"
    @Option(help: "Storage type of the written tensors.") var dtype: HuggingFaceExport.StorageType = .f32
    @Flag(help: "Print one JSON object.") var json = false

    func validate() throws {
        guard DiffusionAdapterWriter.Format(rawValue: format) != nil else { throw ValidationError("--format \(format): kohya or diffusers") }
        guard !FileManager.default.fileExists(atPath: output) else { throw ValidationError("\(output) already exists; choose another --output or remove it") }
    }

    struct Report: Encodable {
        let output: String, format: String, modules: Int
        let ranks: [Int]
        let smallestFrobeniusRetained: Double?
        let notes: [String]
        let perModule: [DiffusionLowRankOperations.ModuleReport]
        enum CodingKeys: String, CodingKey {
            case output, format, modules, ranks, smallestFrobeniusRetained = "smallest_frobenius_retained", notes, perModule = "per_module"
        }
    }

    func write(_ result: DiffusionLowRankOperations.Result, metadata: [String: String] = [:]) throws {
        let format = DiffusionAdapterWriter.Format(rawValue: format) ?? .kohya
        let contents: (tensors: [String: Tensor], metadata: [String: String])
        do { contents = try DiffusionAdapterWriter.contents(result.modules, format: format, sourceMetadata: metadata) } catch {
            throw CommandError(error.description)
        }
        do {
            try SafeTensorsWriter.write(contents.tensors, to: URL(fileURLWithPath: output),
                                        as: SafeTensorsWriter.StorageType(rawValue: dtype.rawValue.uppercased()) ?? .f32, metadata: contents.metadata)
        } catch { throw CommandError("\(error)") }
        let ranks = Array(Set(result.reports.map(\.rank))).sorted()
        let smallest = result.reports.map(\.frobeniusRetained).min()
        for n in result.notes { note("note: \(n)") }
        note("wrote \(output): \(format.rawValue), \(result.modules.count) modules, rank\(ranks.count == 1 ? " \(ranks[0])" : "s \(ranks.map(String.init).joined(separator: ", "))")"
             + (smallest.map { String(format: "; every module keeps at least %.1f%% of its ‖ΔW‖_F", 100 * $0) } ?? ""))
        if json {
            try printJSON(Report(output: output, format: format.rawValue, modules: result.modules.count, ranks: ranks,
                                 smallestFrobeniusRetained: smallest, notes: result.notes, perModule: result.reports))
        }
    }
}

/// `--model` for name resolution and shapes (optional), shared by the SD adapter commands.
struct DiffusionBaseOption: ParsableArguments {
    @Option(help: "A diffusers pipeline folder whose module names (and shapes) the adapters use; without it, names are read from their structure.")
    var model: String?
    @Option(parsing: .unconditional, help: "The UNet's layers_per_block, for SGM (input_blocks_…) names without --model (SDXL: 2).")
    var layersPerBlock: Int = 2

    func index() throws -> DiffusionModuleIndex? {
        guard let model else { return nil }
        do {
            let checkpoint = try DiffusersCheckpoint(folder: URL(fileURLWithPath: model))
            return DiffusionModuleIndex(weights: checkpoint.tensorShapes, unetLayersPerBlock: checkpoint.unetLayersPerBlock)
        } catch { throw CommandError(error.description) }
    }
}

func readDiffusionAdapter(_ path: String) throws -> DiffusionAdapterFile {
    do { return try DiffusionAdapterFile(url: URL(fileURLWithPath: path)) } catch { throw CommandError(error.description) }
}

extension AdapterCommand {
    struct Resize: ParsableCommand {
        static let configuration = CommandConfiguration(
            abstract: "Change a Stable Diffusion LoRA's rank by SVD, keeping its scale (new alpha = alpha/rank × new rank).",
            discussion: """
            Every module's ΔW = up·down is factored again at --rank, or at the smallest rank a --dynamic \\
            rule allows (at most --rank): sv_ratio:X keeps the singular values ≥ the largest / X; \\
            sv_fro:X keeps the fewest that hold a share X of ‖ΔW‖_F; sv_cumulative:X the fewest whose sum \\
            holds a share X of ΣS. These choose the smallest rank meeting the criterion: kohya's \\
            resize_lora.py keeps one more (its known off-by-one, sd-scripts PR #2194), so its dynamic \\
            ranks are ours + 1. No clamping, as kohya's resize. LoRA and LoCon modules only.
            """)
        @Option(help: "The adapter file.") var input: String
        @Option(parsing: .unconditional, help: "The new rank (the most, with --dynamic).") var rank: Int
        @Option(help: "sv_ratio:X, sv_fro:X or sv_cumulative:X.") var dynamic: String?
        @OptionGroup var base: DiffusionBaseOption
        @OptionGroup var out: AdapterFileOutput

        func validate() throws {
            guard rank > 0 else { throw ValidationError("--rank must be positive") }
            if let dynamic, LowRank.DynamicRule(dynamic) == nil {
                throw ValidationError("--dynamic \(dynamic): give sv_ratio:X (X > 0), sv_fro:X or sv_cumulative:X (0 < X ≤ 1)")
            }
        }

        func run() throws {
            let file = try readDiffusionAdapter(input)
            let result: DiffusionLowRankOperations.Result
            do {
                result = try DiffusionLowRankOperations.resize(file, rank: rank, dynamic: dynamic.flatMap(LowRank.DynamicRule.init), index: try base.index(),
                                                               layersPerBlock: base.layersPerBlock) { note($0) }
            } catch { throw CommandError("\(error)") }
            var metadata = file.metadata
            metadata["ss_training_comment"] = "rank resized to \(dynamic.map { "\($0), at most " } ?? "")\(rank) by swift-lora"
            try out.write(result, metadata: metadata)
        }
    }

    struct Extract: ParsableCommand {
        static let configuration = CommandConfiguration(
            abstract: "Extract a Stable Diffusion LoRA from a fine-tuned checkpoint and its base (SVD of the difference, as kohya's extract_lora_from_models.py).",
            discussion: """
            For every module kohya's LoRA adapts (the UNet's transformer-block projections and the text \\
            encoders' attention and MLP; with --conv-rank also the resnets', downsamplers' and \\
            upsamplers' weights), ΔW = W_tuned − W_base is factored at --rank (--conv-rank for 3×3 \\
            convolutions), both factors clamped at the --clamp-quantile of their values (0.99, as kohya; \\
            1 for none), alpha = rank. The text encoders are kept only when some module changes by more \\
            than --min-diff. One module in memory at a time.
            """)
        @Option(help: "The base model: a diffusers pipeline folder.") var base: String
        @Option(help: "The fine-tuned model: a diffusers pipeline folder of the same architecture.") var tuned: String
        @Option(parsing: .unconditional, help: "Rank of the linear and 1×1 modules.") var rank: Int = 4
        @Option(parsing: .unconditional, help: "Rank of the 3×3 convolutions (also extracts the resnets).") var convRank: Int?
        @Option(parsing: .unconditional, help: "Clamp both factors at this quantile of their values (1: no clamp).") var clampQuantile: Double = 0.99
        @Option(parsing: .unconditional, help: "Keep the text encoders only when a module changes by more than this.") var minDiff: Float = 0.01
        @OptionGroup var out: AdapterFileOutput

        func validate() throws {
            guard rank > 0, convRank.map({ $0 > 0 }) ?? true else { throw ValidationError("ranks must be positive") }
            guard clampQuantile > 0 && clampQuantile <= 1 else { throw ValidationError("--clamp-quantile must be in (0, 1]") }
        }

        func run() throws {
            let result: DiffusionLowRankOperations.Result
            do {
                let a = try DiffusersCheckpoint(folder: URL(fileURLWithPath: base)), b = try DiffusersCheckpoint(folder: URL(fileURLWithPath: tuned))
                result = try DiffusionLowRankOperations.extract(base: a, tuned: b, rank: rank, convRank: convRank,
                                                                clampQuantile: clampQuantile < 1 ? clampQuantile : nil, minDiff: minDiff) { note($0) }
            } catch { throw CommandError("\(error)") }
            try out.write(result, metadata: ["ss_training_comment": "extracted by swift-lora from \(tuned) − \(base)"])
        }
    }

    struct MergeAdapters: ParsableCommand {
        static let configuration = CommandConfiguration(
            commandName: "merge",
            abstract: "Merge Stable Diffusion adapters into one by SVD of their summed ΔW (kohya's svd_merge_lora.py).",
            discussion: """
            Σ weight × (alpha/rank) × ΔW is formed in full per module over every adapter (any algorithm: \\
            LoRA, LoCon, LoHa, LoKr, diff), then factored at --rank (--conv-rank for 3×3 convolutions), \\
            both factors clamped at the --clamp-quantile, alpha = rank. This is exact up to the \\
            truncation, unlike kohya's merge_lora.py, which sums the adapters' down and up tensors and so adds \\
            cross terms; that is not offered.
            """)
        @Option(name: .customLong("adapter"), help: ArgumentHelp("An adapter file, FILE or FILE:WEIGHT; repeat.", valueName: "file[:weight]"))
        var adapters: [String]
        @Option(parsing: .unconditional, help: "Rank of the merged linear and 1×1 modules.") var rank: Int
        @Option(parsing: .unconditional, help: "Rank of the merged 3×3 convolutions (default: --rank).") var convRank: Int?
        @Option(parsing: .unconditional, help: "Clamp both factors at this quantile of their values (1: no clamp).") var clampQuantile: Double = 0.99
        @OptionGroup var base: DiffusionBaseOption
        @OptionGroup var out: AdapterFileOutput

        func validate() throws {
            guard !adapters.isEmpty else { throw ValidationError("give at least one --adapter") }
            guard rank > 0, convRank.map({ $0 > 0 }) ?? true else { throw ValidationError("ranks must be positive") }
            guard clampQuantile > 0 && clampQuantile <= 1 else { throw ValidationError("--clamp-quantile must be in (0, 1]") }
            try AdapterOptions.validate(adapters)
        }

        func run() throws {
            let files = try adapters.map { spec -> (file: DiffusionAdapterFile, weight: Float) in
                let (path, weight) = AdapterOptions.parse(spec)
                return (try readDiffusionAdapter(path), Float(weight))
            }
            let result: DiffusionLowRankOperations.Result
            do {
                result = try DiffusionLowRankOperations.svdMerge(files, rank: rank, convRank: convRank, clampQuantile: clampQuantile < 1 ? clampQuantile : nil,
                                                                 index: try base.index(), layersPerBlock: base.layersPerBlock) { note($0) }
            } catch { throw CommandError("\(error)") }
            try out.write(result, metadata: ["ss_training_comment": "SVD merge of " + adapters.joined(separator: ", ") + " by swift-lora"])
        }
    }
}
