import Foundation
#if canImport(FoundationNetworking)
import FoundationNetworking
#endif
import Testing

/// `levee worker` started before its brokers or topics exist: it says why on stderr (one JSON line
/// per attempt, naming the brokers and librdkafka's reason), keeps /healthz 200 and /readyz 503,
/// retries, and starts once they are there; `--startup-timeout` gives up; SIGTERM ends the wait.
@Suite struct WorkerStartupTests {
    static let engine = ["--engine", "synthetic", "--synthetic-delay", "1"]
    static let fastGroup = ["-X", "session.timeout.ms=6000", "-X", "heartbeat.interval.ms=500"]

    static func get(_ url: String) async throws -> (status: Int, body: String) {
        var request = URLRequest(url: try #require(URL(string: url)))
        request.timeoutInterval = 30
        var answer: (status: Int, body: String) = (0, "")
        // The listener gives a request head 2 s from accept, then answers 408; on a machine this
        // loaded the client can miss that, so 408 means "ask again", not an answer about readiness.
        for _ in 0..<5 {
            let (data, response) = try await URLSession.shared.data(for: request)
            answer = ((response as? HTTPURLResponse)?.statusCode ?? 0, String(decoding: data, as: UTF8.self))
            if answer.status != 408 { break }
        }
        return answer
    }

    /// Polls `condition` on the worker's stderr until it holds (or `timeout` seconds pass).
    static func waitForStderr(_ process: LeveeProcess.Running, timeout: Double = 60,
                              _ condition: (String) -> Bool) async throws -> String {
        let deadline = Date().addingTimeInterval(timeout)
        while true {
            let text = process.stderrSoFar
            if condition(text) || Date() > deadline || !process.isRunning { return text }
            try await Task.sleep(for: .milliseconds(100))
        }
    }

    /// The worker's JSON log lines on stderr.
    static func jsonLines(_ text: String) -> [[String: Any]] {
        text.split(separator: "\n").compactMap { line in
            guard line.hasPrefix("{") else { return nil }
            return (try? JSONSerialization.jsonObject(with: Data(line.utf8))) as? [String: Any]
        }
    }

    /// The base URL the worker logged for --http 127.0.0.1:0.
    static func httpBase(_ process: LeveeProcess.Running) async throws -> String {
        let text = try await waitForStderr(process) { $0.contains("serving /metrics") }
        let line = try #require(text.split(separator: "\n").first { $0.contains("serving /metrics") }, "\(text)")
        return try #require(line.split(separator: " ").last.map(String.init))
    }

    static func waitForReady(_ base: String, timeout: Double = 90) async throws -> (status: Int, body: String) {
        let deadline = Date().addingTimeInterval(timeout)
        var last = try await get(base + "/readyz")
        while last.status != 200 && Date() < deadline {
            try await Task.sleep(for: .milliseconds(250))
            last = try await get(base + "/readyz")
        }
        return last
    }

    @Test("brokers down at start: error naming them, retries, healthz 200 / readyz 503, then starts when they come up",
          .timeLimit(.minutes(3)))
    func unreachableBrokersThenTheyAppear() async throws {
        let broker = try LeveeProcess.start(["broker", "--partitions", "2", "--levee-topics", "ws."])
        defer { broker.signal(SIGTERM); _ = broker.waitForExitBlocking(timeout: 10) }
        let bootstrap = try #require(await broker.readLine(timeout: 30))
        broker.send("down 1\n")
        #expect(await broker.readLine(timeout: 30) == "ok broker 1 down")

        let worker = try LeveeProcess.start(["worker", "--brokers", bootstrap, "--prefix", "ws.", "--worker-id", "ws-1",
                                             "--http", "127.0.0.1:0"] + Self.engine + Self.fastGroup)
        defer { worker.signal(SIGKILL) }
        let base = try await Self.httpBase(worker)
        // Two failed attempts: the error line, then a retry.
        let text = try await Self.waitForStderr(worker) { t in Self.jsonLines(t).filter { $0["brokers"] as? String == bootstrap }.count >= 2 }
        let attempts = Self.jsonLines(text).filter { $0["brokers"] as? String == bootstrap && $0["attempt"] != nil }
        try #require(attempts.count >= 2, "\(text)")
        let first = attempts[0]
        #expect(first["level"] as? String == "error")
        #expect(first["attempt"] as? String == "1" && first["retry_in_ms"] as? String == "1000", "\(first)")
        let message = try #require(first["msg"] as? String)
        #expect(message.hasPrefix("cannot reach the Kafka brokers at \(bootstrap): "), "\(message)")
        // librdkafka's own reason: the mock refuses connections to a broker that is down.
        let reason = try #require(first["reason"] as? String)
        #expect(reason.contains("Connect to") && reason.contains("failed"), "\(reason)")
        #expect(message.contains(reason) && message.hasSuffix("retrying in 1 s"), "\(message)")
        #expect(attempts[1]["attempt"] as? String == "2" && attempts[1]["retry_in_ms"] as? String == "2000", "\(attempts[1])")
        #expect(!text.contains("started\""), "the worker must not start without brokers: \(text)")

        let health = try await Self.get(base + "/healthz")
        #expect(health.status == 200)
        let notReady = try await Self.get(base + "/readyz")
        #expect(notReady.status == 503)
        #expect(notReady.body.contains("cannot reach the Kafka brokers at \(bootstrap)"), "\(notReady.body)")

        broker.send("up 1\n")
        #expect(await broker.readLine(timeout: 30) == "ok broker 1 up")
        let ready = try await Self.waitForReady(base)
        #expect(ready.status == 200, "\(ready.body)\n\(worker.stderrSoFar)")
        let after = worker.stderrSoFar
        #expect(after.contains("reachable and topics present after"), "\(after)")
        #expect(after.contains("\"msg\":\"worker ws-1 started\""), "\(after)")

        worker.signal(SIGTERM)
        let out = await worker.waitForExit(timeout: 60)
        #expect(out.status == 0 && !out.timedOut, "\(out)")
    }

    @Test("topics missing at start: readyz says which, the worker starts once they exist", .timeLimit(.minutes(3)))
    func missingTopicsThenCreated() async throws {
        let broker = try LeveeProcess.start(["broker", "--partitions", "2"])
        defer { broker.signal(SIGTERM); _ = broker.waitForExitBlocking(timeout: 10) }
        let bootstrap = try #require(await broker.readLine(timeout: 30))
        let worker = try LeveeProcess.start(["worker", "--brokers", bootstrap, "--prefix", "wt.", "--worker-id", "wt-1",
                                             "--http", "127.0.0.1:0"] + Self.engine + Self.fastGroup)
        defer { worker.signal(SIGKILL) }
        let base = try await Self.httpBase(worker)
        let text = try await Self.waitForStderr(worker) { $0.contains("missing_topics") }
        let line = try #require(Self.jsonLines(text).first { $0["missing_topics"] != nil }, "\(text)")
        let missing = (line["missing_topics"] as? String)?.split(separator: ",").map(String.init) ?? []
        #expect(Set(missing) == ["wt.levee.jobs", "wt.levee.jobs.retry", "wt.levee.results", "wt.levee.dlq", "wt.levee.trace",
                                 "wt.levee.workers", "wt.levee.control"], "\(line)")
        let notReady = try await Self.get(base + "/readyz")
        #expect(notReady.status == 503)
        #expect(notReady.body.contains("topics are missing") && notReady.body.contains("wt.levee.results"), "\(notReady.body)")
        #expect(try await Self.get(base + "/healthz").status == 200)

