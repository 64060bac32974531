import Foundation
import Formats
import Kernels
import LoRA
import Models
import TestSupport
import Testing

/// Per-row adapters through whole models, the KV caches (standard, sliding-window,
/// multi-sequence) and continuous batching: one forward path for training, scoring and decoding.
@Suite("Mixed batches, KV caches and continuous batching")
struct MultiSequenceTests {
    struct Rows: Decodable { let rows: [String?]; let adapters: [String: String] }

    /// The tiny Llama with the fixture's four PEFT adapters loaded under their row names.
    static func tinyLlamaWithAdapters() throws -> (LlamaForCausalLM, Rows) {
        let rows = try JSONDecoder().decode(Rows.self, from: Data(contentsOf: fixturesDirectory.appendingPathComponent("mixed-batch/tiny-llama.json")))
        let (loaded, _) = try ModelLoader.loadHuggingFace(directory: fixturesDirectory.appendingPathComponent("tiny-llama"))
        let model = try #require(loaded as? LlamaForCausalLM)
        for (name, path) in rows.adapters.sorted(by: { $0.key < $1.key }) {
            try model.loadPEFTAdapter(from: fixturesDirectory.appendingPathComponent(path), named: name)
        }
        return (model, rows)
    }

    /// Rows on the base model and on adapters a, b, all-linear and c in one batch give PEFT's
    /// `model(input_ids, adapter_names=…)` logits, batched and through per-sequence KV caches,
    /// and equal each row run alone with its adapter active.
    @Test func mixedBatchMatchesPEFTAndEachRowAlone() throws {
        let (model, rows) = try Self.tinyLlamaWithAdapters()
        let file = try SafeTensorsFile(url: fixturesDirectory.appendingPathComponent("mixed-batch/tiny-llama.safetensors"))
        let ids = try file.integers("input_ids"), expected = try file.tensor("logits")
        let b = rows.rows.count, t = ids.count / b, v = model.config.vocabSize
        let batched = try model.logits(TokenBatch(batch: b, length: t, inputIds: ids), sequenceAdapters: rows.rows).clone()
        let caches = rows.rows.map { _ in model.makeCache(capacity: t) }
        let steps = rows.rows.enumerated().map { CachedStep(cache: caches[$0.offset], tokens: Array(ids[($0.offset * t)..<(($0.offset + 1) * t)]), adapter: $0.element) }
        let cached = try model.forwardCached(steps, adapters: .perStep, allLogits: true).clone()
        var alone: [Double] = []
        for (i, name) in rows.rows.enumerated() {
            try model.setActiveAdapters(name.map { [$0] } ?? [])
            let one = try model.logits(TokenBatch(batch: 1, length: t, inputIds: Array(ids[(i * t)..<((i + 1) * t)])))
            var e = 0.0
            for j in 0..<(t * v) { e = max(e, Double(abs(one[j] - batched[i * t * v + j]))) }
            alone.append(e)
        }
        let ePEFT = maxAbsoluteDifference(batched, expected), eCached = maxAbsoluteDifference(cached, expected)
        print("mixed batch of \(rows.rows.map { $0 ?? "base" }) vs PEFT: batched \(ePEFT), through KV caches \(eCached); each row alone vs mixed \(alone)")
        #expect(ePEFT < 1e-5 && eCached < 1e-5)
        #expect(alone.allSatisfy { $0 < 1e-5 })
        // The adapters change the outputs (the rows differ from the base model's by far more than the tolerance).
        for (i, name) in rows.rows.enumerated() where name != nil {
            try model.setActiveAdapters([])
            let base = try model.logits(TokenBatch(batch: 1, length: t, inputIds: Array(ids[(i * t)..<((i + 1) * t)])))
            var d = 0.0
            for j in 0..<(t * v) { d = max(d, Double(abs(base[j] - batched[i * t * v + j]))) }
            #expect(d > 1e-2, "adapter \(name!) changes row \(i) by only \(d)")
        }
    }

