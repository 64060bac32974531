import Foundation
import Kernels

/// Everything that can be wrong with a GGUF file, naming the key, tensor or byte offset involved.
public enum GGUFError: Error, Equatable, CustomStringConvertible {
    case cannotRead(path: String, reason: String)
    /// An error found while parsing the file at `path` (thrown by `GGUFFile(url:)`).
    indirect case inFile(path: String, GGUFError)
    /// The first four bytes (read little-endian) are not "GGUF".
    case badMagic(found: UInt32)
    case unsupportedVersion(UInt32)
    /// The file ends inside `what`, which starts at byte `offset`.
    case truncated(what: String, offset: Int)
    /// A string declared longer than the whole file (a resource bomb, refused before allocating).
    case stringTooLong(what: String, length: UInt64, offset: Int)
    /// A count (array elements, keys, tensors) that cannot fit in the whole file.
    case countTooLarge(what: String, count: UInt64, offset: Int)
    case invalidUTF8(what: String, offset: Int)
    /// Arrays nested deeper than `GGUFFile.maximumNesting`.
    case nestingTooDeep(key: String, offset: Int)
    case duplicateKey(String)
    case duplicateTensor(String)
    case invalidValueType(key: String, raw: UInt32)
    /// `general.alignment` is not a non-zero power-of-two integer.
    case invalidAlignment(GGUFValue)
    /// n_dims outside 1...4.
    case invalidDimensionCount(name: String, count: UInt32)
    /// A dimension above Int.max, or an element count or byte size that overflows.
    case invalidDimensions(name: String, dimensions: [UInt64])
    case unknownTensorType(name: String, raw: UInt32)
    /// ne[0] (the row length) is not a multiple of the type's block size.
    case rowNotMultipleOfBlock(name: String, rowLength: Int, type: GGMLType)
    case misalignedTensor(name: String, offset: UInt64, alignment: Int)
    case tensorOutOfRange(name: String, offset: UInt64, byteCount: Int, dataSize: Int)
    case overlappingTensors(String, String)
    case unsupportedTensorType(name: String, type: GGMLType)
    case missingTensor(String)
    case rowsOutOfRange(name: String, rows: Range<Int>, rowCount: Int)
    case missingKey(String)
    case wrongValueType(key: String, expected: String, found: GGUFValue.ValueType)

    public var description: String {
        switch self {
        case let .cannotRead(path, reason): "cannot read \(path): \(reason)"
        case let .inFile(path, error): "\(path): \(error)"
        case let .badMagic(found):
            "not a GGUF file: magic 0x\(String(found, radix: 16)) (\(Self.printable(found))), expected \"GGUF\""
        case let .unsupportedVersion(v) where v == 1:
            "GGUF version 1 (pre-2023 llama.cpp) is not supported; re-convert the model (versions 2 and 3 are)"
        case let .unsupportedVersion(v) where v.byteSwapped == 2 || v.byteSwapped == 3:
            "big-endian GGUF (version \(v.byteSwapped)) is not supported"
        case let .unsupportedVersion(v): "unsupported GGUF version \(v) (2 and 3 are supported)"
        case let .truncated(what, offset): "GGUF file ends inside \(what) (at byte \(offset))"
        case let .stringTooLong(what, length, offset): "\(what) at byte \(offset) declares \(length) bytes, more than the whole file"
        case let .countTooLarge(what, count, offset): "\(what) at byte \(offset) declares \(count) entries, more than the file can hold"
        case let .invalidUTF8(what, offset): "\(what) at byte \(offset) is not valid UTF-8"
        case let .nestingTooDeep(key, offset): "metadata '\(key)': arrays nested too deeply at byte \(offset)"
        case let .duplicateKey(key): "metadata key '\(key)' appears twice"
        case let .duplicateTensor(name): "tensor '\(name)' appears twice"
        case let .invalidValueType(key, raw): "metadata '\(key)': unknown value type \(raw)"
        case let .invalidAlignment(value): "general.alignment must be a non-zero power of two, got \(value)"
        case let .invalidDimensionCount(name, count): "tensor '\(name)': \(count) dimensions (1 to 4 allowed)"
        case let .invalidDimensions(name, dims): "tensor '\(name)': dimensions \(dims) overflow"
        case let .unknownTensorType(name, raw): "tensor '\(name)': unknown ggml type \(raw)"
        case let .rowNotMultipleOfBlock(name, row, type):
            "tensor '\(name)': row length \(row) is not a multiple of \(type.name)'s block size \(type.blockSize)"
        case let .misalignedTensor(name, offset, alignment): "tensor '\(name)': offset \(offset) is not a multiple of the alignment \(alignment)"
        case let .tensorOutOfRange(name, offset, bytes, size):
            "tensor '\(name)': \(bytes) bytes at offset \(offset) lie outside the \(size)-byte data section"
        case let .overlappingTensors(a, b): "tensors '\(a)' and '\(b)' overlap"
        case let .unsupportedTensorType(name, type): "tensor '\(name)': cannot dequantise type \(type.name)"
        case let .missingTensor(name): "no tensor named '\(name)'"
        case let .rowsOutOfRange(name, rows, count): "tensor '\(name)': rows \(rows) out of range (it has \(count))"
        case let .missingKey(key): "no metadata key '\(key)'"
        case let .wrongValueType(key, expected, found): "metadata '\(key)': expected \(expected), found \(found)"
        }
    }

