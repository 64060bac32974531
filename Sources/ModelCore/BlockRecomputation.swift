import Kernels
import Layers
import LoRA

/// A block of a model's stack (a decoder layer) as the shared training driver sees it: a module
/// whose work buffers — every `.activation` and `.gradient` buffer of its subtree — are lent
/// from block to block, and whose backward pass the driver calls. Its `.retained` buffers (its
/// output, its input gradient) are its own: the neighbouring blocks read them.
public protocol RecomputableBlock: Module {
    func backward(_ dOut: Tensor) -> Tensor
}

extension RecomputableBlock {
    /// What the forward pass keeps for the backward pass.
    var activationBuffers: [Tensor] { buffers(.activation) }
    /// The backward pass's work buffers.
    var gradientBuffers: [Tensor] { buffers(.gradient) }
    var workBuffers: [Tensor] { activationBuffers + gradientBuffers }

    /// The dropout generators of every adapted projection of the block, in tree order.
    var dropoutStates: [[SplitMix64]] {
        get { modules(of: LoRALinear.self).map(\.module.dropoutStates) }
        set { for (m, s) in zip(modules(of: LoRALinear.self), newValue) { m.module.dropoutStates = s } }
    }
}

/// Runs a stack of blocks forward and backward with one block's work buffers lent to each in
/// turn (`BufferPool`): gradient buffers always; activation buffers too when `enabled`, in which
/// case a training step's forward pass keeps only each block's input (and dropout states) and
/// the backward pass recomputes each block just before differentiating it. Activation memory
/// drops from one set per block to one set in all, for about one more forward pass of compute;
/// forward passes without backward (evaluation) also run every block in the one shared set.
/// Llama and Gemma 3 use it.
public final class BlockRecomputation<Block: RecomputableBlock> {
    private let pool = BufferPool()
    public var enabled = false
    /// What the backward pass needs to recompute the blocks: each block's input, the dropout
    /// states before it ran, and how to run it (the batch's shape, positions and mask captured).
    private var saved: (inputs: [Tensor], dropout: [[[SplitMix64]]], run: (Block, Tensor) -> Tensor)?

    public init() {}

    /// Elements the lent buffers hold (one block's worth), for tests and memory reports.
    package var pooledElements: Int { pool.elementCapacity }

    /// `x` through `blocks` in order; `forBackward` (a training step) with `enabled` keeps what
    /// `backward` needs to recompute them.
    public func forward(_ blocks: [Block], _ x: Tensor, forBackward: Bool, run: @escaping (Block, Tensor) -> Tensor) -> Tensor {
        let recompute = forBackward && enabled
        var x = x
        var inputs: [Tensor] = [], dropout: [[[SplitMix64]]] = []
        for block in blocks {
            // Lending nothing is a no-op; with recomputation on, every forward pass runs in the
            // pool's buffers, or each block would fill its own and undo what recomputation saves.
            let buffers = enabled ? block.workBuffers : []
            if recompute {
                inputs.append(x)
                dropout.append(block.dropoutStates)
            }
            pool.lend(to: buffers)
            x = run(block, x)
            pool.takeBack(from: buffers)
        }
        saved = recompute ? (inputs, dropout, run) : nil
        return x
    }

    /// dOut of the last block → d(input of the first), after `forward(…, forBackward: true)`.
    public func backward(_ blocks: [Block], _ dOut: Tensor) -> Tensor {
        var d = dOut
        let saved = self.saved
        self.saved = nil
        for (i, block) in blocks.enumerated().reversed() {
            let buffers = saved == nil ? block.gradientBuffers : block.workBuffers
            pool.lend(to: buffers)
            if let saved {
                let after = block.dropoutStates
                block.dropoutStates = saved.dropout[i]
                _ = saved.run(block, saved.inputs[i])
                block.dropoutStates = after
            }
            d = block.backward(d)
            pool.takeBack(from: buffers)
        }
        return d
    }
}
