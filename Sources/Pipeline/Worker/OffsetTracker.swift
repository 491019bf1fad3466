/// Which input offsets a worker may commit, per partition.
///
/// Jobs from one partition finish out of order (a batch runs several at once), but a Kafka offset
/// commit says "everything before this offset is done". So a partition's committable offset only
/// advances over a contiguous run of finished jobs: with offsets 10, 11, 12 in flight and 11 and 12
/// finished, nothing past 10 may be committed until 10 finishes — otherwise a crash would lose 10.
public struct OffsetTracker: Sendable {
    struct PartitionState: Sendable {
        /// Offsets received and not yet finished.
        var inFlight: Set<Int64> = []
        /// The offset after the last one in the contiguous finished run (what to commit).
        var committable: Int64?
        /// The highest offset received so far.
        var highestReceived: Int64 = -1
    }

    private var partitions: [TopicPartitionRef: PartitionState] = [:]

    public init() {}

    /// Records that `offset` of `partition` was handed to the worker.
    public mutating func received(_ partition: TopicPartitionRef, offset: Int64) {
        var state = partitions[partition, default: PartitionState()]
        if state.committable == nil { state.committable = offset }
        state.inFlight.insert(offset)
        state.highestReceived = max(state.highestReceived, offset)
        partitions[partition] = state
    }

    /// Records that the job at `offset` reached its outcome (result, retry or dead letter produced).
    /// Returns false for an offset that was never received (a bug in the caller, or a stale event
    /// after the partition was revoked).
    @discardableResult
    public mutating func finished(_ partition: TopicPartitionRef, offset: Int64) -> Bool {
        guard var state = partitions[partition], state.inFlight.remove(offset) != nil else { return false }
        // Advance over the contiguous run; offsets never received (compacted away or transaction
        // markers) are skipped because nothing earlier is still in flight.
        let lowestInFlight = state.inFlight.min()
        state.committable = lowestInFlight ?? state.highestReceived + 1
        partitions[partition] = state
        return true
    }

    /// The offset to commit for each partition (the next offset to read after a restart).
    public var committableOffsets: [TopicPartitionRef: Int64] {
        partitions.compactMapValues { $0.committable }
    }

    /// Jobs in flight on `partition`.
    public func inFlight(_ partition: TopicPartitionRef) -> Int { partitions[partition]?.inFlight.count ?? 0 }

    /// Total jobs in flight.
    public var inFlightCount: Int { partitions.values.reduce(0) { $0 + $1.inFlight.count } }

    /// Forgets a partition (revoked in a rebalance): its in-flight jobs will be redelivered to the new owner.
    public mutating func revoke(_ partition: TopicPartitionRef) {
        partitions[partition] = nil
    }

    public var trackedPartitions: [TopicPartitionRef] { partitions.keys.sorted() }
}
