import AdapterFormats
import Diffusion
import Formats
import Foundation
import Kernels
import TestSupport
import Testing

/// Converting Stable Diffusion adapter files between kohya's and diffusers' spellings: every
/// converted file merges into its base exactly as the original does (against diffusers and the
/// formulas), with and without the base's names, and kohya → diffusers → kohya is bit-exact.
@Suite("Stable Diffusion adapter conversion")
struct DiffusionConversionTests {
    static let loraFiles = ["kohya", "peft", "diffusers-new", "diffusers-old", "peft-default"]
    static let lycorisFiles = ["loha", "loha-tucker", "lokr-full", "lokr-lowrank", "locon-mid", "diff", "dora"]

    static func write(_ contents: (tensors: [String: Tensor], metadata: [String: String])) throws -> URL {
        let url = FileManager.default.temporaryDirectory.appendingPathComponent("lora-convert-\(UUID().uuidString).safetensors")
        try SafeTensorsWriter.write(contents.tensors, to: url, metadata: contents.metadata)
        return url
    }

    /// The worst relative difference between merging `file` into the base and the reference.
    static func mergedDifference(_ baseName: String, _ file: URL, reference name: String, multiplier: Float = 0.7) throws -> Double {
        let out = DiffusionMergeTests.temporary()
        defer { try? FileManager.default.removeItem(at: out) }
        _ = try DiffusionMerge.merge(base: DiffusersCheckpoint(folder: DiffusionMergeTests.base(baseName)),
                                     adapters: [.init(file: DiffusionAdapterFile(url: file), multiplier: multiplier)], output: out, storage: nil)
        let reference = try SafeTensorsFile(url: DiffusionMergeTests.merged(baseName, name)).floatTensors()
        let after = try DiffusionMergeTests.weights(out)
        var worst = 0.0
        for (key, r) in reference {
            guard let t = after[key] else { return .infinity }
            let scale = (0..<r.count).map { Double(abs(r[$0])) }.max() ?? 1
            worst = max(worst, Double(maxAbsoluteDifference(t, r)) / max(scale, 1e-12))
        }
        return worst
    }

    @Test(arguments: DiffusionMergeTests.bases)
    func convertedFilesMergeAsTheOriginals(baseName: String) throws {
        let checkpoint = try DiffusersCheckpoint(folder: DiffusionMergeTests.base(baseName))
        let index = DiffusionModuleIndex(weights: checkpoint.tensorShapes, unetLayersPerBlock: checkpoint.unetLayersPerBlock)
        for name in Self.loraFiles + Self.lycorisFiles {
            let file = try DiffusionAdapterFile(url: DiffusionMergeTests.adapter(baseName, name))
            let formats: [DiffusionAdapterWriter.Format] = Self.loraFiles.contains(name) ? [.kohya, .diffusers] : [.kohya]
            for format in formats {
                for withBase in [false, true] {
                    let converted = try DiffusionAdapterWriter.convert(file, to: format, index: withBase ? index : nil)
                    let url = try Self.write((converted.tensors, converted.metadata))
                    defer { try? FileManager.default.removeItem(at: url) }
                    let e = try Self.mergedDifference(baseName, url, reference: name)
                    print("[\(baseName)] \(name) → \(format.rawValue) (\(withBase ? "base's names" : "names' structure")): \(converted.modules.count) modules, merged vs reference \(e)")
                    #expect(e <= 1e-5, "\(baseName)/\(name) → \(format)")
                }
            }
            // What diffusers cannot hold is refused naming a module.
            if !Self.loraFiles.contains(name) {
                #expect(throws: AdapterFormatError.self) { try DiffusionAdapterWriter.convert(file, to: .diffusers, index: index) }
            }
        }
    }

