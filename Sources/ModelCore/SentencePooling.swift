import Foundation

/// How sentence-transformers turns an encoder's hidden states into one sentence embedding, read
/// from its files beside the model: `sentence_bert_config.json` (`max_seq_length`: longer texts
/// are truncated), `1_Pooling/config.json` (the pooling mode) and `modules.json` (whether a
/// Normalize module follows). Without them: mean pooling, L2-normalised, up to the model's positions.
public struct SentencePooling: Sendable, Equatable {
    public enum Mode: String, Sendable { case mean, meanSqrtLength = "mean_sqrt_len", max, cls }
    public var mode: Mode = .mean
    public var normalize = true
    /// Tokens per text, [CLS] and [SEP] included; nil = the model's positions.
    public var maxSequenceLength: Int? = nil
    /// Whether the settings came from sentence-transformers' files.
    public var fromSentenceTransformers = false

    public init(mode: Mode = .mean, normalize: Bool = true, maxSequenceLength: Int? = nil) {
        self.mode = mode
        self.normalize = normalize
        self.maxSequenceLength = maxSequenceLength
    }

    public static func of(directory: URL) throws(ModelError) -> SentencePooling {
        var pooling = SentencePooling()
        func json(_ name: String) throws(ModelError) -> [String: Any]? {
            let url = directory.appendingPathComponent(name)
            guard let data = try? Data(contentsOf: url) else { return nil }
            guard let object = try? JSONSerialization.jsonObject(with: data) as? [String: Any] else {
                throw .invalidFile(path: url.path, reason: "not a JSON object")
            }
            return object
        }
        if let config = try json("sentence_bert_config.json") {
            pooling.fromSentenceTransformers = true
            if let n = config["max_seq_length"] as? Int {
                guard n >= 2 else { throw .invalidFile(path: directory.appendingPathComponent("sentence_bert_config.json").path, reason: "max_seq_length \(n) is below 2") }
                pooling.maxSequenceLength = n
            }
        }
        let modulesURL = directory.appendingPathComponent("modules.json")
        if let data = try? Data(contentsOf: modulesURL) {
            guard let modules = try? JSONSerialization.jsonObject(with: data) as? [[String: Any]] else {
                throw .invalidFile(path: modulesURL.path, reason: "not a JSON list of modules")
            }
            pooling.fromSentenceTransformers = true
            pooling.normalize = modules.contains { ($0["type"] as? String)?.hasSuffix(".Normalize") == true }
            if let entry = modules.first(where: { ($0["type"] as? String)?.hasSuffix(".Pooling") == true }),
               let path = entry["path"] as? String, !path.contains(".."), !path.hasPrefix("/"),
               let config = try json(path + "/config.json") {
                let modes: [(String, Mode)] = [("pooling_mode_cls_token", .cls), ("pooling_mode_max_tokens", .max),
                                               ("pooling_mode_mean_sqrt_len_tokens", .meanSqrtLength), ("pooling_mode_mean_tokens", .mean)]
                let chosen = modes.filter { config[$0.0] as? Bool == true }
                guard chosen.count <= 1 else {
                    throw .invalidFile(path: directory.appendingPathComponent(path + "/config.json").path,
                                       reason: "several pooling modes at once (\(chosen.map(\.0).joined(separator: ", "))) are not supported")
                }
                if let mode = chosen.first?.1 { pooling.mode = mode }
            }
        }
        return pooling
    }
}
