import AdapterFormats
import Diffusion
import Formats
import Foundation
import Kernels
import TestSupport
import Testing

/// Stable Diffusion adapter files merged into tiny random SD1 and SDXL-shaped pipelines (built by
/// diffusers' own constructors), against diffusers' `fuse_lora` and the reference formulas
/// (`Scripts/reference/make_sd_lora_fixtures.py`).
@Suite("Stable Diffusion merges against diffusers")
struct DiffusionMergeTests {
    struct Expected: Decodable {
        struct File: Decodable { let modules: [String]; let note: String }
        let multiplier: Float
        let files: [String: File]
    }

    static let bases = ["sd1-tiny", "sdxl-tiny"]
    static let files = ["kohya", "peft", "diffusers-new", "diffusers-old", "peft-default", "loha", "loha-tucker", "lokr-full",
                        "lokr-lowrank", "locon-mid", "diff", "dora"]

    static func base(_ name: String) -> URL { fixturesDirectory.appendingPathComponent("sd/\(name)") }
    static func adapter(_ base: String, _ name: String) -> URL { fixturesDirectory.appendingPathComponent("sd/\(base)-adapters/\(name).safetensors") }
    static func merged(_ base: String, _ name: String) -> URL { fixturesDirectory.appendingPathComponent("sd/\(base)-merged/\(name).safetensors") }

    static func temporary() -> URL {
        FileManager.default.temporaryDirectory.appendingPathComponent("lora-sd-\(UUID().uuidString)")
    }

    /// Every tensor of a pipeline folder's adaptable components, keyed component.tensor.
    static func weights(_ folder: URL) throws -> [String: Tensor] {
        let checkpoint = try DiffusersCheckpoint(folder: folder)
        var all: [String: Tensor] = [:]
        for (name, component) in checkpoint.components where ["unet", "text_encoder", "text_encoder_2"].contains(name) {
            for w in component.weightFiles { for (k, t) in try w.file.floatTensors() { all[name + "." + k] = t } }
        }
        return all
    }

    @Test(arguments: bases)
    func everySpellingAndAlgorithmMergesAsTheReference(baseName: String) throws {
        let expected = try JSONDecoder().decode(Expected.self, from: Data(contentsOf: fixturesDirectory.appendingPathComponent("sd/\(baseName)-expected.json")))
        let before = try Self.weights(Self.base(baseName))
        for name in Self.files {
            let out = Self.temporary()
            defer { try? FileManager.default.removeItem(at: out) }
            let file = try DiffusionAdapterFile(url: Self.adapter(baseName, name))
            let report = try DiffusionMerge.merge(base: DiffusersCheckpoint(folder: Self.base(baseName)),
                                                  adapters: [.init(file: file, multiplier: expected.multiplier)], output: out, storage: nil)
            let reference = try SafeTensorsFile(url: Self.merged(baseName, name)).floatTensors()
            let after = try Self.weights(out)
            var worst = 0.0, unchangedElsewhere = true
            for (key, value) in after {
                if let r = reference[key] {
                    var scale = 0.0, diff = 0.0
                    for i in 0..<r.count {
                        scale = max(scale, Double(abs(r[i])))
                        diff = max(diff, Double(abs(value[i] - r[i])))
                    }
                    worst = max(worst, diff / max(scale, 1e-12))
                } else if let b = before[key], !b.isBitIdentical(to: value) {
                    unchangedElsewhere = false
                }
            }
            let merged = report.adapters[0]
            print("[\(baseName)] \(name): \(merged.modules) modules merged (\(merged.components.sorted { $0.key < $1.key }.map { "\($0.key) \($0.value)" }.joined(separator: ", ")); \(merged.algorithms)), max relative difference vs reference \(worst); unmatched \(merged.unmatched.count) \(merged.unmatched.prefix(3))")
            #expect(worst <= 1e-5, "\(baseName)/\(name)")
            #expect(unchangedElsewhere, "\(baseName)/\(name): a tensor outside the reference changed")
            #expect(merged.modules == expected.files[name]?.modules.count && merged.unmatched.isEmpty, "\(baseName)/\(name)")
            #expect(Set(reference.keys).isSubset(of: Set(after.keys)))
            // The output keeps the base's layout.
            let layout = { (url: URL) in try FileManager.default.subpathsOfDirectory(atPath: url.path).sorted() }
            #expect(try layout(out) == layout(Self.base(baseName)))
        }
    }

