import Foundation
import Kernels
import Layers
import LoRA

/// A BERT configuration; field names are those of Hugging Face `config.json`.
public struct BertConfiguration: Codable, Sendable, Equatable {
    public var vocabSize: Int
    public var hiddenSize: Int
    public var numHiddenLayers: Int
    public var numAttentionHeads: Int
    public var intermediateSize: Int
    public var maxPositionEmbeddings: Int
    public var typeVocabSize: Int
    public var layerNormEps: Float
    /// Class names by index; its size is the number of labels (transformers' default is 2).
    public var id2label: [Int: String]

    public var numLabels: Int { id2label.count }
    public var headDim: Int { hiddenSize / numAttentionHeads }

    enum CodingKeys: String, CodingKey {
        case vocabSize = "vocab_size", hiddenSize = "hidden_size", numHiddenLayers = "num_hidden_layers"
        case numAttentionHeads = "num_attention_heads", intermediateSize = "intermediate_size"
        case maxPositionEmbeddings = "max_position_embeddings", typeVocabSize = "type_vocab_size"
        case layerNormEps = "layer_norm_eps", id2label, numLabels = "num_labels", hiddenAct = "hidden_act"
        case positionEmbeddingType = "position_embedding_type", problemType = "problem_type"
    }

    public init(vocabSize: Int, hiddenSize: Int, numHiddenLayers: Int, numAttentionHeads: Int, intermediateSize: Int,
                maxPositionEmbeddings: Int = 512, typeVocabSize: Int = 2, layerNormEps: Float = 1e-12,
                numLabels: Int = 2) throws(ModelError) {
        self.vocabSize = vocabSize
        self.hiddenSize = hiddenSize
        self.numHiddenLayers = numHiddenLayers
        self.numAttentionHeads = numAttentionHeads
        self.intermediateSize = intermediateSize
        self.maxPositionEmbeddings = maxPositionEmbeddings
        self.typeVocabSize = typeVocabSize
        self.layerNormEps = layerNormEps
        guard numLabels >= 2 && numLabels < 1 << 16 else {
            throw .invalidConfiguration("num_labels must be in 2..<65536 for single-label classification, got \(numLabels)")
        }
        self.id2label = Dictionary(uniqueKeysWithValues: (0..<numLabels).map { ($0, "LABEL_\($0)") })
        try validate()
    }

    public init(from decoder: any Decoder) throws {
        let c = try decoder.container(keyedBy: CodingKeys.self)
        if let act = try c.decodeIfPresent(String.self, forKey: .hiddenAct), act != "gelu" {
            throw ModelError.invalidConfiguration("hidden_act '\(act)' is not supported for BERT (only exact 'gelu')")
        }
        if let problem = try c.decodeIfPresent(String.self, forKey: .problemType), problem != "single_label_classification" {
            throw ModelError.invalidConfiguration("problem_type '\(problem)' is not supported (only 'single_label_classification')")
        }
        if let kind = try c.decodeIfPresent(String.self, forKey: .positionEmbeddingType), kind != "absolute" {
            throw ModelError.invalidConfiguration("position_embedding_type '\(kind)' is not supported (only 'absolute')")
        }
        let labels = try c.decodeIfPresent([String: String].self, forKey: .id2label)
        let count = try c.decodeIfPresent(Int.self, forKey: .numLabels) ?? labels?.count ?? 2
        try self.init(
            vocabSize: c.decode(Int.self, forKey: .vocabSize), hiddenSize: c.decode(Int.self, forKey: .hiddenSize),
            numHiddenLayers: c.decode(Int.self, forKey: .numHiddenLayers),
            numAttentionHeads: c.decode(Int.self, forKey: .numAttentionHeads),
            intermediateSize: c.decode(Int.self, forKey: .intermediateSize),
            maxPositionEmbeddings: c.decodeIfPresent(Int.self, forKey: .maxPositionEmbeddings) ?? 512,
            typeVocabSize: c.decodeIfPresent(Int.self, forKey: .typeVocabSize) ?? 2,
            layerNormEps: c.decodeIfPresent(Float.self, forKey: .layerNormEps) ?? 1e-12,
            numLabels: count)
        if let labels {
            var map: [Int: String] = [:]
            for (k, v) in labels {
                guard let i = Int(k), i >= 0, i < count else { throw ModelError.invalidConfiguration("id2label key '\(k)' is not an index below \(count)") }
                map[i] = v
            }
            guard map.count == count else { throw ModelError.invalidConfiguration("id2label has \(map.count) entries for \(count) labels") }
            id2label = map
        }
    }

