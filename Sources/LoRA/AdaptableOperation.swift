import Kernels
import Layers

/// A base operation LoRA can adapt: a product of the rows of its input with a weight matrix
/// W [out, in], y = x·Wᵀ (+ b). The low-rank path adds s·(x·Aᵀ)·Bᵀ to the same rows and a merge
/// adds s·B·A to W, so the adapter math (`LoRAWeights`, `LoRALinear`) needs nothing else of it.
/// `Linear` is one. A convolution is one through its unfolded input (im2col: W [out, in·kh·kw]);
/// the diffusion work adds it, with the hooks that unfold x for the low-rank path and fold its
/// rows back into the output.
public protocol AdaptableOperation: Module {
    /// Columns of W (the row length of the input the product reads).
    var inFeatures: Int { get }
    /// Rows of W.
    var outFeatures: Int { get }
    var weight: Parameter { get }
    var bias: Parameter? { get }
    /// The output buffer of the last forward.
    var output: Tensor { get }
    func forward(_ x: Tensor) -> Tensor
    /// Writes (or adds, with `accumulate`) dx; accumulates the gradients of trainable W and b.
    func backward(_ dy: Tensor, dx: Tensor?, accumulate: Bool)
    /// Another run of this operation: the same weight and bias objects, its own buffers.
    func sharingWeights() -> any AdaptableOperation
}

extension Linear: AdaptableOperation {
    public func sharingWeights() -> any AdaptableOperation { Linear(sharing: self) }
}
