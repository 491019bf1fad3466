import Foundation
import Pipeline
import Synchronization

/// `levee reconcile`: audit (and repair) "exactly one terminal record per accepted job".
enum ReconcileCommand: LeveeCommand {
    static let name = "reconcile"
    static let summary = "Find lost, stuck, duplicated and orphaned jobs; re-enqueue the lost ones"
    static let help = """
    Usage: levee reconcile [--once] [--json] [options] [connection options]

    Reads the jobs, retry, results, dead-letter, trace and worker topics and the worker group's
    committed offsets, and sorts every job: terminal (succeeded, failed, expired, cancelled),
    pending (queued, running, waiting for a retry), or wrong:
      lost        accepted, no terminal record past the SLA, no live worker holding it —
                  re-enqueued with the same job id and attempt+1 (a `requeued` trace event says
                  so); a worker skips the copy if a result appears meanwhile
      stuck       held by a live worker longer than --stuck-after (reported, not touched)
      stalled     queued past the SLA in a partition a live worker holds but has received
                  nothing from for the SLA: lag that does not move while its owner heartbeats
                  (reported per partition; restarting that worker usually frees it)
      duplicate   more than one terminal record for one job (reported; readers keep the first)
      orphan      a terminal record for a job that was never accepted (reported)
    and counts dead letters by reason. Its state comes only from the topics: a restarted
    reconciler rebuilds it by reading them again. A running one reads only what is new on each
    later pass and judges only jobs still open: finished, audited jobs are kept as a few bytes
    each (for 7 days, the jobs topic's retention).

    With --once: one pass, then exit 0 when consistent, 1 when anything is lost, stuck, stalled,
    duplicated or orphaned, 2 when the pass could not finish (brokers, missing topics).
    Without: a service that runs a pass every --interval, prints one line per pass, and serves
    /metrics, /healthz and /readyz with --http; SIGTERM/SIGINT stop it.

      --once                  one pass, exit code as above
      --json                  the report as JSON (one object; one line per pass as a service)
      --sla SECONDS           a job silent this long without a terminal record may be lost (default 120)
      --stuck-after SECONDS   a job a live worker holds this long is stuck (default 600)
      --dry-run               report only, never re-enqueue
      --interval SECONDS      time between passes as a service (default 30)
      --http ADDR:PORT        serve /metrics /healthz /readyz (service)              [LEVEE_HTTP]
      --group ID              the worker group (default <prefix>levee-workers)        [LEVEE_GROUP]
      --read-timeout SECONDS  longest a pass may take to read the topics (default 120)
      Count raw (uncommitted) records too: -X isolation.level=read_uncommitted

    \(ConnectionOptions.help)
    """

    static func run(_ arguments: inout Arguments) async throws {
        let environment = ProcessInfo.processInfo.environment
        let once = arguments.flag("--once")
        let json = arguments.flag("--json")
        let dryRun = arguments.flag("--dry-run")
        let sla = try arguments.option("--sla", as: Double.self) ?? 120
        let stuckAfter = try arguments.option("--stuck-after", as: Double.self) ?? 600
        let interval = try arguments.option("--interval", as: Double.self) ?? 30
        let readTimeout = try arguments.option("--read-timeout", as: Double.self) ?? 120
        let http = try arguments.option("--http") ?? environment["LEVEE_HTTP"]
        let group = try arguments.option("--group") ?? environment["LEVEE_GROUP"]
        let options = try ConnectionOptions.parse(&arguments)
        try arguments.finish()
        for (flag, value) in [("--sla", sla), ("--stuck-after", stuckAfter), ("--read-timeout", readTimeout)] where value < 0 || !value.isFinite {
            throw CommandFailure.usage("\(flag) expects seconds ≥ 0, got \(value)")
        }
        guard interval >= 0.1, interval.isFinite else { throw CommandFailure.usage("--interval expects seconds ≥ 0.1, got \(interval)") }
        if once && http != nil { throw CommandFailure.usage("--http serves a running reconciler; it makes no sense with --once") }

        var configuration = Reconciler.Configuration(group: group ?? options.prefix + "levee-workers")
        configuration.sla = .milliseconds(Int64(sla * 1000))
        configuration.stuckAfter = .milliseconds(Int64(stuckAfter * 1000))
        configuration.readTimeout = .milliseconds(Int64(max(1, readTimeout) * 1000))
        configuration.dryRun = dryRun
        let reconciler = Reconciler(connection: options.connection, configuration: configuration)
        defer { Task.detached { await reconciler.close() } }

        if once {
            let report: ReconcileReport
            do { report = try await reconciler.pass() } catch {
                throw CommandFailure.failed("the pass could not finish: \(error)", exitCode: 2)
            }
            await reconciler.close()
            if json { try printJSON(report) } else { printOut(render(report)) }
            if !report.consistent { throw CommandFailure(message: report.verdict, exitCode: 1) }
            return
        }

        var listener: HTTPListener?
        if let http {
            let address: HTTPListenerAddress
            do { address = try HTTPListenerAddress(parsing: http) } catch { throw CommandFailure.usage("--http: \(error)") }
            let l = HTTPListener(configuration: .init(address: address))
            l.serveOperations(metrics: reconciler.metrics.registry) {
                reconciler.latest == nil ? Readiness(reasons: ["no reconciler pass has finished yet"]) : .ready
            }
            do {
                let bound = try l.start()
                printError("levee reconcile: serving /metrics /healthz /readyz on http://\(bound.host):\(bound.port)")
            } catch { throw CommandFailure.failed("\(error)") }
            listener = l
        }
        defer { listener?.stop() }
        let stop = StopFlag()
        try await withTerminationSignals({ stop.set() }) {
            while !stop.isSet {
                do {
                    let report = try await reconciler.pass()
                    if json { try printJSON(report) } else { printOut("\(report.at) \(report.verdict)\(requeuedNote(report))\n") }
                } catch {
                    reconciler.metrics.recordFailedPass()
                    printError("levee reconcile: pass failed: \(error) (next try in \(interval) s)")
                }
                let until = ContinuousClock.now + .milliseconds(Int64(interval * 1000))
                while !stop.isSet && ContinuousClock.now < until { try? await Task.sleep(for: .milliseconds(100)) }
            }
        }
        await reconciler.close()
    }