    @Test(arguments: DiffusionMergeTests.bases)
    func kohyaToDiffusersAndBackIsExact(baseName: String) throws {
        let checkpoint = try DiffusersCheckpoint(folder: DiffusionMergeTests.base(baseName))
        let index = DiffusionModuleIndex(weights: checkpoint.tensorShapes, unetLayersPerBlock: checkpoint.unetLayersPerBlock)
        let original = try DiffusionAdapterFile(url: DiffusionMergeTests.adapter(baseName, "kohya"))
        let direct = try DiffusionAdapterWriter.convert(original, to: .kohya, index: index)
        let d = try DiffusionAdapterWriter.convert(original, to: .diffusers, index: index)
        let viaDiffusers = try Self.write((d.tensors, d.metadata))
        defer { try? FileManager.default.removeItem(at: viaDiffusers) }
        let back = try DiffusionAdapterWriter.convert(try DiffusionAdapterFile(url: viaDiffusers), to: .kohya, index: index)
        #expect(Set(direct.tensors.keys) == Set(back.tensors.keys))
        #expect(direct.tensors.allSatisfy { back.tensors[$0.key]?.isBitIdentical(to: $0.value) == true })
        // Alpha survives diffusers' format (its converter would write alpha = rank).
        let alphas = back.tensors.filter { $0.key.hasSuffix(".alpha") }.map { $0.value[0] }
        print("[\(baseName)] kohya → diffusers → kohya: \(back.tensors.count) tensors bit-identical to kohya → kohya; alphas \(Set(alphas))")
        #expect(Set(alphas) == [3])
        // For SD1 the original kohya names are diffusers' with `_`: the round trip is the file itself.
        if baseName == "sd1-tiny" {
            let file = try SafeTensorsFile(url: DiffusionMergeTests.adapter(baseName, "kohya")).floatTensors()
            #expect(Set(file.keys) == Set(back.tensors.keys) && file.allSatisfy { back.tensors[$0.key]?.isBitIdentical(to: $0.value) == true })
        }
    }

    /// Alphas that differ per module survive the diffusers format (as lora_adapter_metadata's
    /// alpha_pattern): read back, every module has its alpha, and both files merge identically.
    /// (diffusers itself misreads per-module alphas of a kohya file; it fuses our converted file
    /// exactly as we merge: checked with Scripts/reference/check_sd_conversions.py.)
    @Test func perModuleAlphasSurviveTheDiffusersFormat() throws {
        var tensors = try SafeTensorsFile(url: DiffusionMergeTests.adapter("sd1-tiny", "kohya")).floatTensors()
        for (i, key) in tensors.keys.filter({ $0.hasSuffix(".alpha") }).sorted().enumerated() {
            tensors[key] = Tensor(shape: [], values: [[2, 3, 5, 0.5][i % 4]])
        }
        let varied = try Self.write((tensors, [:]))
        defer { try? FileManager.default.removeItem(at: varied) }
        let file = try DiffusionAdapterFile(url: varied)
        let converted = try DiffusionAdapterWriter.convert(file, to: .diffusers, index: nil)
        let url = try Self.write((converted.tensors, converted.metadata))
        defer { try? FileManager.default.removeItem(at: url) }
        let back = try DiffusionAdapterFile(url: url)
        let original = Dictionary(uniqueKeysWithValues: converted.modules.map { ($0.module.path, $0.delta.alpha) })
        let reread = back.modules.map { m -> (String, Float?) in
            let path = String(m.spelling.drop { $0 != "." }.dropFirst())
            return (original[path] != nil ? path : "text_model." + path, m.delta.alpha)
        }
        #expect(reread.allSatisfy { original[$0.0] == $0.1 }, "alphas changed")
        let outA = DiffusionMergeTests.temporary(), outB = DiffusionMergeTests.temporary()
        defer { try? FileManager.default.removeItem(at: outA); try? FileManager.default.removeItem(at: outB) }
        let base = try DiffusersCheckpoint(folder: DiffusionMergeTests.base("sd1-tiny"))
        _ = try DiffusionMerge.merge(base: base, adapters: [.init(file: file, multiplier: 0.7)], output: outA, storage: nil)
        _ = try DiffusionMerge.merge(base: base, adapters: [.init(file: back, multiplier: 0.7)], output: outB, storage: nil)
        let a = try DiffusionMergeTests.weights(outA), b = try DiffusionMergeTests.weights(outB)
        print("per-module alphas \(Set(original.values.compactMap { $0 }).sorted()) through the diffusers format: read back equal, merges identical")
        #expect(a.keys == b.keys && a.allSatisfy { b[$0.key]?.isBitIdentical(to: $0.value) == true })
    }
}
