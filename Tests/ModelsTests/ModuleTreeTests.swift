import Foundation
import Kernels
import Layers
import LoRA
@testable import ModelCore
@testable import Models
import TestSupport
import Testing

/// The module tree is the one place where module paths and work buffers are written down:
/// parameter names, adapted modules, the buffers blocks lend each other and the memory estimate
/// all come from walking it. These tests hold the tree to what the code really allocates.
@Suite("Module tree")
struct ModuleTreeTests {
    static func tinyGemma() throws -> Gemma3ForCausalLM {
        let config = try Gemma3Configuration(vocabSize: 48, hiddenSize: 16, intermediateSize: 24, numHiddenLayers: 3, numAttentionHeads: 2,
                                              numKeyValueHeads: 1, headDim: 8, slidingWindow: 4, slidingWindowPattern: 3)
        let model = Gemma3ForCausalLM(config)
        ModelBehaviourTests.randomise(model, seed: 31)
        return model
    }

    static func tinyModels() throws -> [(String, any PretrainedModel)] {
        let llama = try LlamaForCausalLM(ModelBehaviourTests.tinyLlamaConfig(tied: true))
        let untied = try LlamaForCausalLM(ModelBehaviourTests.tinyLlamaConfig(tied: false))
        let (bert, _) = try ModelLoader.loadHuggingFace(directory: fixturesDirectory.appendingPathComponent("tiny-bert"))
        for m in [llama, untied] as [any PretrainedModel] { ModelBehaviourTests.randomise(m, seed: 5) }
        return [("llama (tied)", llama), ("llama (untied)", untied), ("bert", bert), ("gemma3", try tinyGemma())]
    }

