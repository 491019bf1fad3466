import Foundation
import Synchronization

/// Runs the built `levee` binary for CLI tests: either to completion (`run`) or as a running
/// process the test talks to line by line (`start`, then `readLine`, `send`, `terminate`).
///
/// The binary is `$LEVEE_BIN`, else `.build/release/levee`, else `.build/debug/levee` under the
/// package root (found from this file's path).
struct LeveeProcess {
    /// What a finished process left behind.
    struct Output: CustomStringConvertible {
        var status: Int32
        var stdout: String
        var stderr: String
        /// True when the process was killed because it outlived its timeout.
        var timedOut: Bool

        var description: String { "exit \(status)\(timedOut ? " (timed out)" : "")\nstdout: \(stdout)\nstderr: \(stderr)" }
    }

    struct Failure: Error, CustomStringConvertible {
        var description: String
    }

    /// The `levee` binary the tests run.
    static func binary() throws -> URL {
        if let path = ProcessInfo.processInfo.environment["LEVEE_BIN"], !path.isEmpty {
            guard FileManager.default.isExecutableFile(atPath: path) else {
                throw Failure(description: "LEVEE_BIN=\(path) is not an executable file")
            }
            return URL(fileURLWithPath: path)
        }
        let root = URL(fileURLWithPath: #filePath).deletingLastPathComponent().deletingLastPathComponent().deletingLastPathComponent()
        for configuration in ["release", "debug"] {
            let candidate = root.appendingPathComponent(".build/\(configuration)/levee")
            if FileManager.default.isExecutableFile(atPath: candidate.path) { return candidate }
        }
        throw Failure(description: "no levee binary: set LEVEE_BIN or run `swift build` first (looked in \(root.path)/.build)")
    }

    /// Runs `levee arguments...` to completion with `stdin` as its input and returns its output.
    /// A process still running after `timeout` seconds is killed and reported as timed out.
    ///
    /// Every wait here happens on a thread of its own, never on Swift concurrency's cooperative
    /// pool: that pool has one thread per core (two in CI), and a test blocking it while a
    /// command runs for a minute stalls every other test in the process.
    static func run(_ arguments: [String], stdin: String = "", environment: [String: String] = [:],
                    timeout: Double = 60) async throws -> Output {
        let running = try start(arguments, environment: environment)
        running.send(stdin)
        running.closeInput()
        return await running.waitForExit(timeout: timeout)
    }

    /// Runs `body` on a new thread and awaits its result, leaving the cooperative pool free.
    static func offPool<T: Sendable>(_ body: @escaping @Sendable () -> T) async -> T {
        await withCheckedContinuation { continuation in
            Thread.detachNewThread { continuation.resume(returning: body()) }
        }
    }

    /// Starts `levee arguments...` and returns it running, stdin open.
    static func start(_ arguments: [String], environment: [String: String] = [:]) throws -> Running {
        try Running(binary: binary(), arguments: arguments, environment: environment)
    }

    /// A `levee` process the test is talking to. Killed on deinit if still running.
    final class Running: @unchecked Sendable {
        // @unchecked: Process and the pipes are only touched from the test's own thread; the
        // captured output is shared with the reader threads under `Mutex`es.
        private let process = Process()
        private let input = Pipe()
        private let stdout = Stream()
        private let stderr = Stream()

        init(binary: URL, arguments: [String], environment: [String: String]) throws {
            process.executableURL = binary
            process.arguments = arguments
            process.environment = ProcessInfo.processInfo.environment.merging(environment) { $1 }
            process.standardInput = input
            let out = Pipe(), err = Pipe()
            process.standardOutput = out
            process.standardError = err
            try process.run()
            stdout.drain(out.fileHandleForReading)
            stderr.drain(err.fileHandleForReading)
        }

        deinit {
            if process.isRunning { kill(process.processIdentifier, SIGKILL) }
        }

        var processIdentifier: Int32 { process.processIdentifier }
        var isRunning: Bool { process.isRunning }

        /// Writes text to the process's stdin (add "\n" to end a line).
        func send(_ text: String) {
            guard !text.isEmpty else { return }
            try? input.fileHandleForWriting.write(contentsOf: Data(text.utf8))
        }

        /// Closes stdin (the process sees end of input).
        func closeInput() {
            try? input.fileHandleForWriting.close()
        }

        /// The next whole line of stdout, or nil if none arrives within `timeout` seconds or
        /// stdout ends first.
        func readLine(timeout: Double = 20) async -> String? {
            let stdout = self.stdout
            return await LeveeProcess.offPool { stdout.nextLine(timeout: timeout) }
        }

        /// Everything written to stderr so far.
        var stderrSoFar: String { stderr.everything() }

        /// Sends a signal (SIGTERM by default).
        func signal(_ number: Int32 = SIGTERM) {
            kill(process.processIdentifier, number)
        }

        /// Waits for the process to exit, killing it after `timeout` seconds. Output holds what
        /// was not yet read with `readLine`.
        func waitForExit(timeout: Double = 30) async -> Output {
            await LeveeProcess.offPool { self.waitForExitBlocking(timeout: timeout) }
        }

        /// ``waitForExit(timeout:)`` blocking the calling thread: only for `defer` blocks (which
        /// cannot await), with a short timeout.
        func waitForExitBlocking(timeout: Double = 30) -> Output {
            let deadline = Date().addingTimeInterval(timeout)
            var timedOut = false
            while process.isRunning {
                if Date() > deadline {
                    timedOut = true
                    kill(process.processIdentifier, SIGKILL)
                    break
                }
                usleep(10_000)
            }
            process.waitUntilExit()
            stdout.waitForEnd(timeout: 5)
            stderr.waitForEnd(timeout: 5)
            return Output(status: process.terminationStatus, stdout: stdout.rest(), stderr: stderr.everything(),
                          timedOut: timedOut)
        }
    }

    /// One output stream, read on its own thread into a buffer the test reads from.
    private final class Stream: Sendable {
        private struct Buffer {
            var bytes: [UInt8] = []
            var consumed = 0
            var ended = false
        }
        private let buffer = Mutex(Buffer())

        func drain(_ handle: FileHandle) {
            Thread.detachNewThread { [self] in
                while true {
                    let data = handle.availableData
                    if data.isEmpty { break }
                    buffer.withLock { $0.bytes += data }
                }
                buffer.withLock { $0.ended = true }
            }
        }

        func nextLine(timeout: Double) -> String? {
            let deadline = Date().addingTimeInterval(timeout)
            while true {
                let (line, ended): (String?, Bool) = buffer.withLock { state in
                    let unread = state.bytes[state.consumed...]
                    guard let newline = unread.firstIndex(of: UInt8(ascii: "\n")) else { return (nil, state.ended) }
                    let line = String(decoding: state.bytes[state.consumed..<newline], as: UTF8.self)
                    state.consumed = newline + 1
                    return (line, false)
                }
                if let line { return line }
                if ended || Date() > deadline { return nil }
                usleep(5_000)
            }
        }

        func waitForEnd(timeout: Double) {
            let deadline = Date().addingTimeInterval(timeout)
            while !buffer.withLock({ $0.ended }) && Date() < deadline { usleep(5_000) }
        }

        func rest() -> String {
            buffer.withLock { String(decoding: $0.bytes[$0.consumed...], as: UTF8.self) }
        }

        func everything() -> String {
            buffer.withLock { String(decoding: $0.bytes, as: UTF8.self) }
        }
    }
}
