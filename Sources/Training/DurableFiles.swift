import Foundation
#if canImport(Glibc)
import Glibc
#endif

/// File-system steps that make a write durable and atomic, beside `atomicWrite` (Formats, which
/// writes, fsyncs and renames one file): fsync of files and folders, a rename that swaps two
/// paths atomically (Linux `renameat2(RENAME_EXCHANGE)`), and errors that name the file and the
/// system's reason ("No space left on device").
enum DurableFiles {
    /// A failed file operation: the path, what was being done, and the system's reason.
    struct Failure: Error, CustomStringConvertible {
        let path: String
        let action: String
        let reason: String
        init(path: String, action: String, errno code: Int32) {
            self.path = path
            self.action = action
            reason = String(cString: strerror(code))
        }
        init(path: String, action: String, reason: String) {
            self.path = path
            self.action = action
            self.reason = reason
        }
        var description: String { "cannot \(action) \(path): \(reason)" }
    }

    /// fsync of a file or folder (a folder's fsync makes the renames inside it durable).
    static func sync(_ url: URL) throws(Failure) {
        var isDirectory: ObjCBool = false
        _ = FileManager.default.fileExists(atPath: url.path, isDirectory: &isDirectory)
        let fd = open(url.path, (isDirectory.boolValue ? O_DIRECTORY : 0) | O_RDONLY | O_CLOEXEC)
        guard fd >= 0 else { throw Failure(path: url.path, action: "open", errno: errno) }
        defer { close(fd) }
        guard fsync(fd) == 0 else { throw Failure(path: url.path, action: "fsync", errno: errno) }
    }

    /// fsync of every regular file directly inside `folder`, then of the folder.
    static func syncContents(of folder: URL) throws(Failure) {
        let names = (try? FileManager.default.contentsOfDirectory(atPath: folder.path)) ?? []
        for name in names { try sync(folder.appendingPathComponent(name)) }
        try sync(folder)
    }

    static func rename(_ from: URL, to: URL) throws(Failure) {
        guard Glibc.rename(from.path, to.path) == 0 else {
            throw Failure(path: to.path, action: "rename \(from.lastPathComponent) to", errno: errno)
        }
    }

    private typealias RenameAt2 = @convention(c) (Int32, UnsafePointer<CChar>, Int32, UnsafePointer<CChar>, UInt32) -> Int32
    /// glibc's renameat2 (2.28 and later), looked up at run time: Swift's Glibc module does not
    /// declare it.
    nonisolated(unsafe) private static let renameat2: RenameAt2? = {
        guard let handle = dlopen(nil, RTLD_NOW), let symbol = dlsym(handle, "renameat2") else { return nil }
        return unsafeBitCast(symbol, to: RenameAt2.self)
    }()

    /// Swaps two existing paths in one atomic step. Returns false when the system or the file
    /// system cannot (no renameat2, or EINVAL / ENOSYS), so the caller can fall back.
    static func exchange(_ a: URL, _ b: URL) throws(Failure) -> Bool {
        guard let renameat2 else { return false }
        let RENAME_EXCHANGE: UInt32 = 2
        if renameat2(AT_FDCWD, a.path, AT_FDCWD, b.path, RENAME_EXCHANGE) == 0 { return true }
        let code = errno
        if code == EINVAL || code == ENOSYS || code == ENOTSUP { return false }
        throw Failure(path: b.path, action: "exchange \(a.lastPathComponent) with", errno: code)
    }

    /// The system's reason inside an error from Foundation or the writers, made plain: a full
    /// disk reads "No space left on device" (Foundation says "There isn’t enough space").
    static func plainReason(_ error: any Error) -> String {
        let text = "\(error)"
        if let failure = error as? Failure { return failure.reason }
        if text.contains("No space left on device") || text.contains("enough space") { return String(cString: strerror(ENOSPC)) }
        if text.contains("Disk quota exceeded") { return String(cString: strerror(EDQUOT)) }
        if text.contains("Read-only file system") { return String(cString: strerror(EROFS)) }
        if text.contains("ermission denied") || text.contains("don’t have permission") { return String(cString: strerror(EACCES)) }
        return text
    }

    /// The file named in a writer's "cannot write PATH: …" message, if any.
    static func fileNamed(in error: any Error) -> String? {
        if let failure = error as? Failure { return failure.path }
        let text = "\(error)"
        guard let range = text.range(of: "cannot write ") else { return nil }
        let rest = text[range.upperBound...]
        guard let end = rest.range(of: ": ") else { return nil }
        return String(rest[..<end.lowerBound])
    }
}
