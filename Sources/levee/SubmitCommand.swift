import Foundation
import Kafka
import Pipeline

/// `levee submit`: publishes one job (from flags) or many (JSON lines), durably.
enum SubmitCommand: LeveeCommand {
    static let name = "submit"
    static let summary = "Submit a job (or a file of jobs) and print its durable job id"
    static let help = """
    Usage: levee submit --prompt TEXT [--chat] [job options] [connection options] [--json]
           levee submit --file jobs.jsonl [connection options] [--json]

    Validates the job, publishes it to the jobs topic (idempotent producer, acks=all) and prints
    the job id, partition and offset once the brokers acknowledged it: the job is then durable
    and will end with exactly one terminal result (see levee result, levee trace).

    Job options:
      --prompt TEXT            the input; with --chat it is the user's message (kind chat),
                               without it a plain completion prompt (kind text.generate)
      --system TEXT            a system message (with --chat)
      --tenant T               default "default"
      --model NAME             default "smollm2-135m-instruct"
      --max-tokens N           default 256
      --temperature T          default 0.7 (0 is greedy)
      --top-p P                default 0.95
      --seed S                 makes sampling reproducible
      --stop TEXT              a stop sequence (repeatable)
      --idempotency-key K      the same key gives the same job id, and one result
      --deadline S             seconds from now after which the job expires unrun
      --priority N             0..9 (default 5)

    --file F: one job per line (JSON): a full levee.job/v1 record, or just the fields you want to
    set (tenant, kind, model, input, params, idempotency_key, deadline, priority, metadata); the
    id, submit time and traceparent are filled in. '-' reads stdin. Progress goes to stderr;
    a bad line is reported with its line number and the rest are still submitted (exit 1 at the end).

    \(ConnectionOptions.help)
    """

    struct JobLine: Decodable {
        var tenant: String?
        var kind: JobKind?
        var model: String?
        var input: JobInput?
        var params: JobParameters?
        var idempotencyKey: String?
        var deadline: Timestamp?
        var priority: Int?
        var metadata: [String: String]?
        var prompt: String?
        enum CodingKeys: String, CodingKey {
            case tenant, kind, model, input, params, idempotencyKey = "idempotency_key", deadline, priority, metadata, prompt
        }
    }

