import AdapterFormats
import Diffusion
import Formats
import Foundation
import Kernels
import TestSupport
import Testing

/// The SVD tools (extract, resize, SVD merge) against numpy's optimal truncations, torch's quantile
/// and kohya's dynamic-rank formulas (`Scripts/reference/make_svd_fixtures.py`), and against the
/// merges they must reproduce.
@Suite("Stable Diffusion SVD tools")
struct LowRankTests {
    struct Expected: Decodable {
        struct Dynamic: Decodable { let singular: [Float]; let kohya: Int; let minimal: Int }
        let residuals: [String: [String: Double]]
        let quantiles: [String: Float]
        let dynamic: [String: Dynamic]
        let resize_rank1: [String: Double]
    }

    static let svd = fixturesDirectory.appendingPathComponent("sd/svd")
    static func expected() throws -> Expected {
        try JSONDecoder().decode(Expected.self, from: Data(contentsOf: svd.appendingPathComponent("expected.json")))
    }

    /// ‖M − up·down‖_F / ‖M‖_F.
    static func residual(_ m: Tensor, _ up: Tensor, _ down: Tensor) -> Double {
        let out = m.shape[0], rest = m.count / out, k = up.count / out
        let p = Tensor(shape: [out, rest])
        matmul(m: out, n: rest, k: k, up.data, lda: k, down.data, ldb: rest, p.data, ldc: rest)
        var num = 0.0, den = 0.0
        for i in 0..<m.count { let d = Double(m[i] - p[i]); num += d * d; den += Double(m[i]) * Double(m[i]) }
        return (num / den).squareRoot()
    }

    @Test func truncationsAreOptimalQuantilesAndRanksAsTheReferences() throws {
        let expected = try Self.expected()
        let file = try SafeTensorsFile(url: Self.svd.appendingPathComponent("matrices.safetensors"))
        var worst = 0.0
        for (name, byRank) in expected.residuals.sorted(by: { $0.key < $1.key }) {
            let m = try file.tensor(name)
            for (k, optimal) in byRank {
                let (up, down, _) = try #require(LowRank.factorize(m, rank: Int(k)!))
                let ours = Self.residual(m, up, down)
                worst = max(worst, abs(ours - optimal) / optimal)
            }
        }
        print("truncated SVD residuals vs numpy's optimal: worst relative gap \(worst)")
        #expect(worst < 0.01)
        let q = try file.tensor("q").scalars
        for (p, value) in expected.quantiles {
            #expect(abs(LowRank.quantile(q, Double(p)!) - value) < 1e-5, "quantile \(p)")
        }
        var kohyaPlusOne = 0
        for (key, d) in expected.dynamic {
            let rule = try #require(LowRank.DynamicRule(String(key.split(separator: " ")[1])))
            let ours = rule.rank(d.singular, maximum: d.singular.count)
            #expect(ours == d.minimal, "\(key): \(ours) vs the smallest \(d.minimal)")
            if d.kohya == ours + 1 { kohyaPlusOne += 1 }
        }
        print("dynamic ranks: \(expected.dynamic.count) cases equal the smallest rank meeting the rule; kohya's is one more in \(kohyaPlusOne)")
        // The clamp: both factors within ± the 0.99 quantile of their values together.
        let m = try file.tensor("m1")
        let (up, down, _) = try #require(LowRank.factorize(m, rank: 4))
        let hi = LowRank.quantile(up.scalars + down.scalars, 0.99)
        let (cu, cd, _) = try #require(LowRank.factorize(m, rank: 4, clampQuantile: 0.99))
        let clamped = (cu.scalars + cd.scalars)
        #expect(clamped.allSatisfy { abs($0) <= hi + 1e-6 } && clamped.contains { abs(abs($0) - hi) < 1e-6 })
    }

