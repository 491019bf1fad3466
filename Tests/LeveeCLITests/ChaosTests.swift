import Foundation
import Testing

/// `levee chaos` in small: real worker processes SIGKILLed and SIGTERMed while jobs drain, and the
/// audit that follows. The embedded run (librdkafka's mock cluster, broker faults too) always
/// runs; the noida-db run (real transactions: no duplicates allowed) needs LEVEE_NOIDA_BOOTSTRAP,
/// which scripts/test sets.
@Suite(.serialized) struct ChaosTests {
    func summary(_ output: LeveeProcess.Output) throws -> [String: Any] {
        let line = output.stdout.split(separator: "\n").last.map(String.init) ?? ""
        return try #require(try JSONSerialization.jsonObject(with: Data(line.utf8)) as? [String: Any], "not JSON: \(output)")
    }

    /// The checks every chaos run must pass, whatever the broker.
    func expectSound(_ s: [String: Any], jobs: Int, _ output: LeveeProcess.Output) {
        #expect(s["jobs"] as? Int == jobs, "\(output)")
        #expect(s["lost"] as? Int == 0, "lost jobs: \(s["lost_examples"] ?? "")")
        let terminal = (s["terminal"] as? [String: Int]) ?? [:]
        #expect(terminal.values.reduce(0, +) == jobs, "terminal: \(terminal)")
        #expect((s["worker_kills"] as? Int ?? 0) > 0, "no worker was killed: \(output.stderr.suffix(2000))")
        let submitted = (s["submitted"] as? [String: Int]) ?? [:]
        #expect((submitted["poison"] ?? 0) > 0 && (submitted["oversize"] ?? 0) > 0 && (submitted["expired"] ?? 0) > 0, "\(submitted)")
        // Poison and oversize jobs fail, expired ones expire; each is dead-lettered once.
        #expect(s["unexpected_status"] as? Int == 0, "\(s)")
        #expect(terminal["expired"] == submitted["expired"], "\(terminal) vs \(submitted)")
        #expect(s["dead_letters"] as? Int == (submitted["poison"] ?? 0) + (submitted["oversize"] ?? 0), "\(s)")
        #expect((s["verdict"] as? [String: Any])?["passed"] as? Bool == true, "\(s)")
        #expect(output.status == 0, "\(output.stderr.suffix(3000))")
    }

    static let small = ["--jobs", "150", "--workers", "3", "--duration", "25", "--synthetic-delay", "100-400",
                        "--kill-every", "2.5", "--term-every", "8", "--timeout", "300", "--json"]

