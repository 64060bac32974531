import Dispatch
import Foundation
import Kernels
import Layers
import LoRA
@testable import ModelCore
@testable import Models
import TestSupport
import Testing

/// Weights apart from per-run state: a replica shares every parameter and the adapter pool with
/// its model, keeps its own buffers, caches and adapter choice, and runs beside it on another thread.
@Suite("Replicas: shared weights, per-run state")
struct ReplicaTests {
    /// Hands a non-Sendable value to another thread (each thread uses only its own model instance).
    final class Unchecked<T>: @unchecked Sendable {
        var value: T
        init(_ value: T) { self.value = value }
    }

    static let ids = TokenBatch(batch: 1, length: 6, inputIds: [5, 9, 13, 2, 77, 31])

    @Test func aReplicaSharesWeightsAndAdaptersButNotItsRun() throws {
        let (model, _) = try MultiSequenceTests.tinyLlamaWithAdapters()
        try model.setActiveAdapters(["a"])
        let replica = model.replica()
        // The same parameter objects and adapter matrices; its own buffers.
        #expect(zip(model.namedParameters, replica.namedParameters).allSatisfy { $0.0.name == $0.1.name && $0.0.parameter === $0.1.parameter })
        #expect(replica.lmHead === replica.embedTokens.weight)
        for (m, r) in zip(model.linearModules, replica.linearModules) {
            #expect(m.name == r.name && m.base.weight === r.base.weight && m.adapters.map(\.name) == r.adapters.map(\.name))
            #expect(zip(m.adapters, r.adapters).allSatisfy { $0.0.adapter === $0.1.adapter } && m.output !== r.output)
        }
        #expect(replica.adapterRegistry.active == ["a"] && replica.adapterRegistry.names == model.adapterRegistry.names)
        // Its own adapter choice: switching the replica leaves the model's runs as they were.
        let onA = try model.logits(Self.ids).clone()
        try replica.setActiveAdapters(["b"])
        let onB = try replica.logits(Self.ids).clone()
        #expect(!onA.isBitIdentical(to: onB))
        #expect(model.adapterRegistry.active == ["a"])
        #expect(try model.logits(Self.ids).isBitIdentical(to: onA))
        try model.setActiveAdapters(["b"])
        #expect(try model.logits(Self.ids).isBitIdentical(to: onB))
        // An adapter loaded through the model afterwards is the replica's too.
        try model.loadPEFTAdapter(from: fixturesDirectory.appendingPathComponent("adapters/tiny-llama-layers"), named: "late")
        #expect(replica.adapterRegistry.names.contains("late"))
        try model.setActiveAdapters(["late"])
        try replica.setActiveAdapters(["late"])
        #expect(try replica.logits(Self.ids).isBitIdentical(to: try model.logits(Self.ids).clone()))
        // One weight: a merge through the model is the replica's too, and per-row passes are refused then.
        try model.mergeAdapters()
        #expect(replica.hasMergedAdapters)
        #expect { try replica.logits(Self.ids, sequenceAdapters: ["b"]) } throws: { "\($0)".contains("merged") }
        try model.unmergeAdapters()
        #expect(!replica.hasMergedAdapters)
        // Removing an adapter through the replica removes it from the shared pool.
        try replica.removeAdapter(named: "late")
        #expect(!model.adapterRegistry.names.contains("late") && model.linearModules.allSatisfy { $0.adapter(named: "late") == nil })
    }

    /// A model and its replica decode on two threads at once, each with its own adapters, KV
    /// caches and continuous batching, and give exactly what each gives alone.
    @Test func aModelAndItsReplicaRunConcurrently() throws {
        let (model, _) = try MultiSequenceTests.tinyLlamaWithAdapters()
        let replica = model.replica()
        let requests: [[GenerationRequest]] = [
            [GenerationRequest(prompt: [5, 9, 13], maxTokens: 12, adapter: "a"), GenerationRequest(prompt: [7, 1, 100], maxTokens: 9, adapter: nil),
             GenerationRequest(prompt: [44, 45], maxTokens: 10, adapter: "all")],
            [GenerationRequest(prompt: [200, 3], maxTokens: 11, adapter: "b"), GenerationRequest(prompt: [9, 9, 9, 2], maxTokens: 8, adapter: "c"),
             GenerationRequest(prompt: [1], maxTokens: 12, adapter: "a")],
        ]
        let instances = [model, replica]
        let alone = try (0..<2).map { i in try instances[i].generate(requests[i], cache: instances[i].makeMultiSequenceCache(slots: 2, capacity: 16)) }
        let results = Unchecked<[[[Int]]]>([[], []]), errors = Unchecked<[String]>([])
        let shared = Unchecked(instances)
        let lock = NSLock()
        for _ in 0..<3 {
            DispatchQueue.concurrentPerform(iterations: 2) { i in
                let instance = shared.value[i]
                do {
                    let out = try instance.generate(requests[i], cache: instance.makeMultiSequenceCache(slots: 2, capacity: 16))
                    lock.withLock { results.value[i] = out }
                } catch {
                    lock.withLock { errors.value.append("\(error)") }
                }
            }
            #expect(errors.value.isEmpty && results.value == alone)
        }
        print("model and replica on two threads: \(results.value)")
    }

    /// A replica may not change what the shared parameters hold: an adapter with trained copies of
    /// whole modules (modules_to_save) is activated on the model; the replica then uses it as is.
    @Test func aReplicaCannotSwapSavedModules() throws {
        let (bert, _) = try ModelLoader.loadHuggingFace(directory: fixturesDirectory.appendingPathComponent("tiny-bert"))
        let model = try #require(bert as? BertForSequenceClassification)
        try model.loadPEFTAdapter(from: fixturesDirectory.appendingPathComponent("adapters/tiny-bert-cls"), named: "cls")
        try model.setActiveAdapters([])
        let replica = model.replica()
        #expect { try replica.setActiveAdapters(["cls"]) } throws: { "\($0)".contains("modules_to_save") }
        try model.setActiveAdapters(["cls"])
        try replica.setActiveAdapters(["cls"])
        let input = TokenBatch(batch: 1, length: 4, inputIds: [2, 9, 17, 3])
        #expect(try replica.logits(input).clone().isBitIdentical(to: try model.logits(input)))
    }
}
