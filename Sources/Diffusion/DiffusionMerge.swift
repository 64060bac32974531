import AdapterFormats
import Foundation
import Formats
import Kernels

/// Merging adapter files into a Stable Diffusion checkpoint, as kohya's `merge_lora.py` and
/// diffusers' `fuse_lora` do: W += multiplier · factor · ΔW for every module each adapter changes
/// (in fp32, in the order the adapters are given), DoRA by ComfyUI's weight decomposition.
///
/// The output keeps the base's layout: every file of the pipeline folder is copied, and the weight
/// files of the components an adapter touches are rewritten tensor by tensor (one tensor in
/// memory at a time), in the base's dtypes unless told otherwise. It is built in a temporary
/// folder beside the destination and renamed into place at the end: on any error nothing is left.
public enum DiffusionMerge {
    public struct Adapter {
        public let file: DiffusionAdapterFile
        public let multiplier: Float
        public init(file: DiffusionAdapterFile, multiplier: Float) {
            self.file = file
            self.multiplier = multiplier
        }
    }

    public struct Report: Encodable, Sendable {
        public struct AdapterReport: Encodable, Sendable {
            public let path: String
            public let multiplier: Float
            public let modules: Int
            /// Per component, the modules merged.
            public let components: [String: Int]
            public let algorithms: [String: Int]
            /// Spellings of the file that match no module of the base.
            public let unmatched: [String]
        }
        public let output: String
        public let adapters: [AdapterReport]
        public let rewrittenTensors: Int
        public let copiedFiles: Int
        public let dtype: String
        public let seconds: Double

        enum CodingKeys: String, CodingKey {
            case output, adapters, rewrittenTensors = "rewritten_tensors", copiedFiles = "copied_files", dtype, seconds
        }
    }

    /// One module's planned changes.
    struct Planned {
        var deltas: [(delta: WeightDelta, multiplier: Float, source: String)] = []
    }

    /// Resolves every module of every adapter against `base` and checks every shape; nothing is
    /// written. Throws when an adapter matches no module at all, or a delta does not fit its weight
    /// (naming the module and both shapes); returns the plan and what did not match.
    static func plan(_ base: DiffusersCheckpoint, _ adapters: [Adapter]) throws(DiffusionError)
        -> (modules: [DiffusionModuleIndex.Module: Planned], reports: [Report.AdapterReport]) {
        let index = DiffusionModuleIndex(weights: base.tensorShapes, unetLayersPerBlock: base.unetLayersPerBlock)
        var planned: [DiffusionModuleIndex.Module: Planned] = [:]
        var reports: [Report.AdapterReport] = []
        for adapter in adapters {
            let path = adapter.file.url.path
            var unmatched: [String] = [], components: [String: Int] = [:], algorithms: [String: Int] = [:]
            var seen = Set<DiffusionModuleIndex.Module>()
            for (spelling, delta) in adapter.file.modules {
                guard let module = index.resolve(spelling), let shape = index.shapes[module] else {
                    unmatched.append(spelling)
                    continue
                }
                guard seen.insert(module).inserted else {
                    throw .refused("\(path): two spellings name \(module) (one is \(spelling))")
                }
                if let problem = delta.shapeProblem(for: shape) {
                    throw .refused("\(path): \(spelling) does not fit \(module) (weight \(shape)): \(problem); an adapter for another base model? Nothing was written.")
                }
                planned[module, default: Planned()].deltas.append((delta, adapter.multiplier, spelling))
                components[module.component, default: 0] += 1
                algorithms[delta.algorithm.rawValue + (delta.doraScale != nil ? "+dora" : ""), default: 0] += 1
            }
            if seen.isEmpty {
                let ambiguous = adapter.file.modules.map(\.spelling).filter(index.ambiguous.contains)
                throw .refused("\(path): no key matches a module of \(base.folder.path) (keys such as "
                    + adapter.file.modules.prefix(3).map(\.spelling).joined(separator: ", ") + ")"
                    + (ambiguous.isEmpty ? "; an adapter for another kind of model?" : "; \(ambiguous.count) name several modules"))
            }
            reports.append(Report.AdapterReport(path: path, multiplier: adapter.multiplier, modules: seen.count, components: components,
                                                algorithms: algorithms, unmatched: unmatched))
        }
        return (planned, reports)
    }

