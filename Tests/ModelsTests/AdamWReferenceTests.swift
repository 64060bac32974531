import Formats
import Kernels
import Layers
import Models
import TestSupport
import Testing
import Training

/// A few AdamW steps on each fixture's batch against `torch.optim.AdamW` (lr 1e-2, betas
/// (0.9, 0.999), eps 1e-8, weight decay 0.01): the losses and every trained tensor after each step.
@Suite("AdamW training steps against PyTorch")
struct AdamWReferenceTests {
    func checkTrajectory(_ fx: ModelFixture, parameters: [(name: String, parameter: Parameter)], label: String,
                         loss: () throws -> Float) throws {
        let reference = try SafeTensorsFile(url: fx.fixture.directory.appendingPathComponent("adamw.safetensors"))
        let expectedLosses = try reference.tensor("losses")
        let optimizer = AdamW(parameters: parameters.map(\.parameter), learningRate: 1e-2, beta1: 0.9, beta2: 0.999,
                              epsilon: 1e-8, weightDecay: 0.01)
        #expect(optimizer.parameters.count == parameters.count)
        var worstLoss = 0.0, worstParameter = 0.0
        for step in 1...expectedLosses.count {
            optimizer.zeroGradients()
            let value = try loss()
            optimizer.update()
            let lossError = abs(Double(value - expectedLosses[step - 1])) / abs(Double(expectedLosses[step - 1]))
            #expect(lossError <= 1e-4, "step \(step): loss \(value) vs \(expectedLosses[step - 1])")
            worstLoss = max(worstLoss, lossError)
            for (name, p) in parameters {
                let e = relativeDifference(p.value, try reference.tensor("step\(step).base_model.model.\(name)"))
                #expect(e <= 1e-4, "step \(step), \(name): relative difference \(e)")
                worstParameter = max(worstParameter, e)
            }
        }
        print("[\(label)] \(expectedLosses.count) AdamW steps: losses max relative difference \(worstLoss), trained tensors \(worstParameter)")
    }

    @Test(arguments: ["tiny-llama", "tiny-llama-untied"])
    func llama(name: String) throws {
        let fx = try ModelFixture(name)
        let model = try fx.adapt(LlamaReferenceTests.base(fx))
        try checkTrajectory(fx, parameters: model.namedAdapterParameters, label: name) {
            try model.loss(fx.batch, labels: fx.labels, backward: true)
        }
    }

    @Test func bert() throws {
        let fx = try ModelFixture(BertReferenceTests.name)
        let model = try BertReferenceTests.adapted(fx)
        let classifier = model.classifier.base.ownParameters.map { (name: "classifier." + $0.name, parameter: $0.parameter) }
        try checkTrajectory(fx, parameters: model.namedAdapterParameters + classifier, label: BertReferenceTests.name) {
            try model.loss(fx.batch, labels: fx.labels, backward: true)
        }
    }
}
