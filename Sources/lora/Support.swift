import ArgumentParser
import Foundation
import Tokenizers
import Formats
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
    func load(labels: [String]? = nil, seed: UInt64 = 0, precision: FrozenPrecision = .fp32, newHead: NewHead = .silent) throws -> Pretrained {
        let location = try ModelStore().resolve(model) { note($0) }
        return try Self.load(location, labels: labels, seed: seed, precision: precision, newHead: newHead)
    }

    /// A causal language model of any supported architecture (Llama, Gemma 3), for the commands
    /// that score and generate, with `adapters` loaded (and merged, with --merge).
    func loadCausalLM(precision: FrozenPrecision = .fp32, adapters: AdapterOptions) throws -> LoadedCausalLM {
        let location = try ModelStore().resolve(model) { note($0) }
        let pretrained = try Self.load(location, precision: precision)
        guard let lm = pretrained.model as? any CausalLanguageModel & PretrainedModel else {
            throw CommandError("this command needs a causal language model (Llama or Gemma 3, such as smollm2-135m-instruct); \(model) is a \(pretrained.model.architecture) model")
        }
        try adapters.apply(to: lm)
        lm.setTraining(false)
        return LoadedCausalLM(model: lm, tokenizer: pretrained.tokenizer, chatTemplate: pretrained.chatTemplate)
    }

    /// What to say about a classification head the checkpoint lacks (freshly initialised).
    enum NewHead {
        /// Nothing: the command does not use the head (inspect, tokenize, embed), or an adapter
        /// brings one.
        case silent
        /// Training: the new head is trained with the adapter.
        case trained
        /// The head's outputs are used as they are: a warning that they are random.
        case untrained
    }

    static func load(_ location: ModelLocation, labels: [String]? = nil, seed: UInt64 = 0, precision: FrozenPrecision = .fp32,
                     newHead: NewHead = .silent) throws -> Pretrained {
        let start = Date()
        let pretrained = try Pretrained.load(location.url, seed: seed, labels: labels, frozen: precision)
        let stored = precision == .fp32 ? "" : String(format: ", frozen weights %@ (%.0f MiB)", precision.rawValue,
                                                      Double(pretrained.model.frozenWeightBytes) / 1_048_576)
        note(String(format: "loaded %@ in %.2f s%@", location.url.lastPathComponent, Date().timeIntervalSince(start), stored))
        let fresh = pretrained.report.newlyInitialized
        if !fresh.isEmpty {
            switch newHead {
            case .silent: break
            case .trained:
                note("a new classification head (\(fresh.joined(separator: ", ")); the base model has none for these labels) is trained with the adapter")
            case .untrained:
                note("warning: the model has no trained classification head (\(fresh.joined(separator: ", ")) are random), so its outputs mean nothing; give an --adapter trained with lora train --task classification")
            }
        }
        return pretrained
    }
}

/// What a location holds, read from its header alone (before loading weights): the registered
/// architecture's task, or nil when it is not supported (loading then says why).
func modelTask(of url: URL) -> ModelTask? {
    if url.pathExtension.lowercased() == "gguf" {
        let name = (try? GGUFFile(url: url))?.metadata["general.architecture"]?.string ?? ""
        return ModelRegistry.gguf(architecture: name)?.task
    }
    guard let (type, _, _) = try? ModelLoader.huggingFaceModelType(directory: url) else { return nil }
    return ModelRegistry.huggingFace(modelType: type)?.task
}

/// "1 example", "3 examples".
func count(_ n: Int, _ noun: String) -> String { "\(n.formatted()) \(noun)\(n == 1 ? "" : "s")" }

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

/// `--chat-template FILE`: a Jinja chat template to use instead of the model's. It is recognised
/// as one of the families swift-lora renders natively, never evaluated.
func chatTemplate(file path: String) throws -> ChatTemplate {
    let url = URL(fileURLWithPath: path)
    if let why = unreadableFileReason(url) { throw CommandError("--chat-template \(path): \(why)") }
    let source: String
    do { source = try String(contentsOf: url, encoding: .utf8) } catch { throw CommandError("--chat-template \(path): \(plainFileReason(error))") }
    do { return try ChatTemplate(jinja: source) } catch { throw CommandError("--chat-template \(path): \(error.description)") }
}
