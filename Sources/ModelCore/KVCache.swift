import Kernels
import Layers

/// One layer's keys and values for one sequence. After `append`, `keys` and `values` hold
/// `count` rows (row width `width`), the first at absolute position `firstPosition`, the last the
/// rows just appended: what the new queries attend over.
public protocol LayerKVCache: AnyObject {
    var width: Int { get }
    var count: Int { get }
    var firstPosition: Int { get }
    var keys: UnsafePointer<Float> { get }
    var values: UnsafePointer<Float> { get }
    /// Appends `rows` rows of keys and values (row stride `width`) at the next positions.
    func append(keys: UnsafePointer<Float>, values: UnsafePointer<Float>, rows: Int)
    func reset()
    /// Bytes held now.
    var residentBytes: Int { get }
}

/// Rows of keys and values in position order, grown as needed (by doubling).
final class KeyValueRows {
    let width: Int
    private(set) var keys = Tensor(shape: [0])
    private(set) var values = Tensor(shape: [0])
    private(set) var rowCapacity = 0

    init(width: Int) { self.width = width }

    /// Room for `rows` rows, keeping the first `keeping`.
    func reserve(_ rows: Int, keeping: Int, limit: Int) {
        guard rows > rowCapacity else { return }
        let newCapacity = max(rows, min(max(2 * rowCapacity, 16), limit))
        let k = Tensor(shape: [newCapacity, width]), v = Tensor(shape: [newCapacity, width])
        k.data.update(from: keys.data, count: keeping * width)
        v.data.update(from: values.data, count: keeping * width)
        keys = k
        values = v
        rowCapacity = newCapacity
    }

    func write(at row: Int, keys k: UnsafePointer<Float>, values v: UnsafePointer<Float>, rows: Int) {
        (keys.data + row * width).update(from: k, count: rows * width)
        (values.data + row * width).update(from: v, count: rows * width)
    }

    /// Moves rows from..<from + count to the front.
    func moveToFront(from: Int, count: Int) {
        keys.data.update(from: keys.data + from * width, count: count * width)
        values.data.update(from: values.data + from * width, count: count * width)
    }

    var residentBytes: Int { 2 * rowCapacity * width * MemoryLayout<Float>.size }
}

/// Every position since the start (global attention): mlx-lm's `KVCache`.
public final class StandardKVCache: LayerKVCache {
    private let rows: KeyValueRows
    /// The most positions it will hold (the sequence's capacity).
    public let capacity: Int
    public private(set) var count = 0
    public var firstPosition: Int { 0 }
    public var width: Int { rows.width }
    public var keys: UnsafePointer<Float> { UnsafePointer(rows.keys.data) }
    public var values: UnsafePointer<Float> { UnsafePointer(rows.values.data) }
    public var residentBytes: Int { rows.residentBytes }

    public init(width: Int, capacity: Int) {
        rows = KeyValueRows(width: width)
        self.capacity = capacity
    }

    public func append(keys: UnsafePointer<Float>, values: UnsafePointer<Float>, rows n: Int) {
        precondition(count + n <= capacity, "KV cache: \(count + n) positions exceed its \(capacity)")
        rows.reserve(count + n, keeping: count, limit: capacity)
        rows.write(at: count, keys: keys, values: values, rows: n)
        count += n
    }

    public func reset() { count = 0 }
}

/// Only what a sliding-window layer can still see (mlx-lm's `RotatingKVCache`, transformers'
/// `SlidingWindowLayer`): after a step it holds at most the last `window − 1` old positions plus
/// the new ones, so memory stays near 2 × window rows however long the sequence grows. Older
/// rows are dropped by moving the kept ones to the front once the buffer is full (one move per
/// window of tokens), so the rows stay in position order and contiguous.
public final class SlidingWindowKVCache: LayerKVCache {
    private let rows: KeyValueRows
    public let window: Int
    public private(set) var count = 0
    public private(set) var firstPosition = 0
    public var width: Int { rows.width }
    public var keys: UnsafePointer<Float> { UnsafePointer(rows.keys.data) }
    public var values: UnsafePointer<Float> { UnsafePointer(rows.values.data) }
    public var residentBytes: Int { rows.residentBytes }

