import Foundation
import ModelStore
import TestSupport
import Testing

@Suite("Model store")
struct ModelStoreTests {
    @Test func sha256KnownAnswers() {
        let vectors = [
            ("", "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"),
            ("abc", "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"),
            ("abcdbcdecdefdefgefghfghighijhijkijkljklmklmnlmnomnopnopq", "248d6a61d20638b8e5c026930c3e6039a33ce45964ff2167f6ecedd419db06c1"),
        ]
        for (input, expected) in vectors {
            var h = SHA256()
            h.update(Array(input.utf8))
            #expect(h.finalize() == expected, "\(input)")
        }
        // A million 'a's fed in uneven pieces exercises the buffering across blocks.
        var h = SHA256()
        var remaining = 1_000_000, piece = 1
        while remaining > 0 {
            let n = min(piece, remaining)
            h.update([UInt8](repeating: 0x61, count: n))
            remaining -= n
            piece = piece % 97 + 13
        }
        #expect(h.finalize() == "cdc76e5c9914fb9281a1c7e284d73e67f1809a48a497200e046d39ccc7112cd0")
    }

    @Test func resolvesPathsAndNames() throws {
        let store = ModelStore(root: URL(fileURLWithPath: NSTemporaryDirectory()).appendingPathComponent("lora-store-\(UUID().uuidString)"))
        #expect(throws: ModelStoreError.unknownModel("no-such-model")) { try store.resolve("no-such-model") }
        let dir = URL(fileURLWithPath: NSTemporaryDirectory()).appendingPathComponent("lora-model-\(UUID().uuidString)")
        try FileManager.default.createDirectory(at: dir, withIntermediateDirectories: true)
        defer { try? FileManager.default.removeItem(at: dir) }
        #expect(throws: ModelStoreError.notAModel(path: dir.path)) { try store.resolve(dir.path) }
        try Data("{}".utf8).write(to: dir.appendingPathComponent("config.json"))
        #expect(try store.resolve(dir.path).format == .huggingFaceDirectory)
        #expect(throws: ModelStoreError.self) { try store.resolve("smollm2-135m-instruct", fetchIfNeeded: false) }
        #expect(store.installedLocation(of: .smolLM2) == nil)
    }

    /// No entry name can address a path outside the store: separators, `..`, dot-files, NULs,
    /// absolute paths and empty names are refused; every known model and dataset name is valid.
    @Test func entryNamesStayInsideTheStore() throws {
        let store = ModelStore(root: URL(fileURLWithPath: "/tmp/lora-store-names"))
        let hostile = ["..", ".", "../../etc", "/etc/passwd", "a/../../b", "models/../..", ".hidden", "", "x\u{0}y",
                       "a\\b", "~", "name with space", "ÄÖ", String(repeating: "a", count: 101)]
        for name in hostile {
            #expect(throws: ModelStoreError.invalidName(name), "\(name)") { try store.entryDirectory("models", name) }
        }
        for name in KnownModel.all.map(\.name) + KnownDataset.all.map(\.name) {
            let url = try store.entryDirectory("models", name)
            #expect(url.standardizedFileURL.path.hasPrefix(store.root.path + "/models/"), "\(url.path)")
        }
        print("refused \(hostile.count) hostile names, e.g.: \(ModelStoreError.invalidName("../../etc"))")
    }

    @Test func environmentChoosesTheRoot() {
        #expect(ModelStore(environment: ["LORA_HOME": "/tmp/x"]).root.path == "/tmp/x")
        #expect(ModelStore(environment: [:]).root.path.hasSuffix(".cache/swift-lora"))
    }
}
