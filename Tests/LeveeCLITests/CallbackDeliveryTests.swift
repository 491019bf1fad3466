import Foundation
import Testing

/// Completion callbacks under failure, driven like GatewayCommandTests (curl against a live
/// gateway running the dispatcher, workers on the synthetic engine, a local Python receiver), on
/// the embedded broker and on noida-db.
@Suite(.serialized) struct CallbackDeliveryTests {
    typealias G = GatewayCommandTests

    /// The trace's events of a job, through the gateway.
    static func events(_ base: String, _ id: String) async throws -> [[String: Any]] {
        (try await G.curl("GET", base + "/v1/jobs/\(id)/trace").json["events"] as? [[String: Any]]) ?? []
    }

    /// A worker is SIGKILLed while it runs a job with a callback_url: the other worker runs it
    /// after the rebalance, the job ends with one result, and the receiver gets one successful
    /// callback for it.
    ///
    /// Embedded broker only: on noida-db 0.2.3 the group never rebalanced the SIGKILLed member
    /// away (the survivor kept its own partition for 3+ minutes despite session.timeout.ms=6000,
    /// and a third worker joining left the group stuck mid-rebalance, its partitions revoked):
    /// the job never completes there, whatever the callbacks do (see the helper's report).
    @Test(.timeLimit(.minutes(5)), arguments: [CallbackCluster.embedded])
    func aKilledWorkersJobStillCompletesAndCallsBackOnce(_ cluster: CallbackCluster) async throws {
        _ = try await cluster.with { bootstrap, prefix in
            let connection = ["--brokers", bootstrap, "--prefix", prefix, "--partitions", "2"]
            let secret = "whsec-\(UUID().uuidString)"
            let receiver = try await CallbackReceiver.start(secret: secret)
            defer { receiver.stop() }
            var workers: [String: LeveeProcess.Running] = [:]
            for name in ["kw-a", "kw-b"] {
                // Long enough to see the job received and kill its worker before it finishes.
                workers[name] = try LeveeProcess.start(["worker", "--worker-id", name, "--engine", "synthetic", "--synthetic-delay", "6000",
                                                        "--quiet", "-X", "session.timeout.ms=6000", "-X", "heartbeat.interval.ms=500"] + connection)
            }
            defer { workers.values.forEach { $0.signal(SIGKILL) } }
            let (gateway, base) = try await G.startGateway(connection, environment: ["LEVEE_CALLBACK_SECRET": secret],
                                                           extra: ["--callbacks", "--callback-hosts", "127.0.0.1:\(receiver.port)"])
            defer { gateway.signal(SIGKILL) }
            let submitted = try await G.curl("POST", base + "/v1/jobs", body: #"{"prompt":"survive","callback_url":"\#(receiver.url("ok"))"}"#)
            #expect(submitted.status == 202, "\(submitted)")
            let id = try #require(submitted.json["job_id"] as? String)

            // The trace says who received it: kill that one.
            var first: String?
            for _ in 0..<600 where first == nil {
                first = try await Self.events(base, id).first { $0["stage"] as? String == "received" }
                    .flatMap { ($0["worker"] as? [String: Any])?["id"] as? String }
                if first == nil { try await Task.sleep(for: .milliseconds(100)) }
            }
            let victim = try #require(first, "the job was never received")
            let victimProcess = try #require(workers[victim])
            victimProcess.signal(SIGKILL)
            _ = await victimProcess.waitForExit(timeout: 10)
            #expect(receiver.deliveries(id).isEmpty, "no callback before the job completed")

            // The survivor completes it after the rebalance; one successful callback arrives.
            let delivered = try await receiver.wait(seconds: 180) { $0.contains { $0["id"] as? String == id } }
            try await Task.sleep(for: .seconds(3))
            let forJob = receiver.deliveries(id)
            #expect(forJob.map { $0["answered"] as? Int } == [204], "\(delivered.count) requests in all")
            let body = try #require(forJob.first?["body"] as? [String: Any])
            let result = try #require(body["result"] as? [String: Any])
            let survivor = (result["worker"] as? [String: Any])?["id"] as? String
            #expect(body["state"] as? String == "succeeded" && survivor != nil && survivor != victim, "result from \(survivor ?? "?")")
            #expect(forJob.first?["signature_ok"] as? Bool == true)
            let receivers = try await Self.events(base, id).filter { $0["stage"] as? String == "received" }
                .compactMap { ($0["worker"] as? [String: Any])?["id"] as? String }
            #expect(receivers.first == victim && receivers.last == survivor, "\(receivers)")
            // One committed result record for the job: the callback does not write results.
            #expect(try await G.resultRecords(bootstrap, topic: prefix + "levee.results", partitions: 2, key: id) == 1)
            gateway.signal(SIGTERM)
            _ = await gateway.waitForExit(timeout: 30)
        }
    }
}
