import Kernels
import LoRA
import Models
import TestSupport
import Testing

/// The tiny Llama fixtures: a random `LlamaForCausalLM` wrapped by PEFT, run by PyTorch.
@Suite("Llama against PyTorch + PEFT")
struct LlamaReferenceTests {
    static func base(_ fx: ModelFixture) throws -> LlamaForCausalLM {
        try fx.loadBase(LlamaForCausalLM(fx.configuration(LlamaConfiguration.self)))
    }

    @Test(arguments: ["tiny-llama", "tiny-llama-untied"])
    func logitsLossAndLoRAGradientsMatch(name: String) throws {
        let fx = try ModelFixture(name)
        let model = try fx.adapt(Self.base(fx))
        let logits = try model.logits(fx.batch).clone()
        model.zeroGradients()
        let loss = try model.loss(fx.batch, labels: fx.labels, backward: true)
        try fx.checkLogitsAndLoss(logits: logits, loss: loss, label: name)
        _ = try fx.compareGradients(model.namedAdapterParameters, label: name)
    }

    @Test(arguments: ["tiny-llama", "tiny-llama-untied"])
    func baseModelMatchesAndZeroBIsExact(name: String) throws {
        let fx = try ModelFixture(name)
        let model = try Self.base(fx)
        try fx.checkBaseAndZeroB(model, logits: { try model.logits(fx.batch) }, label: name)
    }

    @Test(arguments: ["tiny-llama", "tiny-llama-untied"])
    func mergeMatchesAndUnmergeRestoresExactly(name: String) throws {
        let fx = try ModelFixture(name)
        let model = try fx.adapt(Self.base(fx))
        try fx.checkMergeAndUnmerge(model, logits: { try model.logits(fx.batch) }, label: name)
    }
}
