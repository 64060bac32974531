import Foundation
import Formats
import Kernels
import Layers

/// How the frozen base weights are stored during LoRA training and inference.
public enum FrozenPrecision: String, Sendable, CaseIterable {
    /// Float32, as loaded.
    case fp32
    /// bfloat16 storage: half the memory; decoded to fp32 tile by tile inside the products.
    case bf16
    /// The GGUF file's own quantised blocks (QLoRA-style), decoded tile by tile inside products.
    case q
}

extension PretrainedModel {
    /// Every weight that may be stored packed, with its parameter (`packableParameterNames`).
    public var packableParameters: [(name: String, parameter: Parameter)] {
        let names = packableParameterNames
        return namedParameters.filter { names.contains($0.name) }
    }

    /// Re-stores every frozen packable weight as bf16 (after loading in fp32). `.q` needs the
    /// GGUF file's blocks, so it is chosen at load time (`Pretrained.load(frozen:)`).
    public func compressFrozenWeights(to precision: FrozenPrecision) throws(ModelError) {
        switch precision {
        case .fp32: return
        case .q: throw .invalidInput("--precision q keeps a GGUF file's quantised blocks and is chosen when loading")
        case .bf16:
            for (_, p) in packableParameters where !p.isTrainable && p.packed == nil { p.pack(.bf16(p.value)) }
        }
    }

    /// Bytes of the frozen weights as stored (packed or fp32), for reports.
    public var frozenWeightBytes: Int {
        namedParameters.reduce(0) { total, pair in
            pair.parameter.isTrainable ? total : total + (pair.parameter.packed?.byteCount ?? pair.parameter.value.count * 4)
        }
    }
}

extension ModelLoader {
    /// Fills `model` from a GGUF file, one tensor at a time straight into its parameter (no second
    /// copy of the whole model in memory), after checking every name and shape from the tensor
    /// infos. `hfName` maps a GGUF tensor name to the model's parameter name (nil: keep the GGUF
    /// name, which then fails the check as unexpected), `ggufName` the other way (for errors);
    /// `rowOrder` gives, for a parameter whose rows the file stores permuted, the file row of each
    /// model row; `adjust` changes an fp32
    /// tensor after reading (Gemma's norms). With `frozen`, packable weights are stored packed
    /// (`.q`: the file's own blocks). Returns the stored dtype of each tensor by its GGUF name.
    package static func loadGGUFWeights(_ gguf: GGUFFile, url: URL, into model: some PretrainedModel, frozen: FrozenPrecision,
                                hfName: (String) -> String?, ggufName: (String) -> String? = { _ in nil }, rowOrder: (String, Int) -> ((Int) -> Int)?,
                                adjust: (String, Tensor) -> Void = { _, _ in }) throws(ModelError) -> [String: String] {
        let infos = Dictionary(gguf.tensorInfos.map { ($0.name, $0) }, uniquingKeysWith: { a, _ in a })
        var shapes: [String: [Int]] = [:]
        var sources: [String: String] = [:]
        for info in gguf.tensorInfos {
            let name = hfName(info.name)
            shapes[name ?? info.name] = info.shape
            if let name { sources[name] = info.name }
        }
        do { try model.checkWeightShapes(shapes) } catch {
            // Name each tensor as the file does, the model's name beside it.
            guard case let .weights(missing, unexpected, mismatched) = error else { throw error }
            func named(_ entry: String) -> String {
                let name = String(entry.prefix { $0 != ":" })
                guard let gguf = sources[name] ?? ggufName(name), gguf != name else { return entry }
                return gguf + " (" + name + ")" + entry.dropFirst(name.count)
            }
            throw .weights(missing: missing.map(named), unexpected: unexpected, mismatched: mismatched.map(named))
        }
        var storedTypes: [String: String] = [:]
        let packable = frozen == .fp32 ? [] : model.packableParameterNames
        for (name, parameter) in model.namedParameters {
            guard let source = sources[name], let info = infos[source] else { continue }
            storedTypes[source] = info.type.name
            let order = rowOrder(name, info.rowCount)
            let packs = packable.contains(name)
            if frozen == .q && packs {
                do { parameter.pack(try packedBlocks(gguf, info, rowOrder: order ?? { $0 })) } catch { throw .file(url, error) }
                continue
            }
            if order == nil && !packs {
                // Straight into the parameter: no second copy of the largest tensor (Gemma's embedding is 640 MiB).
                do { try gguf.readTensor(source, into: UnsafeMutableBufferPointer(start: parameter.value.data, count: parameter.value.count)) }
                catch { throw .file(url, error) }
                adjust(name, parameter.value)
                continue
            }
            var tensor: Tensor
            do { tensor = try gguf.tensor(source) } catch { throw .file(url, error) }
            if let order { tensor = reorderRows(tensor, order) }
            adjust(name, tensor)
            if packs {
                parameter.pack(.bf16(tensor))
            } else {
                parameter.value.copy(from: tensor)
            }
        }
        return storedTypes
    }

    /// Row i of the result is row order(i) of `w`.
    package static func reorderRows(_ w: Tensor, _ order: (Int) -> Int) -> Tensor {
        let rows = w.shape[0], columns = w.count / max(rows, 1)
        let out = Tensor(shape: w.shape)
        for i in 0..<rows { (out.data + i * columns).update(from: w.data + order(i) * columns, count: columns) }
        return out
    }
}

extension ModelLoader {
    /// A packed copy of a GGUF tensor's blocks, rows reordered by `rowOrder`.
    static func packedBlocks(_ gguf: GGUFFile, _ info: GGUFTensorInfo, rowOrder: @escaping (Int) -> Int) throws(GGUFError) -> PackedMatrix {
        guard info.type.canDequantize else { throw .unsupportedTensorType(name: info.name, type: info.type) }
        let type = info.type, columns = info.rowLength
        let bytesPerRow = columns / type.blockSize * type.typeSize
        let raw = try gguf.rawBytes(info.name)
        return raw.withUnsafeBytes { bytes in
            PackedMatrix(rows: info.rowCount, columns: columns, encoding: type.name, bytesPerRow: bytesPerRow,
                         bytes: bytes, rowOrder: rowOrder) { source, destination, rows in
                type.dequantize(UnsafeRawBufferPointer(start: source, count: rows * bytesPerRow),
                                into: UnsafeMutableBufferPointer(start: destination, count: rows * columns))
            }
        }
    }
}