    /// The error without any `inFile` wrapping.
    public var underlying: GGUFError {
        if case let .inFile(_, error) = self { return error.underlying }
        return self
    }

    private static func printable(_ magic: UInt32) -> String {
        withUnsafeBytes(of: magic.littleEndian) { bytes in
            bytes.map { (0x20..<0x7F).contains($0) ? String(UnicodeScalar($0)) : "\\x" + String($0, radix: 16) }.joined()
        }
    }
}

/// One metadata value. GGUF's 13 value types; arrays hold values of one type (possibly arrays).
public enum GGUFValue: Sendable, Equatable {
    case uint8(UInt8), int8(Int8), uint16(UInt16), int16(Int16), uint32(UInt32), int32(Int32), float32(Float)
    case bool(Bool), string(String), array([GGUFValue]), uint64(UInt64), int64(Int64), float64(Double)

    /// The on-disk type codes (`gguf_type`).
    public enum ValueType: UInt32, Sendable {
        case uint8 = 0, int8 = 1, uint16 = 2, int16 = 3, uint32 = 4, int32 = 5, float32 = 6
        case bool = 7, string = 8, array = 9, uint64 = 10, int64 = 11, float64 = 12

        /// Bytes of the fixed-size types; for strings and arrays, their smallest encoding
        /// (an empty string: its u64 length; an empty array: u32 type + u64 count).
        var minimumSize: Int {
            switch self {
            case .uint8, .int8, .bool: 1
            case .uint16, .int16: 2
            case .uint32, .int32, .float32: 4
            case .uint64, .int64, .float64, .string: 8
            case .array: 12
            }
        }
    }

    public var type: ValueType {
        switch self {
        case .uint8: .uint8
        case .int8: .int8
        case .uint16: .uint16
        case .int16: .int16
        case .uint32: .uint32
        case .int32: .int32
        case .float32: .float32
        case .bool: .bool
        case .string: .string
        case .array: .array
        case .uint64: .uint64
        case .int64: .int64
        case .float64: .float64
        }
    }

    /// Any integer type, when it fits in Int.
    public var int: Int? {
        switch self {
        case let .uint8(v): Int(v)
        case let .int8(v): Int(v)
        case let .uint16(v): Int(v)
        case let .int16(v): Int(v)
        case let .uint32(v): Int(v)
        case let .int32(v): Int(v)
        case let .uint64(v): Int(exactly: v)
        case let .int64(v): Int(v)
        default: nil
        }
    }

    /// Any float or integer type.
    public var double: Double? {
        switch self {
        case let .float32(v): Double(v)
        case let .float64(v): v
        case let .uint64(v): Double(v)
        default: int.map(Double.init)
        }
    }

