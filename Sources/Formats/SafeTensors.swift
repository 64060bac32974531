import Foundation
import Kernels

/// Everything that can be wrong with a safetensors file, with the tensor name where one applies.
public enum SafeTensorsError: Error, Equatable, CustomStringConvertible {
    case cannotRead(path: String, reason: String)
    case truncatedHeader(fileSize: Int)
    case headerSizeOutOfRange(declared: UInt64, fileSize: Int)
    case invalidHeader(String)
    case unsupportedDType(tensor: String, dtype: String)
    case invalidShape(tensor: String, shape: [Int])
    case sizeMismatch(tensor: String, expectedBytes: Int, declaredBytes: Int)
    case offsetsOutOfRange(tensor: String, begin: Int, end: Int, dataSize: Int)
    case overlappingTensors(String, String)
    case unindexedBytes(at: Int)
    case missingTensor(String)
    case notIntegral(tensor: String, dtype: String)
    case cannotWrite(path: String, reason: String)
    case invalidIndex(path: String, reason: String)
    case duplicateTensor(String)
    indirect case inFile(path: String, SafeTensorsError)

    public var description: String {
        switch self {
        case let .cannotRead(path, reason): "cannot read \(path): \(reason)"
        case let .truncatedHeader(size): "not a safetensors file: \(size) bytes is too short for a header"
        case let .headerSizeOutOfRange(declared, size): "safetensors header declares \(declared) bytes but the file has \(size)"
        case let .invalidHeader(why): "invalid safetensors header: \(why)"
        case let .unsupportedDType(name, dtype): "tensor '\(name)': unsupported dtype \(dtype)"
        case let .invalidShape(name, shape): "tensor '\(name)': invalid shape \(shape)"
        case let .sizeMismatch(name, expected, declared): "tensor '\(name)': shape needs \(expected) bytes but offsets span \(declared)"
        case let .offsetsOutOfRange(name, b, e, size): "tensor '\(name)': bytes \(b)..<\(e) lie outside the \(size)-byte data section"
        case let .overlappingTensors(a, b): "tensors '\(a)' and '\(b)' overlap"
        case let .unindexedBytes(offset): "data section has bytes not covered by any tensor at offset \(offset)"
        case let .missingTensor(name): "no tensor named '\(name)'"
        case let .notIntegral(name, dtype): "tensor '\(name)' has dtype \(dtype), expected an integer type"
        case let .cannotWrite(path, reason): "cannot write \(path): \(reason)"
        case let .invalidIndex(path, reason): "invalid shard index \(path): \(reason)"
        case .duplicateTensor(let name): "tensor '\(name)' appears in more than one shard"
        case let .inFile(path, error): "\(path): \(error)"
        }
    }
}

/// A safetensors file (https://github.com/huggingface/safetensors), memory-mapped, with its
/// header validated against the file before any tensor is touched.
///
/// Layout: u64 little-endian header size N, N bytes of JSON
/// `{name: {dtype, shape, data_offsets: [begin, end]}, "__metadata__": {…}}`, then the data,
/// offsets relative to its start, every byte belonging to exactly one tensor.
public struct SafeTensorsFile: Sendable {
    public enum DType: String, Sendable {
        case f32 = "F32", f16 = "F16", bf16 = "BF16", i64 = "I64", i32 = "I32"
        public var byteSize: Int { switch self { case .f32, .i32: 4; case .f16, .bf16: 2; case .i64: 8 } }
    }

    public struct Entry: Sendable {
        public let dtype: DType
        public let shape: [Int]
        /// Byte range within the data section.
        public let range: Range<Int>
    }

    public static let maximumHeaderSize = 100 * 1024 * 1024

    public let metadata: [String: String]
    public let entries: [String: Entry]
    private let data: Data
    private let dataStart: Int

    public init(url: URL) throws(SafeTensorsError) {
        let data: Data
        do {
            data = try Data(contentsOf: url, options: .alwaysMapped)
        } catch {
            throw .cannotRead(path: url.path, reason: error.localizedDescription)
        }
        do {
            try self.init(data: data)
        } catch {
            throw .inFile(path: url.path, error)
        }
    }

