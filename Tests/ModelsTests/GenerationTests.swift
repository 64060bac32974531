import Foundation
import Kernels
@testable import Models
import TestSupport
import Testing

@Suite("Sampling and generation")
struct GenerationTests {
    static let logits: [Float] = [log(0.5), log(0.3), log(0.2), -.infinity]

    func frequencies(_ sampler: Sampler, draws: Int = 20_000) -> [Double] {
        var s = sampler, counts = [Double](repeating: 0, count: Self.logits.count)
        Self.logits.withUnsafeBufferPointer { p in
            for _ in 0..<draws { counts[s.sample(p.baseAddress!, count: p.count)] += 1 }
        }
        return counts.map { $0 / Double(draws) }
    }

    @Test func greedyTakesTheFirstMaximum() {
        var s = Sampler(temperature: 0)
        let tied: [Float] = [1, 3, 3, 2]
        #expect(tied.withUnsafeBufferPointer { s.sample($0.baseAddress!, count: 4) } == 1)
    }

    @Test func samplingFollowsTheDistributionAndFilters() {
        let plain = frequencies(Sampler(temperature: 1, seed: 1))
        print("temperature 1 frequencies: \(plain)")
        #expect(abs(plain[0] - 0.5) < 0.015 && abs(plain[1] - 0.3) < 0.015 && abs(plain[2] - 0.2) < 0.015 && plain[3] == 0)
        // top-p 0.6 keeps {0.5, 0.3}: renormalised 0.625 / 0.375.
        let nucleus = frequencies(Sampler(temperature: 1, topP: 0.6, seed: 2))
        print("top-p 0.6 frequencies: \(nucleus)")
        #expect(abs(nucleus[0] - 0.625) < 0.015 && nucleus[2] == 0)
        let topK = frequencies(Sampler(temperature: 1, topK: 1, seed: 3))
        #expect(topK[0] == 1)
        // A low temperature sharpens: 0.5^(1/0.5) ∝ 0.25, 0.09, 0.04 → 0.657 for the first.
        let cold = frequencies(Sampler(temperature: 0.5, seed: 4))
        #expect(abs(cold[0] - 0.25 / 0.38) < 0.015)
    }

    @Test func aSeedReproducesTheSamples() {
        var a = Sampler(temperature: 1, seed: 42), b = Sampler(temperature: 1, seed: 42), c = Sampler(temperature: 1, seed: 43)
        let draw = { (s: inout Sampler) in Self.logits.withUnsafeBufferPointer { p in (0..<50).map { _ in s.sample(p.baseAddress!, count: p.count) } } }
        let first = draw(&a)
        #expect(first == draw(&b))
        #expect(first != draw(&c))
    }

    @Test func cachedForwardEqualsTheFullForward() throws {
        // Prefill 5 tokens then decode 3 one by one: logits equal the uncached model's.
        let model = try LlamaForCausalLM(ModelBehaviourTests.tinyLlamaConfig())
        ModelBehaviourTests.randomise(model, seed: 500)
        let ids = [3, 7, 1, 9, 2, 5, 8, 4]
        let full = try model.logits(TokenBatch(batch: 1, length: ids.count, inputIds: ids)).clone()
        let cache = model.makeCache(capacity: ids.count)
        let v = model.config.vocabSize
        var worst = 0.0
        let prefill = try model.forwardCached(Array(ids[0..<5]), cache: cache, allLogits: true)
        for i in 0..<(5 * v) { worst = max(worst, abs(Double(prefill[i] - full[i]))) }
        for t in 5..<ids.count {
            let step = try model.forwardCached([ids[t]], cache: cache)
            for j in 0..<v { worst = max(worst, abs(Double(step[j] - full[t * v + j]))) }
        }
        print("KV-cache decoding vs full forward: max absolute difference \(worst)")
        #expect(worst < 1e-4)
        #expect(throws: ModelError.self) { _ = try model.forwardCached([1], cache: cache) }   // cache full
    }

    @Test func unsupportedModelsAreNamed() throws {
        let dir = URL(fileURLWithPath: NSTemporaryDirectory()).appendingPathComponent("lora-gpt2-\(UUID().uuidString)")
        try FileManager.default.createDirectory(at: dir, withIntermediateDirectories: true)
        defer { try? FileManager.default.removeItem(at: dir) }
        try Data(#"{"model_type": "gpt2"}"#.utf8).write(to: dir.appendingPathComponent("config.json"))
        #expect(throws: ModelError.unsupportedArchitecture("model_type 'gpt2' in \(dir.appendingPathComponent("config.json").path) (supported: llama, bert, gemma3_text)")) {
            _ = try ModelLoader.load(dir)
        }
        try Data(#"{"model_type": "bert", "vocab_size": 10}"#.utf8).write(to: dir.appendingPathComponent("config.json"))
        #expect(throws: ModelError.self) { _ = try ModelLoader.load(dir) }   // no weights
        let notLlama = fixturesDirectory.appendingPathComponent("gguf/metadata.gguf")
        #expect(throws: ModelError.self) { _ = try ModelLoader.load(notLlama) }
        #expect(throws: ModelError.self) { _ = try ModelLoader.load(dir.appendingPathComponent("missing.gguf")) }
    }
}
