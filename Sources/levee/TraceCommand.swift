import Foundation
import Pipeline

/// `levee trace <job-id>`: where, when and why.
enum TraceCommand: LeveeCommand {
    static let name = "trace"
    static let summary = "Show a job's whole path and say in one line what happened"
    static let help = """
    Usage: levee trace <job-id> [connection options] [--json]

    Reads the job's events from the trace topic (only its partition, starting at its submit
    time) and prints a timeline: each event's time, the time since the previous one, where it
    happened (worker and host, topic/partition/offset), errors with their class; then the final
    state and a one-line diagnosis (e.g. "retried 2× after backend unreachable, succeeded on w-1",
    "poison: invalid JSON …, in DLQ", "stuck: received by w-3 at 12:01:03, no event since, w-3
    heartbeat lost at 12:01:10"). Exits 0 when the job is found, 2 for an unknown job id.

      --json   the events, result, state and diagnosis as one JSON object

    \(ConnectionOptions.help)
    """

    static func run(_ arguments: inout Arguments) async throws {
        let json = arguments.flag("--json")
        let id = try parseJobID(arguments.positional())
        let options = try ConnectionOptions.parse(&arguments)
        try arguments.finish()
        guard let trace = try await TraceReader.trace(options.connection, jobID: id) else {
            throw CommandFailure.failed("unknown job id \(id): no trace events and no result (wrong --brokers or --prefix? older than the trace retention?)", exitCode: 2)
        }
        if json { try printJSON(trace); return }
        printOut(render(trace))
    }

    /// The human timeline: one line per event, then the final state and the diagnosis line.
    static func render(_ trace: JobTrace) -> String {
        let id = trace.jobID
        var out = "job \(id)  (trace partition \(trace.partition), \(trace.recordsScanned) records read)\n"
        var previous: Timestamp?
        for e in trace.events {
            let delta = previous.map { "+\($0.milliseconds(until: e.at)) ms" } ?? ""
            previous = e.at
            var place: [String] = []
            if let w = e.worker { place.append(w.id == "client" ? "client@\(w.host)" : "\(w.id)@\(w.host) pid \(w.pid)") }
            if let t = e.topic { place.append(e.partition.map { "\(t)[\($0)]" + (e.offset.map { "@\($0)" } ?? "") } ?? t) }
            if let g = e.generation { place.append("gen \(g)") }
            var detail: [String] = []
            if e.attempt > 1 { detail.append("attempt \(e.attempt)") }
            if let d = e.durationMs { detail.append("\(d) ms") }
            if let c = e.completionTokens { detail.append("\(c) tokens") }
            if let s = e.status { detail.append(s.rawValue) }
            if let n = e.notBefore { detail.append("not before \(n)") }
            if let err = e.error { detail.append("error [\(err.errorClass.rawValue)] \(err.message)") }
            if let note = e.detail { detail.append(note) }
            let time = String(e.at.description.dropFirst(11).dropLast(1))
            out += "  \(time)  \(delta.padding(toLength: 10, withPad: " ", startingAt: 0)) \(e.stage.rawValue.padding(toLength: 18, withPad: " ", startingAt: 0)) \(place.joined(separator: "  "))"
            out += detail.isEmpty ? "\n" : "  — " + detail.joined(separator: ", ") + "\n"
        }
        out += "state: \(trace.state)\ndiagnosis: \(trace.diagnosis)\n"
        return out
    }
}