    public var string: String? { if case let .string(s) = self { s } else { nil } }
    public var bool: Bool? { if case let .bool(b) = self { b } else { nil } }
    public var array: [GGUFValue]? { if case let .array(a) = self { a } else { nil } }

    /// An array whose elements are all strings.
    public var strings: [String]? {
        guard let a = array else { return nil }
        var result: [String] = []
        result.reserveCapacity(a.count)
        for v in a {
            guard case let .string(s) = v else { return nil }
            result.append(s)
        }
        return result
    }

    /// An array whose elements are all integers that fit in Int.
    public var ints: [Int]? {
        guard let a = array else { return nil }
        var result: [Int] = []
        result.reserveCapacity(a.count)
        for v in a {
            guard let i = v.int else { return nil }
            result.append(i)
        }
        return result
    }

    /// An array whose elements are all numbers.
    public var doubles: [Double]? {
        guard let a = array else { return nil }
        var result: [Double] = []
        result.reserveCapacity(a.count)
        for v in a {
            guard let d = v.double else { return nil }
            result.append(d)
        }
        return result
    }
}

/// Where one tensor is and how it is stored.
public struct GGUFTensorInfo: Sendable, Equatable {
    public let name: String
    public let type: GGMLType
    /// ggml order: `dimensions[0]` (ne[0]) varies fastest and is the row length.
    public let dimensions: [Int]
    /// Byte offset relative to the start of the data section (a multiple of the alignment).
    public let offset: Int
    public let byteCount: Int

    /// Row-major (Hugging Face / PyTorch) shape: `dimensions.reversed()`. A Linear weight
    /// `[out, in]` is stored with ne = [in, out].
    public var shape: [Int] { dimensions.reversed() }
    public var elementCount: Int { dimensions.reduce(1, *) }
    /// ne[0], the number of elements in one row.
    public var rowLength: Int { dimensions[0] }
    /// The number of rows (product of the other dimensions).
    public var rowCount: Int { dimensions.dropFirst().reduce(1, *) }
}

/// A GGUF file (https://github.com/ggml-org/ggml/blob/master/docs/gguf.md), versions 2 and 3,
/// little-endian, memory-mapped, with every count, length and offset validated against the file
/// before anything is allocated or read.
///
/// Layout (all integers little-endian):
///
///     u32 magic "GGUF" (bytes 47 47 55 46), u32 version, u64 tensor_count, u64 metadata_kv_count
///     metadata_kv_count × { string key, u32 value_type, value }
///     tensor_count × { string name, u32 n_dims (1...4), u64 ne[n_dims], u32 ggml_type, u64 offset }
///     zero padding to a multiple of `alignment`, then the data section
///
/// A string is u64 byte length + UTF-8 bytes (no terminator). A value is the fixed-size scalar
/// (bool: one byte, non-zero is true), a string, or an array: u32 element type, u64 count, then
/// the elements back to back (nested arrays each carry their own type and count). Tensor offsets
/// are relative to the data section and multiples of `alignment` (`general.alignment`, default 32).
public struct GGUFFile: Sendable {
    public static let defaultAlignment = 32
    /// Deepest array nesting accepted (real files use 1; a deep nest is a stack-overflow bomb).
    public static let maximumNesting = 8

    public let version: UInt32
    public let metadata: [String: GGUFValue]
    /// Metadata keys in file order.
    public let metadataKeys: [String]
    /// Tensor infos in file order.
    public let tensorInfos: [GGUFTensorInfo]
    public let alignment: Int
    /// Absolute byte offset of the data section in the file.
    public let dataOffset: Int
    /// The file path when opened with `init(url:)`.
    public let path: String?
    private let data: Data
    private let index: [String: Int]

    public init(url: URL) throws(GGUFError) {
        let data: Data
        do {
            data = try Data(contentsOf: url, options: .alwaysMapped)
        } catch {
            throw .cannotRead(path: url.path, reason: error.localizedDescription)
        }
        do {
            try self.init(data: data, path: url.path)
        } catch {
            throw .inFile(path: url.path, error)
        }
    }