    @Test(.timeLimit(.minutes(20))) func embeddedWorkersKilledAndBrokersBrokenNoJobLost() async throws {
        var output = try await LeveeProcess.run(["chaos", "--broker", "embedded", "--fault-every", "3"] + Self.small, timeout: 560)
        // librdkafka 2.0.2's mock group coordinator sometimes aborts on an assertion under this
        // load (RELIABILITY.md, finding 5); that is the mock's bug, not Levee's: run once more.
        if output.stderr.contains("the embedded broker exited during the run") {
            print("embedded chaos: the mock cluster crashed (librdkafka mock assertion); running once more")
            output = try await LeveeProcess.run(["chaos", "--broker", "embedded", "--fault-every", "3"] + Self.small, timeout: 560)
        }
        let s = try summary(output)
        expectSound(s, jobs: 150, output)
        let faults = (s["broker_faults"] as? [String: Any]) ?? [:]
        #expect(faults["total"] as? Int ?? 0 > 0, "\(s)")
        // The faults spare the group protocol and the group coordinator's broker (the mock's
        // coordinator aborts on a member's retried JoinGroup/SyncGroup; RELIABILITY.md).
        let byAPI = (faults["by_api"] as? [String: Int]) ?? [:]
        #expect(Set(byAPI.keys).isDisjoint(with: ["joinGroup", "syncGroup", "heartbeat", "leaveGroup", "findCoordinator"]), "\(byAPI)")
        let spared = try #require(faults["spared_broker"] as? Int, "\(faults)")
        #expect((1...3).contains(spared))
        #expect(((faults["down_by_broker"] as? [String: Int]) ?? [:])[String(spared)] == nil, "\(faults)")
        #expect(!output.stderr.contains("broker fault: down \(spared)") && !output.stderr.contains("broker fault: rtt \(spared) "),
                "the coordinator's broker was faulted")
    }

    @Test(.timeLimit(.minutes(10))) func noidaWorkersKilledExactlyOnce() async throws {
        guard let bootstrap = ProcessInfo.processInfo.environment["LEVEE_NOIDA_BOOTSTRAP"], !bootstrap.isEmpty else {
            print("skipped noidaWorkersKilledExactlyOnce: LEVEE_NOIDA_BOOTSTRAP is not set (scripts/test starts noida-db and sets it)")
            return
        }
        let output = try await LeveeProcess.run(["chaos", "--broker", "noida", "--bootstrap", bootstrap] + Self.small, timeout: 560)
        let s = try summary(output)
        expectSound(s, jobs: 150, output)
        // Real transactions: no job has a second committed terminal record.
        let committed = (s["duplicates"] as? [String: Any])?["read_committed"] as? [String: Any]
        #expect(committed?["extra_records"] as? Int == 0, "\(s)")
        #expect(((s["broker_faults"] as? [String: Any])?["total"] as? Int) == 0, "noida gets no broker faults (not durable)")
    }

    @Test(.timeLimit(.minutes(3))) func interruptedRunStopsEveryProcessItStarted() async throws {
        let run = try LeveeProcess.start(["chaos", "--jobs", "400", "--workers", "2", "--duration", "120",
                                          "--synthetic-delay", "200-400", "--kill-every", "1"])
        // Wait until a worker was killed and restarted, then interrupt the run.
        let deadline = Date().addingTimeInterval(120)
        while !run.stderrSoFar.contains("SIGKILL chaos-w") && run.isRunning && Date() < deadline {
            try await Task.sleep(for: .milliseconds(200))
        }
        #expect(run.stderrSoFar.contains("SIGKILL chaos-w"), "\(run.stderrSoFar.suffix(2000))")
        run.signal(SIGINT)
        let output = await run.waitForExit(timeout: 60)
        #expect(output.status == 130, "\(output)")
        #expect(output.stderr.contains("stopping every process this run started"), "\(output.stderr.suffix(2000))")
        let pids = Self.pids(in: output.stderr)
        #expect(pids.count >= 3, "broker and two workers at least: \(pids)")
        // Every child is gone (or a zombie waiting for its new parent to reap it).
        let alive = pids.filter(Self.isAlive)
        #expect(alive.isEmpty, "still running after the interrupt: \(alive)")
    }

    @Test(arguments: [
        (["--broker", "kafka"], "--broker expects embedded or noida"),
        (["--bootstrap", "127.0.0.1:9092"], "--bootstrap is for --broker noida"),
        (["--jobs", "0"], "--jobs expects 1...100000"),
        (["--workers", "many"], "--workers expects a whole number"),
        (["--failure-rate", "1.5"], "--failure-rate expects a share in [0, 1)"),
        (["--synthetic-delay", "fast"], "--synthetic-delay expects MS or MIN-MAX"),
        (["--kill-every", "0"], "--kill-every expects at least 0.2 seconds"),
        (["--explode"], "unknown option '--explode'"),
    ])
    func badOptionsExit64(_ words: [String], _ message: String) async throws {
        let output = try await LeveeProcess.run(["chaos"] + words, timeout: 30)
        #expect(output.status == 64, "\(output)")
        #expect(output.stderr.contains(message), "\(output.stderr)")
    }

    /// Pids from the run's "started … (pid N)" lines.
    static func pids(in text: String) -> [Int32] {
        text.split(separator: "\n").filter { $0.contains("chaos: started") }.compactMap { line in
            guard let range = line.range(of: "(pid ") else { return nil }
            return Int32(line[range.upperBound...].prefix { $0.isNumber })
        }
    }

    static func isAlive(_ pid: Int32) -> Bool {
        guard kill(pid, 0) == 0 else { return false }
        // A zombie has exited: only its entry is left until it is reaped.
        let stat = (try? String(contentsOfFile: "/proc/\(pid)/stat", encoding: .utf8)) ?? ""
        guard let close = stat.lastIndex(of: ")") else { return false }
        return stat[stat.index(close, offsetBy: 2)...].first != "Z"
    }
}
