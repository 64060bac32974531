#if canImport(Glibc)
import Glibc
#endif

/// Reusable work memory for the temporary buffers of the packed products (decoded tiles, bf16
/// copies of activations, interleaved strips of W): a product takes a block, uses it and gives
/// it back. Allocating them per call cost a page fault per 4 KiB every time (`perf`: 3–4% of a
/// bf16 training step in `exc_page_fault`), because blocks of megabytes come fresh from the
/// kernel. The pool keeps at most `capacity` blocks; contents are not cleared between uses.
public final class ScratchPool: @unchecked Sendable {   // `blocks` is only touched under `lock`
    private struct Block { let pointer: UnsafeMutableRawPointer; let bytes: Int }
    private let lock = PthreadLock()
    private var blocks: [Block] = []
    private let capacity: Int

    public static let shared = ScratchPool(capacity: 8)

    init(capacity: Int) { self.capacity = capacity }

    /// Runs `body` with at least `bytes` bytes of 64-byte-aligned memory (safe to call from
    /// several threads at once: each gets its own block).
    public func withScratch<R>(bytes: Int, _ body: (UnsafeMutableRawPointer) throws -> R) rethrows -> R {
        let block = take(max(bytes, 64))
        defer { giveBack(block) }
        return try body(block.pointer)
    }

    private func take(_ bytes: Int) -> Block {
        let reused = lock.withLock { () -> Block? in
            // The smallest block that fits.
            guard let i = blocks.indices.filter({ blocks[$0].bytes >= bytes }).min(by: { blocks[$0].bytes < blocks[$1].bytes }) else {
                return nil
            }
            return blocks.remove(at: i)
        }
        return reused ?? Block(pointer: .allocate(byteCount: bytes, alignment: 64), bytes: bytes)
    }

    private func giveBack(_ block: Block) {
        let dropped = lock.withLock { () -> Block? in
            blocks.append(block)
            guard blocks.count > capacity, let i = blocks.indices.min(by: { blocks[$0].bytes < blocks[$1].bytes }) else { return nil }
            return blocks.remove(at: i)
        }
        dropped?.pointer.deallocate()
    }
}

/// A pthread mutex. Swift's `Synchronization.Mutex` would do the same job, but on Linux
/// ThreadSanitizer cannot see its ordering (the lock lives in an uninstrumented library) and
/// reports every access it guards as a race; pthread's is intercepted, so `make test-tsan`
/// stays quiet unless something really races.
final class PthreadLock: @unchecked Sendable {
    private let mutex = UnsafeMutablePointer<pthread_mutex_t>.allocate(capacity: 1)

    init() { pthread_mutex_init(mutex, nil) }

    deinit {
        pthread_mutex_destroy(mutex)
        mutex.deallocate()
    }

    func withLock<R>(_ body: () throws -> R) rethrows -> R {
        pthread_mutex_lock(mutex)
        defer { pthread_mutex_unlock(mutex) }
        return try body()
    }
}
