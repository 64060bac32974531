import ArgumentParser
import Foundation
import AdapterFormats
import Diffusion
import Formats
import Kernels
import LoRA
import ModelStore
import Models
import Training

struct AdapterCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "adapter", abstract: "Look at and convert LoRA adapters: folders (PEFT, mlx-lm) and Stable Diffusion files.", subcommands: [Inspect.self, ConvertFile.self, Resize.self, Extract.self, MergeAdapters.self])

    struct Inspect: ParsableCommand {
        static let configuration = CommandConfiguration(
            abstract: "Show an adapter's configuration, ranks, targets, parameter count and size.")
        @Argument(help: "An adapter folder (PEFT's adapter_config.json + adapter_model.safetensors, or mlx-lm's adapters.safetensors), or a Stable Diffusion adapter file (.safetensors: kohya, diffusers/PEFT, LyCORIS).") var directory: String
        @Flag(help: "Print one JSON object.") var json = false

        struct Report: Encodable {
            let directory: String
            let layout: String
            let rank: Int
            let alpha: Double
            let scaling: Double
            let useRSLoRA: Bool
            let targets: String
            let rankPattern: [String: Int]
            let alphaPattern: [String: Double]
            let modulesToSave: [String]
            let taskType: String?
            let baseModel: String?
            let adaptedModules: Int
            let ranks: [Int]
            let trainableParameters: Int
            let tensorTypes: [String: Int]
            let fileBytes: Int
            let labels: [String]?

            enum CodingKeys: String, CodingKey {
                case directory, layout, rank, alpha, scaling, useRSLoRA = "use_rslora", targets, rankPattern = "rank_pattern"
                case alphaPattern = "alpha_pattern", modulesToSave = "modules_to_save", taskType = "task_type"
                case baseModel = "base_model_name_or_path", adaptedModules = "adapted_modules", ranks
                case trainableParameters = "trainable_parameters", tensorTypes = "tensor_types", fileBytes = "file_bytes", labels
            }
        }

        func run() throws {
            let fm = FileManager.default
            var isDirectory: ObjCBool = false
            if fm.fileExists(atPath: directory, isDirectory: &isDirectory), !isDirectory.boolValue, directory.hasSuffix(".safetensors") {
                return try inspectFile(URL(fileURLWithPath: directory))
            }
            let adapter: AdapterFile
            do { adapter = try AdapterFormats.read(URL(fileURLWithPath: directory)) } catch { throw CommandError(error.description) }
            let config = adapter.config, layout = adapter.format
            let modules = adapter.modulePaths
            let ranks = Set(adapter.loraA.values.map { $0.shape[0] }).sorted()
            let parameters = adapter.heldValues
            let types = adapter.storedTypes
            let bytes = adapter.fileBytes
            let labelURL = URL(fileURLWithPath: directory).appendingPathComponent("label_map.json")
            let labels = fm.fileExists(atPath: labelURL.path) ? try LabelMap.load(labelURL).labels : nil
            let targets: String = switch config.targets {
            case .names(let n): n.joined(separator: ", ")
            case .regex(let r): "regex \(r)"
            case .allLinear: "all-linear"
            }
            let report = Report(
                directory: directory, layout: layout, rank: config.rank, alpha: config.alpha,
                scaling: Double(config.settings(for: "").scale), useRSLoRA: config.useRSLoRA, targets: targets,
                rankPattern: Dictionary(config.rankPattern.map { ($0.key, $0.value) }, uniquingKeysWith: { a, _ in a }),
                alphaPattern: Dictionary(config.alphaPattern.map { ($0.key, $0.value) }, uniquingKeysWith: { a, _ in a }),
                modulesToSave: config.modulesToSave ?? [], taskType: config.taskType, baseModel: config.baseModelNameOrPath,
                adaptedModules: modules.count, ranks: ranks, trainableParameters: parameters, tensorTypes: types, fileBytes: bytes,
                labels: labels)
            if json { return try printJSON(report) }
            print("adapter:         \(directory)\(layout == PEFTCodec.name ? "" : " (\(layout) layout)")")
            print("rank:            r=\(config.rank), lora_alpha=\(config.alpha), scaling \(report.scaling)\(config.useRSLoRA ? " (rsLoRA: α/√r)" : " (α/r)")")
            if !config.rankPattern.isEmpty || !config.alphaPattern.isEmpty {
                print("patterns:        rank \(config.rankPattern.map { "\($0.key)=\($0.value)" }), alpha \(config.alphaPattern.map { "\($0.key)=\($0.value)" })")
            }
            print("targets:         \(targets)")
            if let save = config.modulesToSave { print("modules_to_save: \(save.joined(separator: ", "))") }
            print("adapted modules: \(modules.count) (ranks \(ranks.map(String.init).joined(separator: ", ")))")
            print("parameters:      \(parameters.formatted()) (\(types.map { "\($0.key) × \($0.value)" }.joined(separator: ", ")))")
            print("file size:       \(bytes.formatted()) bytes")
            if let task = config.taskType { print("task type:       \(task)") }
            if let base = config.baseModelNameOrPath { print("base model:      \(base)") }
            if let labels { print("labels:          \(labels.joined(separator: ", ")) (label_map.json)") }
        }
    }
}