    public init(data: Data) throws(SafeTensorsError) {
        guard data.count >= 8 else { throw .truncatedHeader(fileSize: data.count) }
        let declared = data.prefix(8).enumerated().reduce(UInt64(0)) { $0 | UInt64($1.element) << (8 * UInt64($1.offset)) }
        guard declared <= UInt64(min(Self.maximumHeaderSize, data.count - 8)) else {
            throw .headerSizeOutOfRange(declared: declared, fileSize: data.count)
        }
        let headerSize = Int(declared)
        let header: Header
        do {
            header = try JSONDecoder().decode(Header.self, from: data.subdata(in: data.startIndex + 8 ..< data.startIndex + 8 + headerSize))
        } catch let error as DecodingError {
            throw .invalidHeader(Self.describe(error))
        } catch {
            throw .invalidHeader("not JSON (\(error.localizedDescription))")
        }
        let dataSize = data.count - 8 - headerSize
        let metadata = header.metadata
        var entries: [String: Entry] = [:]
        for (name, raw) in header.tensors {
            entries[name] = try Self.validate(name: name, raw, dataSize: dataSize)
        }
        // Every byte of the data section belongs to exactly one tensor.
        let ordered = entries.sorted { ($0.value.range.lowerBound, $0.key) < ($1.value.range.lowerBound, $1.key) }
        var cursor = 0
        var previous = ""
        for (name, entry) in ordered {
            if entry.range.lowerBound < cursor { throw .overlappingTensors(previous, name) }
            if entry.range.lowerBound > cursor { throw .unindexedBytes(at: cursor) }
            cursor = entry.range.upperBound
            previous = name
        }
        if cursor != dataSize { throw .unindexedBytes(at: cursor) }
        self.metadata = metadata
        self.entries = entries
        self.data = data
        self.dataStart = 8 + headerSize
    }

    /// The JSON header, decoded with exact integer types: a shape or offset that is negative,
    /// fractional, boolean or beyond UInt64 is a decoding error, never a silently different number.
    private struct Header: Decodable {
        struct RawEntry: Decodable {
            let dtype: String
            let shape: [UInt64]
            let data_offsets: [UInt64]
        }
        struct Key: CodingKey {
            let stringValue: String
            init(stringValue: String) { self.stringValue = stringValue }
            var intValue: Int? { nil }
            init?(intValue: Int) { nil }
        }
        var tensors: [String: RawEntry] = [:]
        var metadata: [String: String] = [:]

        init(from decoder: any Decoder) throws {
            let c = try decoder.container(keyedBy: Key.self)
            for key in c.allKeys {
                if key.stringValue == "__metadata__" {
                    metadata = try c.decode([String: String].self, forKey: key)
                } else {
                    tensors[key.stringValue] = try c.decode(RawEntry.self, forKey: key)
                }
            }
        }
    }

    private static func describe(_ error: DecodingError) -> String {
        let (context, what): (DecodingError.Context, String) = switch error {
        case .typeMismatch(_, let c): (c, "wrong type")
        case .valueNotFound(_, let c): (c, "missing value")
        case .keyNotFound(let key, let c): (c, "missing '\(key.stringValue)'")
        case .dataCorrupted(let c): (c, "invalid value")
        @unknown default: (DecodingError.Context(codingPath: [], debugDescription: ""), "invalid")
        }
        let path = context.codingPath.map { $0.intValue.map { "[\($0)]" } ?? $0.stringValue }.joined(separator: ".")
        return path.isEmpty ? "\(what): \(context.debugDescription)" : "\(path): \(what) (\(context.debugDescription))"
    }