    static func requeuedNote(_ report: ReconcileReport) -> String {
        report.requeued.isEmpty ? "" : "; requeued " + report.requeued.prefix(10).map { "\($0.jobID)" }.joined(separator: ", ")
            + (report.requeued.count > 10 ? " and \(report.requeued.count - 10) more" : "")
    }

    /// The human report: counts, then each problem with its job ids, then the verdict line.
    static func render(_ r: ReconcileReport) -> String {
        var out = "reconcile at \(r.at) (group \(r.group), \(r.isolation); read "
        out += ["jobs", "results", "trace", "workers"].map { "\(r.recordsRead[$0] ?? 0) \($0)" }.joined(separator: ", ") + ")\n"
        let terminal = JobStatus.allCases.map { "\(r.terminal[$0.rawValue] ?? 0) \($0.rawValue)" }.joined(separator: ", ")
        out += "jobs:       \(r.jobs) — \(terminal)\n"
        out += "pending:    \(r.pending.queued) queued (\(r.pending.late) past the SLA"
            + (r.pending.stalled > 0 ? ", \(r.pending.stalled) behind a live owner that is not moving" : "")
            + "), \(r.pending.running) running, \(r.pending.waitingRetry) waiting for a retry\n"
        out += "workers:    \(r.workers.alive.count) alive" + (r.workers.alive.isEmpty ? "" : " (\(r.workers.alive.joined(separator: ", ")))")
        out += ", \(r.workers.dead.count) dead" + (r.workers.dead.isEmpty ? "" : " (\(r.workers.dead.joined(separator: ", ")))")
        out += ", \(r.workers.stopped.count) stopped\n"
        out += "dead letters: \(r.dlq.total)" + (r.dlq.byReason.isEmpty ? "" : " (" + r.dlq.byReason.sorted { $0.key < $1.key }.map { "\($0.key) \($0.value)" }.joined(separator: ", ") + ")") + "\n"
        func section<T>(_ title: String, _ items: [T], _ line: (T) -> String) {
            guard !items.isEmpty else { return }
            out += "\(title) (\(items.count)):\n"
            for item in items.prefix(50) { out += "  " + line(item) + "\n" }
            if items.count > 50 { out += "  … and \(items.count - 50) more (--json lists them all)\n" }
        }
        section("lost", r.lost) { "\($0.jobID)  attempt \($0.attempt): \($0.reason)" + ($0.requeued ? " → requeued as attempt \($0.attempt + 1)" : " → not requeued") }
        section("stuck", r.stuck) { "\($0.jobID)  \($0.stage.rawValue) by \($0.worker) since \($0.since) (attempt \($0.attempt))" }
        section("duplicates", r.duplicates) { d in
            "\(d.jobID)  \(d.records) terminal records in results[\(d.partition)]: "
                + zip(zip(d.statuses, d.workers), d.offsets).map { "\($0.0.0.rawValue) by \($0.0.1) @\($0.1)" }.joined(separator: ", ")
        }
        section("queued behind a live owner past the SLA", r.stalled) { p in
            "\(p.topic)[\(p.partition)]  \(p.jobs) job\(p.jobs == 1 ? "" : "s") waiting since \(p.queuedSince) (oldest \(p.oldestJob)); "
                + "\(p.owner) holds it and heartbeats (\(p.ownerHeartbeatAt)) but "
                + (p.lastReceivedAt.map { "received nothing from it since \($0)" } ?? "never received from it")
                + " (paused or stuck consumer? restart \(p.owner); levee trace \(p.oldestJob))"
        }
        section("orphans", r.orphans) { "\($0.jobID)  \($0.status.rawValue) at results[\($0.partition)]@\($0.offset), no such job was accepted" }
        if !r.traceIncomplete.isEmpty {
            out += "note: \(r.traceIncomplete.count) finished job(s) have no result_committed trace event (e.g. \(r.traceIncomplete[0]))\n"
        }
        out += r.verdict + "\n"
        return out
    }
}

/// A flag set once from a signal handler and read by the service loop.
final class StopFlag: Sendable {
    private let flag = Mutex(false)
    func set() { flag.withLock { $0 = true } }
    var isSet: Bool { flag.withLock { $0 } }
}
