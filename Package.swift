// swift-tools-version: 6.0
import PackageDescription

// The targets follow the architecture, bottom to top:
//   CBLAS (OpenBLAS, C boundary), CKernels (bf16 products) → Kernels (tensors, matmul, elementwise math)
//   → Layers (forward + backward of every layer, the module tree) → LoRA (the adapted linear layer)
//   → Formats (safetensors, GGUF) → AdapterFormats (adapter configs and file codecs: PEFT, mlx-lm)
//   → Tokenizers (BPE, WordPiece, SentencePiece; built from GGUF metadata too)
//   → ModelCore (task and architecture protocols, adapters, KV cache, generation) → Models (Llama, BERT, Gemma 3 + registry)
//   and Training (trainer, optimizer; on ModelCore alone) → ModelStore (known offline models) → lora (CLI).
//   FuzzTargets wraps the parsers of untrusted files for libFuzzer (Fuzz/, `make fuzz`).
let package = Package(
    name: "swift-lora",
    products: [
        .library(name: "SwiftLoRA", targets: ["Kernels", "Layers", "LoRA", "Formats", "AdapterFormats", "Diffusion", "Tokenizers", "ModelCore", "Models", "Training", "ModelStore"]),
        .executable(name: "lora", targets: ["lora"]),
        .executable(name: "lora-bench", targets: ["LoRABench"]),
        // The parsers of untrusted files as fuzz targets, for the libFuzzer driver in Fuzz/.
        .library(name: "FuzzTargets", targets: ["FuzzTargets"]),
    ],
    dependencies: [
        .package(url: "https://github.com/apple/swift-argument-parser", from: "1.5.0"),
        .package(url: "https://github.com/jpsim/Yams", from: "5.0.1"),
    ],
    targets: [
        .systemLibrary(
            name: "CBLAS",
            path: "Sources/CBLAS",
            providers: [.apt(["libopenblas-dev"])]
        ),
        // Hand-written C kernels where the BLAS has none (bf16 products with AVX512-BF16).
        .target(name: "CKernels"),
        .target(name: "Kernels", dependencies: ["CBLAS", "CKernels"]),
        .target(name: "Layers", dependencies: ["Kernels"]),
        .target(name: "LoRA", dependencies: ["Kernels", "Layers"]),
        .target(name: "Formats", dependencies: ["Kernels"]),
        // Adapter configurations (PEFT's adapter_config.json) and file formats as codecs that map a
        // format's keys to module paths: PEFT and mlx-lm now; kohya, diffusers and GGUF-LoRA later.
        .target(name: "AdapterFormats", dependencies: ["Kernels", "LoRA", "Formats", "OrderedJSON"]),
        .target(name: "OrderedJSON"),
        .target(name: "Tokenizers", dependencies: ["OrderedJSON", "Formats"]),
        .target(name: "ModelStore"),
        // The model core: the task protocols, the architecture protocol, adapters, KV cache and generation,
        // frozen-weight packing, export. Architectures (Models) and Training build on it, never the other way.
        .target(name: "ModelCore", dependencies: ["Kernels", "Layers", "LoRA", "Formats", "AdapterFormats", "Tokenizers", "OrderedJSON"]),
        // The architectures (Llama/, Bert/, Gemma3/), their registry and the loaders that choose one.
        .target(name: "Models", dependencies: ["Kernels", "Layers", "LoRA", "Formats", "AdapterFormats", "Tokenizers", "OrderedJSON", "ModelCore"]),
        // Stable Diffusion: diffusers checkpoints as weight files and the merging of adapter files into them.
        .target(name: "Diffusion", dependencies: ["Kernels", "Formats", "AdapterFormats"]),
        .target(name: "Training", dependencies: ["Kernels", "Layers", "LoRA", "Formats", "AdapterFormats", "Tokenizers", "ModelCore"]),
        .target(name: "FuzzTargets", dependencies: ["Formats", "LoRA", "AdapterFormats", "ModelStore", "Models", "OrderedJSON", "Tokenizers", "Training"]),
        .executableTarget(
            name: "lora",
            dependencies: ["Kernels", "Formats", "AdapterFormats", "Diffusion", "Models", "Tokenizers", "Training", "ModelStore", .product(name: "ArgumentParser", package: "swift-argument-parser"),
                           .product(name: "Yams", package: "Yams")]
        ),
        .executableTarget(
            name: "LoRABench",
            dependencies: ["Kernels", "Layers", "LoRA", "Models", "Training"],
            path: "Benchmarks/LoRABench"
        ),
        .target(name: "TestSupport", dependencies: ["Kernels", "Formats", "ModelStore"], path: "Tests/TestSupport"),
        .testTarget(name: "KernelsTests", dependencies: ["Kernels", "TestSupport"]),
        .testTarget(name: "LayersTests", dependencies: ["Layers", "TestSupport"]),
        .testTarget(name: "LoRATests", dependencies: ["LoRA", "TestSupport"]),
        .testTarget(name: "AdapterFormatsTests", dependencies: ["AdapterFormats", "LoRA", "Formats", "TestSupport"]),
        .testTarget(name: "DiffusionTests", dependencies: ["Diffusion", "AdapterFormats", "Formats", "Kernels", "TestSupport"]),
        .testTarget(name: "FormatsTests", dependencies: ["Formats", "ModelStore", "TestSupport"]),
        .testTarget(name: "TokenizersTests", dependencies: ["Tokenizers", "Formats", "Models", "ModelStore", "TestSupport"]),
        .testTarget(name: "ModelStoreTests", dependencies: ["ModelStore", "TestSupport"]),
        .testTarget(name: "CLITests", dependencies: ["Models", "Kernels", "ModelStore", "TestSupport"]),
        .testTarget(name: "ModelsTests", dependencies: ["Models", "AdapterFormats", "Training", "TestSupport"]),
        .testTarget(name: "FuzzTargetsTests", dependencies: ["FuzzTargets", "Tokenizers", "ModelStore", "TestSupport"]),
        .testTarget(name: "TrainingTests", dependencies: ["Training", "Models", "Layers", "Tokenizers", "ModelStore", "TestSupport"]),
    ]
)