    public func encode(to encoder: any Encoder) throws {
        var c = encoder.container(keyedBy: CodingKeys.self)
        try c.encode(vocabSize, forKey: .vocabSize)
        try c.encode(hiddenSize, forKey: .hiddenSize)
        try c.encode(numHiddenLayers, forKey: .numHiddenLayers)
        try c.encode(numAttentionHeads, forKey: .numAttentionHeads)
        try c.encode(intermediateSize, forKey: .intermediateSize)
        try c.encode(maxPositionEmbeddings, forKey: .maxPositionEmbeddings)
        try c.encode(typeVocabSize, forKey: .typeVocabSize)
        try c.encode(layerNormEps, forKey: .layerNormEps)
        try c.encode(Dictionary(uniqueKeysWithValues: id2label.map { (String($0.key), $0.value) }), forKey: .id2label)
        try c.encode("gelu", forKey: .hiddenAct)
    }

    public func validate() throws(ModelError) {
        let positive = [("vocab_size", vocabSize), ("hidden_size", hiddenSize), ("num_hidden_layers", numHiddenLayers),
                        ("num_attention_heads", numAttentionHeads), ("intermediate_size", intermediateSize),
                        ("max_position_embeddings", maxPositionEmbeddings), ("type_vocab_size", typeVocabSize),
                        ("num_labels", numLabels)]
        for (name, v) in positive where v <= 0 { throw .invalidConfiguration("\(name) must be positive, got \(v)") }
        guard hiddenSize % numAttentionHeads == 0 else {
            throw .invalidConfiguration("hidden_size (\(hiddenSize)) must be a multiple of num_attention_heads (\(numAttentionHeads))")
        }
        try checkParameterCount(encoderMatrixShapes + [[numLabels, hiddenSize]])
    }

    /// The encoder's weight matrices' sizes as products of dimensions (no pooler, no head).
    var encoderMatrixShapes: [[Int]] {
        [
            [vocabSize, hiddenSize], [maxPositionEmbeddings, hiddenSize], [typeVocabSize, hiddenSize],
            [numHiddenLayers, 4, hiddenSize, hiddenSize],
            [numHiddenLayers, 2, hiddenSize, intermediateSize],
        ]
    }

    /// Parameters in the encoder's weight matrices, from the configuration alone: what any
    /// checkpoint of this model must hold (a classification head may be new).
    public var encoderMatrixParameterCount: Int { (try? checkParameterCount(encoderMatrixShapes)) ?? .max }
}

/// word + position + token-type embeddings, then LayerNorm.   ids: [B, T] → [B, T, C]
public final class BertEmbeddings: Module {
    public let wordEmbeddings, positionEmbeddings, tokenTypeEmbeddings: Embedding
    public let layerNorm: LayerNorm
    let sum = Tensor(shape: [0])

    init(_ cfg: BertConfiguration) {
        wordEmbeddings = Embedding(count: cfg.vocabSize, dimension: cfg.hiddenSize)
        positionEmbeddings = Embedding(count: cfg.maxPositionEmbeddings, dimension: cfg.hiddenSize)
        tokenTypeEmbeddings = Embedding(count: cfg.typeVocabSize, dimension: cfg.hiddenSize)
        layerNorm = LayerNorm(dimension: cfg.hiddenSize, epsilon: cfg.layerNormEps)
    }

    public var children: [(name: String, module: any Module)] {
        [("word_embeddings", wordEmbeddings), ("position_embeddings", positionEmbeddings),
         ("token_type_embeddings", tokenTypeEmbeddings), ("LayerNorm", layerNorm)]
    }

    public var ownBuffers: [WorkBuffer] { [WorkBuffer(sum, .activation) { [layerNorm] in $0.rows * layerNorm.dimension }] }

