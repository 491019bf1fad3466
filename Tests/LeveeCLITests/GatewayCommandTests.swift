import Foundation
import Kafka
import Synchronization
import Testing

/// `levee gateway` driven the way a business application would: with curl and Python's urllib,
/// against a live gateway and worker (synthetic engine) on the embedded broker and on noida-db.
@Suite(.serialized) struct GatewayCommandTests {
    /// Runs a program (curl, python3) to completion off the cooperative pool.
    static func tool(_ executable: String, _ arguments: [String], stdin: String = "", timeout: Double = 90) async throws
        -> (status: Int32, stdout: String, stderr: String) {
        await LeveeProcess.offPool {
            let process = Process()
            process.executableURL = URL(fileURLWithPath: "/usr/bin/env")
            process.arguments = [executable] + arguments
            let input = Pipe(), output = Pipe(), errors = Pipe()
            process.standardInput = input
            process.standardOutput = output
            process.standardError = errors
            do { try process.run() } catch { return (127, "", "\(error)") }
            let captured = Captured()
            let group = DispatchGroup()
            for (index, pipe) in [output, errors].enumerated() {
                group.enter()
                Thread.detachNewThread {
                    let data = pipe.fileHandleForReading.readDataToEndOfFile()
                    captured.data.withLock { $0[index] = data }
                    group.leave()
                }
            }
            try? input.fileHandleForWriting.write(contentsOf: Data(stdin.utf8))
            try? input.fileHandleForWriting.close()
            if group.wait(timeout: .now() + timeout) == .timedOut { process.terminate() }
            process.waitUntilExit()
            let (out, err) = captured.data.withLock { ($0[0] ?? Data(), $0[1] ?? Data()) }
            return (process.terminationStatus, String(decoding: out, as: UTF8.self), String(decoding: err, as: UTF8.self))
        }
    }

    final class Captured: Sendable {
        let data = Mutex<[Int: Data]>([:])
    }

    /// One HTTP exchange through curl: status, lower-cased headers, body.
    struct Exchange {
        var status: Int
        var headers: [String: String]
        var body: String
        var json: [String: Any] { (try? JSONSerialization.jsonObject(with: Data(body.utf8))) as? [String: Any] ?? [:] }
    }

    static func curl(_ method: String, _ url: String, body: String? = nil, headers: [String] = [], token: String? = nil) async throws -> Exchange {
        var args = ["-s", "-i", "-X", method, "--max-time", "80"]
        for h in headers { args += ["-H", h] }
        if let token { args += ["-H", "Authorization: Bearer \(token)"] }
        if body != nil { args += ["-H", "Content-Type: application/json", "--data-binary", "@-"] }
        let out = try await tool("curl", args + [url], stdin: body ?? "")
        // Skip interim 100 Continue heads; the last head is the answer.
        var text = out.stdout
        while text.hasPrefix("HTTP/1.1 100"), let end = text.range(of: "\r\n\r\n") { text = String(text[end.upperBound...]) }
        guard let split = text.range(of: "\r\n\r\n") else { return Exchange(status: 0, headers: [:], body: out.stdout + out.stderr) }
        let lines = text[..<split.lowerBound].split(separator: "\r\n")
        let status = Int(lines.first?.split(separator: " ").dropFirst().first ?? "") ?? 0
        var fields: [String: String] = [:]
        for line in lines.dropFirst() {
            if let colon = line.firstIndex(of: ":") {
                fields[line[..<colon].lowercased()] = line[line.index(after: colon)...].trimmingCharacters(in: .whitespaces)
            }
        }
        return Exchange(status: status, headers: fields, body: String(text[split.upperBound...]))
    }

