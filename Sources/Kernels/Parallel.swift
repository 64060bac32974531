import CBLAS
import Dispatch

/// Work that is not a matrix product (activations, attention heads) split across the cores
/// OpenBLAS may use, so that the second core does not sit idle between GEMMs. Setting
/// `OPENBLAS_NUM_THREADS=1` (or `setMatmulThreads(1)`) makes the whole program single-threaded.
public var parallelWorkers: Int { max(1, Int(openblas_get_num_threads())) }

/// Below this many elements per chunk, handing work to another thread costs more than it saves.
public let elementsPerChunk = 16_384

/// Runs `body` on contiguous, disjoint chunks of `0..<count`, concurrently when there is enough
/// work (at least `minimumChunk` items per chunk); the chunks cover the range exactly once.
/// `body` must only write state that its own chunk owns.
public func parallelChunks(_ count: Int, minimumChunk: Int = elementsPerChunk, _ body: (Range<Int>) -> Void) {
    let chunks = min(parallelWorkers, count / max(minimumChunk, 1))
    if chunks <= 1 { return body(0..<count) }
    let per = (count + chunks - 1) / chunks
    // The chunks are disjoint by construction; callers pass raw tensor pointers, which Swift
    // cannot prove race-free, hence the unchecked hand-over.
    withoutActuallyEscaping(body) { work in
        nonisolated(unsafe) let work = work
        DispatchQueue.concurrentPerform(iterations: chunks) { c in
            let start = c * per
            work(start..<min(start + per, count))
        }
    }
}

/// `parallelChunks` over independent rows of `rowLength` elements, at least `elementsPerChunk`
/// elements per chunk.
public func parallelRows(_ rows: Int, rowLength: Int, _ body: (Range<Int>) -> Void) {
    parallelChunks(rows, minimumChunk: max(1, elementsPerChunk / max(rowLength, 1)), body)
}
