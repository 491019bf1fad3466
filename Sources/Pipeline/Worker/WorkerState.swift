import Foundation
import Kafka
import Synchronization

/// A job taken from a partition, with where it came from.
struct WorkItem: Sendable {
    var job: JobEnvelope
    var partition: TopicPartitionRef
    var offset: Int64
    /// The assignment epoch of the partition when the record was read: an outcome from an
    /// earlier epoch (the partition was revoked since) is dropped, never committed.
    var epoch: Int
    var generation: Int32?
    var receivedAt: Timestamp
}

/// Where a record came from, for outcomes of records that are not readable jobs.
struct Source: Sendable {
    var partition: TopicPartitionRef
    var offset: Int64
    var epoch: Int
    var generation: Int32?
}

/// Why a running job was stopped.
enum StopReason: Sendable { case cancelled, timedOut, rebalanced, handedBack }

/// A job on the engine, with the signal that stops it.
final class RunningJob: Sendable {
    let item: WorkItem
    let signal = OneShotSignal()
    /// When this attempt went on the engine (reported in heartbeats).
    let startedAt = Timestamp.now()
    private let why = Mutex<StopReason?>(nil)

    init(item: WorkItem) { self.item = item }

    var reason: StopReason? { why.withLock { $0 } }

    func stop(_ reason: StopReason) {
        let first = why.withLock { r -> Bool in
            guard r == nil else { return false }
            r = reason
            return true
        }
        if first { signal.fire() }
    }
}

/// What a finished record leaves to commit: the records to produce (in the transaction) and
/// the offset it releases.
struct Outcome: Sendable {
    var jobID: JobID?
    var partition: TopicPartitionRef
    var offset: Int64
    var epoch: Int
    var records: [ProducerRecord]
    /// The terminal status, when this outcome ends the job.
    var status: JobStatus?
    /// Whether this outcome ends the job (a terminal result); retries and skipped duplicates do not.
    var isFinal: Bool
    var retried = false
    var deadLettered = false
    /// The error class of a failure, retry or dead letter (for metrics).
    var errorClass: ErrorClass?
    /// The job this outcome is about (nil for a record that is not a readable job).
    var item: WorkItem?
    /// A poison record's dead letter, kept to write a smaller one if the broker refuses it.
    var deadLetter: DeadLetter?
    var generation: Int32?
    /// How many times the broker refused a record of this outcome (each time it is rebuilt smaller).
    var refusals = 0
    /// A refused outcome that cannot be made smaller waits until then before it is tried again.
    var retryAt: ContinuousClock.Instant?

    init(item: WorkItem, records: [ProducerRecord], status: JobStatus?, isFinal: Bool, retried: Bool = false) {
        self.item = item
        self.generation = item.generation
        self.jobID = item.job.jobID
        self.partition = item.partition
        self.offset = item.offset
        self.epoch = item.epoch
        self.records = records
        self.status = status
        self.isFinal = isFinal
        self.retried = retried
    }

    init(jobID: JobID?, source: Source, records: [ProducerRecord], status: JobStatus?, deadLettered: Bool) {
        self.jobID = jobID
        self.partition = source.partition
        self.offset = source.offset
        self.epoch = source.epoch
        self.generation = source.generation
        self.records = records
        self.status = status
        self.isFinal = status != nil
        self.deadLettered = deadLettered
    }
}

/// The worker's mutable state, behind one mutex (it is touched by the reader, the runners, the
/// committer, the index and the consumer's poll thread).
struct WorkerRuntimeState {
    var tracker = OffsetTracker()
    var epochs: [TopicPartitionRef: Int] = [:]
    var nextEpoch = 0
    var generation: Int32?
    var ready = false
    var pending = PendingOutcomes()
    var committing = false
    /// Jobs whose terminal outcomes are in the commit in flight: out of `pending`, not yet in
    /// `completed` (or back in `pending` if it fails). A copy read meanwhile is a duplicate.
    var committingJobs: Set<JobID> = []
    /// Revoke callbacks (librdkafka's thread) waiting for the commit in flight to end.
    var commitEndWaiters: [DispatchSemaphore] = []
    var lastCommitted: [TopicPartitionRef: Int64] = [:]
    var running: [JobID: RunningJob] = [:]
    /// Jobs waiting in the queue or the retry delay, with the partition epoch they came from.
    var queued: [JobID: (partition: TopicPartitionRef, epoch: Int)] = [:]
    var delayed: [WorkItem] = []
    var runners = 0
    var draining = false
    var finalCommitRequested = false
    /// Job ids with a committed terminal record (from the results topic and our own commits).
    var completed: Set<JobID> = []
    /// Job ids with a cancel request.
    var cancelled: Set<JobID> = []
    var resultPartitions = 0
    /// Results partition → offset the index has read up to.
    var indexPosition: [Int32: Int64] = [:]
    /// Results partition → offset the index must reach before jobs are processed.
    var indexBarrier: [Int32: Int64] = [:]
    var barrierSetAt = ContinuousClock.now
    var statistics = WorkerStatistics()
    /// The largest record each output topic takes (read at start).
    var recordLimits = RecordLimits()
    /// Whether the brokers were asked for the topics' limits yet (done once, at start).
    var recordLimitsAsked = false
    /// Commits failing in a row, since when, and the last error: the health signal.
    var commitFailures = 0
    var commitFailingSince: Timestamp?
    var commitFailingSinceInstant: ContinuousClock.Instant?
    var lastCommitError: String?

