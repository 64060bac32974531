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
    /// Every weight that may be stored packed: the 2-D weights of the blocks' linear modules and
    /// the token embedding (with a Llama's LM head, tied or not). Norms, biases and a BERT's
    /// pooler and classifier stay fp32 (a classification run trains the head).
    var packableParameters: [(name: String, parameter: Parameter)] {
        let linear = Set(adaptable.linearModules.filter { !$0.name.hasPrefix("classifier") && !$0.name.contains("pooler") }
            .map { ObjectIdentifier($0.base.weight) })
        return adaptable.namedParameters.filter { name, p in
            linear.contains(ObjectIdentifier(p)) || name.hasSuffix("embed_tokens.weight") || name == "lm_head.weight"
                || name.hasSuffix("word_embeddings.weight")
        }
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
        adaptable.namedParameters.reduce(0) { total, pair in
            pair.parameter.isTrainable ? total : total + (pair.parameter.packed?.byteCount ?? pair.parameter.value.count * 4)
        }
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

    /// llama.cpp's Q/K row permutation as a row map: Hugging Face row `i` is GGUF row `rowOrder(i)`
    /// (see `unpermuteRotaryRows`).
    static func rotaryRowOrder(rows: Int, heads: Int) -> (Int) -> Int {
        let d = rows / heads, half = d / 2
        return { i in
            let h = i / d, within = i % d, k = within / half, j = within % half
            return h * d + 2 * j + k
        }
    }
}

extension PretrainedModel {
    /// Activation recomputation (Llama): keep only each block's input in the forward pass and
    /// recompute the block's activations just before its backward pass.
    public func setActivationRecomputation(_ on: Bool) {
        if case .llama(let m) = self { m.recomputesActivations = on }
    }

    public func setTraining(_ training: Bool) { adaptable.setTraining(training) }
}