    /// Every adapted projection is named by its path in the tree, and the parameter names are the
    /// Hugging Face state-dict names, each parameter once (a tied head under the embedding's name).
    @Test func namesComeFromTheTree() throws {
        for (label, model) in try Self.tinyModels() {
            let paths = model.modules(of: LoRALinear.self)
            #expect(paths.allSatisfy { $0.module.name == $0.path }, "\(label)")
            let names = model.namedParameters.map(\.name)
            #expect(Set(names).count == names.count, "\(label): a name twice")
            #expect(Set(model.namedParameters.map { ObjectIdentifier($0.parameter) }).count == names.count, "\(label): a parameter twice")
            print("\(label): \(paths.count) adapted modules, \(names.count) parameters, first \(names.prefix(3)), last \(names.suffix(2))")
        }
        let untied = try LlamaForCausalLM(ModelBehaviourTests.tinyLlamaConfig(tied: false))
        #expect(untied.namedParameters.last?.name == "lm_head.weight" && untied.namedParameters.first?.name == "model.embed_tokens.weight")
        let tied = try LlamaForCausalLM(ModelBehaviourTests.tinyLlamaConfig(tied: true))
        #expect(!tied.namedParameters.contains { $0.name == "lm_head.weight" } && tied.lmHead === tied.embedTokens.weight)
        // The order of a layer's parameters is the checkpoints' (and optimizer states') order.
        #expect(Array(tied.namedParameters.map(\.name)[1...4]) == ["model.layers.0.input_layernorm.weight",
            "model.layers.0.post_attention_layernorm.weight", "model.layers.0.self_attn.q_proj.weight", "model.layers.0.self_attn.k_proj.weight"])
        // GGUF names from each architecture's table, both ways, for every parameter.
        for (names, model) in [(ModelLoader.llamaTensorNames, untied as any PretrainedModel), (Gemma3Architecture.tensorNames, try Self.tinyGemma())] {
            for (name, _) in model.namedParameters {
                let gguf = try #require(names.gguf(name), "\(name) has no GGUF name")
                #expect(names.huggingFace(gguf) == name)
            }
        }
        #expect(Gemma3Architecture.tensorNames.gguf("model.layers.11.self_attn.k_norm.weight") == "blk.11.attn_k_norm.weight")
        #expect(Gemma3Architecture.tensorNames.huggingFace("blk.2.post_ffw_norm.weight") == "model.layers.2.post_feedforward_layernorm.weight")
        #expect(ModelLoader.llamaTensorNames.huggingFace("blk.x.attn_q.weight") == nil)
    }

    /// Which weights may be stored packed, found in the tree: the projections outside the head and
    /// the vocabulary-sized tables; never norms, biases, BERT's position and type tables, its
    /// pooler or classifier.
    @Test func packableWeightsComeFromTheTree() throws {
        for (label, model) in try Self.tinyModels() {
            let packable = model.packableParameterNames
            let projections = model.linearModules.filter { !$0.name.hasPrefix("classifier") && !$0.name.contains("pooler") }.map { $0.name + ".weight" }
            let tables = model.namedParameters.map(\.name).filter {
                ["model.embed_tokens.weight", "lm_head.weight", "bert.embeddings.word_embeddings.weight"].contains($0)
            }
            print("\(label): \(packable.count) packable weights")
            #expect(packable == Set(projections + tables), "\(label): \(packable.symmetricDifference(projections + tables).sorted())")
        }
    }

    /// After a training step, every work buffer holds exactly the elements its module declares
    /// for the step's shape (outside the blocks, and the blocks' own activations and retained
    /// buffers), the blocks' lent gradient buffers hold one block's declared worth, and the
    /// estimate's activation and head bytes are the sum of it all. With recomputation, the
    /// blocks' activation buffers are lent too and the pool holds one block's activations and
    /// gradients. LoRA with dropout, so the adapters' dropout buffers count.
    @Test(arguments: [false, true])
    func declaredBuffersAreWhatAStepAllocates(recompute: Bool) throws {
        let batch = 4, length = 64   // 256 rows: the chunked loss fills its chunk
        for (label, model) in try Self.tinyModels() {
            try model.addLoRA(targets: model.defaultLoRATargets, settings: LoRASettings(rank: 3, alpha: 6, dropout: 0.1), seed: 4)
            let vocabulary = model.vocabularySize
            let input = TokenBatch(batch: batch, length: length, inputIds: (0..<(batch * length)).map { ($0 * 7 + 3) % vocabulary })
            let labels = model.task == .causalLM ? input.inputIds : [0, 1, 1, 0]
            guard !recompute || model.supportsActivationRecomputation else { continue }
            model.setActivationRecomputation(recompute)
            _ = try model.loss(input, labels: labels, backward: true)
            let shape = PassShape(batch: batch, length: length)
            var mismatches: [String] = [], actual = 0, blockDeclared: [(activation: Int, gradient: Int)] = []
            func check(_ module: any Module, _ path: String, _ shape: PassShape, inBlock: Bool) {
                if let block = module as? any RecomputableBlock {
                    blockDeclared.append((block.bufferElements(shape, roles: [.activation]), block.bufferElements(shape, roles: [.gradient])))
                }
                let isBlock = inBlock || module is any RecomputableBlock
                for (i, b) in module.ownBuffers.enumerated() {
                    let lent = isBlock && (b.role == .gradient || (recompute && b.role == .activation))
                    if lent {
                        if b.tensor.count != 0 { mismatches.append("\(path) #\(i): lent, but holds \(b.tensor.count)") }
                        continue
                    }
                    actual += b.tensor.count
                    if b.tensor.count != b.elements(shape) { mismatches.append("\(path) #\(i): \(b.tensor.count) held, \(b.elements(shape)) declared") }
                }
                for (name, child) in module.children {
                    check(child, path.isEmpty ? name : path + "." + name, module.shape(ofChild: name, in: shape), inBlock: isBlock)
                }
            }
            check(model, "", shape, inBlock: false)
            let pooled = (model as? LlamaForCausalLM)?.blockRuns.pooledElements ?? (model as? Gemma3ForCausalLM)?.blockRuns.pooledElements ?? 0
            let perBlock = blockDeclared.map { (recompute ? $0.activation : 0) + $0.gradient }.max() ?? 0
            actual += pooled
            let estimate = model.activationEstimate(batch: batch, length: length, recompute: recompute)
            print("\(label), recompute \(recompute): \(actual) elements after a step (pool \(pooled)), estimate \((estimate.activationBytes + estimate.headBytes) / 4); \(mismatches.count) mismatches \(mismatches.prefix(3))")
            #expect(mismatches.isEmpty, "\(label)")
            #expect(pooled == perBlock, "\(label): the pool holds \(pooled), one block declares \(perBlock)")
            #expect(estimate.activationBytes + estimate.headBytes == 4 * actual, "\(label)")
            #expect(estimate.headBytes > 0 && estimate.recomputeApplies == model.supportsActivationRecomputation)
        }
    }
}
