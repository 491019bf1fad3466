import Foundation
import Pipeline

/// `levee status`: is the pipeline healthy, and if not, what and where.
enum StatusCommand: LeveeCommand {
    static let name = "status"
    static let summary = "Show brokers, topics, lag, workers alive/dead and stuck jobs, with a verdict"
    static let help = """
    Usage: levee status [--json] [--group ID] [--stuck-after SECONDS] [--stalled-after SECONDS]
                        [--forget-after SECONDS] [connection options]

    One look at the pipeline: the brokers (reachable or not), Levee's topics (partitions against
    the layout, cleanup.policy and retention; a results, workers or control topic that is not
    compacted is flagged with the command that fixes it), the worker group's lag per partition
    and in total on the job and retry topics, every worker from its newest heartbeat (alive,
    dead = no heartbeat for 3 intervals without a clean stop, stopped; last seen, host, pid,
    partitions held, current jobs, jobs done/failed, errors; a dead worker's partitions and jobs
    are named), the oldest unfinished job and jobs running longer than their worker's job
    timeout, and stalled partitions: lag that does not move while its owner heartbeats (the
    first unfinished record waited past --stalled-after, a live worker holds the partition and is
    not running that job, and the job has no result). Ends with one line: "healthy: …" or "ATTENTION: …". Reads are bounded (the tail of
    the heartbeats topic, one record per lagging partition).

    Exits 0 when healthy, 1 when something needs attention, 2 when no broker answers.

      --json                the whole report as one JSON object (schema levee.status/v1)
      --group ID            the worker group (default <prefix>levee-workers, as levee worker)
      --stuck-after S       a running job older than S seconds is stuck (default: each
                            worker's own --job-timeout, from its heartbeat)
      --stalled-after S     a partition's first unfinished record waiting S seconds behind a live
                            owner that is not running it marks the partition stalled (default
                            120, the reconciler's SLA)
      --forget-after S      a dead worker silent longer than S seconds is listed as gone and
                            no longer needs attention (default 86400; a worker restarted under
                            the same --worker-id replaces its dead entry at once)

    \(ConnectionOptions.help)
    """

    static func run(_ arguments: inout Arguments) async throws {
        let json = arguments.flag("--json")
        let group = try arguments.option("--group")
        if let group, group.isEmpty { throw CommandFailure.usage("--group needs a group id") }
        let stuckAfter = try arguments.option("--stuck-after", as: Double.self)
        if let stuckAfter, !(stuckAfter > 0) { throw CommandFailure.usage("--stuck-after expects seconds > 0") }
        let stalledAfter = try arguments.option("--stalled-after", as: Double.self)
        if let stalledAfter, !(stalledAfter > 0) { throw CommandFailure.usage("--stalled-after expects seconds > 0") }
        let forgetAfter = try arguments.option("--forget-after", as: Double.self)
        if let forgetAfter, !(forgetAfter > 0) { throw CommandFailure.usage("--forget-after expects seconds > 0") }
        let options = try ConnectionOptions.parse(&arguments)
        try arguments.finish()
        var readOptions = StatusReader.Options(group: group)
        readOptions.stuckAfter = stuckAfter.map { .milliseconds(Int64($0 * 1000)) }
        if let stalledAfter { readOptions.stalledAfter = .milliseconds(Int64(stalledAfter * 1000)) }
        if let forgetAfter { readOptions.forgetAfter = .milliseconds(Int64(forgetAfter * 1000)) }
        let report = await StatusReader.read(connection: options.connection, group: group, options: readOptions)
        if json { try printJSON(report) } else { printOut(render(report)) }
        switch report.verdict {
        case .healthy: return
        case .attention: throw CommandFailure.failed(json ? report.summary : "needs attention", exitCode: 1)
        case .unreachable: throw CommandFailure.failed(report.brokers.error ?? "brokers unreachable", exitCode: 2)
        }
    }

    static func clock(_ t: Timestamp) -> String { String(t.description.dropFirst(11).dropLast(1)) }

    static func ago(_ ms: Int64) -> String {
        let s = ms / 1000
        if s < 120 { return "\(s) s ago" }
        if s < 7200 { return "\(s / 60) min ago" }
        if s < 172_800 { return "\(s / 3600) h ago" }
        return "\(s / 86400) d ago"
    }

    static func retention(_ ms: Int64) -> String {
        if ms < 0 { return "retention forever" }
        if ms % 86_400_000 == 0 { return "retention \(ms / 86_400_000) d" }
        if ms % 3_600_000 == 0 { return "retention \(ms / 3_600_000) h" }
        return "retention \(ms) ms"
    }

