import Foundation
import Testing

/// `levee status` through the built binary, and the end-to-end failure story: a worker process
/// is SIGKILLed mid-inference; `levee trace` shows the job redelivered and finished by the other
/// worker, and `levee status` names the dead worker with the partitions it held.
@Suite(.serialized) struct StatusCommandTests {
    static func json(_ text: String) -> [String: Any]? {
        try? JSONSerialization.jsonObject(with: Data(text.utf8)) as? [String: Any]
    }

    /// Runs `levee status --json` until `done` holds (or `timeout` seconds pass); returns the last output.
    static func status(_ connection: [String], timeout: Double, until done: ([String: Any]) -> Bool) async throws -> (LeveeProcess.Output, [String: Any]) {
        let deadline = Date().addingTimeInterval(timeout)
        while true {
            let out = try await LeveeProcess.run(["status", "--json"] + connection, timeout: 60)
            let report = json(out.stdout) ?? [:]
            if done(report) || Date() > deadline { return (out, report) }
            try await Task.sleep(for: .milliseconds(300))
        }
    }

    static func workers(_ report: [String: Any]) -> [[String: Any]] { report["workers"] as? [[String: Any]] ?? [] }

    @Test(.timeLimit(.minutes(4))) func killedWorkerIsNamedDeadAndItsJobRedelivered() async throws {
        let broker = try LeveeProcess.start(["broker", "--partitions", "2", "--levee-topics", "s."])
        defer { broker.signal(SIGTERM); _ = broker.waitForExitBlocking(timeout: 10) }
        let bootstrap = try #require(await broker.readLine(timeout: 20)?.trimmingCharacters(in: .whitespaces))
        let connection = ["--brokers", bootstrap, "--prefix", "s.", "--partitions", "2"]
        func startWorker(_ id: String) throws -> LeveeProcess.Running {
            try LeveeProcess.start(["worker", "--worker-id", id, "--engine", "synthetic", "--synthetic-delay", "4000",
                                    "--heartbeat-interval-ms", "500", "-X", "session.timeout.ms=6000",
                                    "-X", "heartbeat.interval.ms=500"] + connection)
        }
        let workers = ["st-w1": try startWorker("st-w1"), "st-w2": try startWorker("st-w2")]
        defer { for w in workers.values where w.isRunning { w.signal(SIGKILL) } }

        // Both alive, together holding the 4 job and retry partitions.
        let (ready, readyReport) = try await Self.status(connection, timeout: 60) { r in
            let alive = Self.workers(r).filter { $0["status"] as? String == "alive" }
            return alive.count == 2 && alive.map { ($0["assigned"] as? [Any])?.count ?? 0 }.reduce(0, +) == 4
                && alive.allSatisfy { ($0["assigned"] as? [Any])?.isEmpty == false }
        }
        #expect(ready.status == 0, "\(ready)")
        #expect(readyReport["summary"] as? String == "healthy: 1 broker, 2 workers alive, lag 0", "\(ready.stdout)")

        let submitted = try await LeveeProcess.run(["submit", "--chat", "--prompt", "survive a kill", "--model", "synthetic", "--json"] + connection)
        let id = try #require(Self.json(submitted.stdout)?["job_id"] as? String, "\(submitted)")

        // Wait until a worker logs inference_started for the job, then kill that worker.
        var victim: String?
        let startDeadline = Date().addingTimeInterval(60)
        while victim == nil && Date() < startDeadline {
            for (name, w) in workers where w.stderrSoFar.split(separator: "\n").contains(where: {
                $0.contains("\"inference_started\"") && $0.contains(id)
            }) { victim = name }
            if victim == nil { try await Task.sleep(for: .milliseconds(50)) }
        }
        let killed = try #require(victim, "no worker started the job")
        let survivor = workers.keys.first { $0 != killed }!
        // Let a heartbeat (every 500 ms) carry the running job before the kill.
        try await Task.sleep(for: .milliseconds(1200))
        workers[killed]!.signal(SIGKILL)
        _ = await workers[killed]!.waitForExit(timeout: 10)

        // The trace: received by the killed worker, then received and committed by the other.
        var events: [[String: Any]] = []
        let traceDeadline = Date().addingTimeInterval(90)
        repeat {
            let trace = try await LeveeProcess.run(["trace", id, "--json"] + connection, timeout: 60)
            events = Self.json(trace.stdout)?["events"] as? [[String: Any]] ?? []
            if events.contains(where: { $0["stage"] as? String == "result_committed" }) { break }
            try await Task.sleep(for: .milliseconds(500))
        } while Date() < traceDeadline
        func worker(_ e: [String: Any]) -> String? { (e["worker"] as? [String: Any])?["id"] as? String }
        let firstReceived = events.firstIndex { $0["stage"] as? String == "received" && worker($0) == killed }
        let redelivered = events.firstIndex { $0["stage"] as? String == "received" && worker($0) == survivor }
        let committed = events.firstIndex { $0["stage"] as? String == "result_committed" && worker($0) == survivor }
        #expect(firstReceived != nil && redelivered != nil && committed != nil, "\(events)")
        if let firstReceived, let redelivered, let committed { #expect(firstReceived < redelivered && redelivered < committed) }
        let human = try await LeveeProcess.run(["trace", id] + connection, timeout: 60)
        let diagnosis = human.stdout.split(separator: "\n").first { $0.hasPrefix("diagnosis: ") }.map(String.init) ?? ""
        #expect(diagnosis.contains("received by \(killed), redelivered to \(survivor)") && diagnosis.contains("succeeded on \(survivor)"),
                "\(human.stdout)")
        let partition = events.first { $0["stage"] as? String == "received" && worker($0) == killed }?["partition"] as? Int

        // Status: the killed worker is dead, with the partitions it held and the job it was running.
        let (out, report) = try await Self.status(connection, timeout: 30) { r in
            Self.workers(r).contains { $0["id"] as? String == killed && $0["status"] as? String == "dead" }
        }
        #expect(out.status == 1, "\(out)")
        let dead = try #require(Self.workers(report).first { $0["id"] as? String == killed }, "\(out.stdout)")
        #expect(dead["status"] as? String == "dead")
        let held = (dead["assigned"] as? [[String: Any]] ?? []).map { "\($0["topic"] as? String ?? "")[\($0["partition"] as? Int ?? -1)]" }
        #expect(held.contains("s.levee.jobs[\(partition ?? -1)]"), "the dead worker held the job's partition: \(held)")
        #expect((dead["current_jobs"] as? [String])?.contains(id) == true, "\(dead)")
        #expect(Self.workers(report).first { $0["id"] as? String == survivor }?["status"] as? String == "alive")
        #expect((report["summary"] as? String)?.contains("worker \(killed) dead (held s.levee.jobs[") == true, "\(report["summary"] ?? "")")

        let text = try await LeveeProcess.run(["status"] + connection, timeout: 60)
        #expect(text.status == 1)
        let verdict = text.stdout.split(separator: "\n").last.map(String.init) ?? ""
        #expect(verdict.hasPrefix("ATTENTION: ") && verdict.contains("worker \(killed) dead (held s.levee.jobs["), "\(text.stdout)")
        #expect(text.stdout.contains("DEAD    \(killed)"), "\(text.stdout)")

        // Past the forget window the dead worker is listed as gone and no longer an issue.
        let forgotten = try await LeveeProcess.run(["status", "--json", "--forget-after", "0.001"] + connection, timeout: 60)
        let forgottenReport = Self.json(forgotten.stdout) ?? [:]
        #expect(Self.workers(forgottenReport).first { $0["id"] as? String == killed }?["status"] as? String == "gone", "\(forgotten)")
        #expect(forgotten.status == 0 && (forgottenReport["summary"] as? String)?.hasPrefix("healthy: 1 broker, 1 worker alive") == true,
                "\(forgotten)")

        workers[survivor]!.signal(SIGTERM)
        let stopped = await workers[survivor]!.waitForExit(timeout: 60)
        #expect(stopped.status == 0, "\(stopped)")
    }

    @Test(.timeLimit(.minutes(1))) func unreachableBrokersExitTwoAndBadOptionsSixtyFour() async throws {
        let out = try await LeveeProcess.run(["status", "--brokers", "127.0.0.1:1"], timeout: 50)
        #expect(out.status == 2, "\(out)")
        #expect(out.stdout.contains("UNREACHABLE"), "\(out)")
        let bad = try await LeveeProcess.run(["status", "--stuck-after", "-3", "--brokers", "127.0.0.1:1"])
        #expect(bad.status == 64 && bad.stderr.contains("--stuck-after"), "\(bad)")
        let help = try await LeveeProcess.run(["status", "--help"])
        #expect(help.status == 0 && help.stdout.contains("Usage: levee status"))
        let listed = try await LeveeProcess.run(["--help"])
        #expect(listed.stdout.contains("status"))
    }
}
