import Foundation
import Kafka
import Pipeline

/// What kind of job the chaos run submitted, and so which terminal status it should end with.
enum ChaosJobKind: String, Codable, Sendable, CaseIterable {
    /// A valid job; succeeds (or fails after its retries if the synthetic engine keeps failing it).
    case normal
    /// Bytes that are not a job (invalid JSON), or a job naming a model no worker serves:
    /// failed + dead-lettered at once.
    case poison
    /// A job record larger than the workers' limit: failed + dead-lettered.
    case oversize
    /// A job whose deadline passed before any worker could run it: expired.
    case expired

    var expected: Set<JobStatus> {
        switch self {
        case .normal: [.succeeded, .failed]
        case .poison, .oversize: [.failed]
        case .expired: [.expired]
        }
    }
}

/// One job the brokers acknowledged.
struct ChaosJob: Sendable {
    var id: JobID
    var kind: ChaosJobKind
    /// Submitted through `JobClient` (so its trace starts with `submitted` and `accepted`); raw
    /// poison bytes are produced directly and have no client events.
    var viaClient: Bool
}

/// A worker process SIGKILLed at `at`.
struct ChaosKill: Sendable {
    var workerID: String
    var pid: Int32
    var at: Timestamp
}

/// Terminal records per job, as one isolation level sees them.
struct ResultTally {
    struct Entry { var status: JobStatus; var workerPID: Int32?; var workerID: String?; var completedAt: Timestamp }
    /// Records after the last tombstone, in partition order (the first one is what readers keep).
    var records: [JobID: [Entry]] = [:]

    mutating func apply(_ message: KafkaMessage) {
        guard let id = message.keyString.flatMap(JobID.init(string:)) else { return }
        guard let value = message.value else { records[id] = nil; return }
        guard let r = try? LeveeJSON.decode(ResultRecord.self, from: Data(value)) else { return }
        records[id, default: []].append(Entry(status: r.status, workerPID: r.worker?.pid, workerID: r.worker?.id, completedAt: r.completedAt))
    }
}

/// Trace events per job (only the fields the audit needs).
struct TraceTally {
    struct Entry { var stage: TraceStage; var at: Timestamp; var pid: Int32?; var attempt: Int }
    var events: [JobID: [Entry]] = [:]

    mutating func apply(_ message: KafkaMessage) {
        guard let id = message.keyString.flatMap(JobID.init(string:)), let value = message.value,
              let e = try? LeveeJSON.decode(TraceEvent.self, from: Data(value)) else { return }
        events[id, default: []].append(Entry(stage: e.stage, at: e.at, pid: e.worker?.pid, attempt: e.attempt))
    }
}

/// The chaos run's summary (`--json` prints it as one object).
struct ChaosSummary: Encodable {
    struct Duplicates: Encodable {
        /// Jobs with more than one terminal record.
        var jobs: Int
        /// Terminal records beyond the first, over all jobs.
        var extraRecords: Int
        var examples: [String]
        enum CodingKeys: String, CodingKey { case jobs, extraRecords = "extra_records", examples }
    }
    struct DuplicateCounts: Encodable {
        var readCommitted: Duplicates
        var readUncommitted: Duplicates
        enum CodingKeys: String, CodingKey { case readCommitted = "read_committed", readUncommitted = "read_uncommitted" }
    }
    struct BrokerFaults: Encodable {
        var total = 0
        var down = 0
        var latency = 0
        var requestErrors = 0
        var byAPI: [String: Int] = [:]
        /// Broker downs by broker id.
        var downByBroker: [String: Int] = [:]
        /// The broker never taken down or slowed (embedded: the group coordinator's), nil on noida.
        var sparedBroker: Int?
        enum CodingKeys: String, CodingKey {
            case total, down, latency, requestErrors = "request_errors", byAPI = "by_api"
            case downByBroker = "down_by_broker", sparedBroker = "spared_broker"
        }
    }
    struct KillRecovery: Encodable {
        /// Jobs a killed worker held (received, no outcome yet) that then finished on another process.
        var jobsMoved: Int
        /// Longest time from a kill to the last of those jobs' terminal records.
        var longestMs: Int64?
        var longestJob: String?
        enum CodingKeys: String, CodingKey { case jobsMoved = "jobs_moved", longestMs = "longest_ms", longestJob = "longest_job" }
    }
    struct Trace: Encodable {
        var complete: Bool
        var incomplete: Int
        var examples: [String]
    }
    struct Verdict: Encodable {
        var passed: Bool
        var rule: String
        var failures: [String]
        var notes: [String]
    }