    /// Continuous batching: five requests on different adapters through two slots (requests
    /// join as others finish) give exactly the tokens each gives generated alone.
    @Test func continuousBatchingEqualsEachRequestAlone() throws {
        let (model, _) = try Self.tinyLlamaWithAdapters()
        let prompts = [[5, 9, 13], [7, 1, 100, 42, 8, 3, 19], [200], [44, 45, 46, 47, 48], [9, 9, 9, 2]]
        let adapters: [String?] = [nil, "a", "all", "b", nil]
        let lengths = [6, 3, 8, 5, 4]
        var requests = zip(prompts, adapters).enumerated().map { i, pa in
            GenerationRequest(prompt: pa.0, maxTokens: lengths[i], adapter: pa.1, sampler: Sampler(temperature: i == 4 ? 0.8 : 0, seed: 11))
        }
        requests[1].stopTokens = []
        let cache = model.makeMultiSequenceCache(slots: 2, capacity: 16)
        var order: [Int] = []
        let together = try model.generate(requests, cache: cache) { request, _ in order.append(request) }
        var alone: [[Int]] = []
        for r in requests {
            try model.setActiveAdapters(r.adapter.map { [$0] } ?? [])
            var sampler = r.sampler
            alone.append(try model.generate(prompt: r.prompt, maxTokens: r.maxTokens, sampler: &sampler, stopTokens: r.stopTokens))
        }
        print("continuous batching, 5 requests in 2 slots: \(together); token order by request \(order)")
        #expect(together == alone)
        #expect(together.map(\.count) == lengths)
        // Requests 2… waited for a slot: request 2's first token comes after request 0 or 1 finished.
        #expect(order.prefix(2) == [0, 1] && cache.freeSlots == 2)
    }

    /// A tiny Gemma with local (window 4) and global layers: decoding through sliding-window
    /// caches in chunks of every size (prefills longer than the window included) gives the full
    /// forward's logits, and the local layers' caches stay bounded.
    @Test func slidingWindowCacheEqualsTheFullForward() throws {
        let config = try Gemma3Configuration(vocabSize: 48, hiddenSize: 16, intermediateSize: 24, numHiddenLayers: 3, numAttentionHeads: 2,
                                              numKeyValueHeads: 1, headDim: 8, slidingWindow: 4, slidingWindowPattern: 3)
        let model = Gemma3ForCausalLM(config)
        ModelBehaviourTests.randomise(model, seed: 900)
        let ids = (0..<40).map { ($0 * 17 + 5) % 48 }
        let full = try model.logits(TokenBatch(batch: 1, length: ids.count, inputIds: ids)).clone()
        let v = config.vocabSize
        for chunks in [[1], [6, 1, 1, 5, 1, 9, 2, 1, 1, 13], [11, 29], [40]] {
            let cache = model.makeCache(capacity: ids.count)
            var at = 0, worst = 0.0, i = 0, peakRows = 0
            while at < ids.count {
                let n = min(chunks[i % chunks.count], ids.count - at)
                let logits = try model.forwardCached(Array(ids[at..<(at + n)]), cache: cache, allLogits: true)
                for j in 0..<(n * v) { worst = max(worst, Double(abs(logits[j] - full[at * v + j]))) }
                peakRows = max(peakRows, cache.layers[0].count)
                at += n
                i += 1
            }
            let local = try #require(cache.layers[0] as? SlidingWindowKVCache), global = try #require(cache.layers[2] as? StandardKVCache)
            print("sliding-window cache, chunks \(chunks): max |Δ logits| vs full forward \(worst); local layer holds \(local.count) rows from position \(local.firstPosition) (peak \(peakRows)), global \(global.count)")
            #expect(worst < 1e-5)
            #expect(global.count == ids.count && local.count <= 2 * config.slidingWindow + (chunks.max() ?? 1))
            #expect(local.firstPosition + local.count == ids.count)
        }
        // Two sequences at different lengths in one pass equal each alone.
        let a = model.makeCache(capacity: 40), b = model.makeCache(capacity: 40)
        _ = try model.forwardCached(Array(ids[0..<9]), cache: a)
        let pass = try model.forwardCached([CachedStep(cache: a, tokens: [ids[9]]), CachedStep(cache: b, tokens: Array(ids[0..<7]))],
                                           adapters: .active, allLogits: false).clone()
        var e = 0.0
        for j in 0..<v {
            e = max(e, Double(abs(pass[j] - full[9 * v + j])), Double(abs(pass[v + j] - full[6 * v + j])))
        }
        print("Gemma, one pass over two sequences (positions 9 and 0…6): max |Δ| vs full forward \(e)")
        #expect(e < 1e-5 && a.length == 10 && b.length == 7)
    }