    public init(data: Data) throws(GGUFError) {
        try self.init(data: data, path: nil)
    }

    private init(data: Data, path: String?) throws(GGUFError) {
        let result = data.withUnsafeBytes { raw in
            Result { () throws(GGUFError) -> Header in try Header(raw) }
        }
        let header = try result.get()
        self.version = header.version
        self.metadata = header.metadata
        self.metadataKeys = header.metadataKeys
        self.tensorInfos = header.tensorInfos
        self.alignment = header.alignment
        self.dataOffset = header.dataOffset
        self.index = header.index
        self.path = path
        self.data = data
    }

    public func info(_ name: String) throws(GGUFError) -> GGUFTensorInfo {
        guard let i = index[name] else { throw .missingTensor(name) }
        return tensorInfos[i]
    }

    /// The tensor dequantised to Float32, shaped `info.shape` (row-major).
    public func tensor(_ name: String) throws(GGUFError) -> Tensor {
        let info = try info(name)
        return try rows(of: info, 0..<info.rowCount, shape: info.shape)
    }

    /// The whole tensor dequantised straight into `destination` (no temporary of its size), which
    /// must hold exactly its element count.
    public func readTensor(_ name: String, into destination: UnsafeMutableBufferPointer<Float>) throws(GGUFError) {
        let info = try info(name)
        precondition(destination.count == info.elementCount, "\(name): \(destination.count) floats for \(info.elementCount) values")
        try dequantize(info, 0..<info.rowCount, into: destination)
    }

    /// Rows `rows` of the tensor viewed as `[rowCount, rowLength]` (ne[0] per row), dequantised
    /// to a `[rows.count, rowLength]` tensor — e.g. a few embedding rows without the whole table.
    public func tensor(_ name: String, rows: Range<Int>) throws(GGUFError) -> Tensor {
        let info = try info(name)
        guard rows.lowerBound >= 0, rows.upperBound <= info.rowCount else {
            throw .rowsOutOfRange(name: name, rows: rows, rowCount: info.rowCount)
        }
        return try self.rows(of: info, rows, shape: [rows.count, info.rowLength])
    }

    /// The tensor's stored bytes (a slice of the mapped file, not copied).
    public func rawBytes(_ name: String) throws(GGUFError) -> Data {
        let info = try info(name)
        let start = data.startIndex + dataOffset + info.offset
        return data[start..<(start + info.byteCount)]
    }

    private func rows(of info: GGUFTensorInfo, _ rows: Range<Int>, shape: [Int]) throws(GGUFError) -> Tensor {
        let t = Tensor(shape: shape)
        try dequantize(info, rows, into: UnsafeMutableBufferPointer(start: t.data, count: t.count))
        return t
    }

    /// Rows `rows` of the tensor dequantised into `destination` ([rows.count, rowLength]).
    private func dequantize(_ info: GGUFTensorInfo, _ rows: Range<Int>, into destination: UnsafeMutableBufferPointer<Float>) throws(GGUFError) {
        guard info.type.canDequantize else { throw .unsupportedTensorType(name: info.name, type: info.type) }
        // Validated at parse time: rowLength is a whole number of blocks and every row lies
        // inside the data section, so these products cannot overflow.
        let rowBytes = info.rowLength / info.type.blockSize * info.type.typeSize
        let start = dataOffset + info.offset + rows.lowerBound * rowBytes
        let byteCount = rows.count * rowBytes
        data.withUnsafeBytes { raw in
            info.type.dequantize(UnsafeRawBufferPointer(rebasing: raw[start..<(start + byteCount)]), into: destination)
        }
    }

    // MARK: - Typed metadata lookups

    public func value(_ key: String) throws(GGUFError) -> GGUFValue {
        guard let v = metadata[key] else { throw .missingKey(key) }
        return v
    }

