import Synchronization
#if canImport(Glibc)
import Glibc
#endif

/// SIGINT and SIGTERM during `lora train`: the first asks the run to stop after the current step
/// with a checkpoint (the training loop polls `requested`); a second one exits at once with
/// status 128 + signal. The handler only touches a lock-free atomic and calls `write(2)` and
/// `_exit(2)`, which are async-signal-safe.
enum StopSignals {
    /// The first stop signal received, 0 while none.
    static let received = Atomic<Int32>(0)

    static func install() {
        // Initialise the atomic (a lazily initialised global) before a handler can run.
        received.store(0, ordering: .sequentiallyConsistent)
        signal(SIGINT, stopSignalHandler)
        signal(SIGTERM, stopSignalHandler)
        // A parent may have started this process with them blocked (the mask survives exec;
        // Foundation's Process does that): they would stay pending forever.
        var set = sigset_t()
        sigemptyset(&set)
        sigaddset(&set, SIGINT)
        sigaddset(&set, SIGTERM)
        pthread_sigmask(SIG_UNBLOCK, &set, nil)
    }

    static var requested: Int32? {
        let s = received.load(ordering: .sequentiallyConsistent)
        return s == 0 ? nil : s
    }

    static func name(_ signal: Int32) -> String { signal == SIGINT ? "SIGINT" : signal == SIGTERM ? "SIGTERM" : "signal \(signal)" }
}

private func stopSignalHandler(_ signal: Int32) {
    if StopSignals.received.compareExchange(expected: 0, desired: signal, ordering: .sequentiallyConsistent).exchanged {
        let message: StaticString = "\nstop requested: finishing the current step and writing a checkpoint (send the signal again to stop at once)\n"
        _ = write(2, message.utf8Start, message.utf8CodeUnitCount)
    } else {
        let message: StaticString = "\nsecond stop signal: exiting at once\n"
        _ = write(2, message.utf8Start, message.utf8CodeUnitCount)
        _exit(128 + signal)
    }
}
