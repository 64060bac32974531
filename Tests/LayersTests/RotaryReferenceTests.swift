import Formats
import Kernels
@testable import Layers
import TestSupport
import Testing

/// RoPE against transformers' `LlamaRotaryEmbedding` + `apply_rotary_pos_emb` at positions up
/// to 8191, where a one-ulp difference in a frequency would show as an angle error.
@Suite("RoPE against transformers")
struct RotaryReferenceTests {
    @Test(arguments: [(Float(10000), 64), (100_000, 64), (500_000, 128)])
    func frequenciesAndRotationsMatch(theta: Float, headDimension: Int) throws {
        let file = try SafeTensorsFile(url: fixturesDirectory.appendingPathComponent("rope/rope.safetensors"))
        let key = "theta\(Int(theta))_d\(headDimension)"
        let positions = try file.integers("positions")
        let rope = RotaryEmbedding(headDimension: headDimension, base: theta)
        let reference = try file.tensor(key + ".inv_freq")
        let ours = Tensor(shape: reference.shape, values: rope.inverseFrequency)
        #expect(ours.isBitIdentical(to: reference), "inv_freq differs from transformers' float32 values")
        let q = try file.tensor(key + ".q")
        rope.apply(q, positions: positions)
        let e = relativeDifference(q, try file.tensor(key + ".rotated"))
        print("RoPE θ=\(theta) D=\(headDimension), positions up to \(positions.max()!): rotated q max relative difference \(e)")
        #expect(e <= 1e-5)
    }
}
