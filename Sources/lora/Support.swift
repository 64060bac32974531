import ArgumentParser
import Foundation
import ModelStore
import Models

/// `--model`: a `.gguf` file, a Hugging Face directory, or a known model's short name.
struct ModelOption: ParsableArguments {
    @Option(name: .long, help: ArgumentHelp(
        "A .gguf file, a Hugging Face model directory, or a known model (\(KnownModel.all.map(\.name).joined(separator: ", "))).",
        valueName: "model"))
    var model: String

    /// Resolves (fetching a known model if needed, with progress on stderr) and loads it; `seed`
    /// initialises a classifier head the checkpoint lacks.
    /// `precision` stores the frozen weights packed (see `FrozenPrecision`).
    func load(labels: [String]? = nil, seed: UInt64 = 0, precision: FrozenPrecision = .fp32) throws -> Pretrained {
        let location = try ModelStore().resolve(model) { note($0) }
        let start = Date()
        let pretrained = try Pretrained.load(location.url, seed: seed, labels: labels, frozen: precision)
        let stored = precision == .fp32 ? "" : String(format: ", frozen weights %@ (%.0f MiB)", precision.rawValue,
                                                      Double(pretrained.model.frozenWeightBytes) / 1_048_576)
        note(String(format: "loaded %@ in %.2f s%@", location.url.lastPathComponent, Date().timeIntervalSince(start), stored))
        for name in pretrained.report.newlyInitialized { note("warning: \(name) was not in the checkpoint and is freshly initialised") }
        return pretrained
    }
}

/// A file's size in bytes; 0 when it cannot be read (sizes only go into reports).
func fileSize(_ url: URL) -> Int {
    (try? FileManager.default.attributesOfItem(atPath: url.path)[.size] as? Int) ?? 0
}

/// Progress and diagnostics go to stderr, so stdout holds only the result.
func note(_ message: String) {
    FileHandle.standardError.write(Data((message + "\n").utf8))
}

/// Prints exactly one JSON object on stdout.
func printJSON<T: Encodable>(_ value: T) throws {
    let encoder = JSONEncoder()
    encoder.outputFormatting = [.sortedKeys, .withoutEscapingSlashes]
    let data = try encoder.encode(value)
    print(String(decoding: data, as: UTF8.self))
}

/// A user-facing failure: ArgumentParser prints "Error: <description>" and exits with status 1.
struct CommandError: Error, CustomStringConvertible {
    let description: String
    init(_ description: String) { self.description = description }
}

extension FrozenPrecision: ExpressibleByArgument {}

/// `--precision` and `--recompute`, shared by the commands that train.
struct MemoryOptions: ParsableArguments {
    @Option(help: "Storage of the frozen base weights: fp32, bf16 (half the memory), or q (keep a GGUF file's quantised blocks, QLoRA-style). LoRA only.")
    var precision: FrozenPrecision = .fp32
    @Flag(help: "Recompute each block's activations in the backward pass instead of keeping them (less memory, about a third more compute).")
    var recompute = false
}