    var broker: String
    var bootstrap: String
    var jobs: Int
    var submitted: [String: Int]
    var submitFailures: Int
    var workers: Int
    var chaosSeconds: Double
    var drainSeconds: Double
    var workerKills: Int
    var gracefulStops: Int
    var gracefulStopProblems: Int
    var unexpectedExits: Int
    var brokerFaults: BrokerFaults
    var terminal: [String: Int]
    var unexpectedStatus: Int
    var lost: Int
    var lostExamples: [String]
    var duplicates: DuplicateCounts
    var deadLetters: Int
    var requeuedByReconciler: Int
    var killRecovery: KillRecovery
    var trace: Trace
    var reconciler: String
    var logs: String?
    var verdict: Verdict

    enum CodingKeys: String, CodingKey {
        case broker, bootstrap, jobs, submitted, workers, lost, duplicates, trace, reconciler, logs, verdict, terminal
        case submitFailures = "submit_failures", chaosSeconds = "chaos_seconds", drainSeconds = "drain_seconds"
        case workerKills = "worker_kills", gracefulStops = "graceful_stops", gracefulStopProblems = "graceful_stop_problems"
        case unexpectedExits = "unexpected_exits", brokerFaults = "broker_faults", unexpectedStatus = "unexpected_status"
        case lostExamples = "lost_examples", deadLetters = "dead_letters", requeuedByReconciler = "requeued_by_reconciler"
        case killRecovery = "kill_recovery"
    }

    static func duplicates(_ tally: ResultTally, among ids: Set<JobID>) -> Duplicates {
        var d = Duplicates(jobs: 0, extraRecords: 0, examples: [])
        for (id, records) in tally.records.sorted(by: { $0.key < $1.key }) where ids.contains(id) && records.count > 1 {
            d.jobs += 1
            d.extraRecords += records.count - 1
            if d.examples.count < 5 {
                d.examples.append("\(id) \(records.map { "\($0.status.rawValue)@\($0.workerID ?? "?")/\($0.workerPID.map(String.init) ?? "?")" }.joined(separator: ","))")
            }
        }
        return d
    }

    /// For each kill: the jobs the killed process held at that moment (its newest event on the
    /// job was received / inference started / finished, with no outcome yet) whose terminal
    /// record then came from another process; the longest kill → terminal record gap.
    static func killRecovery(kills: [ChaosKill], trace: TraceTally, results: ResultTally, ids: Set<JobID>) -> KillRecovery {
        var recovery = KillRecovery(jobsMoved: 0, longestMs: nil, longestJob: nil)
        let holding: Set<TraceStage> = [.received, .inferenceStarted, .inferenceFinished]
        let relevant: Set<TraceStage> = holding.union([.retryScheduled, .deadLettered, .expired, .cancelled, .resultCommitted, .handedBack])
        let byPID = Dictionary(grouping: kills, by: \.pid)
        for (id, events) in trace.events where ids.contains(id) {
            guard let first = results.records[id]?.first else { continue }
            let pids = Set(events.compactMap(\.pid)).intersection(byPID.keys)
            for pid in pids {
                for kill in byPID[pid] ?? [] {
                    let before = events.filter { relevant.contains($0.stage) && $0.at <= kill.at }
                    guard let last = before.max(by: { ($0.at, ChaosSummary.rank($0.stage)) < ($1.at, ChaosSummary.rank($1.stage)) }),
                          last.pid == pid, holding.contains(last.stage) else { continue }
                    guard first.workerPID != pid, kill.at <= first.completedAt else { continue }
                    recovery.jobsMoved += 1
                    let gap = kill.at.milliseconds(until: first.completedAt)
                    if gap > (recovery.longestMs ?? -1) {
                        recovery.longestMs = gap
                        recovery.longestJob = id.description
                    }
                }
            }
        }
        return recovery
    }

    static func rank(_ stage: TraceStage) -> Int {
        switch stage {
        case .received: 1
        case .inferenceStarted: 2
        case .inferenceFinished: 3
        case .handedBack: 4
        case .retryScheduled, .deadLettered, .expired, .cancelled: 5
        case .resultCommitted: 6
        default: 0
        }
    }