struct Merge: ParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Merge adapters into a model: a language model or encoder, or a Stable Diffusion pipeline.",
        discussion: """
        A language model or encoder is written as a Hugging Face directory (config.json, \
        model.safetensors, tokenizer files) that loads in transformers and runs in swift-lora at \
        exactly the base model's cost. A GGUF base is dequantised; the merged weights are written \
        in --dtype (F32 by default) and never re-quantised.

        A Stable Diffusion base (a diffusers pipeline folder with model_index.json) takes adapter \
        files (.safetensors) in every spelling users exchange: kohya (lora_unet_…, lora_te_…, \
        SDXL's input_blocks_… names), diffusers and PEFT (unet.…lora_A, .lora.down, \
        lora_linear_layer, the old processor.to_q_lora, lora_adapter_metadata), LyCORIS (LoCon with \
        lora_mid, LoHa, LoKr, full diff, dora_scale). Each adapter adds FILE:MULT × (alpha/rank) × ΔW \
        in fp32, in the order given, as kohya's merge_lora.py and diffusers' fuse_lora(lora_scale) \
        do. The output keeps the base's layout (every file copied, the changed components' weights \
        rewritten in their own dtypes unless --dtype says otherwise); keys that match no module are \
        listed, and a file none of whose keys match, or whose shapes do not fit, is refused before \
        anything is written.
        """)
    @OptionGroup var model: ModelOption
    @Option(name: .customLong("adapter"), help: ArgumentHelp(
        "An adapter folder (PEFT or mlx-lm) or, for a Stable Diffusion base, an adapter file; optionally PATH:WEIGHT (the multiplier); repeat to combine. A classifier's label_map.json names the merged model's classes.",
        valueName: "path[:weight]"))
    var adapters: [String]
    @Option(help: "The output folder.") var output: String
    @Option(help: "Storage type of the merged weights (f32 by default; a Stable Diffusion base keeps each tensor's own unless given).")
    var dtype: HuggingFaceExport.StorageType?
    @Flag(help: "Print one JSON object on stdout (Stable Diffusion bases).") var json = false

    func validate() throws {
        guard !adapters.isEmpty else { throw ValidationError("give at least one --adapter") }
        try AdapterOptions.validate(adapters)
    }

    func run() throws {
        let base = URL(fileURLWithPath: model.model)
        if DiffusersCheckpoint.isPipelineFolder(base) { return try mergeDiffusion(base) }
        let dtype = self.dtype ?? .f32
        let labels = try AdapterOptions.labels(of: adapters)
        let pretrained = try model.load(labels: labels)
        let adaptable = pretrained.model
        try AdapterOptions.apply(adapters, merge: false, to: adaptable)
        for m in adaptable.linearModules where !m.activeAdapters.isEmpty {
            do { try m.fuse() } catch { throw CommandError(error.description) }
        }
        let storage = dtype
        let files = try HuggingFaceExport.tokenizerFiles(for: pretrained)
        let destination = URL(fileURLWithPath: output)
        try HuggingFaceExport.write(pretrained.model, tokenizerFiles: files, tokenizer: pretrained.tokenizer, storage: storage, to: destination)
        let source = pretrained.report.storedTypes.values.sorted().first.map { _ in Set(pretrained.report.storedTypes.values).sorted().joined(separator: "/") } ?? "?"
        note("wrote \(destination.path): config.json, model.safetensors (\(storage.rawValue.uppercased()); source tensors \(source), merged in fp32, not re-quantised), \(files.keys.sorted().joined(separator: ", "))")
        if files.isEmpty {
            note("note: no tokenizer files written: the model's \(type(of: pretrained.tokenizer)) cannot be exported as tokenizer.json yet; "
                + "copy tokenizer.json and tokenizer_config.json from the model's Hugging Face repository beside config.json")
        }
    }
}

