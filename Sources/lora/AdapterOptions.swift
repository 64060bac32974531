import ArgumentParser
import Foundation
import Models

/// `--adapter DIR[:WEIGHT]` (repeatable) and `--merge`, shared by the commands that run a model.
struct AdapterOptions: ParsableArguments {
    @Option(name: .customLong("adapter"), help: ArgumentHelp(
        "A PEFT adapter directory, optionally with a weight (DIR:0.5). Repeat to combine adapters: the result is Σ weight·ΔW (PEFT's 'cat' combination).",
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
        for spec in adapters where !Self.parse(spec).weight.isFinite { throw ValidationError("the weight in '\(spec)' must be finite") }
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
            let config = try model.loadPEFTAdapter(from: URL(fileURLWithPath: path), named: name)
            note("loaded adapter \(path) (r=\(config.rank), alpha=\(config.alpha)\(config.useRSLoRA ? ", rsLoRA" : ""))")
            names.append(name)
            weights.append(weight)
        }
        if names.count > 1 || weights[0] != 1 {
            try model.addWeightedAdapter(names, weights: weights, named: "combined", combination: .cat)
            try model.setActiveAdapters(["combined"])
        }
        if merge {
            do { try model.mergeAdapters() } catch { throw CommandError(error.description) }
            note("merged the adapters into the weights")
        }
    }
}