        for topic in missing {
            broker.send("topic \(topic) 2\n")
            let reply = await broker.readLine(timeout: 30) ?? ""
            #expect(reply.hasPrefix("ok"), "topic \(topic): \(reply)")
        }
        let ready = try await Self.waitForReady(base)
        #expect(ready.status == 200, "\(ready.body)\n\(worker.stderrSoFar)")
        #expect(worker.stderrSoFar.contains("\"msg\":\"worker wt-1 started\""))
        worker.signal(SIGTERM)
        let out = await worker.waitForExit(timeout: 60)
        #expect(out.status == 0 && !out.timedOut, "\(out)")
    }

    @Test("--startup-timeout: gives up with the error and exit 1; 0 makes one attempt", .timeLimit(.minutes(2)))
    func startupTimeoutGivesUp() async throws {
        let out = try await LeveeProcess.run(["worker", "--brokers", "127.0.0.1:1", "--startup-timeout", "3"] + Self.engine, timeout: 60)
        #expect(out.status == 1 && !out.timedOut, "\(out)")
        let last = out.stderr.split(separator: "\n").last.map(String.init) ?? ""
        #expect(last.hasPrefix("levee worker: cannot reach the Kafka brokers at 127.0.0.1:1: "), "\(last)")
        #expect(last.contains("Connection refused") && last.contains("(--startup-timeout)"), "\(last)")
        #expect(last.contains("gave up after"), "\(last)")
        // Every attempt logged (how many fit in 3 s depends on the machine; the retry spacing is
        // checked in unreachableBrokersThenTheyAppear).
        let attempts = Self.jsonLines(out.stderr).filter { $0["brokers"] as? String == "127.0.0.1:1" }
        #expect(!attempts.isEmpty && attempts.last?["msg"].map { "\($0)" }?.hasSuffix("giving up") == true, "\(out.stderr)")

        let once = try await LeveeProcess.run(["worker", "--brokers", "127.0.0.1:1", "--startup-timeout", "0"] + Self.engine, timeout: 60)
        #expect(once.status == 1 && !once.timedOut, "\(once)")
        #expect(once.stderr.contains("gave up after 1 attempt "), "\(once.stderr)")
        #expect(Self.jsonLines(once.stderr).filter { $0["brokers"] != nil }.count == 1, "\(once.stderr)")
    }

    @Test("SIGTERM while waiting for the brokers exits 0 without starting", .timeLimit(.minutes(2)))
    func sigtermDuringTheWait() async throws {
        let worker = try LeveeProcess.start(["worker", "--brokers", "127.0.0.1:1", "--http", "127.0.0.1:0"] + Self.engine)
        defer { worker.signal(SIGKILL) }
        let text = try await Self.waitForStderr(worker) { t in Self.jsonLines(t).contains { $0["attempt"] as? String == "1" } }
        #expect(text.contains("cannot reach the Kafka brokers at 127.0.0.1:1"), "\(text)")
        worker.signal(SIGTERM)
        // Generous bound for a loaded machine; the wait itself ends at once.
        let out = await worker.waitForExit(timeout: 30)
        #expect(out.status == 0 && !out.timedOut, "\(out)")
        #expect(!out.stderr.contains("started\""), "\(out.stderr)")
    }

    @Test func usageErrors() async throws {
        for bad in ["-1", "soon", "nan"] {
            let out = try await LeveeProcess.run(["worker", "--brokers", "127.0.0.1:1", "--startup-timeout", bad] + Self.engine)
            #expect(out.status == 64 && out.stderr.contains("--startup-timeout"), "\(bad): \(out)")
        }
        let help = try await LeveeProcess.run(["worker", "--help"])
        #expect(help.status == 0 && help.stdout.contains("--startup-timeout"))
    }
}
