import ArgumentParser
import Foundation
import LoRA
import Models
import Training

/// `--adapter DIR[:WEIGHT]` (repeatable) and `--merge`, shared by the commands that run a model.
struct AdapterOptions: ParsableArguments {
    @Option(name: .customLong("adapter"), help: ArgumentHelp(
        "An adapter folder (PEFT, or mlx-lm's), optionally with a weight (DIR:0.5). Repeat to combine adapters: the result is Σ weight·ΔW (PEFT's 'cat' combination). A label_map.json beside a classifier's adapter names its classes.",
        valueName: "dir[:weight]"))
    var adapters: [String] = []

    @Flag(help: "Merge the adapters into the weights first (no extra cost per token).")
    var merge = false

    /// "DIR" or "DIR:WEIGHT" (the weight is whatever follows the last colon, when it parses).
    static func parse(_ spec: String) -> (path: String, weight: Double) {
        if let colon = spec.lastIndex(of: ":"), let weight = Double(spec[spec.index(after: colon)...]) {
            return (String(spec[..<colon]), weight)
        }
        return (spec, 1)
    }

    func validate() throws {
        if merge && adapters.isEmpty { throw ValidationError("--merge needs at least one --adapter") }
        try Self.validate(adapters)
    }

    static func validate(_ adapters: [String]) throws {
        for spec in adapters {
            let (path, weight) = parse(spec)
            guard weight.isFinite else { throw ValidationError("the weight in '\(spec)' must be finite") }
            if !FileManager.default.fileExists(atPath: path), let colon = spec.lastIndex(of: ":"),
               FileManager.default.fileExists(atPath: String(spec[..<colon])) {
                throw ValidationError("'\(spec[spec.index(after: colon)...])' in '\(spec)' is not a number: give DIR or DIR:WEIGHT, e.g. \(spec[..<colon]):0.5")
            }
        }
    }

    /// The classes named by the adapters' `label_map.json` files (a classifier adapter's head
    /// has one output per class), or nil when none has one. Adapters that disagree are refused.
    static func labels(of adapters: [String]) throws -> [String]? {
        var found: (path: String, labels: [String])?
        for spec in adapters {
            let path = parse(spec).path
            let url = URL(fileURLWithPath: path).appendingPathComponent("label_map.json")
            guard FileManager.default.fileExists(atPath: url.path) else { continue }
            let labels = try LabelMap.load(url).labels
            if let found, found.labels != labels {
                throw CommandError("the adapters classify into different labels: \(found.path) has \(found.labels), \(path) has \(labels)")
            }
            found = (path, labels)
        }
        return found?.labels
    }

    /// Loads the adapters into the model and activates them (combined if more than one or
    /// weighted), then merges if asked.
    func apply(to model: some AdaptableModel) throws {
        try Self.apply(adapters, merge: merge, to: model)
    }

    static func apply(_ adapters: [String], merge: Bool, to model: some AdaptableModel) throws {
        guard !adapters.isEmpty else { return }
        var names: [String] = [], weights: [Double] = []
        for (i, spec) in adapters.enumerated() {
            let (path, weight) = parse(spec)
            let name = "adapter\(i)"
            let (config, layout) = try loadAdapter(URL(fileURLWithPath: path), named: name, into: model)
            let shown = weight == 1 ? "" : ", weight \(weight.formatted())"
            note("loaded adapter \(path)\(layout) (r=\(config.rank), alpha=\(config.alpha.formatted())\(config.useRSLoRA ? ", rsLoRA" : "")\(shown))")
            names.append(name)
            weights.append(weight)
        }
        if Set(adapters.map { URL(fileURLWithPath: parse($0).path).standardizedFileURL.path }).count < adapters.count {
            note("note: an adapter is given more than once; its ΔW counts once per time")
        }
        if names.count > 1 || weights[0] != 1 {
            try model.addWeightedAdapter(names, weights: weights, named: "combined", combination: .cat)
            try model.setActiveAdapters(["combined"])
            if names.count > 1 {
                note("combined \(names.count) adapters: Σ weight·ΔW with weights \(weights.map { $0.formatted() }.joined(separator: ", "))")
            }
        }
        if merge {
            do { try model.mergeAdapters() } catch { throw CommandError(error.description) }
            note("merged the adapters into the weights")
        }
    }

    /// An adapter folder of any format `AdapterFormats` reads (PEFT, mlx-lm).
    static func loadAdapter(_ url: URL, named name: String, into model: some AdaptableModel) throws -> (config: LoRAConfig, layout: String) {
        let file = try model.loadAdapter(from: url, named: name)
        return (file.config, file.format == PEFTCodec.name ? "" : " (\(file.format) layout)")
    }
}