    @Test func resizeKeepsTheScaleAndTruncatesOptimally() throws {
        let expected = try Self.expected()
        let file = try DiffusionAdapterFile(url: DiffusionMergeTests.adapter("sd1-tiny", "kohya"))
        // At the same rank nothing changes: the merge equals diffusers'.
        let same = try DiffusionLowRankOperations.resize(file, rank: 2, dynamic: nil, index: nil)
        let url = try DiffusionConversionTests.write(try DiffusionAdapterWriter.contents(same.modules, format: .kohya))
        defer { try? FileManager.default.removeItem(at: url) }
        let e = try DiffusionConversionTests.mergedDifference("sd1-tiny", url, reference: "kohya")
        #expect(e < 1e-5)
        // At rank 1 every module reaches numpy's optimal residual, and keeps alpha/rank.
        let one = try DiffusionLowRankOperations.resize(file, rank: 1, dynamic: nil, index: nil)
        var worst = 0.0
        for (m, (spelling, original)) in zip(one.modules, file.modules) {
            let optimal = try #require(expected.resize_rank1[spelling])
            guard case let .lora(down, up, _) = original.kind, case let .lora(d1, u1, _) = m.delta.kind else { Issue.record("not a LoRA"); continue }
            let shape = [up.shape[0]] + Array(down.shape.dropFirst())
            let full = try original.delta(for: shape)
            for i in 0..<full.count { full.data[i] *= original.factor }
            let scaledUp = u1.clone()
            for i in 0..<scaledUp.count { scaledUp.data[i] *= m.delta.factor }
            worst = max(worst, abs(Self.residual(full, scaledUp, d1) - optimal) / optimal)
            #expect(m.delta.rank == 1 && abs(m.delta.factor - original.factor) < 1e-6)
        }
        print("resize 2 → 1 on \(one.modules.count) modules: worst relative gap to numpy's optimal residual \(worst); alpha/rank kept")
        #expect(worst < 0.01)
        // A dynamic rule picks per module; LyCORIS modules are refused by name.
        let dynamic = try DiffusionLowRankOperations.resize(file, rank: 2, dynamic: .svFrobenius(0.5), index: nil)
        #expect(dynamic.reports.allSatisfy { $0.rank >= 1 && $0.rank <= 2 && $0.frobeniusRetained >= 0.5 - 1e-9 })
        let loha = try DiffusionAdapterFile(url: DiffusionMergeTests.adapter("sd1-tiny", "loha"))
        #expect { try DiffusionLowRankOperations.resize(loha, rank: 1, dynamic: nil, index: nil) } throws: { "\($0)".contains("resize takes LoRA and LoCon") }
    }

