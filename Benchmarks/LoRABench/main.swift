// Micro-benchmarks of the numerical core. Speeds are reported as ratios against the machine's
// own sgemm, measured in the same run, because the machines are shared and noisy: every figure
// is the median of several repetitions after a warm-up.
//
//     swift run -c release lora-bench [--quick]
import Foundation
import Kernels
import Layers
import LoRA
import Models
import Training

let quick = CommandLine.arguments.contains("--quick")
let repetitions = quick ? 3 : 7

func seconds(_ body: () throws -> Void) rethrows -> Double {
    let start = DispatchTime.now().uptimeNanoseconds
    try body()
    return Double(DispatchTime.now().uptimeNanoseconds - start) / 1e9
}

func median(_ values: [Double]) -> Double {
    let s = values.sorted()
    return s.count % 2 == 1 ? s[s.count / 2] : (s[s.count / 2 - 1] + s[s.count / 2]) / 2
}

/// Median seconds of `body` over `repetitions` runs after one warm-up run.
func measure(_ body: () throws -> Void) rethrows -> Double {
    try body()
    return median(try (0..<repetitions).map { _ in try seconds(body) })
}

func random(_ shape: [Int], seed: UInt64, scale: Float = 0.02) -> Tensor {
    var g = SplitMix64(seed: seed)
    return Tensor(shape: shape, generator: { g.nextGaussian() * scale })
}

func gflops(_ flops: Double, _ seconds: Double) -> Double { flops / seconds / 1e9 }
func pad(_ s: String, _ n: Int) -> String { s.count >= n ? s : s + String(repeating: " ", count: n - s.count) }
func fmt(_ x: Double, _ digits: Int = 1) -> String { String(format: "%.\(digits)f", x) }

print("swift-lora micro-benchmark — \(ProcessInfo.processInfo.activeProcessorCount) cores, OpenBLAS threads: \(matmulThreads), \(blasConfiguration), median of \(repetitions)")

// 1. The machine's own sgemm, on the shapes that dominate training and on a square reference.
//    The square reference is measured again at the end; the ratios use the median of both runs.
func sgemmRate(_ m: Int, _ n: Int, _ k: Int) -> Double {
    let a = random([m, k], seed: 1), b = random([k, n], seed: 2), c = Tensor(shape: [m, n])
    let t = measure { matmul(m: m, n: n, k: k, a.data, lda: k, b.data, ldb: n, c.data, ldc: n) }
    return gflops(2.0 * Double(m * n * k), t)
}
print("\nsgemm (machine reference):")
for (m, n, k) in [(512, 576, 576), (512, 1536, 576), (512, 576, 1536)] {
    print("  \(pad("\(m)x\(n)x\(k)", 16)) \(fmt(sgemmRate(m, n, k))) GFLOP/s")
}
var squareRates = (0..<3).map { _ in sgemmRate(1024, 1024, 1024) }
print("  \(pad("1024x1024x1024", 16)) \(squareRates.map { fmt($0) }.joined(separator: ", ")) GFLOP/s")

// 2. LoRALinear forward + backward, 512 tokens, r = 8, frozen W0.
let tokens = 512, rank = 8
var loraResults: [(shape: String, seconds: Double, rate: Double)] = []
for (inF, outF) in [(576, 576), (576, 1536), (1536, 576)] {
    let layer = LoRALinear(name: "bench", inFeatures: inF, outFeatures: outF, bias: false)
    layer.base.weight.value.copy(from: random([outF, inF], seed: 3))
    var g = SplitMix64(seed: 4)
    let adapter = try LoRAWeights(inFeatures: inF, outFeatures: outF, settings: LoRASettings(rank: rank, alpha: 16), generator: &g)
    adapter.b.value.copy(from: random([outF, rank], seed: 5))
    try layer.attach(adapter)
    let x = random([tokens, inF], seed: 6, scale: 1), dy = random([tokens, outF], seed: 7, scale: 1), dx = Tensor(shape: [tokens, inF])
    let t = measure {
        _ = layer.forward(x)
        layer.backward(dy, dx: dx)
    }
    // forward: W0 (2·N·in·out) + low rank (2·N·r·(in+out)); backward: dx through W0 (2·N·in·out)
    // + dB, dh (2·N·out·r each) + dA, dx low-rank (2·N·r·in each). No dW for the frozen W0.
    let n = Double(tokens), i = Double(inF), o = Double(outF), r = Double(rank)
    let flops = 4 * n * i * o + 2 * n * r * (i + o) + 4 * n * o * r + 4 * n * r * i
    loraResults.append(("\(inF)→\(outF)", t, gflops(flops, t)))
}

