import Foundation
import Kafka
import Synchronization

/// Follows the results topic (all partitions, read_committed, no group) and keeps the first
/// terminal record per job id, counting any further records for the same id as duplicates.
/// Used by `levee demo`, the tests and the benchmarks to know when a burst has drained.
public final class ResultCollector: Sendable {
    public struct Snapshot: Sendable {
        /// The first record per job id.
        public var results: [JobID: ResultRecord]
        /// Records beyond the first, per job id.
        public var duplicates: [JobID: Int]
        public var recordsRead: Int
        /// When each job's first record was read.
        public var seenAt: [JobID: Timestamp]
    }

    private let consumer: KafkaConsumer
    private let state = Mutex(Snapshot(results: [:], duplicates: [:], recordsRead: 0, seenAt: [:]))
    private let changed = Mutex<[CheckedContinuation<Void, Never>]>([])

    /// Starts at the beginning of the results topic (or at `since`, when given).
    public init(connection: KafkaConnection, isolation: String = "read_committed", since: Timestamp? = nil) async throws {
        let consumer = try KafkaConsumer(configuration: connection.configuration(["isolation.level": isolation]), bufferCapacity: 10_000)
        let admin = try KafkaAdmin(configuration: connection.configuration())
        let topic = connection.layout.results
        let count = try await admin.describeTopic(topic).partitionCount
        var starts = (0..<count).map { TopicPartitionOffset(topic, Int32($0), offset: KafkaOffset.beginning) }
        if let since {
            var query: [TopicPartition: Int64] = [:]
            for p in 0..<count { query[TopicPartition(topic, Int32(p))] = since.millisecondsSinceEpoch }
            starts = try await consumer.offsetsForTimes(query)
        }
        try consumer.assign(starts)
        self.consumer = consumer
    }

    /// Reads until cancelled or closed. Run it in a task of its own.
    public func run() async throws {
        for try await message in consumer.messages {
            if message.value == nil, let id = message.keyString.flatMap(JobID.init(string:)) {
                // A tombstone deletes the job's result; a later record is its first again.
                state.withLock { s in
                    s.results[id] = nil
                    s.duplicates[id] = nil
                    s.seenAt[id] = nil
                }
                continue
            }
            guard let value = message.value, let record = try? LeveeJSON.decode(ResultRecord.self, from: Data(value)) else { continue }
            state.withLock { s in
                s.recordsRead += 1
                if s.results[record.jobID] == nil {
                    s.results[record.jobID] = record
                    s.seenAt[record.jobID] = .now()
                } else {
                    s.duplicates[record.jobID, default: 0] += 1
                }
            }
            let waiters = changed.withLock { w -> [CheckedContinuation<Void, Never>] in defer { w = [] }; return w }
            for waiter in waiters { waiter.resume() }
        }
    }

    public var snapshot: Snapshot { state.withLock { $0 } }

    /// Waits until every id in `jobIDs` has a result, or `timeout` passes; returns the ids still missing.
    public func waitFor(_ jobIDs: Set<JobID>, timeout: Duration, progress: (@Sendable (Int) -> Void)? = nil) async -> Set<JobID> {
        let deadline = ContinuousClock.now + timeout
        while true {
            let missing = state.withLock { s in jobIDs.filter { s.results[$0] == nil } }
            progress?(jobIDs.count - missing.count)
            if missing.isEmpty || ContinuousClock.now >= deadline || Task.isCancelled { return Set(missing) }
            // Wake on the next record or after a short while (to report progress and notice the deadline).
            await withTaskGroup(of: Void.self) { group in
                group.addTask {
                    await withCheckedContinuation { (c: CheckedContinuation<Void, Never>) in
                        self.changed.withLock { $0.append(c) }
                    }
                }
                group.addTask { try? await Task.sleep(for: .milliseconds(250)) }
                _ = await group.next()
                // Release a waiter that may still be parked, so the group can end.
                let waiters = self.changed.withLock { w -> [CheckedContinuation<Void, Never>] in defer { w = [] }; return w }
                for waiter in waiters { waiter.resume() }
                group.cancelAll()
            }
        }
    }

    public func close() async { await consumer.close() }
}