    private static func validate(name: String, _ raw: Header.RawEntry, dataSize: Int) throws(SafeTensorsError) -> Entry {
        guard let dtype = DType(rawValue: raw.dtype) else { throw .unsupportedDType(tensor: name, dtype: raw.dtype) }
        guard raw.data_offsets.count == 2 else { throw .invalidHeader("tensor '\(name)': data_offsets must hold two numbers") }
        let shape = raw.shape.map { Int(clamping: $0) }
        let begin = Int(clamping: raw.data_offsets[0]), end = Int(clamping: raw.data_offsets[1])
        guard end >= begin, end <= dataSize else {
            throw .offsetsOutOfRange(tensor: name, begin: begin, end: end, dataSize: dataSize)
        }
        // Checked arithmetic: a shape whose byte size overflows is invalid, never a crash.
        guard raw.shape.allSatisfy({ $0 <= UInt64(Int.max) }), let bytes = checkedElementCount(shape + [dtype.byteSize]) else {
            throw .invalidShape(tensor: name, shape: shape)
        }
        guard bytes == end - begin else { throw .sizeMismatch(tensor: name, expectedBytes: bytes, declaredBytes: end - begin) }
        return Entry(dtype: dtype, shape: shape, range: begin..<end)
    }

    public var names: [String] { entries.keys.sorted() }

    public func entry(_ name: String) throws(SafeTensorsError) -> Entry {
        guard let e = entries[name] else { throw .missingTensor(name) }
        return e
    }

    /// The tensor converted to Float32 (F32, F16, BF16; integers are converted exactly when small).
    public func tensor(_ name: String) throws(SafeTensorsError) -> Tensor {
        let e = try entry(name)
        let t = Tensor(shape: e.shape)
        let out = t.data
        let n = t.count
        withBytes(e) { raw in
            switch e.dtype {
            case .f32:
                for i in 0..<n { out[i] = Float(bitPattern: raw.loadUnaligned(fromByteOffset: 4 * i, as: UInt32.self).littleEndian) }
            case .f16:
                for i in 0..<n { out[i] = Float(Float16(bitPattern: raw.loadUnaligned(fromByteOffset: 2 * i, as: UInt16.self).littleEndian)) }
            case .bf16:
                for i in 0..<n { out[i] = Float(bitPattern: UInt32(raw.loadUnaligned(fromByteOffset: 2 * i, as: UInt16.self).littleEndian) << 16) }
            case .i64:
                for i in 0..<n { out[i] = Float(Int64(littleEndian: raw.loadUnaligned(fromByteOffset: 8 * i, as: Int64.self))) }
            case .i32:
                for i in 0..<n { out[i] = Float(Int32(littleEndian: raw.loadUnaligned(fromByteOffset: 4 * i, as: Int32.self))) }
            }
        }
        return t
    }

    /// An integer tensor (I64 or I32), flattened.
    public func integers(_ name: String) throws(SafeTensorsError) -> [Int] {
        let e = try entry(name)
        let n = e.shape.reduce(1, *)
        switch e.dtype {
        case .i64: return withBytes(e) { raw in (0..<n).map { Int(Int64(littleEndian: raw.loadUnaligned(fromByteOffset: 8 * $0, as: Int64.self))) } }
        case .i32: return withBytes(e) { raw in (0..<n).map { Int(Int32(littleEndian: raw.loadUnaligned(fromByteOffset: 4 * $0, as: Int32.self))) } }
        default: throw .notIntegral(tensor: name, dtype: e.dtype.rawValue)
        }
    }

    /// All floating-point tensors by name.
    public func floatTensors() throws(SafeTensorsError) -> [String: Tensor] {
        var result: [String: Tensor] = [:]
        for (name, e) in entries where e.dtype == .f32 || e.dtype == .f16 || e.dtype == .bf16 {
            result[name] = try tensor(name)
        }
        return result
    }

    func withStoredBytes<R>(_ e: Entry, _ body: (UnsafeRawBufferPointer) throws -> R) rethrows -> R {
        try data.withUnsafeBytes { all in
            try body(UnsafeRawBufferPointer(rebasing: all[(dataStart + e.range.lowerBound)..<(dataStart + e.range.upperBound)]))
        }
    }

    private func withBytes<R>(_ e: Entry, _ body: (UnsafeRawBufferPointer) -> R) -> R {
        data.withUnsafeBytes { all in
            body(UnsafeRawBufferPointer(rebasing: all[(dataStart + e.range.lowerBound)..<(dataStart + e.range.upperBound)]))
        }
    }
}
