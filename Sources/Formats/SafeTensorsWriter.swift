import Foundation
import Kernels
#if canImport(Glibc)
import Glibc
#endif

/// Writes safetensors files: the header lists tensors in name order with contiguous offsets,
/// padded with spaces to an 8-byte boundary as the reference implementation does. The file is
/// written to a temporary name beside the destination and renamed into place, so a reader never
/// sees a partial file.
public enum SafeTensorsWriter {
    public enum StorageType: String, Sendable { case f32 = "F32", f16 = "F16", bf16 = "BF16" }

    public static func write(_ tensors: [String: Tensor], to url: URL, as storage: StorageType = .f32,
                             metadata: [String: String] = [:]) throws(SafeTensorsError) {
        let dtype = SafeTensorsFile.DType(rawValue: storage.rawValue) ?? .f32
        let writer = try SafeTensorsStreamWriter(url: url, entries: tensors.map { .init(name: $0.key, dtype: dtype, shape: $0.value.shape) },
                                                 metadata: metadata)
        do {
            while let name = writer.nextName, let t = tensors[name] { try writer.append(name, values: t) }
            try writer.finish()
        } catch {
            writer.cancel()
            throw error
        }
    }

    static func appendElements(of t: Tensor, as storage: StorageType, to out: inout Data) {
        switch storage {
        case .f32:
            var bits = [UInt32](repeating: 0, count: t.count)
            for i in 0..<t.count { bits[i] = t.data[i].bitPattern.littleEndian }
            bits.withUnsafeBytes { out.append(contentsOf: $0) }
        case .f16:
            var bits = [UInt16](repeating: 0, count: t.count)
            for i in 0..<t.count { bits[i] = Float16(t.data[i]).bitPattern.littleEndian }
            bits.withUnsafeBytes { out.append(contentsOf: $0) }
        case .bf16:
            var bits = [UInt16](repeating: 0, count: t.count)
            for i in 0..<t.count { bits[i] = bfloat16Bits(t.data[i]).littleEndian }
            bits.withUnsafeBytes { out.append(contentsOf: $0) }
        }
    }

    /// Round to nearest even, as torch converts float32 to bfloat16; NaN stays NaN.
    static func bfloat16Bits(_ x: Float) -> UInt16 {
        let bits = x.bitPattern
        if x.isNaN { return UInt16(bits >> 16) | 0x40 }
        let rounding = 0x7FFF + ((bits >> 16) & 1)
        return UInt16((bits &+ rounding) >> 16)
    }
}

/// Writes `data` to a temporary file in the destination's folder, then renames it over `url`.
public func atomicWrite(_ data: Data, to url: URL) throws(SafeTensorsError) {
    let temporary = url.deletingLastPathComponent().appendingPathComponent(".\(url.lastPathComponent).\(UUID().uuidString).tmp")
    // POSIX calls rather than Data.write, so a failure carries the system's own reason
    // ("No space left on device"), and the bytes are fsynced before the rename makes them visible.
    func failure(_ action: String, _ code: Int32) -> SafeTensorsError {
        unlink(temporary.path)
        return .cannotWrite(path: url.path, reason: "\(action): \(String(cString: strerror(code)))")
    }
    let fd = open(temporary.path, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0o644)
    guard fd >= 0 else { throw .cannotWrite(path: url.path, reason: "create: \(String(cString: strerror(errno)))") }
    let writeError: Int32? = data.withUnsafeBytes { raw -> Int32? in
        guard let base = raw.baseAddress else { return nil }
        var offset = 0
        while offset < raw.count {
            let n = write(fd, base + offset, raw.count - offset)
            if n < 0 {
                if errno == EINTR { continue }
                return errno
            }
            offset += n
        }
        return nil
    }
    if let code = writeError { close(fd); throw failure("write", code) }
    if fsync(fd) != 0 { let code = errno; close(fd); throw failure("fsync", code) }
    if close(fd) != 0 { throw failure("close", errno) }
    // rename(2) replaces the destination atomically.
    guard rename(temporary.path, url.path) == 0 else { throw failure("rename", errno) }
}

/// The weights of a Hugging Face model directory: `model.safetensors`, or the shards listed in
/// `model.safetensors.index.json` (`{"weight_map": {tensor: file}}`).
public struct SafeTensorsCheckpoint {
    public let files: [SafeTensorsFile]
    public let directory: URL

    public init(directory: URL) throws(SafeTensorsError) {
        self.directory = directory
        let fm = FileManager.default
        let index = directory.appendingPathComponent("model.safetensors.index.json")
        let single = directory.appendingPathComponent("model.safetensors")
        if fm.fileExists(atPath: index.path) {
            let json: Any
            do {
                json = try JSONSerialization.jsonObject(with: Data(contentsOf: index))
            } catch {
                throw .cannotRead(path: index.path, reason: error.localizedDescription)
            }
            guard let map = (json as? [String: Any])?["weight_map"] as? [String: String] else {
                throw .invalidIndex(path: index.path, reason: "no weight_map of tensor names to file names")
            }
            var shards: [String: SafeTensorsFile] = [:]
            for shard in Set(map.values).sorted() {
                guard !shard.contains("/"), !shard.hasPrefix(".") else {
                    throw .invalidIndex(path: index.path, reason: "shard name '\(shard)' must be a file in the same folder")
                }
                shards[shard] = try SafeTensorsFile(url: directory.appendingPathComponent(shard))
            }
            // Every tensor of the index must be in the shard the index names.
            for (name, shard) in map where shards[shard]?.entries[name] == nil {
                throw .invalidIndex(path: index.path, reason: "tensor '\(name)' is not in \(shard)")
            }
            files = shards.keys.sorted().compactMap { shards[$0] }
        } else if fm.fileExists(atPath: single.path) {
            files = [try SafeTensorsFile(url: single)]
        } else {
            throw .cannotRead(path: directory.path, reason: "no model.safetensors or model.safetensors.index.json")
        }
    }

    /// Every floating-point tensor of every shard; a name present in two shards is an error.
    public func floatTensors() throws(SafeTensorsError) -> [String: Tensor] {
        var all: [String: Tensor] = [:]
        for file in files {
            for (name, t) in try file.floatTensors() {
                guard all[name] == nil else { throw .duplicateTensor(name) }
                all[name] = t
            }
        }
        return all
    }

    /// Each tensor's stored dtype, for reports.
    public var dtypes: [String: String] {
        var result: [String: String] = [:]
        for f in files { for (name, e) in f.entries { result[name] = e.dtype.rawValue } }
        return result
    }
}