    static func render(_ r: StatusReport) -> String {
        var out = ""
        if !r.brokers.reachable {
            out += "brokers   \(r.brokers.bootstrap): UNREACHABLE — \(r.brokers.error ?? "no answer")\n"
            return out + r.summary + "\n"
        }
        out += "brokers   \(r.brokers.list.count) reachable: " + r.brokers.list.map { "\($0.id)=\($0.host):\($0.port)" }.joined(separator: " ") + "\n"
        out += "topics\n"
        let width = (r.topics.map(\.name.count).max() ?? 0) + 2
        var configNote: String?
        for t in r.topics {
            var line = "  " + t.name.padding(toLength: width, withPad: " ", startingAt: 0)
            guard t.exists else {
                out += line + "MISSING" + t.warnings.map { "\n      ! " + $0 }.joined() + "\n"
                continue
            }
            line += "\(t.partitions ?? 0) partitions"
            if let policy = t.cleanupPolicy { line += "  \(policy)" }
            if let ms = t.retentionMs, t.cleanupPolicy?.contains("delete") == true { line += "  " + retention(ms) }
            if t.configError != nil { configNote = t.configError }
            for w in t.warnings { line += "\n      ! " + w }
            out += line + "\n"
        }
        if let configNote { out += "  (configs unknown: \(configNote))\n" }
        out += "lag       group \(r.group): total \(r.lag.total)"
        if let error = r.lag.error { out += " (could not read: \(error))" }
        out += "\n"
        let lagging = r.lag.partitions.filter { $0.lag > 0 }
        for p in lagging.prefix(24) {
            out += "  \(p.topic)[\(p.partition)]  committed \(p.committed.map(String.init) ?? "-")  end \(p.high)  lag \(p.lag)\n"
        }
        if lagging.count > 24 { out += "  … \(lagging.count - 24) more partitions with lag (--json for all)\n" }
        let counts = [StatusReport.Liveness.alive, .dead, .stopped, .gone].compactMap { s -> String? in
            let n = r.workers.filter { $0.status == s }.count
            return n == 0 ? nil : "\(n) \(s.rawValue)"
        }
        out += "workers   " + (counts.isEmpty ? "none (no heartbeats)" : counts.joined(separator: ", ")) + "\n"
        for w in r.workers where w.status != .gone {
            var line = "  " + (w.status == .dead ? "DEAD" : w.status.rawValue).padding(toLength: 8, withPad: " ", startingAt: 0)
            line += "\(w.id)  \(w.host) pid \(w.pid)  last seen \(clock(w.lastSeen)) (\(ago(w.lastSeenAgoMs)))"
            if w.status == .alive && w.reportedState != .running { line += "  \(w.reportedState.rawValue)" }
            line += "\n          " + (w.status == .dead ? "held " : "holds ") + (w.assigned.isEmpty ? "nothing" : StatusReader.describe(w.assigned))
            line += "  jobs \(w.currentJobs.count) running, \(w.jobsDone) done, \(w.jobsFailed) failed, \(w.errors) errors"
            if !w.currentJobs.isEmpty { line += "\n          running " + w.currentJobs.map(\.description).joined(separator: " ") }
            if let takers = w.takenOverBy, !takers.isEmpty { line += "\n          partitions now held by " + takers.joined(separator: ", ") }
            out += line + "\n"
        }
        if let o = r.oldestUnfinished {
            var line = "oldest    "
            line += o.jobID.map { "job \($0)" } ?? "record with key \(o.key ?? "none")"
            line += " at \(o.topic)[\(o.partition)]@\(o.offset)"
            if let s = o.submittedAt { line += ", submitted \(clock(s)) (\(ago(o.ageMs ?? 0)))" }
            if let a = o.attempt, a > 1 { line += ", attempt \(a)" }
            if let n = o.notBefore { line += ", not before \(clock(n))" }
            if o.hasResult { line += "\n          it has a result already: the group's committed offset is behind (offsets not committed?)" }
            out += line + "\n"
        } else {
            out += "oldest    no unfinished job\n"
        }
        if r.stuck.isEmpty {
            out += "stuck     none\n"
        } else {
            out += "stuck     \(r.stuck.count)\n"
            for s in r.stuck {
                out += "  \(s.jobID) on \(s.worker)@\(s.host) since \(clock(s.since)) (\(s.runningMs / 1000) s, limit \(s.limitMs / 1000) s)\n"
            }
        }
        if !r.stalled.isEmpty {
            out += "stalled   \(r.stalled.count) partition\(r.stalled.count == 1 ? "" : "s") queued behind a live owner, not moving\n"
            for p in r.stalled {
                out += "  \(p.topic)[\(p.partition)] lag \(p.lag), head @\(p.offset)" + (p.jobID.map { " (\($0))" } ?? "")
                    + " waiting \(p.waitingMs / 1000) s (limit \(p.limitMs / 1000) s); held by \(p.owner), alive, not running it\n"
            }
        }
        if !r.issues.isEmpty {
            out += "issues\n"
            for i in r.issues { out += "  - \(i.detail)\n" }
        }
        return out + r.summary + "\n"
    }
}