    /// Any integer type.
    public func int(_ key: String) throws(GGUFError) -> Int {
        let v = try value(key)
        guard let i = v.int else { throw .wrongValueType(key: key, expected: "an integer", found: v.type) }
        return i
    }

    /// Any float or integer type.
    public func double(_ key: String) throws(GGUFError) -> Double {
        let v = try value(key)
        guard let d = v.double else { throw .wrongValueType(key: key, expected: "a number", found: v.type) }
        return d
    }

    public func string(_ key: String) throws(GGUFError) -> String {
        let v = try value(key)
        guard let s = v.string else { throw .wrongValueType(key: key, expected: "a string", found: v.type) }
        return s
    }

    public func strings(_ key: String) throws(GGUFError) -> [String] {
        let v = try value(key)
        guard let s = v.strings else { throw .wrongValueType(key: key, expected: "an array of strings", found: v.type) }
        return s
    }
}

// MARK: - Parsing

/// Everything before the data section, parsed from the raw bytes.
private struct Header {
    var version: UInt32 = 0
    var metadata: [String: GGUFValue] = [:]
    var metadataKeys: [String] = []
    var tensorInfos: [GGUFTensorInfo] = []
    var alignment = GGUFFile.defaultAlignment
    var dataOffset = 0
    var index: [String: Int] = [:]

    init(_ bytes: UnsafeRawBufferPointer) throws(GGUFError) {
        var c = Cursor(bytes: bytes)
        let magic: UInt32 = try c.read("the magic number")
        guard magic == 0x4655_4747 else { throw .badMagic(found: magic) }
        version = try c.read("the version")
        guard version == 2 || version == 3 else { throw .unsupportedVersion(version) }
        let tensorCountOffset = c.offset
        let tensorCount: UInt64 = try c.read("the tensor count")
        let kvCountOffset = c.offset
        let kvCount: UInt64 = try c.read("the metadata count")

        // Smallest key-value: empty key (8) + type (4) + a one-byte value.
        let kvs = try c.checkCount(kvCount, minimumSize: 13, what: "metadata count", at: kvCountOffset)
        metadata.reserveCapacity(c.capacity(kvs, minimumSize: 13))
        metadataKeys.reserveCapacity(c.capacity(kvs, minimumSize: 13))
        for i in 0..<kvs {
            let key = try c.string("metadata key #\(i)")
            let raw: UInt32 = try c.read("the type of metadata '\(key)'")
            guard let type = GGUFValue.ValueType(rawValue: raw) else { throw .invalidValueType(key: key, raw: raw) }
            let value = try c.value(type, key: key, depth: 0)
            guard metadata.updateValue(value, forKey: key) == nil else { throw .duplicateKey(key) }
            metadataKeys.append(key)
        }

        if let a = metadata["general.alignment"] {
            guard let n = a.int, n > 0, n & (n - 1) == 0 else { throw .invalidAlignment(a) }
            alignment = n
        }

        // Smallest tensor info: empty name (8) + n_dims (4) + one ne (8) + type (4) + offset (8).
        let tensors = try c.checkCount(tensorCount, minimumSize: 32, what: "tensor count", at: tensorCountOffset)
        tensorInfos.reserveCapacity(c.capacity(tensors, minimumSize: 32))
        index.reserveCapacity(c.capacity(tensors, minimumSize: 32))
        var rawOffsets: [UInt64] = []
        rawOffsets.reserveCapacity(c.capacity(tensors, minimumSize: 32))
        for i in 0..<tensors {
            let name = try c.string("the name of tensor #\(i)")
            let nDims: UInt32 = try c.read("the dimension count of tensor '\(name)'")
            guard (1...4).contains(nDims) else { throw .invalidDimensionCount(name: name, count: nDims) }
            var ne: [UInt64] = []
            for d in 0..<Int(nDims) { ne.append(try c.read("dimension \(d) of tensor '\(name)'")) }
            let rawType: UInt32 = try c.read("the type of tensor '\(name)'")
            let offset: UInt64 = try c.read("the offset of tensor '\(name)'")
            guard let type = GGMLType(rawValue: rawType) else { throw .unknownTensorType(name: name, raw: rawType) }

            let dims = ne.compactMap { Int(exactly: $0) }
            // The non-zero dimensions times the type's bytes must fit too: a row's byte size
            // (rowLength / blockSize · typeSize) is computed even when another dimension is 0.
            guard dims.count == ne.count, let elements = checkedElementCount(dims),
                  checkedElementCount(dims + [type.typeSize]) != nil else {
                throw .invalidDimensions(name: name, dimensions: ne)
            }
            guard dims[0] % type.blockSize == 0 else {
                throw .rowNotMultipleOfBlock(name: name, rowLength: dims[0], type: type)
            }
            guard let byteCount = type.byteCount(elements: elements) else { throw .invalidDimensions(name: name, dimensions: ne) }
            guard offset % UInt64(alignment) == 0 else { throw .misalignedTensor(name: name, offset: offset, alignment: alignment) }
            guard index.updateValue(i, forKey: name) == nil else { throw .duplicateTensor(name) }
            rawOffsets.append(offset)
            // The offset is range-checked below; until then keep it clamped so it fits in Int.
            tensorInfos.append(GGUFTensorInfo(name: name, type: type, dimensions: dims,
                                              offset: Int(clamping: offset), byteCount: byteCount))
        }

        // The data section starts at the next multiple of the alignment.
        let headerEnd = c.offset
        let (padded, overflow) = headerEnd.addingReportingOverflow(alignment - 1)
        let dataStart = overflow ? Int.max : padded / alignment * alignment
        let hasData = tensorInfos.contains { $0.byteCount > 0 }
        if dataStart > bytes.count && hasData {
            throw .truncated(what: "the padding before the data section", offset: headerEnd)
        }
        dataOffset = min(dataStart, bytes.count)
        let dataSize = bytes.count - dataOffset

        for (info, raw) in zip(tensorInfos, rawOffsets) {
            guard raw <= UInt64(dataSize), info.byteCount <= dataSize - Int(raw) else {
                throw .tensorOutOfRange(name: info.name, offset: raw, byteCount: info.byteCount, dataSize: dataSize)
            }
        }
        // No two non-empty tensors share a byte.
        let ordered = tensorInfos.filter { $0.byteCount > 0 }.sorted { ($0.offset, $0.name) < ($1.offset, $1.name) }
        for (a, b) in zip(ordered, ordered.dropFirst()) where b.offset < a.offset + a.byteCount {
            throw .overlappingTensors(a.name, b.name)
        }
    }
}

