import Foundation
import Formats
import TestSupport
import Testing

/// `lora merge` and `lora adapter inspect` on Stable Diffusion files, through the binary.
@Suite("lora with Stable Diffusion adapter files")
struct DiffusionCLITests {
    static let sd = fixturesDirectory.appendingPathComponent("sd")

    @Test func mergeAndInspect() throws {
        let out = FileManager.default.temporaryDirectory.appendingPathComponent("lora-cli-sd-\(UUID().uuidString)")
        defer { try? FileManager.default.removeItem(at: out) }
        let base = Self.sd.appendingPathComponent("sd1-tiny").path
        let adapter = Self.sd.appendingPathComponent("sd1-tiny-adapters/kohya.safetensors").path
        let run = try CLITests.lora(["merge", "--model", base, "--adapter", adapter + ":0.7", "--output", out.path, "--json"])
        #expect(run.status == 0, "\(run.stderr)")
        let report = try run.json()
        let adapters = try #require(report["adapters"] as? [[String: Any]])
        #expect(adapters.first?["modules"] as? Int == 81 && report["rewritten_tensors"] as? Int == 81)
        #expect(run.stderr.contains("merged \(adapter) at 0.7: 81 modules (text_encoder 12, unet 69; lora 81)"))
        // The merged UNet equals diffusers' fuse_lora(lora_scale=0.7).
        let reference = try SafeTensorsFile(url: Self.sd.appendingPathComponent("sd1-tiny-merged/kohya.safetensors")).floatTensors()
        let unet = try SafeTensorsFile(url: out.appendingPathComponent("unet/diffusion_pytorch_model.safetensors")).floatTensors()
        var worst: Float = 0
        for (key, r) in reference where key.hasPrefix("unet.") {
            let t = try #require(unet[String(key.dropFirst(5))])
            for i in 0..<r.count { worst = max(worst, abs(t[i] - r[i])) }
        }
        print("lora merge (kohya file, SD1) vs diffusers fuse_lora: max |Δ| \(worst)")
        #expect(worst < 1e-6)

        let inspect = try CLITests.lora(["adapter", "inspect", Self.sd.appendingPathComponent("sdxl-tiny-adapters/kohya.safetensors").path, "--json"]).json()
        #expect(inspect["family"] as? String == "sdxl" && inspect["modules"] as? Int == 187)
        #expect((inspect["targets"] as? [String: Int]) == ["unet": 163, "text_encoder": 12, "text_encoder_2": 12])
        let text = try CLITests.lora(["adapter", "inspect", Self.sd.appendingPathComponent("sd1-tiny-adapters/lokr-lowrank.safetensors").path])
        #expect(text.status == 0 && text.stdout.contains("algorithms:      lokr 3"))

        // Refused, with the reason and a non-zero exit, nothing written: another base's file; a folder as --adapter.
        let wrong = try CLITests.lora(["merge", "--model", base, "--adapter", Self.sd.appendingPathComponent("sdxl-tiny-adapters/kohya.safetensors").path,
                                       "--output", out.path + "-wrong"])
        #expect(wrong.status != 0 && wrong.stderr.contains("does not fit") && !FileManager.default.fileExists(atPath: out.path + "-wrong"))
        let folder = try CLITests.lora(["merge", "--model", base, "--adapter", Self.sd.appendingPathComponent("sd1-tiny-adapters").path,
                                        "--output", out.path + "-folder"])
        #expect(folder.status != 0 && folder.stderr.contains("is a folder; a Stable Diffusion adapter is one .safetensors file"))
    }

