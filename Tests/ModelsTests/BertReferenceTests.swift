import Kernels
import Layers
import LoRA
import Models
import TestSupport
import Testing

/// The tiny BERT fixture: `BertForSequenceClassification` with PEFT LoRA on query/value and the
/// classifier as a fully trained module (`modules_to_save`).
@Suite("BERT against PyTorch + PEFT")
struct BertReferenceTests {
    static let name = "tiny-bert"

    static func base(_ fx: ModelFixture) throws -> BertForSequenceClassification {
        try fx.loadBase(BertForSequenceClassification(fx.configuration(BertConfiguration.self)))
    }

    /// LoRA on the targets plus PEFT's trainable copy of the classifier (`modules_to_save`).
    static func adapted(_ fx: ModelFixture) throws -> BertForSequenceClassification {
        let model = try fx.adapt(base(fx))
        #expect(model.classifier.base.ownParameters.allSatisfy { $0.parameter.isTrainable })
        return model
    }

    @Test func logitsLossAndGradientsMatch() throws {
        let fx = try ModelFixture(Self.name)
        let model = try Self.adapted(fx)
        let logits = try model.logits(fx.batch).clone()
        model.zeroGradients()
        let loss = try model.loss(fx.batch, labels: fx.labels, backward: true)
        try fx.checkLogitsAndLoss(logits: logits, loss: loss, label: Self.name)
        let classifier = model.classifier.base.ownParameters.map { (name: "classifier." + $0.name, parameter: $0.parameter) }
        _ = try fx.compareGradients(model.namedAdapterParameters + classifier, label: Self.name)
    }

    @Test func baseModelMatchesAndZeroBIsExact() throws {
        let fx = try ModelFixture(Self.name)
        let model = try Self.base(fx)
        try fx.checkBaseAndZeroB(model, logits: { try model.logits(fx.batch) }, label: Self.name)
    }

    @Test func mergeMatchesAndUnmergeRestoresExactly() throws {
        let fx = try ModelFixture(Self.name)
        let model = try Self.adapted(fx)
        try fx.checkMergeAndUnmerge(model, logits: { try model.logits(fx.batch) }, label: Self.name)
    }
}