/// A bounds-checked little-endian reader over the file's bytes.
private struct Cursor {
    let bytes: UnsafeRawBufferPointer
    var offset = 0

    var remaining: Int { bytes.count - offset }

    mutating func read<T: FixedWidthInteger>(_ what: @autoclosure () -> String) throws(GGUFError) -> T {
        let size = MemoryLayout<T>.size
        guard size <= remaining else { throw .truncated(what: what(), offset: offset) }
        let v = T(littleEndian: bytes.loadUnaligned(fromByteOffset: offset, as: T.self))
        offset += size
        return v
    }

    /// Checks that `count` items of at least `minimumSize` bytes each could fit in the whole file:
    /// more is a resource bomb (`countTooLarge`), refused before anything is allocated. Items
    /// that merely run past the end are then found by the reads (`truncated`, naming the item).
    func checkCount(_ count: UInt64, minimumSize: Int, what: @autoclosure () -> String, at start: Int) throws(GGUFError) -> Int {
        guard count <= UInt64(bytes.count / minimumSize) else { throw .countTooLarge(what: what(), count: count, offset: start) }
        return Int(count)
    }

    /// A capacity to reserve for `count` items: never more than the bytes left could hold, so a
    /// count that passes `checkCount` but lies about the rest of the file costs little.
    func capacity(_ count: Int, minimumSize: Int) -> Int { min(count, remaining / minimumSize) }

