import Kernels
import Layers
import LoRA
import TestSupport
import Testing

@Suite("LoRALinear")
struct LoRALinearTests {
    /// A frozen 6→5 layer with a rank-3 adapter whose B is non-zero.
    static func makeLayer(settings: LoRASettings = LoRASettings(rank: 3, alpha: 6)) throws -> LoRALinear {
        let layer = LoRALinear(name: "test.proj", inFeatures: 6, outFeatures: 5, bias: true)
        layer.base.weight.value.copy(from: randomTensor([5, 6], seed: 1, scale: 0.5))
        layer.base.bias!.value.copy(from: randomTensor([5], seed: 2))
        var g = SplitMix64(seed: 3)
        let adapter = try LoRAWeights(inFeatures: 6, outFeatures: 5, settings: settings, generator: &g)
        adapter.b.value.copy(from: randomTensor([5, 3], seed: 4, scale: 0.5))
        try layer.attach(adapter)
        return layer
    }

    @Test(arguments: [LoRASettings(rank: 3, alpha: 6), LoRASettings(rank: 3, alpha: 6, useRSLoRA: true),
                      LoRASettings(rank: 3, alpha: 6, dropout: 0.3)])
    func gradientsMatchFiniteDifferences(settings: LoRASettings) throws {
        let layer = try Self.makeLayer(settings: settings)
        let adapter = try #require(layer.adapter)
        let x = randomTensor([2, 4, 6], seed: 5), w = randomTensor([2, 4, 5], seed: 6)
        let seed = layer.dropoutStates
        // Replaying the dropout generator makes every forward use the same mask.
        let loss = { () -> Double in
            layer.dropoutStates = seed
            return weightedSum(layer.forward(x), w)
        }
        _ = loss()
        let dx = Tensor(shape: x.shape)
        layer.backward(w, dx: dx)
        let dA = adapter.a.grad!.clone(), dB = adapter.b.grad!.clone()
        let errors = [finiteDifferenceError(of: x, analytic: dx, epsilon: 1e-3, loss: loss),
                      finiteDifferenceError(of: adapter.a.value, analytic: dA, epsilon: 1e-3, loss: loss),
                      finiteDifferenceError(of: adapter.b.value, analytic: dB, epsilon: 1e-3, loss: loss)]
        print("LoRALinear r=3 rsLoRA=\(settings.useRSLoRA) dropout=\(settings.dropout) dx, dA, dB: \(errors)")
        #expect(errors.allSatisfy { $0 < 1e-2 })
        // W0 is never given a gradient.
        #expect(layer.base.weight.grad == nil && layer.base.bias!.grad == nil)
    }

    @Test func forwardIsBasePlusScaledLowRankProduct() throws {
        let layer = try Self.makeLayer(settings: LoRASettings(rank: 3, alpha: 6, useRSLoRA: true))
        let adapter = try #require(layer.adapter)
        #expect(adapter.scale == 6 / Float(3).squareRoot())
        let x = randomTensor([3, 6], seed: 7)
        let y = layer.forward(x).clone()
        // Naive reference: W0·x + b + s·B·(A·x), accumulated in Double.
        var worst = 0.0
        for n in 0..<3 {
            for o in 0..<5 {
                var v = Double(layer.base.bias!.value[o])
                for i in 0..<6 { v += Double(layer.base.weight.value[o * 6 + i]) * Double(x[n * 6 + i]) }
                for r in 0..<3 {
                    var ax = 0.0
                    for i in 0..<6 { ax += Double(adapter.a.value[r * 6 + i]) * Double(x[n * 6 + i]) }
                    v += Double(adapter.scale) * Double(adapter.b.value[o * 3 + r]) * ax
                }
                worst = max(worst, abs(v - Double(y[n * 5 + o])))
            }
        }
        print("LoRALinear forward vs naive: max abs difference \(worst)")
        #expect(worst < 1e-5)
    }

    @Test func zeroBLeavesOutputBitIdentical() throws {
        let layer = try Self.makeLayer()
        layer.adapter!.b.value.zero()
        let x = randomTensor([4, 6], seed: 8)
        let adapted = layer.forward(x).clone()
        let plain = layer.base.forward(x)
        #expect(adapted.isBitIdentical(to: plain))
    }