    static func run(_ arguments: inout Arguments) async throws {
        let json = arguments.flag("--json")
        let file = try arguments.option("--file")
        let prompt = try arguments.option("--prompt")
        let chat = arguments.flag("--chat")
        let system = try arguments.option("--system")
        let tenant = try arguments.option("--tenant") ?? "default"
        let model = try arguments.option("--model") ?? "smollm2-135m-instruct"
        var params = JobParameters()
        if let v = try arguments.option("--max-tokens", as: Int.self) { params.maxTokens = v }
        if let v = try arguments.option("--temperature", as: Double.self) { params.temperature = v }
        if let v = try arguments.option("--top-p", as: Double.self) { params.topP = v }
        if let v = try arguments.option("--seed", as: UInt64.self) { params.seed = v }
        params.stop = try arguments.values("--stop")
        let key = try arguments.option("--idempotency-key")
        let deadlineSeconds = try arguments.option("--deadline", as: Double.self)
        let priority = try arguments.option("--priority", as: Int.self) ?? 5
        let options = try ConnectionOptions.parse(&arguments)
        try arguments.finish()
        guard (file == nil) != (prompt == nil) else {
            throw CommandFailure.usage("give either --prompt TEXT or --file jobs.jsonl")
        }
        let client = try JobClient(connection: options.connection)
        defer { Task.detached { try? await client.close() } }
        do { try await client.prepare() } catch {
            throw CommandFailure.failed("cannot use the cluster at \(options.brokers): \(error)")
        }

        if let prompt {
            let input: JobInput
            if chat {
                var messages = [ChatTurn(role: "user", content: prompt)]
                if let system { messages.insert(ChatTurn(role: "system", content: system), at: 0) }
                input = JobInput(messages: messages)
            } else {
                if system != nil { throw CommandFailure.usage("--system goes with --chat") }
                input = JobInput(prompt: prompt)
            }
            let job = JobClient.makeJob(tenant: tenant, kind: chat ? .chat : .textGenerate, model: model, input: input, params: params,
                                        idempotencyKey: key, priority: priority,
                                        deadline: deadlineSeconds.map { Timestamp.now().adding(milliseconds: Int64($0 * 1000)) })
            let receipt = try await submit(client, job)
            if json { try printJSON(receipt) } else {
                printOut("\(receipt.jobID)  \(receipt.topic)[\(receipt.partition)]@\(receipt.offset)  acked in \(String(format: "%.1f", receipt.ackMilliseconds)) ms\n")
            }
            try await client.close()
            return
        }

        // Many jobs from a file, in batches (see below); receipts in file order.
        let handle: FileHandle
        if file == "-" { handle = .standardInput } else {
            guard let h = FileHandle(forReadingAtPath: file!) else { throw CommandFailure.failed("cannot read \(file!)") }
            handle = h
        }
        let data = handle.readDataToEndOfFile()
        let lines = String(decoding: data, as: UTF8.self).split(separator: "\n", omittingEmptySubsequences: false)
        var jobs: [(Int, JobEnvelope)] = []
        var bad = 0
        for (i, line) in lines.enumerated() where !line.trimmingCharacters(in: .whitespaces).isEmpty {
            do {
                jobs.append((i + 1, try makeJob(from: Data(line.utf8), defaults: (tenant, model, params))))
            } catch {
                bad += 1
                printError("line \(i + 1): \(LeveeJSON.explain(error))")
            }
        }
        // Submitted in batches through JobClient.submit([JobEnvelope]): encoded across cores, the
        // acknowledgements of a batch awaited together, each job's own receipt or error reported.
        let started = ContinuousClock.now
        var done = 0
        var failed = 0
        var lastReport = ContinuousClock.now
        let batchSize = 10_000
        for start in stride(from: 0, to: jobs.count, by: batchSize) {
            let batch = jobs[start..<min(start + batchSize, jobs.count)]
            let results = await client.submit(batch.map(\.1))
            for ((line, _), result) in zip(batch, results) {
                switch result {
                case .success(let receipt):
                    done += 1
                    if json { try printJSON(receipt) }
                case .failure(let error):
                    failed += 1
                    printError("line \(line): \(error)")
                }
            }
            if ContinuousClock.now - lastReport > .milliseconds(500) {
                lastReport = .now
                printError("submitted \(done)/\(jobs.count)")
            }
        }
        try await client.close()
        let seconds = (ContinuousClock.now - started).milliseconds / 1000
        printError("submitted \(done) of \(jobs.count + bad) jobs in \(String(format: "%.2f", seconds)) s (\(String(format: "%.0f", Double(done) / max(seconds, 0.001))) jobs/s); \(failed + bad) failed")
        if failed + bad > 0 { throw CommandFailure.failed("\(failed + bad) jobs were not submitted") }
    }

    static func submit(_ client: JobClient, _ job: JobEnvelope) async throws -> SubmitReceipt {
        do {
            return try await client.submit(job)
        } catch let error as JobValidationError {
            throw CommandFailure.usage(error.description)
        }
    }

    static func makeJob(from line: Data, defaults: (String, String, JobParameters)) throws -> JobEnvelope {
        if let full = try? LeveeJSON.decode(JobEnvelope.self, from: line) { return full }
        let l = try LeveeJSON.decode(JobLine.self, from: line)
        let input = l.input ?? JobInput(prompt: l.prompt)
        let kind = l.kind ?? (input.messages != nil ? .chat : .textGenerate)
        return JobClient.makeJob(tenant: l.tenant ?? defaults.0, kind: kind, model: l.model ?? defaults.1, input: input,
                                 params: l.params ?? defaults.2, idempotencyKey: l.idempotencyKey, priority: l.priority ?? 5,
                                 deadline: l.deadline, metadata: l.metadata)
    }
}
