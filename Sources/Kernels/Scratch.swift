import Synchronization

/// Reusable work memory for the temporary buffers of the packed products (decoded tiles, bf16
/// copies of activations, interleaved strips of W): a product takes a block, uses it and gives
/// it back. Allocating them per call cost a page fault per 4 KiB every time (`perf`: 3–4% of a
/// bf16 training step in `exc_page_fault`), because blocks of megabytes come fresh from the
/// kernel. The pool keeps at most `capacity` blocks; contents are not cleared between uses.
public final class ScratchPool: Sendable {
    private struct Block: @unchecked Sendable { let pointer: UnsafeMutableRawPointer; let bytes: Int }
    private let blocks = Mutex<[Block]>([])
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
        let reused = blocks.withLock { list -> Block? in
            // The smallest block that fits.
            guard let i = list.indices.filter({ list[$0].bytes >= bytes }).min(by: { list[$0].bytes < list[$1].bytes }) else { return nil }
            return list.remove(at: i)
        }
        return reused ?? Block(pointer: .allocate(byteCount: bytes, alignment: 64), bytes: bytes)
    }

    private func giveBack(_ block: Block) {
        let dropped = blocks.withLock { list -> Block? in
            list.append(block)
            guard list.count > capacity, let i = list.indices.min(by: { list[$0].bytes < list[$1].bytes }) else { return nil }
            return list.remove(at: i)
        }
        dropped?.pointer.deallocate()
    }
}
