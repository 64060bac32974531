import Foundation
import Formats
import Training
#if canImport(Glibc)
import Glibc
#endif

/// The `--output` folder of one training run, held for the run's life.
///
/// - A folder that holds another run's files (adapter, model, checkpoints, metrics) is never
///   mixed with a new run: it is refused unless the run resumes (`--resume`) or `--overwrite`
///   clears those files first.
/// - The folder is locked (`flock` on `OUTPUT/.lock`, which records the holder's pid, start
///   time and command), so a second run into it fails at once, naming the first. The lock goes
///   with the process, however it ends.
final class RunFolder {
    let url: URL
    private let lockDescriptor: Int32

    /// What `lora train` writes into its output folder.
    static let runFiles = ["adapter_config.json", "adapter_model.safetensors", "model.safetensors", "config.json", "label_map.json",
                           "metrics.jsonl", "loss.svg", "checkpoints", "tokenizer.json", "tokenizer_config.json",
                           "special_tokens_map.json", "vocab.txt"]

    private init(url: URL, lockDescriptor: Int32) {
        self.url = url
        self.lockDescriptor = lockDescriptor
    }

    deinit { close(lockDescriptor) }

    static func claim(_ url: URL, resuming: Bool, overwrite: Bool) throws -> RunFolder {
        let fm = FileManager.default
        var isDirectory: ObjCBool = false
        if fm.fileExists(atPath: url.path, isDirectory: &isDirectory), !isDirectory.boolValue {
            throw CommandError("--output \(url.path) is a file; give a folder (it is created if needed)")
        }
        do {
            try fm.createDirectory(at: url, withIntermediateDirectories: true)
        } catch {
            throw CommandError("cannot create the output folder \(url.path): \(plainFileReason(error))")
        }
        let lockPath = url.appendingPathComponent(".lock").path
        let fd = open(lockPath, O_RDWR | O_CREAT | O_CLOEXEC, 0o644)
        guard fd >= 0 else { throw CommandError("cannot create \(lockPath): \(String(cString: strerror(errno)))") }
        if flock(fd, LOCK_EX | LOCK_NB) != 0 {
            let reason = errno
            if reason == EWOULDBLOCK {
                var holder = [UInt8](repeating: 0, count: 4096)
                let n = pread(fd, &holder, holder.count, 0)
                close(fd)
                let who = n > 0 ? String(decoding: holder[0..<n], as: UTF8.self).trimmingCharacters(in: .whitespacesAndNewlines) : "another process"
                throw CommandError("\(url.path) is in use by another training run (\(who)); wait for it to finish, or choose another --output")
            }
            // A file system without locks (some network mounts): carry on, unguarded.
            note("warning: cannot lock \(lockPath) (\(String(cString: strerror(reason)))); a second run into this folder would not be stopped")
        }
        let formatter = ISO8601DateFormatter()
        let holder = "pid \(getpid()), started \(formatter.string(from: Date())): lora \(CommandLine.arguments.dropFirst().joined(separator: " "))\n"
        _ = ftruncate(fd, 0)
        _ = holder.withCString { pwrite(fd, $0, strlen($0), 0) }
        let folder = RunFolder(url: url, lockDescriptor: fd)

        let present = runFiles.filter { name in
            let path = url.appendingPathComponent(name).path
            if name == "checkpoints" { return !((try? fm.contentsOfDirectory(atPath: path)) ?? []).isEmpty }
            return fm.fileExists(atPath: path)
        }
        guard !present.isEmpty else { return folder }
        if overwrite {
            for name in present {
                do { try fm.removeItem(at: url.appendingPathComponent(name)) } catch {
                    throw CommandError("--overwrite: cannot remove \(url.appendingPathComponent(name).path): \(plainFileReason(error))")
                }
            }
            note("--overwrite: removed the previous run's \(describe(present, in: url)) from \(url.path)")
            return folder
        }
        if resuming { return folder }
        throw CommandError("\(url.path) already holds a training run (\(describe(present, in: url))). "
            + "Continue it with --resume latest, or start afresh with --overwrite (which deletes those files), or choose another --output")
    }

    /// "adapter_config.json, 2 checkpoints, metrics.jsonl".
    static func describe(_ names: [String], in url: URL) -> String {
        names.map { name in
            guard name == "checkpoints" else { return name }
            let count = Checkpoints.list(url).count
            return count == 0 ? "checkpoints/" : "\(count) checkpoint\(count == 1 ? "" : "s")"
        }.joined(separator: ", ")
    }
}