    /// Whether each job's trace runs from submit to `result_committed`.
    static func traceCheck(jobs: [ChaosJob], trace: TraceTally) -> Trace {
        var incomplete: [String] = []
        for job in jobs {
            let stages = Set((trace.events[job.id] ?? []).map(\.stage))
            var missing: [String] = []
            if job.viaClient {
                // The client's one `accepted` record stands for `submitted` too (TraceEvent.expandingClientEvents).
                if !stages.contains(.submitted) && !stages.contains(.accepted) { missing.append("submitted") }
                if !stages.contains(.accepted) { missing.append("accepted") }
            }
            if !stages.contains(.resultCommitted) { missing.append("result_committed") }
            if !missing.isEmpty { incomplete.append("\(job.id) (\(job.kind.rawValue)) missing \(missing.joined(separator: ","))") }
        }
        return Trace(complete: incomplete.isEmpty, incomplete: incomplete.count, examples: Array(incomplete.sorted().prefix(5)))
    }

    /// The human form.
    var text: String {
        func line(_ name: String, _ value: String) -> String { "  " + name.padding(toLength: 34, withPad: " ", startingAt: 0) + value + "\n" }
        var t = "\nLevee chaos — \(jobs) jobs, \(workers) workers, broker \(broker) (\(bootstrap))\n"
        t += line("submitted", submitted.sorted { $0.key < $1.key }.map { "\($0.key) \($0.value)" }.joined(separator: ", ")
                  + (submitFailures > 0 ? " (\(submitFailures) submits failed, not counted)" : ""))
        t += line("chaos / drain", String(format: "%.1f s / %.1f s", chaosSeconds, drainSeconds))
        t += line("worker kills (SIGKILL)", String(workerKills))
        t += line("graceful stops (SIGTERM)", "\(gracefulStops)" + (gracefulStopProblems > 0 ? " (\(gracefulStopProblems) did not exit 0 in time)" : ""))
        t += line("unexpected worker exits", String(unexpectedExits))
        t += line("broker faults", brokerFaults.total == 0 ? "0" :
                  "\(brokerFaults.total) (down \(brokerFaults.down), latency \(brokerFaults.latency), request errors \(brokerFaults.requestErrors): "
                  + brokerFaults.byAPI.sorted { $0.key < $1.key }.map { "\($0.key) \($0.value)" }.joined(separator: ", ") + ")"
                  + (brokerFaults.sparedBroker.map { "; group coordinator broker \($0) spared" } ?? ""))
        t += line("terminal results", JobStatus.allCases.map { "\($0.rawValue) \(terminal[$0.rawValue] ?? 0)" }.joined(separator: ", ")
                  + (unexpectedStatus > 0 ? " (\(unexpectedStatus) with a status their kind should not end in)" : ""))
        t += line("lost", "\(lost)" + (lostExamples.isEmpty ? "" : " e.g. " + lostExamples.prefix(3).joined(separator: ", ")))
        t += line("duplicate terminal records", "read_committed \(duplicates.readCommitted.extraRecords) (\(duplicates.readCommitted.jobs) jobs), "
                  + "read_uncommitted \(duplicates.readUncommitted.extraRecords) (\(duplicates.readUncommitted.jobs) jobs)")
        t += line("dead letters", String(deadLetters))
        t += line("re-enqueued by the reconciler", String(requeuedByReconciler))
        t += line("kill → jobs finished elsewhere", killRecovery.longestMs.map { "longest \(String(format: "%.1f", Double($0) / 1000)) s over \(killRecovery.jobsMoved) moved jobs (\(killRecovery.longestJob ?? "?"))" } ?? "no job was held by a killed worker")
        t += line("traces complete", trace.complete ? "yes" : "no: \(trace.incomplete) incomplete, e.g. \(trace.examples.first ?? "")")
        t += line("reconciler", reconciler)
        if let logs { t += line("logs", logs) }
        t += "\n" + (verdict.passed ? "PASS" : "FAIL") + " (\(verdict.rule))\n"
        for f in verdict.failures { t += "  failed: \(f)\n" }
        for n in verdict.notes { t += "  note: \(n)\n" }
        return t
    }
}