    @Test func extractRecoversAMergedLoRA() throws {
        let base = try DiffusersCheckpoint(folder: DiffusionMergeTests.base("sd1-tiny"))
        let tunedURL = DiffusionMergeTests.temporary()
        defer { try? FileManager.default.removeItem(at: tunedURL) }
        let kohya = try DiffusionAdapterFile(url: DiffusionMergeTests.adapter("sd1-tiny", "kohya"))
        _ = try DiffusionMerge.merge(base: base, adapters: [.init(file: kohya, multiplier: 0.7)], output: tunedURL, storage: nil)
        let tuned = try DiffusersCheckpoint(folder: tunedURL)
        // ΔW has rank 2 per module: a rank-2 extraction without clamping is exact, and with the
        // resnets (--conv-rank) it covers every module the adapter changed.
        let exact = try DiffusionLowRankOperations.extract(base: base, tuned: tuned, rank: 2, convRank: 2, clampQuantile: nil, minDiff: 0.01)
        let url = try DiffusionConversionTests.write(try DiffusionAdapterWriter.contents(exact.modules, format: .kohya))
        defer { try? FileManager.default.removeItem(at: url) }
        let e = try DiffusionConversionTests.mergedDifference("sd1-tiny", url, reference: "kohya", multiplier: 1)
        print("extract rank 2 from (base, base + 0.7·ΔW): \(exact.modules.count) modules, merged back vs diffusers' fuse \(e)")
        #expect(e < 1e-5 && exact.modules.contains { $0.module.component == "text_encoder" })
        // Clamped at 0.99, every module's factors lie within their threshold; a large --min-diff drops the text encoder.
        let clamped = try DiffusionLowRankOperations.extract(base: base, tuned: tuned, rank: 2, convRank: nil, clampQuantile: 0.99, minDiff: 1e6)
        #expect(clamped.modules.allSatisfy { $0.module.component == "unet" } && clamped.notes.contains { $0.contains("text encoders are the same") })
        #expect(clamped.modules.count < exact.modules.count)
        // A checkpoint of another shape is refused.
        let other = try DiffusersCheckpoint(folder: DiffusionMergeTests.base("sdxl-tiny"))
        #expect { try DiffusionLowRankOperations.extract(base: base, tuned: other, rank: 2, convRank: nil, clampQuantile: nil, minDiff: 0.01) } throws: {
            "\($0)".contains("not the same model")
        }
    }

    @Test func svdMergeIsExactUpToTheTruncation() throws {
        let kohya = try DiffusionAdapterFile(url: DiffusionMergeTests.adapter("sd1-tiny", "kohya"))
        let peft = try DiffusionAdapterFile(url: DiffusionMergeTests.adapter("sd1-tiny", "peft"))
        // The same ΔW at 0.4 and 0.3: rank 2 holds the sum exactly.
        let merged = try DiffusionLowRankOperations.svdMerge([(kohya, 0.4), (peft, 0.3)], rank: 2, convRank: nil, clampQuantile: nil, index: nil)
        let url = try DiffusionConversionTests.write(try DiffusionAdapterWriter.contents(merged.modules, format: .kohya))
        defer { try? FileManager.default.removeItem(at: url) }
        let out = DiffusionMergeTests.temporary()
        defer { try? FileManager.default.removeItem(at: out) }
        let base = try DiffusersCheckpoint(folder: DiffusionMergeTests.base("sd1-tiny"))
        _ = try DiffusionMerge.merge(base: base, adapters: [.init(file: DiffusionAdapterFile(url: url), multiplier: 1)], output: out, storage: nil)
        let reference = try SafeTensorsFile(url: DiffusionMergeTests.merged("sd1-tiny", "kohya")).floatTensors()
        let after = try DiffusionMergeTests.weights(out)
        let worst = reference.map { key, r in maxAbsoluteDifference(after[key]!, r) }.max() ?? .infinity
        print("SVD merge of kohya@0.4 + PEFT spelling@0.3 at rank 2, merged at 1.0, vs diffusers at 0.7: max |Δ| \(worst)")
        #expect(worst < 1e-5)
        // LoHa's shapes need the base; with it, a LoRA and a LoHa merge to their sum (rank large enough).
        let loha = try DiffusionAdapterFile(url: DiffusionMergeTests.adapter("sd1-tiny", "loha"))
        #expect { try DiffusionLowRankOperations.svdMerge([(loha, 1)], rank: 2, convRank: nil, clampQuantile: nil, index: nil) } throws: {
            "\($0)".contains("add --model")
        }
        let index = DiffusionModuleIndex(weights: base.tensorShapes, unetLayersPerBlock: base.unetLayersPerBlock)
        let both = try DiffusionLowRankOperations.svdMerge([(kohya, 0.7), (loha, 0.7)], rank: 64, convRank: 64, clampQuantile: nil, index: index)
        let bothURL = try DiffusionConversionTests.write(try DiffusionAdapterWriter.contents(both.modules, format: .kohya))
        defer { try? FileManager.default.removeItem(at: bothURL) }
        let outA = DiffusionMergeTests.temporary(), outB = DiffusionMergeTests.temporary()
        defer { try? FileManager.default.removeItem(at: outA); try? FileManager.default.removeItem(at: outB) }
        _ = try DiffusionMerge.merge(base: base, adapters: [.init(file: DiffusionAdapterFile(url: bothURL), multiplier: 1)], output: outA, storage: nil)
        _ = try DiffusionMerge.merge(base: base, adapters: [.init(file: kohya, multiplier: 0.7), .init(file: loha, multiplier: 0.7)], output: outB, storage: nil)
        let a = try DiffusionMergeTests.weights(outA), b = try DiffusionMergeTests.weights(outB)
        let gap = a.map { key, t in Double(maxAbsoluteDifference(t, b[key]!)) }.max() ?? .infinity
        print("SVD merge of a LoRA and a LoHa at full rank vs merging both: max |Δ| \(gap)")
        #expect(gap < 1e-5)
    }
}
