import Foundation
#if canImport(Glibc)
import Glibc
#endif

/// A file error in plain words ("No such file or directory", "Is a directory"), as the system
/// says it, never Foundation's wrapping (`NSCocoaErrorDomain error 256`, `Error Domain=…`).
/// Errors that are not Foundation's keep their own description.
public func plainFileReason(_ error: any Error) -> String {
    let ns = error as NSError
    let isFoundation = error is CocoaError || ns.domain == NSCocoaErrorDomain || ns.domain == NSPOSIXErrorDomain
    guard isFoundation else { return "\(error)" }
    if ns.domain == NSPOSIXErrorDomain { return String(cString: strerror(Int32(ns.code))) }
    if let underlying = ns.userInfo[NSUnderlyingErrorKey] as? NSError, underlying.domain == NSPOSIXErrorDomain {
        return String(cString: strerror(Int32(underlying.code)))
    }
    switch CocoaError.Code(rawValue: ns.code) {
    case .fileNoSuchFile, .fileReadNoSuchFile: return String(cString: strerror(ENOENT))
    case .fileReadNoPermission, .fileWriteNoPermission: return String(cString: strerror(EACCES))
    case .fileWriteFileExists: return "a file of that name already exists"
    case .fileWriteOutOfSpace: return String(cString: strerror(ENOSPC))
    case .fileWriteVolumeReadOnly: return String(cString: strerror(EROFS))
    case .fileReadInapplicableStringEncoding, .fileReadCorruptFile: return "it is not valid UTF-8 text"
    case .fileReadTooLarge: return "it is too large to read"
    default:
        // Foundation's catch-all (code 256 and the like), seen when the path is a folder.
        return "it cannot be read as a file"
    }
}

/// Why a path cannot be read as a regular file, checked before reading it: nil when it can.
public func unreadableFileReason(_ url: URL) -> String? {
    var isDirectory: ObjCBool = false
    guard FileManager.default.fileExists(atPath: url.path, isDirectory: &isDirectory) else { return String(cString: strerror(ENOENT)) }
    if isDirectory.boolValue { return "it is a folder, not a file" }
    return nil
}
