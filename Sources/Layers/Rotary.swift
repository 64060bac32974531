import Kernels
#if canImport(Glibc)
import Glibc
#endif

/// Rotary position embedding in Hugging Face's "rotate half" layout (Llama).
///
/// For a head vector x of size D, with half = D/2 and inv_freq[i] = θ^(−2i/D):
///
///     forward:  x'[i]      = x[i] · cos(p·f_i) − x[i+half] · sin(p·f_i)       i < half
///               x'[i+half] = x[i+half] · cos(p·f_i) + x[i] · sin(p·f_i)
///     backward: the same rotation by −p·f_i (the map is orthogonal)
///
/// Applied in place to q or k laid out as [N, heads · D] with one position per row.
/// (llama.cpp's GGUF files store Q/K rows permuted for the interleaved layout; loaders undo
/// that so that this layout applies.)
public final class RotaryEmbedding {
    public let headDimension: Int
    public let base: Float
    let inverseFrequency: [Float]
    private var cosTable: [Float] = []   // [positions, half]
    private var sinTable: [Float] = []
    private var cachedPositions = 0

    public init(headDimension: Int, base: Float) {
        precondition(headDimension % 2 == 0, "rotary head dimension must be even")
        self.headDimension = headDimension
        self.base = base
        // As transformers computes it, every step in float32: 1 / base^(2i/D).
        inverseFrequency = (0..<headDimension / 2).map { i in
            1 / powf(base, Float(2 * i) / Float(headDimension))
        }
    }

    /// Grows the cos/sin tables to cover positions 0..<n, at least doubling, and computes only
    /// the new positions (decoding asks for one more position per token).
    private func ensureTable(_ n: Int) {
        guard n > cachedPositions else { return }
        let half = headDimension / 2, first = cachedPositions
        let count = max(n, 2 * cachedPositions, 64)
        cosTable += [Float](repeating: 0, count: (count - first) * half)
        sinTable += [Float](repeating: 0, count: (count - first) * half)
        for p in first..<count {
            for i in 0..<half {
                let angle = Float(p) * inverseFrequency[i]   // float32 product, as torch
                cosTable[p * half + i] = Float(cos(Double(angle)))
                sinTable[p * half + i] = Float(sin(Double(angle)))
            }
        }
        cachedPositions = count
    }

    /// Rotates every head of every row of `x` ([N, heads·D]) by its position; `inverse` rotates back.
    public func apply(_ x: Tensor, positions: [Int], inverse: Bool = false) {
        let d = headDimension, half = d / 2
        let heads = x.rowLength / d
        precondition(x.rowLength == heads * d && positions.count == x.rowCount)
        ensureTable((positions.max() ?? -1) + 1)
        let sign: Float = inverse ? -1 : 1
        cosTable.withUnsafeBufferPointer { cosT in
            sinTable.withUnsafeBufferPointer { sinT in
                for (row, p) in positions.enumerated() {
                    precondition(p >= 0, "negative position")
                    let c = cosT.baseAddress! + p * half, s = sinT.baseAddress! + p * half
                    for h in 0..<heads {
                        let v = x.data + row * x.rowLength + h * d
                        for i in 0..<half {
                            let a = v[i], b = v[i + half], sn = sign * s[i]
                            v[i] = a * c[i] - b * sn
                            v[i + half] = b * c[i] + a * sn
                        }
                    }
                }
            }
        }
    }
}
