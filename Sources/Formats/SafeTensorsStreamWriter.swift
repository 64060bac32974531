import Foundation
import Kernels
#if canImport(Glibc)
import Glibc
#endif

/// Writes a safetensors file one tensor at a time, so that a checkpoint of gigabytes is never
/// whole in memory: the header (every name, dtype and shape, in name order, as `SafeTensorsWriter`
/// lays it out) first, then each tensor's bytes in that order. The file is written under a
/// temporary name beside the destination, fsynced and renamed into place by `finish()`; `cancel()`
/// (or an error) removes it, so a reader never sees a partial file.
public final class SafeTensorsStreamWriter {
    public struct Entry: Sendable {
        public let name: String
        public let dtype: SafeTensorsFile.DType
        public let shape: [Int]
        public init(name: String, dtype: SafeTensorsFile.DType, shape: [Int]) {
            self.name = name
            self.dtype = dtype
            self.shape = shape
        }
        var bytes: Int { shape.reduce(1, *) * dtype.byteSize }
    }

    public let url: URL
    private let temporary: URL
    private var fd: Int32
    private let entries: [Entry]
    private var next = 0

    /// Opens the temporary file and writes the header; `entries` are written in name order.
    public init(url: URL, entries: [Entry], metadata: [String: String] = [:]) throws(SafeTensorsError) {
        self.url = url
        self.entries = entries.sorted { $0.name < $1.name }
        temporary = url.deletingLastPathComponent().appendingPathComponent(".\(url.lastPathComponent).\(UUID().uuidString).tmp")
        var header: [String: Any] = [:]
        if !metadata.isEmpty { header["__metadata__"] = metadata }
        var offset = 0
        for e in self.entries {
            header[e.name] = ["dtype": e.dtype.rawValue, "shape": e.shape, "data_offsets": [offset, offset + e.bytes]] as [String: Any]
            offset += e.bytes
        }
        var headerBytes: [UInt8]
        do {
            headerBytes = Array(try JSONSerialization.data(withJSONObject: header, options: [.sortedKeys]))
        } catch {
            throw .invalidHeader("cannot encode header: \(error.localizedDescription)")
        }
        while (8 + headerBytes.count) % 8 != 0 { headerBytes.append(0x20) }
        fd = open(temporary.path, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0o644)
        guard fd >= 0 else { throw .cannotWrite(path: url.path, reason: "create: \(String(cString: strerror(errno)))") }
        var prefix = [UInt8]()
        withUnsafeBytes(of: UInt64(headerBytes.count).littleEndian) { prefix.append(contentsOf: $0) }
        try write(prefix + headerBytes)
    }

    deinit { if fd >= 0 { cancel() } }

    /// The name of the tensor to write next (nil when all are written).
    public var nextName: String? { next < entries.count ? entries[next].name : nil }

    /// Writes the next tensor from Float32 values, converted to its entry's dtype.
    public func append(_ name: String, values t: Tensor) throws(SafeTensorsError) {
        let e = try expect(name)
        guard t.count == e.shape.reduce(1, *) else {
            throw .cannotWrite(path: url.path, reason: "tensor '\(name)' has \(t.count) values for shape \(e.shape)")
        }
        guard let storage = SafeTensorsWriter.StorageType(rawValue: e.dtype.rawValue) else {
            throw .cannotWrite(path: url.path, reason: "tensor '\(name)': values cannot be written as \(e.dtype.rawValue)")
        }
        var out = Data(capacity: e.bytes)
        SafeTensorsWriter.appendElements(of: t, as: storage, to: &out)
        try write(Array(out))
        next += 1
    }

    /// Writes the next tensor's bytes as they are (a tensor copied unchanged).
    public func append(_ name: String, bytes: UnsafeRawBufferPointer) throws(SafeTensorsError) {
        let e = try expect(name)
        guard bytes.count == e.bytes else {
            throw .cannotWrite(path: url.path, reason: "tensor '\(name)': \(bytes.count) bytes for \(e.bytes)")
        }
        try writeRaw(bytes)
        next += 1
    }

    /// Makes the file visible under its name; every entry must have been written.
    public func finish() throws(SafeTensorsError) {
        guard next == entries.count else {
            throw .cannotWrite(path: url.path, reason: "\(entries.count - next) tensors were not written")
        }
        if fsync(fd) != 0 { throw failure("fsync", errno) }
        if close(fd) != 0 { fd = -1; throw failure("close", errno) }
        fd = -1
        guard rename(temporary.path, url.path) == 0 else { throw failure("rename", errno) }
    }

    /// Abandons the file.
    public func cancel() {
        if fd >= 0 { close(fd) }
        fd = -1
        unlink(temporary.path)
    }

    private func expect(_ name: String) throws(SafeTensorsError) -> Entry {
        guard next < entries.count, entries[next].name == name else {
            throw .cannotWrite(path: url.path, reason: "tensor '\(name)' written out of order (next is \(nextName ?? "none"))")
        }
        return entries[next]
    }

    private func failure(_ action: String, _ code: Int32) -> SafeTensorsError {
        cancel()
        return .cannotWrite(path: url.path, reason: "\(action): \(String(cString: strerror(code)))")
    }

    private func write(_ bytes: [UInt8]) throws(SafeTensorsError) {
        var failure: SafeTensorsError?
        bytes.withUnsafeBytes { raw in
            do throws(SafeTensorsError) { try writeRaw(raw) } catch { failure = error }
        }
        if let failure { throw failure }
    }

    private func writeRaw(_ raw: UnsafeRawBufferPointer) throws(SafeTensorsError) {
        guard let base = raw.baseAddress else { return }
        var offset = 0
        while offset < raw.count {
            let n = Glibc.write(fd, base + offset, raw.count - offset)
            if n < 0 {
                if errno == EINTR { continue }
                throw failure("write", errno)
            }
            offset += n
        }
    }
}

extension SafeTensorsFile {
    /// A tensor's bytes as stored, for copying it unchanged.
    public func withRawBytes<R>(_ name: String, _ body: (UnsafeRawBufferPointer) throws -> R) throws -> R {
        let e = try entry(name)
        return try withStoredBytes(e, body)
    }
}