    /// Merges `adapters` into `base`, writing a pipeline folder at `output` (which must not exist,
    /// or be an empty folder). `storage` nil keeps each tensor's stored dtype.
    public static func merge(base: DiffusersCheckpoint, adapters: [Adapter], output: URL, storage: SafeTensorsWriter.StorageType?,
                             progress: (String) -> Void = { _ in }) throws(DiffusionError) -> Report {
        let start = Date()
        let (planned, reports) = try plan(base, adapters)
        let fm = FileManager.default
        if fm.fileExists(atPath: output.path) {
            let contents = (try? fm.contentsOfDirectory(atPath: output.path)) ?? ["?"]
            guard contents.isEmpty else { throw .refused("\(output.path) already exists and is not empty; choose another --output or remove it") }
            try? fm.removeItem(at: output)
        }
        let parent = output.deletingLastPathComponent()
        let temporary = parent.appendingPathComponent(".\(output.lastPathComponent).partial-\(UUID().uuidString)")
        do {
            try fm.createDirectory(at: parent, withIntermediateDirectories: true)
        } catch {
            throw .invalid(path: parent.path, reason: plainFileReason(error))
        }
        var rewritten = 0, copied = 0
        do {
            let touched = Set(planned.keys.map(\.component))
            let rewrittenFiles = Set(touched.flatMap { base.components[$0]?.weightFiles.map(\.relativePath) ?? [] })
            // Everything but the weight files to rewrite, copied as it is.
            let files = try relativeFiles(base.folder)
            for file in files where !rewrittenFiles.contains(file) {
                let destination = temporary.appendingPathComponent(file)
                try fm.createDirectory(at: destination.deletingLastPathComponent(), withIntermediateDirectories: true)
                try fm.copyItem(at: base.folder.appendingPathComponent(file), to: destination)
                copied += 1
            }
            for name in touched.sorted() {
                guard let component = base.components[name] else { continue }
                let mine = planned.filter { $0.key.component == name }
                progress("merging \(mine.count) modules into \(name)")
                var byTensor: [String: (module: DiffusionModuleIndex.Module, planned: Planned, bias: Bool)] = [:]
                for (module, p) in mine {
                    byTensor[module.path + ".weight"] = (module, p, false)
                    if p.deltas.contains(where: { $0.delta.biasDiff != nil }) { byTensor[module.path + ".bias"] = (module, p, true) }
                }
                for weights in component.weightFiles {
                    rewritten += try rewrite(weights, into: temporary.appendingPathComponent(weights.relativePath), changes: byTensor, storage: storage)
                }
            }
            guard rename(temporary.path, output.path) == 0 else {
                throw DiffusionError.invalid(path: output.path, reason: "rename: \(String(cString: strerror(errno)))")
            }
        } catch let error as DiffusionError {
            try? fm.removeItem(at: temporary)
            throw error
        } catch {
            try? fm.removeItem(at: temporary)
            throw .invalid(path: output.path, reason: plainFileReason(error))
        }
        return Report(output: output.path, adapters: reports, rewrittenTensors: rewritten, copiedFiles: copied,
                      dtype: storage?.rawValue ?? "as stored", seconds: Date().timeIntervalSince(start))
    }

    /// Writes one weight file with the planned changes applied; returns how many tensors changed.
    static func rewrite(_ weights: DiffusersCheckpoint.WeightFile, into url: URL,
                        changes: [String: (module: DiffusionModuleIndex.Module, planned: Planned, bias: Bool)],
                        storage: SafeTensorsWriter.StorageType?) throws -> Int {
        try FileManager.default.createDirectory(at: url.deletingLastPathComponent(), withIntermediateDirectories: true)
        let file = weights.file
        let entries = file.names.compactMap { name -> SafeTensorsStreamWriter.Entry? in
            guard let e = file.entries[name] else { return nil }
            let floating = [.f32, .f16, .bf16].contains(e.dtype)
            let dtype = floating ? storage.flatMap { SafeTensorsFile.DType(rawValue: $0.rawValue) } ?? e.dtype : e.dtype
            return .init(name: name, dtype: dtype, shape: e.shape)
        }
        let writer = try SafeTensorsStreamWriter(url: url, entries: entries, metadata: file.metadata)
        var changed = 0
        for entry in entries {
            guard let stored = file.entries[entry.name] else { continue }
            if let change = changes[entry.name] {
                let w = try file.tensor(entry.name)
                for (delta, multiplier, source) in change.planned.deltas {
                    if change.bias {
                        guard let b = delta.biasDiff else { continue }
                        for i in 0..<w.count { w.data[i] += multiplier * b.data[i] }
                    } else {
                        do { try delta.apply(to: w, shape: stored.shape, multiplier: multiplier) } catch {
                            throw DiffusionError.refused("\(source) on \(change.module): \(error)")
                        }
                    }
                }
                guard w.isFinite else {
                    throw DiffusionError.refused("merging into \(change.module) gives non-finite weights (\(entry.name)); nothing was written")
                }
                try writer.append(entry.name, values: w)
                changed += 1
            } else if entry.dtype == stored.dtype {
                try file.withRawBytes(entry.name) { raw in try writer.append(entry.name, bytes: raw) }
            } else {
                try writer.append(entry.name, values: try file.tensor(entry.name))
            }
        }
        try writer.finish()
        return changed
    }

    /// Every regular file under `folder`, relative to it, skipping hidden ones.
    static func relativeFiles(_ folder: URL) throws -> [String] {
        guard let walker = FileManager.default.enumerator(at: folder, includingPropertiesForKeys: [.isRegularFileKey],
                                                          options: [.skipsHiddenFiles]) else { return [] }
        var result: [String] = []
        let root = folder.standardizedFileURL.path
        for case let url as URL in walker {
            guard (try? url.resourceValues(forKeys: [.isRegularFileKey]).isRegularFile) == true else { continue }
            let path = url.standardizedFileURL.path
            guard path.hasPrefix(root + "/") else { continue }
            result.append(String(path.dropFirst(root.count + 1)))
        }
        return result.sorted()
    }
}