    func forward(_ input: TokenBatch) -> Tensor {
        let shape = [input.batch, input.length]
        let types = input.tokenTypeIds ?? [Int](repeating: 0, count: input.inputIds.count)
        add(wordEmbeddings.forward(ids: input.inputIds, shape: shape),
            positionEmbeddings.forward(ids: input.positions, shape: shape), into: sum)
        addInPlace(sum, tokenTypeEmbeddings.forward(ids: types, shape: shape))
        return layerNorm.forward(sum)
    }

    func backward(_ dOut: Tensor) {
        let dSum = layerNorm.backward(dOut)
        wordEmbeddings.backward(dSum)
        positionEmbeddings.backward(dSum)
        tokenTypeEmbeddings.backward(dSum)
    }
}

/// One post-norm encoder block:
///
///     a   = LN₁(x + attention.output.dense(selfattn(x)))
///     out = LN₂(a + output.dense(gelu(intermediate.dense(a))))
public final class BertLayer: Module {
    public let query, key, value, attentionOutput, intermediate, output: LoRALinear
    public let attentionLayerNorm, outputLayerNorm: LayerNorm
    let attention: ScaledDotProductAttention
    let gelu: GELU
    let attentionSum = Tensor(shape: [0])
    let outputSum = Tensor(shape: [0])
    let attendedGradient = Tensor(shape: [0])
    let contextGradient = Tensor(shape: [0])
    let activationGradient = Tensor(shape: [0])
    let inputGradient = Tensor(shape: [0])

    init(_ cfg: BertConfiguration) {
        let c = cfg.hiddenSize, i = cfg.intermediateSize
        query = LoRALinear(name: "", inFeatures: c, outFeatures: c, bias: true)
        key = LoRALinear(name: "", inFeatures: c, outFeatures: c, bias: true)
        value = LoRALinear(name: "", inFeatures: c, outFeatures: c, bias: true)
        attentionOutput = LoRALinear(name: "", inFeatures: c, outFeatures: c, bias: true)
        intermediate = LoRALinear(name: "", inFeatures: c, outFeatures: i, bias: true)
        output = LoRALinear(name: "", inFeatures: i, outFeatures: c, bias: true)
        gelu = GELU(width: i)
        attentionLayerNorm = LayerNorm(dimension: c, epsilon: cfg.layerNormEps)
        outputLayerNorm = LayerNorm(dimension: c, epsilon: cfg.layerNormEps)
        attention = ScaledDotProductAttention(heads: cfg.numAttentionHeads, kvHeads: cfg.numAttentionHeads, headDimension: cfg.headDim)
    }

    /// The projections first, then the norms: the order of a checkpoint's parameters.
    public var children: [(name: String, module: any Module)] {
        [("attention.self.query", query), ("attention.self.key", key), ("attention.self.value", value),
         ("attention.output.dense", attentionOutput), ("intermediate.dense", intermediate), ("output.dense", output),
         ("attention.output.LayerNorm", attentionLayerNorm), ("output.LayerNorm", outputLayerNorm),
         ("attention.self.attention", attention), ("intermediate.intermediate_act_fn", gelu)]
    }

    public var ownBuffers: [WorkBuffer] {
        let c = query.inFeatures, i = intermediate.outFeatures
        return [WorkBuffer(attentionSum, .activation) { $0.rows * c }, WorkBuffer(outputSum, .activation) { $0.rows * c },
                WorkBuffer(attendedGradient, .gradient) { $0.rows * c }, WorkBuffer(contextGradient, .gradient) { $0.rows * c },
                WorkBuffer(activationGradient, .gradient) { $0.rows * i }, WorkBuffer(inputGradient, .gradient) { $0.rows * c }]
    }

    func forward(_ x: Tensor, batch: Int, length: Int, mask: AttentionMask) -> Tensor {
        let context = attention.forward(q: query.forward(x), k: key.forward(x), v: value.forward(x),
                                        batch: batch, length: length, mask: mask)
        add(x, attentionOutput.forward(context), into: attentionSum)
        let attended = attentionLayerNorm.forward(attentionSum)
        add(attended, output.forward(gelu.forward(intermediate.forward(attended))), into: outputSum)
        return outputLayerNorm.forward(outputSum)
    }

