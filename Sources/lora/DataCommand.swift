import ArgumentParser
import Foundation
import ModelStore
import Training

struct DataCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "data", abstract: "Prepare data sets.", subcommands: [Prepare.self])

    struct Prepare: ParsableCommand {
        static let configuration = CommandConfiguration(
            abstract: "Prepare a known data set as JSONL splits.",
            discussion: """
            sentiment: the Rotten Tomatoes sentences with human scores (Hutto & Gilbert 2014, shipped in \
            vaderSentiment's source distribution, fetched with pip and SHA-256 checked): label = score > 0, \
            score 0 dropped, seeded 80/10/10 train/valid/test split, Amazon review snippets as an \
            out-of-domain test.
            """)
        @Argument(help: "The data set: sentiment.") var name: String
        @Option(help: "Output directory.") var output: String
        @Option(parsing: .unconditional, help: "Seed of the split.") var seed: UInt64 = 0

        func run() throws {
            guard name == "sentiment" else { throw ValidationError("unknown data set '\(name)' (known: sentiment)") }
            let folder = try ModelStore().fetch(.vaderSentiment) { note($0) }
            for line in try SentimentData.prepare(groundTruth: folder, output: URL(fileURLWithPath: output), seed: seed) { print(line) }
        }
    }
}
