import Foundation
import Pipeline

/// `levee result <job-id>`: a job's terminal record.
enum ResultCommand: LeveeCommand {
    static let name = "result"
    static let summary = "Print a job's terminal result (optionally waiting for it)"
    static let help = """
    Usage: levee result <job-id> [--wait SECONDS] [connection options] [--json]

    Reads the job's one terminal record from the results topic (succeeded, failed, expired or
    cancelled). Exits 0 when found, 2 when the job has no result (yet), 1 on errors.

      --wait S    wait up to S seconds for the result to appear
      --json      the record as JSON (schema levee.result/v1)

    \(ConnectionOptions.help)
    """

    static func run(_ arguments: inout Arguments) async throws {
        let json = arguments.flag("--json")
        let wait = try arguments.option("--wait", as: Double.self) ?? 0
        guard wait >= 0 else { throw CommandFailure.usage("--wait expects seconds ≥ 0") }
        let id = try parseJobID(arguments.positional())
        let options = try ConnectionOptions.parse(&arguments)
        try arguments.finish()
        guard let record = try await ResultLookup.result(options.connection, jobID: id, wait: .milliseconds(Int64(wait * 1000))) else {
            if json { try printJSON(["job_id": id.description, "status": "pending"]) }
            throw CommandFailure.failed("no result for \(id) yet\(wait > 0 ? " after waiting \(wait) s" : "") (levee trace \(id) shows where it is)", exitCode: 2)
        }
        if json { try printJSON(record); return }
        var text = "\(record.jobID)  \(record.status.rawValue)  attempt \(record.attempt)"
        if let w = record.worker { text += "  by \(w.id) on \(w.host)" }
        if let t = record.timings { text += "  (queue \(t.queueMs) ms, inference \(t.inferenceMs) ms, total \(t.totalMs) ms)" }
        printOut(text + "\n")
        if let output = record.output { printOut(output.text + "\n") }
        if let error = record.error { printOut("error [\(error.errorClass.rawValue)]: \(error.message)\n") }
    }
}

/// `levee cancel <job-id>`: asks the workers to cancel a job.
enum CancelCommand: LeveeCommand {
    static let name = "cancel"
    static let summary = "Cancel a job (stops it between tokens if it is running)"
    static let help = """
    Usage: levee cancel <job-id> [--reason TEXT] [connection options] [--json]

    Publishes a cancel request to the control topic. A job not yet started ends cancelled when a
    worker receives it; a running job stops between tokens and ends cancelled; a job that already
    has a result keeps it.

    \(ConnectionOptions.help)
    """

    static func run(_ arguments: inout Arguments) async throws {
        let json = arguments.flag("--json")
        let reason = try arguments.option("--reason")
        let id = try parseJobID(arguments.positional())
        let options = try ConnectionOptions.parse(&arguments)
        try arguments.finish()
        let client = try JobClient(connection: options.connection, writesTraceEvents: false)
        try await client.cancel(id, reason: reason)
        try await client.close()
        if json { try printJSON(["job_id": id.description, "cancel": "requested"]) } else { printOut("cancel requested for \(id)\n") }
    }
}