    /// Two adapters at their own multipliers add their changes (kohya's sequential merge):
    /// the kohya file at 0.4 and its PEFT spelling at 0.3 equal the reference at 0.7.
    @Test func adaptersAddUp() throws {
        let out = Self.temporary()
        defer { try? FileManager.default.removeItem(at: out) }
        let base = Self.base("sd1-tiny")
        let a = try DiffusionAdapterFile(url: Self.adapter("sd1-tiny", "kohya"))
        let b = try DiffusionAdapterFile(url: Self.adapter("sd1-tiny", "peft"))
        _ = try DiffusionMerge.merge(base: DiffusersCheckpoint(folder: base), adapters: [.init(file: a, multiplier: 0.4), .init(file: b, multiplier: 0.3)],
                                     output: out, storage: nil)
        let reference = try SafeTensorsFile(url: Self.merged("sd1-tiny", "kohya")).floatTensors()
        let after = try Self.weights(out)
        let worst = reference.map { key, r in maxAbsoluteDifference(after[key]!, r) }.max() ?? .infinity
        print("kohya at 0.4 + PEFT spelling at 0.3 vs the reference at 0.7: max |Δ| \(worst)")
        #expect(worst < 1e-5)
    }

    /// A UNet split into two shards with an index (as large checkpoints ship) merges as the
    /// single file does, and the output keeps the shards and the index.
    @Test func shardedWeightsMergeAsOneFile() throws {
        let base = Self.temporary(), out = Self.temporary()
        defer { try? FileManager.default.removeItem(at: base); try? FileManager.default.removeItem(at: out) }
        try FileManager.default.copyItem(at: Self.base("sd1-tiny"), to: base)
        let unet = base.appendingPathComponent("unet")
        let whole = try SafeTensorsFile(url: unet.appendingPathComponent("diffusion_pytorch_model.safetensors")).floatTensors()
        try FileManager.default.removeItem(at: unet.appendingPathComponent("diffusion_pytorch_model.safetensors"))
        let names = whole.keys.sorted(), half = names.count / 2
        var map: [String: String] = [:]
        for (i, part) in [Array(names[..<half]), Array(names[half...])].enumerated() {
            let file = "diffusion_pytorch_model-0000\(i + 1)-of-00002.safetensors"
            try SafeTensorsWriter.write(Dictionary(uniqueKeysWithValues: part.map { ($0, whole[$0]!) }), to: unet.appendingPathComponent(file))
            for n in part { map[n] = file }
        }
        try JSONSerialization.data(withJSONObject: ["metadata": [:], "weight_map": map]).write(to: unet.appendingPathComponent("diffusion_pytorch_model.safetensors.index.json"))
        let file = try DiffusionAdapterFile(url: Self.adapter("sd1-tiny", "kohya"))
        _ = try DiffusionMerge.merge(base: DiffusersCheckpoint(folder: base), adapters: [.init(file: file, multiplier: 0.7)], output: out, storage: nil)
        let reference = try SafeTensorsFile(url: Self.merged("sd1-tiny", "kohya")).floatTensors()
        let after = try Self.weights(out)
        let worst = reference.map { key, r in maxAbsoluteDifference(after[key]!, r) }.max() ?? .infinity
        print("sharded UNet: max |Δ| vs diffusers \(worst); output files \(try FileManager.default.contentsOfDirectory(atPath: out.appendingPathComponent("unet").path).sorted())")
        #expect(worst < 1e-6)
        #expect(try FileManager.default.contentsOfDirectory(atPath: out.appendingPathComponent("unet").path).count == 4)
    }

