import Foundation
#if canImport(FoundationNetworking)
import FoundationNetworking
#endif
import Kafka
import Testing

/// `levee reconcile` as an operator runs it: against `levee broker` with a `levee worker`
/// process, failures made by hand, each answer checked in --json and in the human verdict line.
@Suite(.serialized) struct ReconcileCommandTests {
    func json(_ text: String) throws -> [String: Any] {
        try #require(try JSONSerialization.jsonObject(with: Data(text.utf8)) as? [String: Any], "not JSON: \(text)")
    }

    func lastLine(_ text: String) -> String {
        text.split(separator: "\n").last.map(String.init) ?? ""
    }

    func produce(_ bootstrap: String, topic: String, key: String, value: [UInt8]?) async throws {
        let producer = try KafkaProducer(configuration: KafkaConfiguration(["bootstrap.servers": bootstrap]))
        _ = try await producer.send(ProducerRecord(topic: topic, key: Array(key.utf8), value: value))
        try await producer.close()
    }

    @Test(.timeLimit(.minutes(4))) func deletedResultAndPlantedDuplicate() async throws {
        let broker = try LeveeProcess.start(["broker", "--partitions", "2", "--levee-topics", "r."])
        defer { broker.signal(SIGTERM); _ = broker.waitForExitBlocking(timeout: 10) }
        let bootstrap = try #require(await broker.readLine(timeout: 20)?.trimmingCharacters(in: .whitespaces))
        let connection = ["--brokers", bootstrap, "--prefix", "r.", "--partitions", "2"]
        let worker = try LeveeProcess.start(["worker", "--worker-id", "rw-1", "--engine", "synthetic", "--synthetic-delay", "5",
                                             "-X", "session.timeout.ms=6000", "-X", "heartbeat.interval.ms=500"] + connection)
        defer { worker.signal(SIGKILL); _ = worker.waitForExitBlocking(timeout: 10) }
        var ids: [String] = []
        for i in 0..<4 {
            let submitted = try await LeveeProcess.run(["submit", "--prompt", "job \(i)", "--model", "synthetic", "--json"] + connection)
            #expect(submitted.status == 0, "\(submitted)")
            ids.append(try #require(try json(submitted.stdout)["job_id"] as? String))
        }
        for id in ids {
            let r = try await LeveeProcess.run(["result", id, "--wait", "60", "--json"] + connection, timeout: 90)
            #expect(r.status == 0, "\(r)")
        }

        // After the burst: consistent, exit 0, in both forms.
        let clean = try await LeveeProcess.run(["reconcile", "--once", "--json"] + connection, timeout: 60)
        #expect(clean.status == 0, "\(clean)")
        let cleanReport = try json(clean.stdout)
        #expect(cleanReport["consistent"] as? Bool == true)
        #expect(cleanReport["jobs"] as? Int == 4)
        #expect((cleanReport["terminal"] as? [String: Int])?["succeeded"] == 4)
        #expect(((cleanReport["workers"] as? [String: Any])?["alive"] as? [String]) == ["rw-1"])
        let human = try await LeveeProcess.run(["reconcile", "--once"] + connection, timeout: 60)
        #expect(human.status == 0 && lastLine(human.stdout) == "consistent: 4 jobs, 4 terminal, 0 pending", "\(human)")

        // A result deleted by hand: lost, requeued with attempt 2, exit 1; then it finishes once.
        let victim = ids[1]
        try await produce(bootstrap, topic: "r.levee.results", key: victim, value: nil)
        let lost = try await LeveeProcess.run(["reconcile", "--once", "--json", "--sla", "0"] + connection, timeout: 60)
        #expect(lost.status == 1, "\(lost)")
        let lostReport = try json(lost.stdout)
        #expect(lostReport["consistent"] as? Bool == false)
        let lostEntries = try #require(lostReport["lost"] as? [[String: Any]])
        #expect(lostEntries.map { $0["job_id"] as? String } == [victim])
        #expect(lostEntries.first?["requeued"] as? Bool == true)
        #expect((lostReport["requeued"] as? [[String: Any]])?.first?["attempt"] as? Int == 2)
        #expect(lost.stderr.contains("INCONSISTENT: 1 lost (requeued)"), "\(lost.stderr)")
        let again = try await LeveeProcess.run(["result", victim, "--wait", "60", "--json"] + connection, timeout: 90)
        let record = try json(again.stdout)
        #expect(record["attempt"] as? Int == 2 && record["status"] as? String == "succeeded", "\(again)")
        var healed = try await LeveeProcess.run(["reconcile", "--once"] + connection, timeout: 60)
        for _ in 0..<20 where healed.status != 0 {
            try await Task.sleep(for: .milliseconds(500))
            healed = try await LeveeProcess.run(["reconcile", "--once"] + connection, timeout: 60)
        }
        #expect(healed.status == 0 && lastLine(healed.stdout) == "consistent: 4 jobs, 4 terminal, 0 pending", "\(healed)")
        let trace = try await LeveeProcess.run(["trace", victim] + connection, timeout: 60)
        let diagnosis = trace.stdout.split(separator: "\n").first { $0.hasPrefix("diagnosis: ") }.map(String.init) ?? ""
        #expect(diagnosis.hasPrefix("diagnosis: requeued by the reconciler at "), "\(trace)")
        #expect(diagnosis.contains("succeeded on rw-1"), "\(diagnosis)")
        let traceJSON = try json(try await LeveeProcess.run(["trace", victim, "--json"] + connection, timeout: 60).stdout)
        let stages = (traceJSON["events"] as? [[String: Any]])?.compactMap { $0["stage"] as? String } ?? []
        #expect(stages.contains("requeued") && stages.filter { $0 == "result_committed" }.count == 2, "\(stages)")

        // A second terminal record planted by hand: reported as a duplicate, nothing requeued.
        let dup = ids[3]
        let planted = #"{"schema":"levee.result/v1","job_id":"\#(dup)","status":"failed","attempt":1,"completed_at":"2026-11-22T08:00:00.000Z","error":{"class":"other","message":"planted"}}"#
        try await produce(bootstrap, topic: "r.levee.results", key: dup, value: Array(planted.utf8))
        let duplicated = try await LeveeProcess.run(["reconcile", "--once", "--sla", "0"] + connection, timeout: 60)
        #expect(duplicated.status == 1)
        #expect(lastLine(duplicated.stdout) == "INCONSISTENT: 0 lost, 0 stuck, 1 duplicate, 0 orphans", "\(duplicated)")
        #expect(duplicated.stdout.contains("\(dup)  2 terminal records"), "\(duplicated.stdout)")
        let dupJSON = try json(try await LeveeProcess.run(["reconcile", "--once", "--json"] + connection, timeout: 60).stdout)
        let dups = try #require(dupJSON["duplicates"] as? [[String: Any]])
        #expect(dups.first?["job_id"] as? String == dup && dups.first?["statuses"] as? [String] == ["succeeded", "failed"])
        #expect((dupJSON["requeued"] as? [Any])?.isEmpty == true)
    }

    @Test func usageErrors() async throws {
        let noBrokers = try await LeveeProcess.run(["reconcile", "--once"], environment: ["LEVEE_BROKERS": ""])
        #expect(noBrokers.status == 64 && noBrokers.stderr.contains("no brokers"))
        let badSLA = try await LeveeProcess.run(["reconcile", "--once", "--sla", "-3", "--brokers", "127.0.0.1:1"])
        #expect(badSLA.status == 64 && badSLA.stderr.contains("--sla"), "\(badSLA)")
        let httpOnce = try await LeveeProcess.run(["reconcile", "--once", "--http", "127.0.0.1:0", "--brokers", "127.0.0.1:1"])
        #expect(httpOnce.status == 64, "\(httpOnce)")
        let unreachable = try await LeveeProcess.run(["reconcile", "--once", "--brokers", "127.0.0.1:1", "--read-timeout", "3"], timeout: 60)
        #expect(unreachable.status == 2 && unreachable.stderr.contains("could not finish"), "\(unreachable)")
    }
}

/// The reconciler as a long-running service: one line per pass, /metrics and /readyz, SIGTERM.
@Suite struct ReconcileServiceTests {
    func get(_ url: String) async throws -> (Int, String) {
        let (data, response) = try await URLSession.shared.data(from: URL(string: url)!)
        return ((response as? HTTPURLResponse)?.statusCode ?? 0, String(decoding: data, as: UTF8.self))
    }

