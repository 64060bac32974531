import Kernels
#if canImport(Glibc)
import Glibc
#endif

/// Targets equal to this are ignored (PyTorch's and Hugging Face's convention).
public let ignoreIndex = -100

/// Softmax cross-entropy over rows of logits, the core both losses below share.
///
///     loss_n = logsumexp(z[n]) − z[n, target_n]               for target_n ≠ ignoreIndex
///     dz[n]  = (softmax(z[n]) − onehot(target_n)) · gradScale  (rows with ignored targets: 0)
///
/// `z` is [rows, classes] with row stride `classes`. If `dz` is given it may alias `z`
/// (the gradient overwrites the logits row by row, so no second buffer of probabilities
/// is ever materialised). Returns the summed loss (in Double) over the rows it counted.
/// Rows are split across the cores; the total is summed in row order whatever the split.
public func softmaxCrossEntropyRows(
    _ z: UnsafeMutablePointer<Float>, rows: Int, classes: Int, targets: ArraySlice<Int>,
    gradient dz: UnsafeMutablePointer<Float>?, gradScale: Float
) -> Double {
    precondition(targets.count == rows)
    let targetList = Array(targets)
    let losses = UnsafeMutableBufferPointer<Double>.allocate(capacity: max(rows, 1))
    defer { losses.deallocate() }
    let lossPointer = losses.baseAddress!
    parallelRows(rows, rowLength: classes) { range in
        for r in range {
            lossPointer[r] = softmaxCrossEntropyRow(z + r * classes, classes: classes, target: targetList[r],
                                                    gradient: dz.map { $0 + r * classes }, gradScale: gradScale)
        }
    }
    return losses.prefix(rows).reduce(0, +)
}

/// One row of `softmaxCrossEntropyRows`; returns its loss (0 for an ignored target).
@inline(__always)
func softmaxCrossEntropyRow(_ row: UnsafeMutablePointer<Float>, classes: Int, target: Int,
                            gradient drow: UnsafeMutablePointer<Float>?, gradScale: Float) -> Double {
    if target == ignoreIndex {
        drow?.update(repeating: 0, count: classes)
        return 0
    }
    precondition(target >= 0 && target < classes, "target \(target) outside 0..<\(classes)")
    let maxValue = maximum(row, count: classes)
    let targetLogit = row[target]
    var sum: Float = 0
    if let drow {
        // One exp per element: keep exp(z − max) in the gradient row, normalise after. Three
        // loops without a carried dependency each, so they vectorise (a 49,152-wide LM head row
        // per token makes this the largest elementwise work of a decoder step).
        for j in 0..<classes { drow[j] = fastExp(row[j] - maxValue) }
        sum = total(drow, count: classes)
        let factor = gradScale / sum
        for j in 0..<classes { drow[j] *= factor }
        drow[target] -= gradScale
    } else {
        for j in 0..<classes { sum += expf(row[j] - maxValue) }
    }
    return Double(maxValue + logf(sum) - targetLogit)
}

/// max of `count` floats, eight lanes at a time.
@inline(__always)
func maximum(_ x: UnsafePointer<Float>, count: Int) -> Float {
    var lanes = SIMD8<Float>(repeating: -.infinity)
    var j = 0
    while j + 8 <= count {
        lanes = pointwiseMax(lanes, UnsafeRawPointer(x + j).loadUnaligned(as: SIMD8<Float>.self))
        j += 8
    }
    var result = lanes.max()
    while j < count { result = max(result, x[j]); j += 1 }
    return result
}

/// Sum of `count` floats in eight interleaved partial sums (vectorises; the order is fixed).
@inline(__always)
func total(_ x: UnsafePointer<Float>, count: Int) -> Float {
    var lanes = SIMD8<Float>(repeating: 0)
    var j = 0
    while j + 8 <= count {
        lanes += UnsafeRawPointer(x + j).loadUnaligned(as: SIMD8<Float>.self)
        j += 8
    }
    var result = lanes.sum()
    while j < count { result += x[j]; j += 1 }
    return result
}

/// Mean cross-entropy over the rows whose target is not ignored (for small heads such as a
/// classifier, where the logits are materialised anyway).
///
///     logits: [N, K], targets: [N]  →  loss (scalar);  backward: dlogits [N, K]
public final class CrossEntropyLoss: Module {
    /// K, the number of classes.
    public let classes: Int
    public let logitsGradient = Tensor(shape: [0])

    public init(classes: Int) { self.classes = classes }

    public var ownBuffers: [WorkBuffer] { [WorkBuffer(logitsGradient, .gradient) { [classes] in $0.rows * classes }] }