    @Test func storageTypeIsKeptOrChosen() throws {
        let out = Self.temporary()
        defer { try? FileManager.default.removeItem(at: out) }
        let base = Self.base("sd1-tiny")
        let file = try DiffusionAdapterFile(url: Self.adapter("sd1-tiny", "kohya"))
        _ = try DiffusionMerge.merge(base: DiffusersCheckpoint(folder: base), adapters: [.init(file: file, multiplier: 0.7)], output: out, storage: .f16)
        let unet = try SafeTensorsFile(url: out.appendingPathComponent("unet/diffusion_pytorch_model.safetensors"))
        #expect(unet.entries.values.allSatisfy { $0.dtype == .f16 })
        // The VAE, which no adapter touches, is copied byte for byte.
        let vae = "vae/diffusion_pytorch_model.safetensors"
        #expect(try Data(contentsOf: out.appendingPathComponent(vae)) == Data(contentsOf: base.appendingPathComponent(vae)))
    }

    @Test func badInputIsRefusedAndNothingIsWritten() throws {
        let out = Self.temporary()
        defer { try? FileManager.default.removeItem(at: out) }
        let sd1 = Self.base("sd1-tiny"), sdxl = Self.base("sdxl-tiny")
        // SDXL's adapter on SD1: its diffusers-named modules exist in neither, or do not fit.
        let xl = try DiffusionAdapterFile(url: Self.adapter("sdxl-tiny", "peft"))
        #expect {
            try DiffusionMerge.merge(base: DiffusersCheckpoint(folder: sd1), adapters: [.init(file: xl, multiplier: 1)], output: out, storage: nil)
        } throws: { error in
            print("SDXL adapter on SD1: \(error)")
            return "\(error)".contains("does not fit") && "\(error)".contains("weight [") && "\(error)".contains("Nothing was written")
        }
        #expect(!FileManager.default.fileExists(atPath: out.path))
        // A file whose keys match nothing: an LLM adapter.
        let llm = try DiffusionAdapterFile(url: fixturesDirectory.appendingPathComponent("adapters/tiny-llama-layers/adapter_model.safetensors"))
        #expect {
            try DiffusionMerge.merge(base: DiffusersCheckpoint(folder: sd1), adapters: [.init(file: llm, multiplier: 1)], output: out, storage: nil)
        } throws: { error in
            print("an LLM adapter on SD1: \(error)")
            return "\(error)".contains("no key matches a module") && "\(error)".contains("keys such as base_model.model.model.layers")
        }
        // An output folder that holds something.
        try FileManager.default.createDirectory(at: out, withIntermediateDirectories: true)
        try Data("x".utf8).write(to: out.appendingPathComponent("keep.txt"))
        let kohya = try DiffusionAdapterFile(url: Self.adapter("sd1-tiny", "kohya"))
        #expect { try DiffusionMerge.merge(base: DiffusersCheckpoint(folder: sd1), adapters: [.init(file: kohya, multiplier: 1)], output: out, storage: nil) } throws: {
            "\($0)".contains("already exists and is not empty")
        }
        #expect(try FileManager.default.contentsOfDirectory(atPath: out.path) == ["keep.txt"])
        // A merge that overflows: refused naming the module, nothing left.
        try FileManager.default.removeItem(at: out)
        #expect { try DiffusionMerge.merge(base: DiffusersCheckpoint(folder: sd1), adapters: [.init(file: kohya, multiplier: 3e38)], output: out, storage: nil) } throws: {
            "\($0)".contains("non-finite")
        }
        #expect(!FileManager.default.fileExists(atPath: out.path))
        let leftovers = try FileManager.default.contentsOfDirectory(atPath: out.deletingLastPathComponent().path).filter { $0.contains(out.lastPathComponent) }
        #expect(leftovers.isEmpty)
    }
}