    @Test func mergeAgreesAndUnmergeIsBitExact() throws {
        let layer = try Self.makeLayer()
        let original = layer.base.weight.value.clone()
        let x = randomTensor([4, 6], seed: 9)
        let unmerged = layer.forward(x).clone()
        try layer.merge()
        #expect(layer.isMerged)
        let merged = layer.forward(x).clone()
        let e = relativeDifference(merged, unmerged)
        print("LoRALinear merged vs unmerged: \(e)")
        #expect(e < 1e-5)
        #expect(throws: LoRAError.alreadyMerged(layer: "test.proj")) { try layer.merge() }
        try layer.unmerge()
        #expect(layer.base.weight.value.isBitIdentical(to: original))
        #expect(layer.forward(x).isBitIdentical(to: unmerged))
        #expect(throws: LoRAError.notMerged(layer: "test.proj")) { try layer.unmerge() }
    }

    @Test func mergeRefusesNonFiniteResultAndLeavesWeightAlone() throws {
        let layer = try Self.makeLayer()
        let original = layer.base.weight.value.clone()
        layer.adapter!.b.value[0] = .greatestFiniteMagnitude
        layer.adapter!.a.value.copy(from: Tensor(shape: [3, 6], generator: { 1e30 }))
        #expect(throws: LoRAError.nonFiniteMerge(layer: "test.proj")) { try layer.merge() }
        #expect(!layer.isMerged)
        #expect(layer.base.weight.value.isBitIdentical(to: original))
    }

    @Test func fuseDropsTheAdapter() throws {
        let layer = try Self.makeLayer()
        let x = randomTensor([2, 6], seed: 10)
        let before = layer.forward(x).clone()
        try layer.fuse()
        #expect(layer.adapter == nil && !layer.isMerged)
        #expect(relativeDifference(layer.forward(x), before) < 1e-5)
    }

    @Test func attachChecksShapes() throws {
        let layer = LoRALinear(name: "m.q", inFeatures: 4, outFeatures: 3, bias: false)
        var g = SplitMix64(seed: 1)
        let wrong = try LoRAWeights(inFeatures: 5, outFeatures: 3, settings: LoRASettings(rank: 2, alpha: 4), generator: &g)
        #expect(throws: LoRAError.shapeMismatch(layer: "m.q", tensor: "lora_A", expected: [2, 4], got: [2, 5])) {
            try layer.attach(wrong)
        }
        let fits = try LoRAWeights(inFeatures: 4, outFeatures: 3, settings: LoRASettings(rank: 2, alpha: 4), generator: &g)
        try layer.attach(fits)
        #expect(throws: LoRAError.adapterAlreadyAttached(layer: "m.q")) { try layer.attach(fits) }
        #expect(try layer.detach() === fits)
        #expect(layer.adapter == nil)
        #expect(throws: LoRAError.self) {
            _ = try LoRAWeights(inFeatures: 4, outFeatures: 3, settings: LoRASettings(rank: 0, alpha: 1), generator: &g)
        }
        #expect(throws: LoRAError.self) {
            _ = try LoRAWeights(inFeatures: 4, outFeatures: 3, settings: LoRASettings(rank: 2, alpha: 1, dropout: 1), generator: &g)
        }
    }

    @Test func initialisation() throws {
        var g = SplitMix64(seed: 11)
        let r = 8, inF = 512
        let gaussian = try LoRAWeights(inFeatures: inF, outFeatures: 16, settings: LoRASettings(rank: r, alpha: 16), generator: &g)
        let values = gaussian.a.value.scalars.map(Double.init)
        let mean = values.reduce(0, +) / Double(values.count)
        let std = (values.map { ($0 - mean) * ($0 - mean) }.reduce(0, +) / Double(values.count)).squareRoot()
        print("Gaussian A: mean \(mean), std \(std) (PEFT: 1/r = \(1.0 / Double(r)))")
        #expect(abs(std - 1.0 / Double(r)) < 0.005 && abs(mean) < 0.005)
        #expect(gaussian.b.value.scalars.allSatisfy { $0 == 0 })

        let kaiming = try LoRAWeights(inFeatures: inF, outFeatures: 16,
                                      settings: LoRASettings(rank: r, alpha: 16, initialization: .kaimingUniform), generator: &g)
        let bound = 1 / Float(inF).squareRoot()
        let maxAbs = kaiming.a.value.scalars.map(abs).max()!
        print("Kaiming-uniform A: max |a| \(maxAbs), bound \(bound)")
        #expect(maxAbs <= bound && maxAbs > 0.95 * bound)
        #expect(kaiming.b.value.scalars.allSatisfy { $0 == 0 })
    }
}