    /// Returns the mean loss and the number of counted rows, and fills `logitsGradient`
    /// with d(mean loss)/d(logits) (all zeros when no row counts).
    public func forwardBackward(logits: Tensor, targets: [Int]) -> (loss: Float, count: Int) {
        let classes = logits.rowLength, rows = logits.rowCount
        let counted = targets.lazy.filter { $0 != ignoreIndex }.count
        logitsGradient.resize(logits.shape)
        logitsGradient.copy(from: logits)
        let scale: Float = counted > 0 ? 1 / Float(counted) : 0
        let sum = softmaxCrossEntropyRows(logitsGradient.data, rows: rows, classes: classes, targets: targets[...],
                                          gradient: logitsGradient.data, gradScale: scale)
        return (counted > 0 ? Float(sum / Double(counted)) : 0, counted)
    }
}

/// A language-model head fused with its loss, so the [N, V] logits never exist at once.
///
///     x: [N, C], W: [V, C] (the head, often tied to the embedding), targets: [N]
///     loss = mean over counted rows of CE(x[n] · Wᵀ, target_n)
///     dx[n] = dz[n] · W,   dW += dzᵀ · x   (trainable only)
///
/// Rows whose target is ignored cost nothing: counted rows are gathered into chunks of
/// `chunkRows`, and each chunk's logits buffer is overwritten by its own gradient.
public final class ChunkedLMHeadLoss: Module {
    public let chunkRows: Int
    /// V and C of the head it is called with.
    public let vocabularySize: Int, hiddenSize: Int
    public let inputGradient = Tensor(shape: [0])
    private let chunkInput = Tensor(shape: [0])    // [chunk, C] gathered rows
    private let chunkLogits = Tensor(shape: [0])   // [chunk, V] logits, then their gradient
    private let chunkInputGradient = Tensor(shape: [0])

    public init(vocabularySize: Int, hiddenSize: Int, chunkRows: Int = 256) {
        self.vocabularySize = vocabularySize
        self.hiddenSize = hiddenSize
        self.chunkRows = chunkRows
    }

    /// The chunk buffers are allocated at `chunkRows` rows, but a pass of fewer rows touches
    /// (makes resident) only that many.
    public var ownBuffers: [WorkBuffer] {
        let v = vocabularySize, c = hiddenSize, chunk = chunkRows
        return [WorkBuffer(inputGradient, .gradient) { $0.rows * c },
                WorkBuffer(chunkInput, .activation) { min(chunk, $0.rows) * c },
                WorkBuffer(chunkLogits, .activation) { min(chunk, $0.rows) * v },
                WorkBuffer(chunkInputGradient, .gradient) { min(chunk, $0.rows) * c }]
    }

    /// Computes the mean loss; when `computeGradients`, also fills `inputGradient` ([N, C]) and
    /// accumulates the head's gradient if it is trainable.
    public func callAsFunction(_ x: Tensor, head: Parameter, targets: [Int], computeGradients: Bool) -> (loss: Float, count: Int) {
        let c = x.rowLength, n = x.rowCount, vocab = head.shape[0]
        precondition(head.shape == [vocabularySize, hiddenSize] && c == hiddenSize && targets.count == n,
                     "LM-head loss for [\(vocabularySize), \(hiddenSize)] got head \(head.shape), x \(x.shape)")
        if computeGradients {
            inputGradient.resize(x.shape)
            inputGradient.zero()
        }
        var rows: [Int] = []
        rows.reserveCapacity(n)
        for (i, t) in targets.enumerated() where t != ignoreIndex { rows.append(i) }
        guard !rows.isEmpty else { return (0, 0) }
        let scale = 1 / Float(rows.count)
        chunkInput.resize([chunkRows, c])
        chunkLogits.resize([chunkRows, vocab])
        chunkInputGradient.resize([chunkRows, c])
        var total = 0.0
        var chunkTargets = [Int](repeating: 0, count: chunkRows)
        for start in stride(from: 0, to: rows.count, by: chunkRows) {
            let m = min(chunkRows, rows.count - start)
            for r in 0..<m {
                (chunkInput.data + r * c).update(from: x.data + rows[start + r] * c, count: c)
                chunkTargets[r] = targets[rows[start + r]]
            }
            head.multiplyTransposed(chunkInput.data, ldx: c, rows: m, into: chunkLogits.data, ldy: vocab)
            total += softmaxCrossEntropyRows(chunkLogits.data, rows: m, classes: vocab, targets: chunkTargets[0..<m],
                                             gradient: computeGradients ? chunkLogits.data : nil, gradScale: scale)
            guard computeGradients else { continue }
            head.multiply(chunkLogits.data, lddy: vocab, rows: m, into: chunkInputGradient.data, lddx: c)
            for r in 0..<m {
                (inputGradient.data + rows[start + r] * c).update(from: chunkInputGradient.data + r * c, count: c)
            }
            if let dW = head.grad {
                matmul(transposeA: true, m: vocab, n: c, k: m, chunkLogits.data, lda: vocab, chunkInput.data, ldb: c,
                       beta: 1, dW.data, ldc: c)
            }
        }
        return (Float(total / Double(rows.count)), rows.count)
    }
}
