import Kernels
import ModelCore

/// Batches examples with right padding and attention masks, epoch after epoch.
///
/// Each epoch's order is a pure function of `(seed, epoch)` and the examples: the examples are
/// shuffled, each window of `windowBatches` batches is sorted by length (to cut padding), cut
/// into batches, and the batch order is shuffled. Every example appears exactly once per epoch;
/// the last batch of an epoch may be smaller. The state is a few integers, so a checkpoint
/// stores it and `restore` resumes exactly where training stopped.
public struct Batcher: Sendable {
    /// Where the batcher is: the next batch is batch `position` of epoch `epoch`'s order.
    /// `examples` and `batchSize` identify the data the order was computed for.
    public struct State: Sendable, Codable, Equatable {
        public var epoch: Int
        public var position: Int
        public var seed: UInt64
        public var examples: Int
        public var batchSize: Int

        public init(epoch: Int, position: Int, seed: UInt64, examples: Int, batchSize: Int) {
            self.epoch = epoch
            self.position = position
            self.seed = seed
            self.examples = examples
            self.batchSize = batchSize
        }
    }

    public let examples: [Example]
    public let batchSize: Int
    public let shuffle: Bool
    public let bucketByLength: Bool
    public let windowBatches: Int
    public private(set) var state: State
    /// This epoch's batches, as indices into `examples`.
    private var order: [[Int]]

    /// - Precondition: `examples` is not empty and `batchSize ≥ 1` (callers check user input;
    ///   `Dataset.load` never returns an empty list).
    /// - Parameters:
    ///   - shuffle: false keeps file order (evaluation); with `bucketByLength` the windows are
    ///     still sorted by length, in a fixed batch order.
    ///   - windowBatches: how many batches' worth of examples are sorted by length together.
    public init(examples: [Example], batchSize: Int, seed: UInt64, shuffle: Bool = true, bucketByLength: Bool = true,
                windowBatches: Int = 50) {
        precondition(!examples.isEmpty, "Batcher needs at least one example")
        precondition(batchSize >= 1 && windowBatches >= 1, "Batcher needs a batch size and window of at least 1")
        self.examples = examples
        self.batchSize = batchSize
        self.shuffle = shuffle
        self.bucketByLength = bucketByLength
        self.windowBatches = windowBatches
        state = State(epoch: 0, position: 0, seed: seed, examples: examples.count, batchSize: batchSize)
        order = []
        order = epochOrder(0)
    }

    /// Batches per epoch (the last one possibly smaller than `batchSize`).
    public var batchesPerEpoch: Int { (examples.count + batchSize - 1) / batchSize }

    /// Resumes from a saved state: the batches that follow are those that followed when it was saved.
    public mutating func restore(_ saved: State) throws(DataError) {
        guard saved.examples == examples.count else {
            throw .inconsistentBatcherState(reason: "the checkpoint was taken on \(saved.examples) examples, this data has \(examples.count)")
        }
        guard saved.batchSize == batchSize else {
            throw .inconsistentBatcherState(reason: "the checkpoint used batch size \(saved.batchSize), this run \(batchSize)")
        }
        guard saved.epoch >= 0, (0..<batchesPerEpoch).contains(saved.position) else {
            throw .inconsistentBatcherState(reason: "epoch \(saved.epoch), batch \(saved.position) is outside 0..<\(batchesPerEpoch) batches per epoch")
        }
        state = saved
        order = epochOrder(saved.epoch)
    }

    /// The next batch, wrapping into the next epoch after the last. `batch` is right-padded with
    /// `padId` and has an attention mask (1 token, 0 padding) and, when the examples have them,
    /// token type ids (padding 0). `labels`: causal LM, one per position ([B·T], unshifted,
    /// -100 on padding); classification, one class index per row ([B]). `tokens`: real
    /// (unpadded) tokens in the batch.
    public mutating func next(padId: Int) -> (batch: TokenBatch, labels: [Int], tokens: Int) {
        let rows = order[state.position]
        state.position += 1
        if state.position == order.count {
            state.epoch += 1
            state.position = 0
            order = epochOrder(state.epoch)
        }
        return Self.collate(rows.map { examples[$0] }, padId: padId)
    }

    /// Pads `rows` into one batch (see `next`).
    public static func collate(_ rows: [Example], padId: Int) -> (batch: TokenBatch, labels: [Int], tokens: Int) {
        let length = rows.map(\.ids.count).max() ?? 0
        let n = rows.count * length
        var ids = Array(repeating: padId, count: n)
        var mask = Array(repeating: 0, count: n)
        let hasTypes = rows.contains { $0.tokenTypeIds != nil }
        var types: [Int]? = hasTypes ? Array(repeating: 0, count: n) : nil
        // Classification rows carry `label` and no per-token labels.
        let perToken = rows.contains { $0.label == nil }
        var labels = perToken ? Array(repeating: Example.ignored, count: n) : rows.map { $0.label ?? Example.ignored }
        var tokens = 0
        for (b, row) in rows.enumerated() {
            let base = b * length
            for (t, id) in row.ids.enumerated() {
                ids[base + t] = id
                mask[base + t] = 1
            }
            if let rowTypes = row.tokenTypeIds {
                for (t, type) in rowTypes.prefix(row.ids.count).enumerated() { types?[base + t] = type }
            }
            if perToken {
                for (t, label) in row.labels.prefix(row.ids.count).enumerated() { labels[base + t] = label }
            }
            tokens += row.ids.count
        }
        return (TokenBatch(batch: rows.count, length: length, inputIds: ids, attentionMask: mask, tokenTypeIds: types), labels, tokens)
    }

    /// Epoch `epoch`'s batches.
    private func epochOrder(_ epoch: Int) -> [[Int]] {
        // One generator per epoch, so an epoch's order does not depend on how the last one was consumed.
        var generator = SplitMix64(seed: state.seed ^ (UInt64(truncatingIfNeeded: epoch) &* 0xD1B5_4A32_D192_ED03))
        var indices = Array(examples.indices)
        if shuffle { Self.shuffle(&indices, using: &generator) }
        if bucketByLength {
            let window = windowBatches * batchSize
            var start = 0
            while start < indices.count {
                let end = min(start + window, indices.count)
                // Ties broken by index: Swift's sort is not documented as stable.
                indices[start..<end].sort { (examples[$0].ids.count, $0) < (examples[$1].ids.count, $1) }
                start = end
            }
        }
        var batches = stride(from: 0, to: indices.count, by: batchSize).map { Array(indices[$0..<min($0 + batchSize, indices.count)]) }
        if shuffle { Self.shuffle(&batches, using: &generator) }
        return batches
    }

    /// Fisher–Yates with an unbiased bounded draw, written out so the order is the same on
    /// every Swift version (the standard library's `shuffle(using:)` algorithm is not specified).
    static func shuffle<T>(_ array: inout [T], using generator: inout SplitMix64) {
        guard array.count > 1 else { return }
        for i in stride(from: array.count - 1, to: 0, by: -1) {
            let j = Self.draw(below: UInt64(i + 1), using: &generator)
            array.swapAt(i, Int(j))
        }
    }

    /// Uniform in 0..<bound (Lemire's multiply-and-reject).
    static func draw(below bound: UInt64, using generator: inout SplitMix64) -> UInt64 {
        var product = generator.next().multipliedFullWidth(by: bound)
        if product.low < bound {
            let threshold = (0 &- bound) % bound
            while product.low < threshold { product = generator.next().multipliedFullWidth(by: bound) }
        }
        return product.high
    }
}