    /// A Python client with nothing but the standard library: submit, then long-poll the result.
    static let pythonClient = #"""
    import json, sys, urllib.request, urllib.error
    base, token, key = sys.argv[1], sys.argv[2], sys.argv[3]
    headers = {"Content-Type": "application/json", "Authorization": "Bearer " + token, "Idempotency-Key": key}
    job = {"messages": [{"role": "user", "content": "hello from python"}], "model": "synthetic", "params": {"max_tokens": 8}}
    req = urllib.request.Request(base + "/v1/jobs", data=json.dumps(job).encode(), headers=headers, method="POST")
    with urllib.request.urlopen(req, timeout=30) as r:
        accepted = json.load(r)
        location = r.headers["Location"]
        status = r.status
    with urllib.request.urlopen(urllib.request.Request(base + location + "?wait=30", headers=headers), timeout=60) as r:
        done = json.load(r)
    try:
        urllib.request.urlopen(urllib.request.Request(base + "/v1/jobs", data=b"{not json", headers=headers, method="POST"), timeout=30)
        bad = None
    except urllib.error.HTTPError as e:
        bad = {"status": e.code, "type": e.headers["Content-Type"], "problem": json.load(e)}
    print(json.dumps({"status": status, "accepted": accepted, "location": location, "done": done, "bad": bad}))
    """#

    /// Starts a gateway and waits until /readyz answers 200; returns it and its base URL.
    static func startGateway(_ connection: [String], environment: [String: String], extra: [String] = []) async throws
        -> (LeveeProcess.Running, String) {
        let gateway = try LeveeProcess.start(["gateway", "--http", "127.0.0.1:0", "--model", "synthetic"] + extra + connection,
                                             environment: environment)
        var base = ""
        for _ in 0..<300 where base.isEmpty {
            if let line = gateway.stderrSoFar.split(separator: "\n").first(where: { $0.contains("serving http://") }),
               let url = line.split(separator: " ").first(where: { $0.hasPrefix("http://") }) {
                base = String(url.dropLast("/v1/jobs".count))
            }
            try await Task.sleep(for: .milliseconds(100))
        }
        #expect(!base.isEmpty, "\(gateway.stderrSoFar)")
        var ready = 0
        for _ in 0..<300 where ready != 200 {
            ready = try await curl("GET", base + "/readyz").status
            if ready != 200 { try await Task.sleep(for: .milliseconds(200)) }
        }
        #expect(ready == 200, "gateway never ready: \(gateway.stderrSoFar)")
        return (gateway, base)
    }

    /// Checks documents against a component of schemas/openapi.yaml (scripts/openapi-check);
    /// returns the problems found (empty when every document conforms).
    static func contract(_ component: String, _ documents: [String]) async throws -> String {
        let root = URL(fileURLWithPath: #filePath).deletingLastPathComponent().deletingLastPathComponent().deletingLastPathComponent()
        let out = try await tool(root.appendingPathComponent("scripts/openapi-check").path, [component, "-"],
                                 stdin: documents.joined(separator: "\n"))
        return out.status == 0 ? "" : out.stdout + out.stderr + " (exit \(out.status))"
    }

    static func resultRecords(_ bootstrap: String, topic: String, partitions: Int, key: String) async throws -> Int {
        var count = 0
        for p in 0..<partitions {
            let records = try await KafkaConsumer.readWindow(
                configuration: KafkaConfiguration(["bootstrap.servers": bootstrap, "isolation.level": "read_committed"]),
                partition: TopicPartition(topic, Int32(p)), from: KafkaOffset.beginning, maxMessages: 10_000)
            count += records.filter { $0.keyString == key }.count
        }
        return count
    }

    /// The whole flow against one cluster: the gateway runs first, alone, so a job can be queued
    /// and cancelled before any worker exists; then a worker joins and the rest runs through it.
    static func gatewayFlow(bootstrap: String, prefix: String, partitions: Int) async throws {
        let connection = ["--brokers", bootstrap, "--prefix", prefix, "--partitions", String(partitions)]
        let token = "tok-\(UUID().uuidString)"
        let (gateway, base) = try await startGateway(connection, environment: ["LEVEE_GATEWAY_TOKENS": "other-token, \(token)"],
                                                     extra: ["--max-body-bytes", "4096", "--request-timeout", "2"])
        defer { gateway.signal(SIGKILL) }
        let chat = #"{"messages":[{"role":"user","content":"hi"}],"params":{"max_tokens":8}}"#

        // Authentication: no token or a wrong one gets 401 (problem+json); the ops routes stay open.
        let anonymous = try await curl("POST", base + "/v1/jobs", body: chat)
        #expect(anonymous.status == 401 && anonymous.headers["content-type"] == "application/problem+json", "\(anonymous)")
        #expect(anonymous.headers["www-authenticate"]?.hasPrefix("Bearer") == true)
        #expect(try await curl("GET", base + "/v1/jobs/019ab0f2-7c41-7a3e-9b1d-2f6c8e4a1b07", token: "nope").status == 401)
        #expect(try await curl("GET", base + "/healthz").status == 200)

        // A job queued while no worker runs: state queued, then cancelled (DELETE) before it runs.
        let doomed = try await curl("POST", base + "/v1/jobs", body: chat, token: token)
        #expect(doomed.status == 202, "\(doomed)")
        let doomedID = try #require(doomed.json["job_id"] as? String)
        #expect(doomed.headers["location"] == "/v1/jobs/\(doomedID)")
        #expect(doomed.json["partition"] as? Int != nil && doomed.json["offset"] as? Int != nil)
        let queued = try await curl("GET", base + "/v1/jobs/\(doomedID)", token: token)
        #expect(queued.status == 200 && queued.json["state"] as? String == "queued", "\(queued)")
        let cancel = try await curl("DELETE", base + "/v1/jobs/\(doomedID)", token: token)
        #expect(cancel.status == 202 && cancel.json["cancel"] as? String == "requested", "\(cancel)")

        // Bad input: the schema error as problem+json naming the field; 413 over the limit; 404; 405.
        let invalid = try await curl("POST", base + "/v1/jobs", body: #"{"prompt":"x","params":{"max_tokens":0},"colour":"red"}"#, token: token)
        #expect(invalid.status == 400 && invalid.headers["content-type"] == "application/problem+json", "\(invalid)")
        #expect((invalid.json["errors"] as? [String])?.contains { $0.contains("unknown field 'colour'") } == true, "\(invalid.body)")
        let badParams = try await curl("POST", base + "/v1/jobs", body: #"{"prompt":"x","params":{"max_tokens":0}}"#, token: token)
        #expect(badParams.status == 400 && badParams.body.contains("params.max_tokens is 0"), "\(badParams)")
        let noCallbacks = try await curl("POST", base + "/v1/jobs", body: #"{"prompt":"x","callback_url":"http://127.0.0.1:9/x"}"#, token: token)
        #expect(noCallbacks.status == 400 && noCallbacks.body.contains("callbacks are not enabled"), "\(noCallbacks)")
        let big = "{\"prompt\":\"" + String(repeating: "a", count: 10_000) + "\"}"
        let tooBig = try await curl("POST", base + "/v1/jobs", body: big, token: token)
        #expect(tooBig.status == 413 && tooBig.json["status"] as? Int == 413, "\(tooBig)")
        #expect(try await curl("GET", base + "/v1/jobs/019ab0f2-7c41-7a3e-9b1d-2f6c8e4a1b07", token: token).status == 404)
        #expect(try await curl("GET", base + "/v1/jobs/not-a-uuid", token: token).status == 404)
        let wrongMethod = try await curl("PUT", base + "/v1/jobs", body: chat, token: token)
        #expect(wrongMethod.status == 405 && wrongMethod.headers["allow"] == "POST", "\(wrongMethod)")

        // A worker joins: the cancelled job ends cancelled, never run.
        let worker = try LeveeProcess.start(["worker", "--worker-id", "gw-w", "--engine", "synthetic", "--synthetic-delay", "300", "--quiet",
                                             "-X", "session.timeout.ms=6000", "-X", "heartbeat.interval.ms=500"] + connection)
        defer { worker.signal(SIGKILL) }
        let cancelled = try await curl("GET", base + "/v1/jobs/\(doomedID)?wait=60", token: token)
        #expect(cancelled.json["state"] as? String == "cancelled", "\(cancelled)")
        #expect(try await curl("DELETE", base + "/v1/jobs/\(doomedID)", token: token).status == 409)

        // Python's urllib end to end: submit with an Idempotency-Key, long-poll the result, a 400.
        let key = "order-\(UUID().uuidString)"
        let python = try await tool("python3", ["-c", pythonClient, base, token, key], timeout: 120)
        #expect(python.status == 0, "\(python)")
        let report = try #require(try JSONSerialization.jsonObject(with: Data(python.stdout.utf8)) as? [String: Any], "\(python)")
        #expect(report["status"] as? Int == 202)
        let id = try #require((report["accepted"] as? [String: Any])?["job_id"] as? String)
        let done = try #require(report["done"] as? [String: Any])
        #expect(done["state"] as? String == "succeeded", "\(done)")
        #expect(((done["result"] as? [String: Any])?["output"] as? [String: Any])?["text"] as? String != nil, "\(done)")
        let bad = try #require(report["bad"] as? [String: Any])
        #expect(bad["status"] as? Int == 400 && bad["type"] as? String == "application/problem+json", "\(bad)")

        // The same key again (curl) and through levee submit: the same job id, still one result.
        let again = try await curl("POST", base + "/v1/jobs", body: #"{"messages":[{"role":"user","content":"hello from python"}],"model":"synthetic"}"#,
                                   headers: ["Idempotency-Key: \(key)"], token: token)
        #expect(again.status == 202 && again.json["job_id"] as? String == id, "\(again)")
        let cli = try await LeveeProcess.run(["submit", "--chat", "--prompt", "hello from python", "--model", "synthetic",
                                              "--idempotency-key", key, "--json"] + connection)
        #expect((try? JSONSerialization.jsonObject(with: Data(cli.stdout.utf8)) as? [String: Any])?["job_id"] as? String == id, "\(cli)")
        let conflict = try await curl("POST", base + "/v1/jobs", body: #"{"prompt":"x","idempotency_key":"a"}"#,
                                      headers: ["Idempotency-Key: b"], token: token)
        #expect(conflict.status == 400 && conflict.body.contains("differ"), "\(conflict)")

        // The trace is levee trace --json's.
        let trace = try await curl("GET", base + "/v1/jobs/\(id)/trace", token: token)
        #expect(trace.status == 200, "\(trace)")
        let cliTrace = try await LeveeProcess.run(["trace", id, "--json"] + connection, timeout: 60)
        let expected = try #require(try JSONSerialization.jsonObject(with: Data(cliTrace.stdout.utf8)) as? [String: Any], "\(cliTrace)")
        #expect(trace.json["state"] as? String == "succeeded" && trace.json["diagnosis"] as? String == expected["diagnosis"] as? String,
                "\(trace.body)\n\(cliTrace.stdout)")
        let stages = (trace.json["events"] as? [[String: Any]])?.compactMap { $0["stage"] as? String } ?? []
        #expect(stages.first == "submitted" && stages.contains("received") && stages.contains("result_committed"), "\(stages)")

        // Let the duplicates (two more submits of the same id) be consumed, then count results.
        try await Task.sleep(for: .seconds(3))
        #expect(try await curl("GET", base + "/v1/jobs/\(id)", token: token).json["state"] as? String == "succeeded")
        #expect(try await resultRecords(bootstrap, topic: prefix + "levee.results", partitions: partitions, key: id) == 1)

        // What the gateway answered conforms to its contract, schemas/openapi.yaml.
        #expect(try await contract("Accepted", [doomed.body, again.body]) == "")
        let doneJSON = String(decoding: try JSONSerialization.data(withJSONObject: done), as: UTF8.self)
        #expect(try await contract("JobStatus", [queued.body, cancelled.body, doneJSON]) == "")
        #expect(try await contract("Problem", [anonymous.body, invalid.body, tooBig.body, wrongMethod.body, conflict.body]) == "")
        #expect(try await contract("JobTrace", [trace.body]) == "")

        // The gateway's own metrics count what happened; the tokens are never printed.
        let metrics = try await curl("GET", base + "/metrics")
        #expect(metrics.body.contains("levee_gateway_requests_total{route=\"submit\",code=\"202\"}"), "\(metrics.body.prefix(2000))")
        #expect(metrics.body.contains("levee_gateway_jobs_submitted_total"))
        gateway.signal(SIGTERM)
        let out = await gateway.waitForExit(timeout: 30)
        #expect(out.status == 0, "\(out)")
        #expect(!out.stderr.contains(token) && !out.stdout.contains(token))
        worker.signal(SIGTERM)
        _ = await worker.waitForExit(timeout: 60)
    }

    @Test(.timeLimit(.minutes(4))) func gatewayOnTheEmbeddedBroker() async throws {
        let broker = try LeveeProcess.start(["broker", "--partitions", "2", "--levee-topics", "g."])
        defer { broker.signal(SIGTERM); _ = broker.waitForExitBlocking(timeout: 10) }
        let bootstrap = try #require(await broker.readLine(timeout: 20)?.trimmingCharacters(in: .whitespaces))
        try await Self.gatewayFlow(bootstrap: bootstrap, prefix: "g.", partitions: 2)
    }

    @Test(.timeLimit(.minutes(4))) func gatewayOnNoida() async throws {
        guard let bootstrap = ProcessInfo.processInfo.environment["LEVEE_NOIDA_BOOTSTRAP"], !bootstrap.isEmpty else {
            print("skipped: LEVEE_NOIDA_BOOTSTRAP is not set (scripts/test starts noida-db and sets it)")
            return
        }
        let prefix = "gw\(UUID().uuidString.prefix(8).lowercased())."
        let topics = try await LeveeProcess.run(["topics", "create", "--json", "--brokers", bootstrap, "--prefix", prefix, "--partitions", "2"])
        #expect(topics.status == 0, "\(topics)")
        try await Self.gatewayFlow(bootstrap: bootstrap, prefix: prefix, partitions: 2)
    }

    /// Completion callbacks end to end: a local receiver that fails twice, then answers 204, gets
    /// the job's result three times (signed, attempts 1-3) and no more, even across a restart of
    /// the dispatcher; every attempt is in the trace; the results topic keeps one record.
    static func callbackFlow(bootstrap: String, prefix: String) async throws {
        let connection = ["--brokers", bootstrap, "--prefix", prefix, "--partitions", "2"]
        let secret = "whsec-\(UUID().uuidString)"
        let receiver = try await CallbackReceiver.start(secret: secret)
        defer { receiver.stop() }

        let worker = try LeveeProcess.start(["worker", "--worker-id", "cb-w", "--engine", "synthetic", "--synthetic-delay", "5", "--quiet",
                                             "-X", "session.timeout.ms=6000", "-X", "heartbeat.interval.ms=500"] + connection)
        defer { worker.signal(SIGKILL) }
        let environment = ["LEVEE_CALLBACK_SECRET": secret]
        let callbackArgs = ["--callbacks", "--callback-hosts", "127.0.0.1:\(receiver.port)", "--callback-retry-ms", "300"]
        var (gateway, base) = try await startGateway(connection, environment: environment, extra: callbackArgs)
        defer { gateway.signal(SIGKILL) }
        let url = receiver.url("fail-2")
        let offList = try await curl("POST", base + "/v1/jobs", body: #"{"prompt":"x","callback_url":"http://127.0.0.1:1/x"}"#)
        #expect(offList.status == 400 && offList.body.contains("allow-list"), "\(offList)")
        let submitted = try await curl("POST", base + "/v1/jobs", body: #"{"prompt":"call me back","callback_url":"\#(url)"}"#)
        #expect(submitted.status == 202, "\(submitted)")
        let id = try #require(submitted.json["job_id"] as? String)

        let seen = try await receiver.wait { $0.count >= 3 }
        #expect(seen.count == 3, "\(seen.count) requests: \(seen.map { ($0["attempt"] as? String ?? "?", $0["answered"] as? Int ?? 0) })")
        #expect(seen.allSatisfy { $0["id"] as? String == id && $0["signature_ok"] as? Bool == true },
                "\(seen.map { ($0["id"] as? String ?? "?", $0["signature_ok"] as? Bool ?? false) })")
        #expect(seen.map { $0["attempt"] as? String } == ["1", "2", "3"])
        #expect(seen.map { $0["answered"] as? Int } == [500, 500, 204])
        let body = try #require(seen.last?["body"] as? [String: Any])
        #expect(body["state"] as? String == "succeeded" && (body["result"] as? [String: Any])?["job_id"] as? String == id)

        // Every attempt is in the trace; the diagnosis says the callback was delivered.
        var stages: [String] = []
        var diagnosis = ""
        for _ in 0..<100 where !stages.contains("callback_delivered") {
            let trace = try await curl("GET", base + "/v1/jobs/\(id)/trace")
            stages = (trace.json["events"] as? [[String: Any]])?.compactMap { $0["stage"] as? String } ?? []
            diagnosis = trace.json["diagnosis"] as? String ?? ""
            if !stages.contains("callback_delivered") { try await Task.sleep(for: .milliseconds(200)) }
        }
        #expect(stages.filter { $0 == "callback_failed" }.count == 2 && stages.last == "callback_delivered", "\(stages)")
        #expect(diagnosis.contains("callback delivered") && diagnosis.contains("after 2 failed attempts"), "\(diagnosis)")

        // A restarted dispatcher does not send it again; it does deliver a new job's callback.
        gateway.signal(SIGTERM)
        #expect(await gateway.waitForExit(timeout: 30).status == 0)
        (gateway, base) = try await startGateway(connection, environment: environment, extra: callbackArgs)
        let second = try await curl("POST", base + "/v1/jobs", body: #"{"prompt":"again","callback_url":"\#(receiver.url("ok"))"}"#)
        let secondID = try #require(second.json["job_id"] as? String)
        try await receiver.wait { $0.contains { $0["id"] as? String == secondID } }
        try await Task.sleep(for: .seconds(2))
        #expect(receiver.deliveries(id).count == 3, "no repeat of the first job's callback")
        #expect(receiver.deliveries(secondID).map { $0["answered"] as? Int } == [204])
        // The results topic still has one record per job: callbacks never write results.
        #expect(try await resultRecords(bootstrap, topic: prefix + "levee.results", partitions: 2, key: id) == 1)
        let metrics = try await curl("GET", base + "/metrics")
        #expect(metrics.body.contains("levee_callbacks_delivered_total 1"), "\(metrics.body.suffix(1500))")
        gateway.signal(SIGTERM)
        _ = await gateway.waitForExit(timeout: 30)
        worker.signal(SIGTERM)
        _ = await worker.waitForExit(timeout: 60)
    }

    @Test(.timeLimit(.minutes(4)), arguments: CallbackCluster.allCases)
    func callbacksAreDeliveredOnceSignedAndRetried(_ cluster: CallbackCluster) async throws {
        _ = try await cluster.with { bootstrap, prefix in try await Self.callbackFlow(bootstrap: bootstrap, prefix: prefix) }
    }

    @Test func theOpenAPIContractIsValid() async throws {
        let root = URL(fileURLWithPath: #filePath).deletingLastPathComponent().deletingLastPathComponent().deletingLastPathComponent()
        let out = try await Self.tool(root.appendingPathComponent("scripts/openapi-check").path, [])
        #expect(out.status == 0 && out.stdout.contains("valid OpenAPI 3.1"), "\(out)")
        // The checker does catch a document that breaks the contract.
        let broken = try await Self.contract("JobStatus", [#"{"job_id":"019ab0f2-7c41-7a3e-9b1d-2f6c8e4a1b07","state":"done"}"#])
        #expect(broken.contains("'done' is not one of"), "\(broken)")
    }

    @Test func gatewayOptionsAreChecked() async throws {
        let none = try await LeveeProcess.run(["gateway", "--brokers", "127.0.0.1:1"], environment: ["LEVEE_GATEWAY_HTTP": ""])
        #expect(none.status == 64 && none.stderr.contains("--http"), "\(none)")
        let bad = try await LeveeProcess.run(["gateway", "--http", "nonsense", "--brokers", "127.0.0.1:1"])
        #expect(bad.status == 64 && bad.stderr.contains("--http"), "\(bad)")
        let help = try await LeveeProcess.run(["gateway", "--help"])
        #expect(help.status == 0 && help.stdout.contains("Usage: levee gateway"))
    }
}