struct Convert: ParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Convert a LoRA adapter between PEFT and mlx-lm layouts, preserving ΔW exactly.",
        discussion: """
        The input's layout is detected (adapter_model.safetensors = PEFT, adapters.safetensors = mlx-lm). \
        PEFT → mlx-lm pads smaller ranks with zeros and folds per-module scales into B; mlx-lm applies \
        adapters to the last num_layers blocks, so the base model's layer count is needed (--model or \
        --num-layers).
        """)
    @Option(help: "The adapter directory to convert.") var input: String
    @Option(help: "Where to write the converted adapter.") var output: String
    @Option(help: "Target layout.") var to: AdapterLayout
    @Option(help: "The base model (for its number of layers, PEFT → mlx-lm).") var model: String?
    @Option(parsing: .unconditional, help: "The base model's number of layers, instead of --model.") var numLayers: Int?

    enum AdapterLayout: String, ExpressibleByArgument, CaseIterable { case mlx, peft }

    func run() throws {
        let source = URL(fileURLWithPath: input), destination = URL(fileURLWithPath: output)
        let adapter: AdapterFile
        do { adapter = try AdapterFormats.read(source) } catch { throw CommandError(error.description) }
        let codec: any AdapterCodec.Type = to == .mlx ? MLXCodec.self : PEFTCodec.self
        guard adapter.format != codec.name else { throw CommandError("\(input) is already a \(codec.name) adapter folder") }
        var layers = numLayers
        if codec == MLXCodec.self, layers == nil, let model {
            let location = try ModelStore().resolve(model) { note($0) }
            let (loaded, _) = try ModelLoader.load(location.url)
            guard loaded.task == .causalLM else { throw CommandError("mlx-lm adapters are for causal language models; \(model) is a \(loaded.architecture) model") }
            layers = loaded.attentionShape.layers
        }
        if codec == MLXCodec.self && layers == nil { throw CommandError("give --model or --num-layers (mlx-lm counts adapted layers from the end)") }
        do { try codec.write(adapter, to: destination, base: AdapterBase(numHiddenLayers: layers)) } catch {
            throw CommandError("cannot convert \(input) (\(adapter.format)) to \(codec.name): \(error)")
        }
        note("wrote \(destination.path) (\(codec.layout))")
    }
}

extension Merge {
    /// Adapter files merged into a diffusers pipeline folder (`DiffusionMerge`).
    func mergeDiffusion(_ base: URL) throws {
        let checkpoint: DiffusersCheckpoint
        do { checkpoint = try DiffusersCheckpoint(folder: base) } catch { throw CommandError(error.description) }
        var files: [DiffusionMerge.Adapter] = []
        for spec in adapters {
            let (path, weight) = AdapterOptions.parse(spec)
            let url = URL(fileURLWithPath: path)
            var isDirectory: ObjCBool = false
            if FileManager.default.fileExists(atPath: url.path, isDirectory: &isDirectory), isDirectory.boolValue {
                throw CommandError("--adapter \(path) is a folder; a Stable Diffusion adapter is one .safetensors file")
            }
            do { files.append(.init(file: try DiffusionAdapterFile(url: url), multiplier: Float(weight))) } catch {
                throw CommandError(error.description)
            }
        }
        let storage = dtype.flatMap { SafeTensorsWriter.StorageType(rawValue: $0.rawValue.uppercased()) }
        let report: DiffusionMerge.Report
        do {
            report = try DiffusionMerge.merge(base: checkpoint, adapters: files, output: URL(fileURLWithPath: output), storage: storage) { note($0) }
        } catch { throw CommandError(error.description) }
        for a in report.adapters {
            let parts = a.components.sorted { $0.key < $1.key }.map { "\($0.key) \($0.value)" }.joined(separator: ", ")
            note("merged \(a.path) at \(a.multiplier.formatted()): \(a.modules) modules (\(parts); "
                 + a.algorithms.sorted { $0.key < $1.key }.map { "\($0.key) \($0.value)" }.joined(separator: ", ") + ")")
            if !a.unmatched.isEmpty {
                note("  \(a.unmatched.count) of its modules match nothing in \(base.path) and were not merged: "
                     + a.unmatched.prefix(5).joined(separator: ", ") + (a.unmatched.count > 5 ? ", …" : ""))
            }
        }
        note("wrote \(report.output) (\(report.rewrittenTensors) tensors rewritten, \(report.copiedFiles) files copied, weights \(report.dtype)) in \(String(format: "%.1f", report.seconds)) s")
        if json { try printJSON(report) }
    }
}

extension HuggingFaceExport.StorageType: ExpressibleByArgument {}