    func backward(_ dOut: Tensor) -> Tensor {
        let dOutputSum = outputLayerNorm.backward(dOut)
        attendedGradient.resize(dOut.shape)
        attendedGradient.copy(from: dOutputSum)   // residual path
        activationGradient.resize(gelu.output.shape)
        output.backward(dOutputSum, dx: activationGradient)
        intermediate.backward(gelu.backward(activationGradient), dx: attendedGradient, accumulate: true)
        let dAttentionSum = attentionLayerNorm.backward(attendedGradient)
        inputGradient.resize(dOut.shape)
        inputGradient.copy(from: dAttentionSum)   // residual path
        contextGradient.resize(attention.output.shape)
        attentionOutput.backward(dAttentionSum, dx: contextGradient)
        let (dq, dk, dv) = attention.backward(contextGradient)
        query.backward(dq, dx: inputGradient, accumulate: true)
        key.backward(dk, dx: inputGradient, accumulate: true)
        value.backward(dv, dx: inputGradient, accumulate: true)
        return inputGradient
    }
}

/// `BertForSequenceClassification`: embeddings → encoder → tanh pooler on the first token →
/// linear classifier.   ids: [B, T] → logits: [B, K]
public final class BertForSequenceClassification: AdaptableModel {
    public let adapterRegistry = AdapterRegistry()
    public let config: BertConfiguration
    public let embeddings: BertEmbeddings
    public let layers: [BertLayer]
    public let pooler: LoRALinear
    public let classifier: LoRALinear
    let poolerActivation: Tanh
    let lossFunction: CrossEntropyLoss
    let firstTokens = Tensor(shape: [0])          // [B, C]
    let firstTokensGradient = Tensor(shape: [0])  // [B, C]
    let pooledGradient = Tensor(shape: [0])       // [B, C]
    let hiddenGradient = Tensor(shape: [0])       // [B, T, C]

    public init(_ config: BertConfiguration) throws(ModelError) {
        try config.validate()
        self.config = config
        embeddings = BertEmbeddings(config)
        layers = (0..<config.numHiddenLayers).map { _ in BertLayer(config) }
        pooler = LoRALinear(name: "", inFeatures: config.hiddenSize, outFeatures: config.hiddenSize, bias: true)
        poolerActivation = Tanh(width: config.hiddenSize)
        classifier = LoRALinear(name: "", inFeatures: config.hiddenSize, outFeatures: config.numLabels, bias: true)
        lossFunction = CrossEntropyLoss(classes: config.numLabels)
        nameModules()
    }

    public var children: [(name: String, module: any Module)] {
        [("bert.embeddings", embeddings)] + layers.enumerated().map { ("bert.encoder.layer.\($0.offset)", $0.element) }
            + [("bert.pooler.dense", pooler), ("bert.pooler.activation", poolerActivation), ("classifier", classifier), ("loss", lossFunction)]
    }

    /// The pooler, its activation, the classifier and the loss see one row per sequence (the first token).
    public func shape(ofChild name: String, in shape: PassShape) -> PassShape {
        name.hasPrefix("bert.") && !name.hasPrefix("bert.pooler") ? shape : PassShape(batch: shape.batch, length: 1)
    }

    /// The first tokens and the gradients that flow from the head into the encoder.
    public var ownBuffers: [WorkBuffer] {
        let c = config.hiddenSize
        return [WorkBuffer(firstTokens, .activation) { $0.batch * c }, WorkBuffer(firstTokensGradient, .gradient) { $0.batch * c },
                WorkBuffer(pooledGradient, .gradient) { $0.batch * c }, WorkBuffer(hiddenGradient, .gradient) { $0.rows * c }]
    }

    /// Every linear module, less the classifier for sequence classification (PEFT's rule).
    public func allLinearModulePaths(taskType: String?) -> Set<String> {
        Set(linearModules.map(\.name).filter { !(taskType == "SEQ_CLS" && $0 == "classifier") })
    }