// 3. One LoRA training step of a SmolLM2-135M-sized random Llama (batch 4 × 128 tokens).
let config = try LlamaConfiguration(vocabSize: 49152, hiddenSize: 576, intermediateSize: 1536, numHiddenLayers: 30,
                                    numAttentionHeads: 9, numKeyValueHeads: 3, rmsNormEps: 1e-5, ropeTheta: 100_000,
                                    maxPositionEmbeddings: 8192, tieWordEmbeddings: true)
let model = try LlamaForCausalLM(config)
for (i, (_, p)) in model.namedParameters.enumerated() where p.shape.count == 2 {
    p.value.copy(from: random(p.shape, seed: 100 + UInt64(i)))
}
try model.addLoRA(targets: ["q_proj", "k_proj", "v_proj", "o_proj"], settings: LoRASettings(rank: 8, alpha: 16), seed: 1)
let optimizer = AdamW(parameters: model.trainableParameters, learningRate: 2e-4)
let batchSize = 4, length = 128
var g = SplitMix64(seed: 9)
let ids = (0..<batchSize * length).map { _ in Int(g.next() % UInt64(config.vocabSize)) }
let batch = TokenBatch(batch: batchSize, length: length, inputIds: ids)
let stepTime = try measure {
    optimizer.zeroGradients()
    _ = try model.loss(batch, labels: ids, backward: true)
    optimizer.update()
}
// FLOPs of a LoRA step: every linear forward + its dx (frozen, no dW), the LM head forward + dx
// (tied embedding frozen), attention (QKᵀ and PV forward, four such products backward), and
// the low-rank paths (small). Elementwise work is not counted.
let n = Double(batchSize * length)
let linearWeights = Double(config.numHiddenLayers * (576 * 576 * 2 + 576 * 192 * 2 + 3 * 576 * 1536))
let headWeights = Double(config.vocabSize * 576)
let attention = Double(config.numHiddenLayers) * 2 * Double(batchSize * 9 * length * length * 64) * 2
let lowRank = Double(config.numHiddenLayers) * n * 8 * Double(2 * (576 + 576) + 2 * (576 + 192)) * 6
let stepFLOPs = 4 * n * (linearWeights + headWeights) + attention * 3 + lowRank
let stepRate = gflops(stepFLOPs, stepTime)
squareRates += (0..<3).map { _ in sgemmRate(1024, 1024, 1024) }
let machineGFLOPS = median(squareRates)
print("  1024x1024x1024 again after the workloads: \(squareRates.suffix(3).map { fmt($0) }.joined(separator: ", ")) GFLOP/s")
print("  → machine reference (median): \(fmt(machineGFLOPS)) GFLOP/s")

print("\nLoRALinear forward + backward (N = 512 tokens, r = 8, W0 frozen, dx computed):")
print("  \(pad("shape", 12)) \(pad("ms", 8)) \(pad("GFLOP/s", 9)) fraction of sgemm")
for (shape, t, rate) in loraResults {
    print("  \(pad(shape, 12)) \(pad(fmt(t * 1000, 2), 8)) \(pad(fmt(rate), 9)) \(fmt(rate / machineGFLOPS, 2))")
}
let trainable = model.trainableParameters.reduce(0) { $0 + $1.value.count }
let total = model.namedParameters.reduce(0) { $0 + $1.parameter.value.count } + trainable
print("\nLoRA training step, SmolLM2-135M shapes (30 layers, hidden 576, 9/3 heads, vocab 49152), batch \(batchSize)×\(length):")
print("  trainable \(trainable) of \(total) parameters (\(fmt(100 * Double(trainable) / Double(total), 3))%), q/k/v/o r=8")
print("  step \(fmt(stepTime * 1000, 0)) ms, \(fmt(n / stepTime, 0)) tokens/s, \(fmt(stepFLOPs / 1e9, 1)) GFLOP per step")
print("  \(fmt(stepRate)) GFLOP/s = \(fmt(stepRate / machineGFLOPS, 2)) of the machine's sgemm(1024³)")