    @Test(.timeLimit(.minutes(2))) func servesMetricsAndStopsOnSIGTERM() async throws {
        let broker = try LeveeProcess.start(["broker", "--partitions", "1", "--levee-topics", "s."])
        defer { broker.signal(SIGTERM); _ = broker.waitForExitBlocking(timeout: 10) }
        let bootstrap = try #require(await broker.readLine(timeout: 20)?.trimmingCharacters(in: .whitespaces))
        let service = try LeveeProcess.start(["reconcile", "--interval", "0.5", "--http", "127.0.0.1:0",
                                              "--brokers", bootstrap, "--prefix", "s.", "--partitions", "1"])
        defer { service.signal(SIGKILL) }
        let first = try #require(await service.readLine(timeout: 30))
        #expect(first.hasSuffix("consistent: 0 jobs, 0 terminal, 0 pending"), "\(first)")
        let second = try #require(await service.readLine(timeout: 30))
        #expect(second.contains("consistent"))
        let line = try #require(service.stderrSoFar.split(separator: "\n").first { $0.contains("serving /metrics") })
        let base = try #require(line.split(separator: " ").last.map(String.init))
        let (readyStatus, _) = try await get(base + "/readyz")
        #expect(readyStatus == 200)
        let (metricsStatus, metrics) = try await get(base + "/metrics")
        #expect(metricsStatus == 200)
        let passes = metrics.split(separator: "\n").first { $0.hasPrefix("levee_reconciler_passes_total ") }
            .flatMap { Double($0.split(separator: " ")[1]) } ?? 0
        #expect(passes >= 2, "\(metrics)")
        #expect(metrics.contains("levee_reconciler_consistent 1"))
        service.signal(SIGTERM)
        let out = await service.waitForExit(timeout: 30)
        #expect(out.status == 0, "\(out)")
    }
}