    /// The encoder's last hidden states [B, T, C] (`last_hidden_state`).
    public func hiddenStates(_ input: TokenBatch) throws(ModelError) -> Tensor {
        try input.validate(vocabularySize: config.vocabSize, maxPositions: config.maxPositionEmbeddings,
                           typeVocabularySize: config.typeVocabSize)
        let mask = AttentionMask(causal: false, keyPadding: input.attentionMask)
        var x = embeddings.forward(input)
        for layer in layers { x = layer.forward(x, batch: input.batch, length: input.length, mask: mask) }
        return x
    }

    /// Sentence embeddings as sentence-transformers computes them: the last hidden states
    /// pooled over real tokens (mean by default, as all-MiniLM-L6-v2), L2-normalised when the
    /// pipeline has a Normalize module. Truncation is the caller's (`SentencePooling.maxSequenceLength`).
    public func sentenceEmbeddings(_ input: TokenBatch, pooling: SentencePooling = SentencePooling()) throws(ModelError) -> [[Float]] {
        let x = try hiddenStates(input)
        let c = config.hiddenSize
        return (0..<input.batch).map { b in
            var sum = [Double](repeating: 0, count: c)
            var maximum = [Double](repeating: -.infinity, count: c)
            var count = 0.0
            for t in 0..<input.length where (input.attentionMask?[b * input.length + t] ?? 1) != 0 {
                let row = x.data + (b * input.length + t) * c
                for j in 0..<c {
                    sum[j] += Double(row[j])
                    maximum[j] = max(maximum[j], Double(row[j]))
                }
                count += 1
            }
            let first = x.data + b * input.length * c
            let pooled: [Double] = switch pooling.mode {
            case .mean: sum.map { $0 / max(count, 1e-9) }
            case .meanSqrtLength: sum.map { $0 / max(count, 1e-9).squareRoot() }
            case .max: maximum
            case .cls: (0..<c).map { Double(first[$0]) }
            }
            guard pooling.normalize else { return pooled.map { Float($0) } }
            let norm = max(pooled.reduce(0) { $0 + $1 * $1 }.squareRoot(), 1e-12)
            return pooled.map { Float($0 / norm) }
        }
    }

    /// Class logits [B, K].
    public func logits(_ input: TokenBatch) throws(ModelError) -> Tensor {
        let x = try hiddenStates(input)
        let c = config.hiddenSize
        firstTokens.resize([input.batch, c])
        for b in 0..<input.batch { (firstTokens.data + b * c).update(from: x.data + b * input.length * c, count: c) }
        return classifier.forward(poolerActivation.forward(pooler.forward(firstTokens)))
    }

    /// Mean cross-entropy against `labels` ([B], class indices); with `backward`, accumulates
    /// the gradients of every trainable parameter.
    public func loss(_ input: TokenBatch, labels: [Int], backward: Bool) throws(ModelError) -> Float {
        if backward { try requireUnmerged("training") }
        guard labels.count == input.batch else { throw .invalidInput("\(labels.count) labels for a batch of \(input.batch)") }
        if let bad = labels.first(where: { $0 != ignoreIndex && ($0 < 0 || $0 >= config.numLabels) }) {
            throw .invalidInput("label \(bad) outside 0..<\(config.numLabels)")
        }
        let logits = try logits(input)
        let (loss, _) = lossFunction.forwardBackward(logits: logits, targets: labels)
        if backward { self.backward(lossFunction.logitsGradient, input: input) }
        return loss
    }

    private func backward(_ dLogits: Tensor, input: TokenBatch) {
        let c = config.hiddenSize
        pooledGradient.resize([input.batch, c])
        classifier.backward(dLogits, dx: pooledGradient)
        firstTokensGradient.resize([input.batch, c])
        pooler.backward(poolerActivation.backward(pooledGradient), dx: firstTokensGradient)
        hiddenGradient.resize([input.batch, input.length, c])
        hiddenGradient.zero()
        for b in 0..<input.batch {
            (hiddenGradient.data + b * input.length * c).update(from: firstTokensGradient.data + b * c, count: c)
        }
        var d = hiddenGradient
        for layer in layers.reversed() { d = layer.backward(d) }
        embeddings.backward(d)
    }
}
