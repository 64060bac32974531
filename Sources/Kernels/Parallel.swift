import CBLAS
import Dispatch

/// Work that is not a matrix product (activations, attention heads) split across the cores
/// OpenBLAS may use, so that the second core does not sit idle between GEMMs. Setting
/// `OPENBLAS_NUM_THREADS=1` (or `setMatmulThreads(1)`) makes the whole program single-threaded.
public var parallelWorkers: Int { max(1, Int(openblas_get_num_threads())) }

/// Runs `body` on contiguous, disjoint chunks of `0..<count`, concurrently when there is enough
/// work (at least `minimumChunk` items per chunk); the chunks cover the range exactly once.
/// `body` must only write state that its own chunk owns.
public func parallelChunks(_ count: Int, minimumChunk: Int = 16_384, _ body: (Range<Int>) -> Void) {
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
