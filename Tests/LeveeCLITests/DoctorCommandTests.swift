import Foundation
import Testing

/// `levee doctor` run as a process against a `levee broker` process.
@Suite("levee doctor", .serialized)
struct DoctorCommandTests {
    struct Report: Decodable {
        struct Check: Decodable {
            var name: String
            var status: String
            var detail: String
            var fix: String?
        }
        var schema: String
        var ok: Bool
        var counts: [String: Int]
        var checks: [Check]

        func check(_ name: String) -> Check? { checks.first { $0.name == name } }
    }

    static func decode(_ output: LeveeProcess.Output) throws -> Report {
        let line = try #require(output.stdout.split(separator: "\n").first, "no JSON on stdout: \(output)")
        return try JSONDecoder().decode(Report.self, from: Data(line.utf8))
    }

    static let topics = ["levee.jobs", "levee.jobs.retry", "levee.results", "levee.dlq", "levee.trace", "levee.workers", "levee.control"]

    @Test("passes on a provisioned embedded broker, fails with the fix on wrong partitions and missing topics")
    func againstTheEmbeddedBroker() async throws {
        let broker = try LeveeProcess.start(["broker", "--partitions", "2", "--levee-topics", "c."])
        let bootstrap = try #require(await broker.readLine())
        defer { broker.signal(SIGTERM); _ = broker.waitForExitBlocking() }
        let common = ["--brokers", bootstrap, "--engine", "synthetic", "--timeout", "3"]
        // Secrets given to the client never appear in the output.
        let secret = ["-X", "sasl.username=levee", "-X", "sasl.password=hunter2-do-not-print"]

        let good = try await LeveeProcess.run(["doctor", "--json", "--prefix", "c.", "--partitions", "2"] + common + secret,
                                        environment: ["LEVEE_KAFKA_SSL_KEY_PASSWORD": "another-secret-value"])
        #expect(good.status == 0, "\(good)")
        let report = try Self.decode(good)
        #expect(report.schema == "levee.doctor/v1" && report.ok && report.counts["fail"] == 0)
        #expect(report.check("brokers")?.status == "ok")
        for topic in Self.topics { #expect(report.check("topic c.\(topic)")?.status == "ok", "\(topic)") }
        #expect(report.check("transactions")?.status == "ok")
        #expect(report.check("replication")?.status == "warn")
        #expect(!good.stdout.contains("hunter2") && !good.stderr.contains("hunter2"))
        #expect(!good.stdout.contains("another-secret-value") && !good.stderr.contains("another-secret-value"))

        // The deployment says 3 partitions; the cluster has 2.
        let wrong = try await LeveeProcess.run(["doctor", "--json", "--prefix", "c.", "--partitions", "3"] + common)
        #expect(wrong.status == 1, "\(wrong)")
        let wrongReport = try Self.decode(wrong)
        #expect(!wrongReport.ok)
        let jobs = try #require(wrongReport.check("topic c.levee.jobs"))
        #expect(jobs.status == "fail" && jobs.detail == "has 2 partitions; the layout wants 3")
        #expect(jobs.fix?.contains("--partitions 2 (LEVEE_PARTITIONS)") == true)
        #expect(wrong.stderr.contains("checks failed: topic c.levee.jobs"))

        // Human output: one line per check, the fix under each failure.
        let missing = try await LeveeProcess.run(["doctor", "--prefix", "gone.", "--partitions", "2"] + common)
        #expect(missing.status == 1)
        let lines = missing.stdout.split(separator: "\n").map(String.init)
        #expect(lines.contains { $0.hasPrefix("ok    brokers: 1 broker answered") }, "\(missing.stdout)")
        let failLine = try #require(lines.firstIndex { $0 == "FAIL  topic gone.levee.results: missing (exactly one terminal record per job)" }, "\(missing.stdout)")
        #expect(lines[failLine + 1].hasPrefix("      fix: levee topics create --brokers \(bootstrap) --prefix gone. --partitions 2 --replication-factor 1"))
        #expect(lines.last?.hasPrefix("doctor: NOT READY — 7 failed") == true, "\(lines.last ?? "")")
    }

    /// A newcomer's first try: `levee broker` with no flags, then the other commands with only
    /// --brokers (no --prefix, no --partitions): doctor passes, warning only about what a
    /// one-broker mock cannot give, and a job goes through.
    @Test("levee broker with no flags: doctor, submit, worker, result and status need only --brokers", .timeLimit(.minutes(3)))
    func newcomerDefaults() async throws {
        let broker = try LeveeProcess.start(["broker"])
        let bootstrap = try #require(await broker.readLine())
        defer { broker.signal(SIGTERM); _ = broker.waitForExitBlocking() }
        let connection = ["--brokers", bootstrap]

        let doctor = try await LeveeProcess.run(["doctor", "--json", "--engine", "synthetic"] + connection, timeout: 90)
        #expect(doctor.status == 0, "\(doctor)")
        let report = try Self.decode(doctor)
        #expect(report.ok && report.counts["fail"] == 0, "\(report.checks.filter { $0.status == "fail" }.map { "\($0.name): \($0.detail)" })")
        for topic in Self.topics { #expect(report.check("topic \(topic)")?.status == "ok", "\(topic): \(report.check("topic \(topic)")?.detail ?? "no check")") }
        #expect(report.check("transactions")?.status == "ok")
        let notOK = Set(report.checks.filter { $0.status != "ok" }.map(\.name))
        #expect(notOK.isSubset(of: ["topic configs", "replication", "model", "memory", "openai backend"]), "\(notOK)")

        let worker = try LeveeProcess.start(["worker", "--worker-id", "first-try", "--engine", "synthetic", "--synthetic-delay", "5"] + connection)
        defer { worker.signal(SIGTERM); _ = worker.waitForExitBlocking(timeout: 60) }
        let submitted = try await LeveeProcess.run(["submit", "--chat", "--prompt", "hello", "--model", "synthetic", "--json"] + connection)
        #expect(submitted.status == 0, "\(submitted)")
        let receipt = try #require(try JSONSerialization.jsonObject(with: Data(submitted.stdout.utf8)) as? [String: Any])
        let id = try #require(receipt["job_id"] as? String)
        let result = try await LeveeProcess.run(["result", id, "--wait", "90", "--json"] + connection, timeout: 120)
        #expect(result.status == 0, "\(result)")
        #expect(result.stdout.contains("\"succeeded\""), "\(result.stdout)")
        let status = try await LeveeProcess.run(["status", "--json"] + connection, timeout: 60)
        #expect(status.stdout.contains("first-try"), "\(status)")
    }

    @Test("a missing model fails with the setup fix; bad options are usage errors")
    func modelAndUsage() async throws {
        let noModel = try await LeveeProcess.run(["doctor", "--json", "--brokers", "127.0.0.1:1", "--timeout", "1", "--model", "/nonexistent/levee.gguf"])
        #expect(noModel.status == 1)
        let report = try Self.decode(noModel)
        #expect(report.check("model")?.status == "fail")
        #expect(report.check("model")?.fix?.contains("scripts/setup") == true)
        #expect(report.check("memory")?.status == "skip")
        #expect(report.check("brokers")?.status == "fail")
        #expect(report.check("topic levee.results")?.status == "skip")

        for bad in [["--model-sha256", "xyz"], ["--engine", "gpu"], ["--concurrency", "0"], ["--engine", "openai"], ["--frobnicate"]] {
            let out = try await LeveeProcess.run(["doctor", "--brokers", "127.0.0.1:1"] + bad)
            #expect(out.status == 64, "\(bad): \(out)")
        }
        let help = try await LeveeProcess.run(["doctor", "--help"])
        #expect(help.status == 0 && help.stdout.contains("min.insync.replicas"))
    }
}
