import ArgumentParser

@main
struct Lora: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "lora",
        abstract: "LoRA fine-tuning, merging and serving of pretrained transformers, in Swift.",
        discussion: """
        swift-lora adapts Llama-family and Gemma 3 decoders and BERT-family encoders with low-rank adapters \
        (Hu et al., 2021): the pretrained weights stay frozen and only small A and B matrices are \
        trained. Models are taken from the files users have (GGUF, Hugging Face directories) or \
        fetched by name into the model store ($LORA_HOME, default ~/.cache/swift-lora).
        """,
        version: "swift-lora 0.1.0",
        subcommands: [Quickstart.self, Bench.self, ModelsCommand.self, DataCommand.self, Train.self, Eval.self, AdapterCommand.self, Merge.self, Convert.self, Inspect.self, Tokenize.self, Score.self, Generate.self, Classify.self, Embed.self, ExperimentCommand.self]
    )

    /// Parses and runs the command; any failure is printed in plain words (`UserFacingErrors`).
    static func main() {
        do {
            var command = try parseAsRoot()
            try command.run()
        } catch {
            exit(withError: UserFacingErrors.clean(error))
        }
    }
}
