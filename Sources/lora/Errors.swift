import ArgumentParser
import Foundation
import Formats

/// What the user sees of a failure: one plain sentence, never a framework's internals
/// (`NSCocoaErrorDomain`, `DecodingError.typeMismatch …`), never the same path twice.
enum UserFacingErrors {
    static func clean(_ error: any Error) -> any Error {
        switch error {
        case is ExitCode, is CleanExit, is ValidationError: return error
        case let e as CommandError: return CommandError(tidy(e.description))
        case let e as DecodingError: return CommandError(decodingReason(e))
        default:
            let type = String(reflecting: Swift.type(of: error))
            // The argument parser's own errors print its usage text; keep them.
            if type.hasPrefix("ArgumentParser.") { return error }
            let ns = error as NSError
            if error is CocoaError || ns.domain == NSCocoaErrorDomain || ns.domain == NSPOSIXErrorDomain {
                return CommandError(plainFileReason(error))
            }
            return CommandError(tidy("\(error)"))
        }
    }

    /// Drops a repeated path ("P: P: reason" → "P: reason") and Foundation's wording.
    static func tidy(_ message: String) -> String {
        var parts = message.components(separatedBy: ": ")
        var i = 1
        while i < parts.count {
            let same = parts[i] == parts[i - 1]
            let looksLikePath = parts[i].contains("/") || parts[i].contains(".")
            if same && looksLikePath { parts.remove(at: i) } else { i += 1 }
        }
        var text = parts.joined(separator: ": ")
        for noise in [" (NSCocoaErrorDomain error 256.)", "The operation could not be completed. "] {
            text = text.replacingOccurrences(of: noise, with: "")
        }
        return text
    }
}

/// A decoding failure in words: which key, what was expected.
func decodingReason(_ error: any Error) -> String {
    guard let e = error as? DecodingError else { return "\(error)" }
    func path(_ context: DecodingError.Context) -> String {
        let keys = context.codingPath.map { $0.intValue.map { "[\($0)]" } ?? $0.stringValue }
        return keys.isEmpty ? "the top level" : "'" + keys.joined(separator: ".").replacingOccurrences(of: ".[", with: "[") + "'"
    }
    switch e {
    case let .typeMismatch(type, context): return "\(path(context)) must be \(describeType(type))"
    case let .valueNotFound(type, context): return "\(path(context)) must be \(describeType(type)), not null"
    case let .keyNotFound(key, _): return "'\(key.stringValue)' is missing"
    case let .dataCorrupted(context):
        let why = context.underlyingError.map { plainFileReason($0) } ?? context.debugDescription
        return context.codingPath.isEmpty ? "not valid JSON (\(why))" : "\(path(context)) has a value that cannot be read (\(context.debugDescription))"
    @unknown default: return "\(e)"
    }
}

private func describeType(_ type: Any.Type) -> String {
    switch type {
    case is Int.Type, is UInt64.Type, is Int32.Type: return "a whole number"
    case is Double.Type, is Float.Type: return "a number"
    case is Bool.Type: return "true or false"
    case is String.Type: return "a string"
    default:
        let name = String(describing: type)
        if name.hasPrefix("Array") || name.hasPrefix("[") { return "a list" }
        if name.hasPrefix("Dictionary") { return "an object" }
        return name
    }
}