    /// A decoding step over several sequences with their own adapters allocates no tensor once
    /// the buffers have grown (the model instance keeps the cached pass's work buffers; each
    /// adapter's per-row products reuse its run's buffers).
    @Test func decodingAllocatesNoTensorsInSteadyState() throws {
        let (model, _) = try Self.tinyLlamaWithAdapters()
        let names: [String?] = [nil, "a", "all"]
        let caches = names.map { _ in model.makeCache(capacity: 64) }
        var next = [1, 2, 3]
        func step(_ tokens: [[Int]]) throws {
            let logits = try model.forwardCached(zip(zip(caches, tokens), names).map { CachedStep(cache: $0.0, tokens: $0.1, adapter: $1) },
                                                 adapters: .perStep, allLogits: false)
            let v = model.vocabularySize
            next = (0..<names.count).map { i in (0..<v).max { logits[i * v + $0] < logits[i * v + $1] } ?? 0 }
        }
        try step([Array(3...19), Array(20...36), Array(40...56)])   // 17-token prompts: the caches hold 32 rows
        for _ in 0..<2 { try step(next.map { [$0] }) }
        let tracker = AllocationTracker()
        try tracker.counting { for _ in 0..<5 { try step(next.map { [$0] }) } }
        print("5 decoding steps of 3 sequences (base, a, all): \(tracker.count) tensors allocated")
        #expect(tracker.count == 0 && caches.allSatisfy { $0.length == 24 })
    }

    @Test func badPassesAreRefusedBeforeAnythingRuns() throws {
        let (model, _) = try Self.tinyLlamaWithAdapters()
        let cache = model.makeCache(capacity: 4)
        #expect { try model.forwardCached([CachedStep(cache: cache, tokens: [1], adapter: "nope")], adapters: .perStep, allLogits: false) } throws: {
            "\($0)".contains("no adapter named 'nope' is loaded (loaded: a, all, b, c)")
        }
        #expect { try model.forwardCached([CachedStep(cache: cache, tokens: [1]), CachedStep(cache: cache, tokens: [2])], adapters: .active, allLogits: false) } throws: {
            "\($0)".contains("one cache appears twice")
        }
        #expect { try model.forwardCached([CachedStep(cache: cache, tokens: [1, 2, 3, 4, 5])], adapters: .active, allLogits: false) } throws: {
            "\($0)".contains("5 tokens exceed the cache's 4")
        }
        #expect { try model.forwardCached([CachedStep(cache: cache, tokens: [1, 999])], adapters: .active, allLogits: false) } throws: { _ in true }
        #expect(cache.length == 0 && cache.layers.allSatisfy { $0.count == 0 })
        #expect { try model.logits(TokenBatch(batch: 1, length: 2, inputIds: [1, 2]), sequenceAdapters: ["a", "b"]) } throws: {
            "\($0)".contains("2 adapter names for 1 sequences")
        }
        let slots = model.makeMultiSequenceCache(slots: 1, capacity: 8)
        #expect { try model.generate([GenerationRequest(prompt: [1, 2, 3], maxTokens: 6)], cache: slots) } throws: {
            "\($0)".contains("3 prompt + 6 new tokens exceed a slot's 8 positions")
        }
        #expect { try model.generate([GenerationRequest(prompt: [], maxTokens: 2)], cache: slots) } throws: { "\($0)".contains("empty prompt") }
        _ = try slots.open()
        #expect { try slots.open() } throws: { "\($0)".contains("all 1 sequence slots are in use") }
        // Merged adapters cannot serve other rows.
        try model.setActiveAdapters(["a"])
        try model.mergeAdapters()
        #expect(throws: ModelError.self) { try model.forwardCached([CachedStep(cache: cache, tokens: [1], adapter: "b")], adapters: .perStep, allLogits: false) }
    }
}