    /// Whether a newly read record of job `id` is a duplicate to skip: the job has a committed or
    /// pending terminal outcome, or a copy from a partition this worker still holds is queued,
    /// delayed or running. A copy from a revoked epoch does not count: it will be dropped, so the
    /// new copy must run (skipping it would lose the job).
    func isDuplicate(_ id: JobID) -> Bool {
        if completed.contains(id) || committingJobs.contains(id) { return true }
        if let r = running[id], epochs[r.item.partition] == r.item.epoch { return true }
        if let q = queued[id], epochs[q.partition] == q.epoch { return true }
        return pending.hasFinal(id)
    }

    /// A commit of `outcomes` (and offsets) begins: they count as duplicates until it ends.
    mutating func beginCommit(_ outcomes: [Outcome], hasOffsets: Bool) {
        committing = !outcomes.isEmpty || hasOffsets
        committingJobs = Set(outcomes.lazy.filter(\.isFinal).compactMap(\.jobID))
    }

    /// The commit ended; returns the waiters to signal (outside the lock).
    mutating func endCommit() -> [DispatchSemaphore] {
        committing = false
        committingJobs = []
        defer { commitEndWaiters = [] }
        return commitEndWaiters
    }

    mutating func enqueue(_ item: WorkItem) {
        queued[item.job.jobID] = (item.partition, item.epoch)
    }

    /// Forgets `item`'s queue entry, unless a newer copy of the job replaced it.
    mutating func dequeue(_ item: WorkItem) {
        if let q = queued[item.job.jobID], q.partition == item.partition, q.epoch == item.epoch {
            queued[item.job.jobID] = nil
        }
    }
}

/// The clients one `run()` uses.
struct RunContext: Sendable {
    let plain: KafkaProducer
    let transactional: TransactionalProducer?
    let consumer: KafkaConsumer
    let queue: BoundedQueue<WorkItem>
}

/// Outcomes waiting to be committed, in order, with an index of the jobs they end: the duplicate
/// check asks for every job read, and a scan of thousands of pending outcomes (each a copy of a
/// large value) showed in a profile of a burst.
struct PendingOutcomes: Sequence, ExpressibleByArrayLiteral {
    private(set) var items: [Outcome] = []
    private var finals: [JobID: Int] = [:]

    init() {}

    init(_ outcomes: [Outcome]) {
        items = outcomes
        for outcome in outcomes { count(outcome, 1) }
    }

    init(arrayLiteral outcomes: Outcome...) { self.init(outcomes) }

    mutating func removeAll() {
        items = []
        finals = [:]
    }

    var isEmpty: Bool { items.isEmpty }
    var count: Int { items.count }
    func makeIterator() -> IndexingIterator<[Outcome]> { items.makeIterator() }

    /// Whether a terminal outcome of `id` is waiting.
    func hasFinal(_ id: JobID) -> Bool { finals[id] != nil }

    mutating func append(_ outcome: Outcome) {
        items.append(outcome)
        count(outcome, 1)
    }

    mutating func prepend(contentsOf outcomes: [Outcome]) {
        items.insert(contentsOf: outcomes, at: 0)
        for outcome in outcomes { count(outcome, 1) }
    }

    mutating func removeAll(where shouldRemove: (Outcome) throws -> Bool) rethrows {
        var kept: [Outcome] = []
        kept.reserveCapacity(items.count)
        for outcome in items {
            if try shouldRemove(outcome) { count(outcome, -1) } else { kept.append(outcome) }
        }
        items = kept
    }

    private mutating func count(_ outcome: Outcome, _ delta: Int) {
        guard outcome.isFinal, let id = outcome.jobID else { return }
        let n = (finals[id] ?? 0) + delta
        finals[id] = n > 0 ? n : nil
    }
}