    @Test func convert() throws {
        let dir = FileManager.default.temporaryDirectory.appendingPathComponent("lora-cli-convert-\(UUID().uuidString)")
        try FileManager.default.createDirectory(at: dir, withIntermediateDirectories: true)
        defer { try? FileManager.default.removeItem(at: dir) }
        let kohya = Self.sd.appendingPathComponent("sdxl-tiny-adapters/kohya.safetensors").path
        let out = dir.appendingPathComponent("diffusers.safetensors").path
        let run = try CLITests.lora(["adapter", "convert", "--input", kohya, "--to", "diffusers", "--output", out, "--json"])
        #expect(run.status == 0, "\(run.stderr)")
        let report = try run.json()
        #expect(report["modules"] as? Int == 187 && report["format"] as? String == "diffusers")
        let written = try SafeTensorsFile(url: URL(fileURLWithPath: out))
        #expect(written.names.contains("unet.down_blocks.1.attentions.0.transformer_blocks.0.attn2.to_k.lora_A.weight"))
        #expect(written.metadata["lora_adapter_metadata"]?.contains("\"unet.lora_alpha\": 3") == true)
        // With the base's names, the same tensors.
        let withBase = dir.appendingPathComponent("with-base.safetensors").path
        #expect(try CLITests.lora(["adapter", "convert", "--input", kohya, "--to", "diffusers", "--output", withBase,
                                   "--model", Self.sd.appendingPathComponent("sdxl-tiny").path]).status == 0)
        #expect(Set(try SafeTensorsFile(url: URL(fileURLWithPath: withBase)).names) == Set(written.names))
        // Refusals: LoHa to diffusers, an existing output, a wrong --to.
        let loha = try CLITests.lora(["adapter", "convert", "--input", Self.sd.appendingPathComponent("sd1-tiny-adapters/loha.safetensors").path,
                                      "--to", "diffusers", "--output", dir.appendingPathComponent("loha.safetensors").path])
        #expect(loha.status != 0 && loha.stderr.contains("is loha, which the diffusers format cannot hold"))
        let again = try CLITests.lora(["adapter", "convert", "--input", kohya, "--to", "kohya", "--output", out])
        #expect(again.status != 0 && again.stderr.contains("already exists"))
        let wrong = try CLITests.lora(["adapter", "convert", "--input", kohya, "--to", "mlx", "--output", dir.appendingPathComponent("x").path])
        #expect(wrong.status != 0 && wrong.stderr.contains("converts to kohya or diffusers"))
        // A folder converts as `lora convert` does.
        let mlx = dir.appendingPathComponent("mlx").path
        let folder = try CLITests.lora(["adapter", "convert", "--input", fixturesDirectory.appendingPathComponent("adapters/tiny-llama-layers").path,
                                        "--to", "mlx", "--output", mlx, "--model", fixturesDirectory.appendingPathComponent("tiny-llama").path])
        #expect(folder.status == 0 && FileManager.default.fileExists(atPath: mlx + "/adapters.safetensors"), "\(folder.stderr)")
    }

    @Test func resizeExtractAndMergeAdapters() throws {
        let dir = FileManager.default.temporaryDirectory.appendingPathComponent("lora-cli-svd-\(UUID().uuidString)")
        try FileManager.default.createDirectory(at: dir, withIntermediateDirectories: true)
        defer { try? FileManager.default.removeItem(at: dir) }
        let kohya = Self.sd.appendingPathComponent("sd1-tiny-adapters/kohya.safetensors").path
        let base = Self.sd.appendingPathComponent("sd1-tiny").path
        let resized = try CLITests.lora(["adapter", "resize", "--input", kohya, "--rank", "1", "--output", dir.path + "/r1.safetensors", "--json"])
        #expect(resized.status == 0, "\(resized.stderr)")
        #expect(try resized.json()["ranks"] as? [Int] == [1])
        let dynamic = try CLITests.lora(["adapter", "resize", "--input", kohya, "--rank", "2", "--dynamic", "sv_fro:0.99", "--output", dir.path + "/d.safetensors"])
        #expect(dynamic.status == 0 && dynamic.stderr.contains("every module keeps at least"))
        let bad = try CLITests.lora(["adapter", "resize", "--input", kohya, "--rank", "2", "--dynamic", "sv_fro:2", "--output", dir.path + "/x.safetensors"])
        #expect(bad.status != 0 && bad.stderr.contains("sv_cumulative:X (0 < X ≤ 1)"))
        // A tuned model: the base with the adapter merged; extracting at rank 2 recovers it (the 48 transformer-block
        // and 12 text-encoder modules kohya extracts without --conv-rank).
        let tuned = dir.path + "/tuned"
        #expect(try CLITests.lora(["merge", "--model", base, "--adapter", kohya, "--output", tuned]).status == 0)
        let extracted = try CLITests.lora(["adapter", "extract", "--base", base, "--tuned", tuned, "--rank", "2", "--clamp-quantile", "1",
                                           "--output", dir.path + "/e.safetensors", "--json"])
        #expect(extracted.status == 0, "\(extracted.stderr)")
        let report = try extracted.json()
        #expect(report["modules"] as? Int == 60 && (report["smallest_frobenius_retained"] as? Double ?? 0) > 0.99999)
        let merged = try CLITests.lora(["adapter", "merge", "--adapter", kohya + ":0.5", "--adapter", dir.path + "/r1.safetensors:0.5", "--rank", "2",
                                        "--output", dir.path + "/m.safetensors", "--format", "diffusers", "--json"])
        #expect(merged.status == 0, "\(merged.stderr)")
        #expect(try merged.json()["modules"] as? Int == 81)
        let written = try SafeTensorsFile(url: URL(fileURLWithPath: dir.path + "/m.safetensors"))
        #expect(written.names.allSatisfy { $0.hasSuffix(".lora_A.weight") || $0.hasSuffix(".lora_B.weight") })
    }
}
