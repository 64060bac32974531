import Foundation
import FuzzTargets

// The libFuzzer driver. The target comes from LORA_FUZZ_TARGET (one binary serves all
// targets); Tests/Fixtures from LORA_FUZZ_FIXTURES. LORA_FUZZ_REAL_MODELS=1 adds the installed
// SmolLM2 and MiniLM tokenizers to `tokenize`.

nonisolated(unsafe) private var harness: FuzzHarness?
nonisolated(unsafe) private var target = FuzzTarget.gguf

/// libFuzzer's driver (exported by the fuzzer runtime since LLVM 13).
@_silgen_name("LLVMFuzzerRunDriver")
func LLVMFuzzerRunDriver(_ argc: UnsafeMutablePointer<CInt>, _ argv: UnsafeMutablePointer<UnsafeMutablePointer<UnsafeMutablePointer<CChar>?>?>,
                         _ callback: @convention(c) (UnsafePointer<UInt8>?, Int) -> CInt) -> CInt

/// The process entry point. SwiftPM links an executable target with `main` defined as
/// `<target>_main`, so this is it: set the harness up, then hand over to libFuzzer.
@_cdecl("lora_fuzz_main")
public func fuzzMain(_ argc: CInt, _ argv: UnsafeMutablePointer<UnsafeMutablePointer<CChar>?>?) -> CInt {
    let environment = ProcessInfo.processInfo.environment
    let names = FuzzTarget.allCases.map(\.rawValue).joined(separator: ", ")
    guard let name = environment["LORA_FUZZ_TARGET"], let chosen = FuzzTarget(rawValue: name) else {
        FileHandle.standardError.write(Data("set LORA_FUZZ_TARGET to one of: \(names)\n".utf8))
        return 2
    }
    target = chosen
    let fixtures = URL(fileURLWithPath: environment["LORA_FUZZ_FIXTURES"] ?? "Tests/Fixtures")
    do {
        let (h, tokenizers) = try FuzzHarness.standard(fixtures: fixtures, realModels: environment["LORA_FUZZ_REAL_MODELS"] == "1")
        harness = h
        if chosen == .tokenize { FileHandle.standardError.write(Data("tokenizers: \(tokenizers.joined(separator: ", "))\n".utf8)) }
    } catch {
        FileHandle.standardError.write(Data("cannot set up the fuzz harness: \(error)\n".utf8))
        return 2
    }
    var count = argc
    var arguments = argv
    return LLVMFuzzerRunDriver(&count, &arguments, fuzzerTestOneInput)
}

@_cdecl("LLVMFuzzerTestOneInput")
public func fuzzerTestOneInput(_ bytes: UnsafePointer<UInt8>?, _ count: Int) -> CInt {
    guard let harness else { return 0 }
    let data = bytes.map { Data(bytes: $0, count: count) } ?? Data()
    if case .invariantBroken(let why) = harness.run(target, data) {
        FileHandle.standardError.write(Data("invariant broken (\(target.rawValue)): \(why)\n".utf8))
        abort()
    }
    return 0
}
