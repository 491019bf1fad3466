import Foundation
import Kafka
import Synchronization
import Testing

/// A name no other test (or earlier run) uses: tests run in parallel against shared brokers.
func uniqueName(_ prefix: String) -> String {
    "\(prefix)-\(UUID().uuidString.prefix(8).lowercased())"
}

/// Group timing that makes the mock cluster rebalance in seconds (see KAFKA-HERE.md).
let fastGroup: [String: String] = ["session.timeout.ms": "6000", "heartbeat.interval.ms": "500"]

/// The noida-db broker from `LEVEE_NOIDA_BOOTSTRAP`, or nil with the reason printed.
func noidaBootstrap(_ test: String = #function) -> String? {
    if let value = ProcessInfo.processInfo.environment["LEVEE_NOIDA_BOOTSTRAP"], !value.isEmpty { return value }
    print("skipped \(test): LEVEE_NOIDA_BOOTSTRAP is not set (scripts/test sets it; or start one with scripts/noida)")
    return nil
}

struct TestTimeout: Error, CustomStringConvertible {
    var what: String
    var description: String { "timed out: \(what)" }
}

enum Outcome<T: Sendable>: Sendable { case value(T), timedOut }

/// Runs `body`, failing with `TestTimeout` if it does not finish within `timeout`.
func within<T: Sendable>(_ timeout: Duration, _ what: String, _ body: @escaping @Sendable () async throws -> T) async throws -> T {
    return try await withThrowingTaskGroup(of: Outcome<T>.self) { group in
        group.addTask { .value(try await body()) }
        group.addTask {
            try await Task.sleep(for: timeout)
            return .timedOut
        }
        defer { group.cancelAll() }
        guard case .value(let value) = try await group.next()! else { throw TestTimeout(what: what) }
        return value
    }
}

/// Reads `count` records from `consumer`, failing after `timeout`.
func collect(_ consumer: KafkaConsumer, count: Int, timeout: Duration = .seconds(20)) async throws -> [KafkaMessage] {
    let seen = Mutex<[KafkaMessage]>([])
    do {
        return try await within(timeout, "\(count) messages") {
            for try await message in consumer.messages {
                let done = seen.withLock { s in
                    s.append(message)
                    return s.count >= count
                }
                if done { break }
            }
            return seen.withLock { $0 }
        }
    } catch let error as TestTimeout {
        throw TestTimeout(what: "\(error.what) (got \(seen.withLock { $0.count }))")
    }
}

/// Polls `condition` until it holds or `timeout` passes (for group state that has no event to await).
func eventually(_ timeout: Duration, _ what: String, _ condition: @Sendable () throws -> Bool) async throws {
    let deadline = ContinuousClock.now + timeout
    while ContinuousClock.now < deadline {
        if try condition() { return }
        try await Task.sleep(for: .milliseconds(100))
    }
    throw TestTimeout(what: what)
}

func bytes(_ text: String) -> [UInt8] { Array(text.utf8) }