    mutating func string(_ what: @autoclosure () -> String) throws(GGUFError) -> String {
        let start = offset
        let length: UInt64 = try read(what())
        guard length <= UInt64(bytes.count) else { throw .stringTooLong(what: what(), length: length, offset: start) }
        guard length <= UInt64(remaining) else { throw .truncated(what: what(), offset: start) }
        let n = Int(length)
        let slice = UnsafeRawBufferPointer(rebasing: bytes[offset..<(offset + n)])
        guard let s = String(validating: slice, as: UTF8.self) else { throw .invalidUTF8(what: what(), offset: start) }
        offset += n
        return s
    }

    mutating func value(_ type: GGUFValue.ValueType, key: String, depth: Int) throws(GGUFError) -> GGUFValue {
        switch type {
        case .uint8: return .uint8(try read("metadata '\(key)'"))
        case .int8: return .int8(try read("metadata '\(key)'"))
        case .uint16: return .uint16(try read("metadata '\(key)'"))
        case .int16: return .int16(try read("metadata '\(key)'"))
        case .uint32: return .uint32(try read("metadata '\(key)'"))
        case .int32: return .int32(try read("metadata '\(key)'"))
        case .float32: return .float32(Float(bitPattern: try read("metadata '\(key)'")))
        case .bool: return .bool((try read("metadata '\(key)'") as UInt8) != 0)
        case .uint64: return .uint64(try read("metadata '\(key)'"))
        case .int64: return .int64(try read("metadata '\(key)'"))
        case .float64: return .float64(Double(bitPattern: try read("metadata '\(key)'")))
        case .string: return .string(try string("metadata '\(key)'"))
        case .array: return .array(try array(key: key, depth: depth))
        }
    }

    mutating func array(key: String, depth: Int) throws(GGUFError) -> [GGUFValue] {
        let start = offset
        guard depth < GGUFFile.maximumNesting else { throw .nestingTooDeep(key: key, offset: start) }
        let raw: UInt32 = try read("the element type of array '\(key)'")
        guard let elementType = GGUFValue.ValueType(rawValue: raw) else { throw .invalidValueType(key: key, raw: raw) }
        let declared: UInt64 = try read("the length of array '\(key)'")
        let count = try checkCount(declared, minimumSize: elementType.minimumSize, what: "array '\(key)'", at: start)
        var values: [GGUFValue] = []
        values.reserveCapacity(capacity(count, minimumSize: elementType.minimumSize))
        // Fixed-size elements: checked once, then read without re-checking each.
        func fixed<T: FixedWidthInteger>(_: T.Type, _ make: (T) -> GGUFValue) throws(GGUFError) {
            guard count <= remaining / MemoryLayout<T>.size else { throw .truncated(what: "array '\(key)'", offset: start) }
            for i in 0..<count {
                values.append(make(T(littleEndian: bytes.loadUnaligned(fromByteOffset: offset + i * MemoryLayout<T>.size, as: T.self))))
            }
            offset += count * MemoryLayout<T>.size
        }
        switch elementType {
        case .uint8: try fixed(UInt8.self) { .uint8($0) }
        case .int8: try fixed(Int8.self) { .int8($0) }
        case .uint16: try fixed(UInt16.self) { .uint16($0) }
        case .int16: try fixed(Int16.self) { .int16($0) }
        case .uint32: try fixed(UInt32.self) { .uint32($0) }
        case .int32: try fixed(Int32.self) { .int32($0) }
        case .float32: try fixed(UInt32.self) { .float32(Float(bitPattern: $0)) }
        case .bool: try fixed(UInt8.self) { .bool($0 != 0) }
        case .uint64: try fixed(UInt64.self) { .uint64($0) }
        case .int64: try fixed(Int64.self) { .int64($0) }
        case .float64: try fixed(UInt64.self) { .float64(Double(bitPattern: $0)) }
        case .string:
            for i in 0..<count { values.append(.string(try string("element \(i) of array '\(key)'"))) }
        case .array:
            for _ in 0..<count { values.append(.array(try array(key: key, depth: depth + 1))) }
        }
        return values
    }
}