    public init(width: Int, window: Int) {
        precondition(window > 0, "a sliding window is positive")
        rows = KeyValueRows(width: width)
        self.window = window
    }

    public func append(keys: UnsafePointer<Float>, values: UnsafePointer<Float>, rows n: Int) {
        let limit = 2 * window
        if count + n > rows.rowCapacity, count + n > limit, count > window - 1 {
            let keep = window - 1
            rows.moveToFront(from: count - keep, count: keep)
            firstPosition += count - keep
            count = keep
        }
        rows.reserve(count + n, keeping: count, limit: limit)
        rows.write(at: count, keys: keys, values: values, rows: n)
        count += n
    }

    public func reset() {
        count = 0
        firstPosition = 0
    }
}

/// Keys and values of every layer for one sequence, so each new token costs one position of
/// work instead of the whole prefix. Each layer has the cache its attention needs (a standard
/// one for global attention, a sliding-window one for local layers); the model chooses.
public final class KVCache {
    /// The most positions this sequence may reach.
    public let capacity: Int
    /// Positions processed so far.
    public private(set) var length = 0
    public let layers: [any LayerKVCache]

    public init(layers: [any LayerKVCache], capacity: Int) {
        self.layers = layers
        self.capacity = capacity
    }

    /// Standard caches on every layer; `width` = key/value heads × head dimension.
    public convenience init(layers: Int, width: Int, capacity: Int) {
        self.init(layers: (0..<layers).map { _ in StandardKVCache(width: width, capacity: capacity) }, capacity: capacity)
    }

    public func reset() {
        length = 0
        for layer in layers { layer.reset() }
    }

    package func advance(by n: Int) { length += n }

    /// Bytes held by every layer now.
    public var residentBytes: Int { layers.reduce(0) { $0 + $1.residentBytes } }

    /// Throws unless `count` more tokens fit.
    package func checkRoom(for count: Int) throws(ModelError) {
        guard count > 0 else { throw .invalidInput("no tokens to run") }
        guard length + count <= capacity else { throw .invalidInput("\(length + count) tokens exceed the cache's \(capacity)") }
    }
}

/// One KV cache per sequence slot, for running several sequences at once (a server's requests):
/// `open` hands out a free slot, `close` returns it (emptied) for the next sequence.
public final class MultiSequenceKVCache {
    private var slots: [KVCache?]
    private var used: [Bool]
    private let make: (Int) -> KVCache
    /// The most positions of each sequence.
    public let capacity: Int

    /// `slots` sequences of up to `capacity` positions, each cache built by `make(capacity)`
    /// when its slot is first used.
    public init(slots: Int, capacity: Int, make: @escaping (_ capacity: Int) -> KVCache) {
        precondition(slots > 0 && capacity > 0, "a multi-sequence cache has at least one slot of at least one position")
        self.capacity = capacity
        self.slots = Array(repeating: nil, count: slots)
        used = Array(repeating: false, count: slots)
        self.make = make
    }

    public var slotCount: Int { slots.count }
    public var freeSlots: Int { used.filter { !$0 }.count }

    /// A free slot with an empty cache; throws when every slot is taken.
    public func open() throws(ModelError) -> Int {
        guard let slot = used.firstIndex(of: false) else { throw .invalidInput("all \(slots.count) sequence slots are in use") }
        used[slot] = true
        if slots[slot] == nil { slots[slot] = make(capacity) }
        return slot
    }

    /// The cache of an open slot.
    public func cache(_ slot: Int) throws(ModelError) -> KVCache {
        guard slots.indices.contains(slot), used[slot], let cache = slots[slot] else { throw .invalidInput("sequence slot \(slot) is not open") }
        return cache
    }

    /// Empties a slot and makes it free again (its buffers are kept for the next sequence).
    public func close(_ slot: Int) {
        guard slots.indices.contains(slot), used[slot] else { return }
        slots[slot]?.reset()
        used[slot] = false
    }

    public var residentBytes: Int { slots.reduce(0) { $0 + ($1?.residentBytes ?? 0) } }
}
