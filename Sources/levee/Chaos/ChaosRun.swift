import Foundation
import Kafka
import Pipeline
import Synchronization

/// One chaos run: the broker, the worker processes, the faults, and the audit at the end.
/// Driven from one task (`execute`), so its mutable state needs no lock.
final class ChaosRun: @unchecked Sendable {
    // @unchecked: every mutable field is used from the one task running `execute()`; the signal
    // handler only calls `removeWorkDirectoryIfTemporary`, which reads immutable fields.
    let options: ChaosCommand.Options
    let workDirectory: URL
    let temporaryDirectory: Bool
    let leveePath: String
    let prefix: String
    private var random: ChaosRandom

    private var broker: ChaosProcess?
    private var control: BrokerControl?
    private var noida: ChaosProcess?
    private var bootstrap = ""

    private struct Slot {
        var id: String
        var process: ChaosProcess?
        var restartAt: ContinuousClock.Instant?
        var terminatingSince: ContinuousClock.Instant?
        var killed = false
        var starts = 0
    }
    private var slots: [Slot] = []
    private var kills: [ChaosKill] = []
    private var gracefulStops = 0
    private var gracefulProblems = 0
    private var unexpectedExits = 0
    private var faults = ChaosSummary.BrokerFaults()
    private var undo: [(due: ContinuousClock.Instant, command: String)] = []
    private var errorAPIsUsed: Set<String> = []
    private var brokerDown: Int?

    /// How long a worker gets for its graceful stop (its --drain-timeout plus commit and leave).
    static let workerDrainSeconds = 10
    static let gracefulGrace: Duration = .seconds(workerDrainSeconds + 25)

    init(options: ChaosCommand.Options) throws {
        self.options = options
        random = ChaosRandom(state: options.seed)
        var exe = CommandLine.arguments[0]
        if let resolved = try? FileManager.default.destinationOfSymbolicLink(atPath: "/proc/self/exe") { exe = resolved }
        leveePath = exe
        prefix = "chaos\(options.seed)."
        if let keep = options.keepLogs {
            workDirectory = URL(fileURLWithPath: keep)
            temporaryDirectory = false
        } else {
            let base = ProcessInfo.processInfo.environment["TMPDIR"].flatMap { $0.isEmpty ? nil : $0 } ?? "/tmp"
            workDirectory = URL(fileURLWithPath: base).appendingPathComponent("levee-chaos-\(options.seed)-\(getpid())")
            temporaryDirectory = true
        }
        do {
            try FileManager.default.createDirectory(at: workDirectory, withIntermediateDirectories: true)
        } catch {
            throw CommandFailure.usage("cannot create the log directory \(workDirectory.path): \(error)")
        }
    }

    func removeWorkDirectoryIfTemporary() {
        if temporaryDirectory { try? FileManager.default.removeItem(at: workDirectory) }
    }

    private func say(_ text: String) { printError("chaos: " + text) }

    private func seconds(_ mean: Double) -> Duration {
        .milliseconds(Int64(mean * 1000 * Double.random(in: 0.5...1.5, using: &random)))
    }

    // MARK: - The run

    func execute() async throws -> ChaosSummary {
        say("seed \(options.seed), logs in \(workDirectory.path)")
        try await startBroker()
        let connection = KafkaConnection(bootstrapServers: bootstrap,
                                         layout: TopicLayout(prefix: prefix, partitions: options.partitions))
        if options.broker == "noida" {
            _ = try await TopicProvisioner.ensureTopics(connection)
        }
        say("\(options.broker) broker at \(bootstrap); topics \(prefix)levee.* with \(options.partitions) partitions")
        slots = (1...options.workers).map { Slot(id: "chaos-w\($0)") }
        for i in slots.indices { try startWorker(i) }

        let jobs = try await submit(connection)
        let ids = Set(jobs.map(\.id))
        say("\(jobs.count) jobs accepted; chaos for up to \(Int(options.duration)) s while they drain")

        // Chaos while the jobs drain.
        // Progress reads the results topic from the beginning each time: on noida-db a reader that
        // continued from where it stopped was seen to miss records for good (see RELIABILITY.md).
        var progress = ResultTally()
        func rescan(timeout: Duration) async {
            let scan = TopicDrain(connection: connection, topics: [connection.layout.results], extra: ["isolation.level": "read_committed"])
            var fresh = ResultTally()
            if (try? await scan.read(timeout: timeout) { fresh.apply($0) }) != nil || fresh.records.count > progress.records.count {
                progress = fresh
            }
        }
        func done() -> Int { ids.reduce(0) { $0 + (progress.records[$1] == nil ? 0 : 1) } }
        let chaosStart = ContinuousClock.now
        let chaosEnd = chaosStart + .milliseconds(Int64(options.duration * 1000))
        var nextKill = chaosStart + seconds(options.killEvery)
        var nextTerm = chaosStart + seconds(options.termEvery)
        var nextFault = chaosStart + seconds(options.faultEvery)
        var lastScan = chaosStart - .seconds(60)
        var finished = 0
        while ContinuousClock.now < chaosEnd && finished < ids.count {
            try checkBrokers()
            let now = ContinuousClock.now
            try supervise(now: now)
            applyUndo(now: now, all: false)
            if now >= nextKill { killOne(now: now); nextKill = now + seconds(options.killEvery) }
            if now >= nextTerm { terminateOne(now: now); nextTerm = now + seconds(options.termEvery) }
            if options.broker == "embedded" && now >= nextFault { injectFault(now: now); nextFault = now + seconds(options.faultEvery) }
            if now - lastScan >= .seconds(2) {
                lastScan = now
                await rescan(timeout: .seconds(5))
                finished = done()
                say("\(finished)/\(ids.count) terminal · \(kills.count) kills · \(gracefulStops) graceful stops · \(faults.total) broker faults · \(String(format: "%.0f", (ContinuousClock.now - chaosStart).seconds)) s")
            }
            try await Task.sleep(for: .milliseconds(100))
        }
        let chaosSeconds = (ContinuousClock.now - chaosStart).seconds

        // Heal: faults off, every worker running; then let the rest drain.
        applyUndo(now: .now, all: true)
        for api in errorAPIsUsed.sorted() { _ = try? control?.request("clear-errors \(api)") }
        say("chaos over after \(String(format: "%.1f", chaosSeconds)) s: faults healed, \(ids.count - finished) jobs still to finish")
        let drainStart = ContinuousClock.now
        let drainEnd = drainStart + .milliseconds(Int64(options.timeout * 1000))
        lastScan = .now - .seconds(60)
        while finished < ids.count && ContinuousClock.now < drainEnd {
            try checkBrokers()
            try supervise(now: .now, restartNow: true)
            if ContinuousClock.now - lastScan >= .seconds(2) {
                lastScan = .now
                await rescan(timeout: .seconds(10))
                finished = done()
                say("draining: \(finished)/\(ids.count) terminal")
            }
            try await Task.sleep(for: .milliseconds(100))
        }
        let drainSeconds = (ContinuousClock.now - drainStart).seconds

        // The reconciler, as an operator would run it (`levee reconcile --once`), with live workers.
        var reconcilerConfiguration = Reconciler.Configuration(group: prefix + "levee-workers")
        reconcilerConfiguration.sla = .milliseconds(Int64(options.sla * 1000))
        let reconciler = Reconciler(connection: connection, configuration: reconcilerConfiguration)
        var report = try await reconciler.pass()
        var requeued = report.requeued.count
        say("reconciler: \(report.verdict)")
        if !report.requeued.isEmpty {
            let waitFor = Set(report.requeued.map(\.jobID))
            let until = ContinuousClock.now + .seconds(120)
            while ContinuousClock.now < until {
                try supervise(now: .now, restartNow: true)
                await rescan(timeout: .seconds(10))
                if waitFor.allSatisfy({ progress.records[$0] != nil }) { break }
                try await Task.sleep(for: .seconds(1))
            }
            report = try await reconciler.pass()
            requeued += report.requeued.count
            say("reconciler, second pass: \(report.verdict)")
        }
        await reconciler.close()

        // Stop the workers (graceful), then read everything to its end.
        await stopWorkers()
        say("workers stopped; reading the topics to their ends")
        let committed = TopicDrain(connection: connection, topics: [connection.layout.results], extra: ["isolation.level": "read_committed"])
        var committedTally = ResultTally()
        try await committed.read(timeout: .seconds(180)) { committedTally.apply($0) }
        let uncommitted = TopicDrain(connection: connection, topics: [connection.layout.results], extra: ["isolation.level": "read_uncommitted"])
        var uncommittedTally = ResultTally()
        try await uncommitted.read(timeout: .seconds(180)) { uncommittedTally.apply($0) }
        let traceScan = TopicDrain(connection: connection, topics: [connection.layout.trace], extra: ["isolation.level": "read_committed"])
        var trace = TraceTally()
        try await traceScan.read(timeout: .seconds(300)) { trace.apply($0) }
        await stopBrokers()

        return summarize(jobs: jobs, committed: committedTally, uncommitted: uncommittedTally, trace: trace, report: report,
                         requeued: requeued, chaosSeconds: chaosSeconds, drainSeconds: drainSeconds)
    }

    // MARK: - Brokers

    private func startBroker() async throws {
        switch options.broker {
        case "embedded":
            let socket = workDirectory.appendingPathComponent("broker.sock").path
            let process = try ChaosProcess(
                name: "broker", executable: leveePath,
                arguments: ["broker", "--brokers", String(Self.embeddedBrokers), "--partitions", String(options.partitions), "--levee-topics", prefix,
                            "--control-socket", socket],
                log: workDirectory.appendingPathComponent("broker.log"), pipeStdout: true)
            broker = process
            guard let line = process.firstLine(timeout: .seconds(30)), !line.isEmpty else {
                throw CommandFailure.failed("the embedded broker did not start; see \(workDirectory.path)/broker.log")
            }
            bootstrap = line.trimmingCharacters(in: .whitespaces)
            say("started the embedded broker (pid \(process.pid))")
            control = BrokerControl(path: socket)
            _ = try control?.request("status")
            faults.sparedBroker = Self.mockGroupCoordinator(group: prefix + "levee-workers", brokers: Self.embeddedBrokers)
        default:
            if let given = options.bootstrap {
                bootstrap = given
                return
            }
            let port = try chaosFreePort()
            let data = workDirectory.appendingPathComponent("noida")
            try FileManager.default.createDirectory(at: data, withIntermediateDirectories: true)
            guard let noidaPath = Self.which("noida-db") else {
                throw CommandFailure.failed("noida-db is not on PATH (scripts/setup installs it: pip install noida-db==0.2.3)")
            }
            // This process ignores SIGTERM/SIGINT (it handles them itself) and children inherit
            // that; `env --default-signal` gives noida-db back the default, so SIGTERM stops it.
            let env = Self.which("env") ?? "/usr/bin/env"
            noida = try ChaosProcess(name: "noida-db", executable: env,
                                     arguments: ["--default-signal=TERM,INT", noidaPath, "start", "--only", "kafka",
                                                 "--kafka-port", String(port), "--data-dir", data.path],
                                     log: workDirectory.appendingPathComponent("noida.log"))
            say("started noida-db (pid \(noida?.pid ?? 0))")
            let deadline = ContinuousClock.now + .seconds(30)
            while !chaosPortOpen(port) {
                guard noida?.isRunning == true, ContinuousClock.now < deadline else {
                    throw CommandFailure.failed("noida-db did not start on port \(port); see \(workDirectory.path)/noida.log")
                }
                try await Task.sleep(for: .milliseconds(100))
            }
            bootstrap = "127.0.0.1:\(port)"
        }
    }

    static func which(_ program: String) -> String? {
        for dir in (ProcessInfo.processInfo.environment["PATH"] ?? "").split(separator: ":") {
            let path = "\(dir)/\(program)"
            if FileManager.default.isExecutableFile(atPath: path) { return path }
        }
        return nil
    }

    private func checkBrokers() throws {
        if let broker, !broker.isRunning {
            throw CommandFailure.failed("the embedded broker exited during the run (status \(broker.exitStatus ?? -1)); see \(workDirectory.path)/broker.log")
        }
        if let noida, !noida.isRunning {
            throw CommandFailure.failed("noida-db exited during the run (status \(noida.exitStatus ?? -1)); see \(workDirectory.path)/noida.log")
        }
    }

    private func stopBrokers() async {
        await broker?.stop(grace: .seconds(10))
        await noida?.stop(grace: .seconds(10))
    }

    /// Faults on the embedded cluster, through its control socket; each undone a few seconds later.
    ///
    /// The faults that test Levee: Produce and Fetch errors, commit and transaction request errors,
    /// latency, and brokers going down and up. Never the group protocol (JoinGroup, SyncGroup,
    /// Heartbeat, FindCoordinator), and never the group coordinator's broker: librdkafka 2.0.2's
    /// mock group coordinator holds each member's pending JoinGroup/SyncGroup response and does not
    /// drop it when that member's connection closes; the member's retry on a new connection then
    /// trips its `!member->resp` assertion (rdkafka_mock_cgrp.c:236 and :567) and the whole
    /// cluster aborts. Errors that make a consumer drop its coordinator (NOT_COORDINATOR,
    /// COORDINATOR_NOT_AVAILABLE on the consumer's own requests), and taking the coordinator's
    /// broker down, are exactly what closes those connections mid-rebalance (RELIABILITY.md).
    static let requestErrors: [(api: String, codes: String)] = [
        ("produce", "NOT_LEADER_FOR_PARTITION,REQUEST_TIMED_OUT"),
        ("fetch", "NOT_LEADER_FOR_PARTITION,REQUEST_TIMED_OUT"),
        // Sent by the consumer to its group coordinator: only codes that keep the coordinator.
        ("offsetCommit", "REQUEST_TIMED_OUT"),
        // Transaction requests come from the workers' producers, whose coordinator connections
        // are not the group members' connections.
        ("addPartitionsToTxn", "CONCURRENT_TRANSACTIONS,COORDINATOR_LOAD_IN_PROGRESS"),
        ("addOffsetsToTxn", "CONCURRENT_TRANSACTIONS"),
        ("txnOffsetCommit", "COORDINATOR_LOAD_IN_PROGRESS,REQUEST_TIMED_OUT"),
        ("endTxn", "NOT_COORDINATOR,CONCURRENT_TRANSACTIONS"),
    ]

    /// Request types no fault is ever injected into (the consumer-group protocol).
    static let groupProtocolAPIs: Set<String> = ["joinGroup", "syncGroup", "heartbeat", "leaveGroup", "findCoordinator"]

    /// The broker id librdkafka's mock cluster makes the coordinator of `group`: with no explicit
    /// coordinator set it hashes the key with CRC-32 and takes that index in its broker list
    /// (brokers 1...n in order; rdkafka_mock.c `rd_kafka_mock_cluster_get_coord`). Up or down
    /// does not move it.
    static func mockGroupCoordinator(group: String, brokers: Int) -> Int {
        Int(ChaosCRC32.checksum(Array(group.utf8)) % UInt32(max(brokers, 1))) + 1
    }

    /// Brokers faults may take down or slow: every broker but the group coordinator's.
    private var faultableBrokers: [Int] {
        let spared = Self.mockGroupCoordinator(group: prefix + "levee-workers", brokers: Self.embeddedBrokers)
        return (1...Self.embeddedBrokers).filter { $0 != spared }
    }

    static let embeddedBrokers = 3

    private func injectFault(now: ContinuousClock.Instant) {
        guard let control else { return }
        let choice = Int.random(in: 0..<10, using: &random)
        var command: String
        var undoCommand: String?
        var kind: String
        let brokers = faultableBrokers
        if choice < 2, brokerDown == nil {
            let b = brokers[Int.random(in: 0..<brokers.count, using: &random)]
            command = "down \(b)"
            undoCommand = "up \(b)"
            brokerDown = b
            kind = "down"
        } else if choice < 4 {
            let b = brokers[Int.random(in: 0..<brokers.count, using: &random)]
            command = "rtt \(b) \(Int.random(in: 50...400, using: &random))"
            undoCommand = "rtt \(b) 0"
            kind = "latency"
        } else {
            let pick = Self.requestErrors[Int.random(in: 0..<Self.requestErrors.count, using: &random)]
            command = "errors \(pick.api) \(pick.codes)"
            errorAPIsUsed.insert(pick.api)
            kind = pick.api
        }
        do {
            let reply = try control.request(command)
            guard reply.hasPrefix("ok") else {
                say("broker fault '\(command)' refused: \(reply)")
                if kind == "down" { brokerDown = nil }
                return
            }
        } catch {
            say("broker fault '\(command)' not sent: \(error)")
            if kind == "down" { brokerDown = nil }
            return
        }
        faults.total += 1
        switch kind {
        case "down":
            faults.down += 1
            faults.downByBroker[String(brokerDown ?? 0), default: 0] += 1
        case "latency": faults.latency += 1
        default:
            faults.requestErrors += 1
            faults.byAPI[kind, default: 0] += 1
        }
        if let undoCommand { undo.append((now + seconds(3.5), undoCommand)) }
        say("broker fault: \(command)")
    }

    private func applyUndo(now: ContinuousClock.Instant, all: Bool) {
        let due = undo.filter { all || $0.due <= now }
        undo.removeAll { all || $0.due <= now }
        for item in due {
            let reply = (try? control?.request(item.command)) ?? nil
            if item.command.hasPrefix("up ") { brokerDown = nil }
            if reply?.hasPrefix("ok") != true { say("undo '\(item.command)' failed: \(reply ?? "no reply")") }
        }
    }

    // MARK: - Workers

    private func workerArguments(_ id: String) -> [String] {
        ["worker", "--worker-id", id, "--engine", "synthetic", "--synthetic-delay", options.delay,
         "--synthetic-failure-rate", String(options.failureRate), "--concurrency", String(options.concurrency),
         "--drain-timeout", String(Self.workerDrainSeconds), "--retry-base-ms", "200", "--heartbeat-interval-ms", "500",
         "--brokers", bootstrap, "--prefix", prefix, "--partitions", String(options.partitions),
         // A SIGKILLed member is noticed after the session timeout: keep it short (KAFKA-HERE.md).
         "-X", "session.timeout.ms=6000", "-X", "heartbeat.interval.ms=500"]
    }

    /// The worker id for the slot's next start. On noida the id is stable, as in production (a
    /// restarted worker fences its predecessor's transactions through the same transactional.id).
    /// On the embedded mock every start gets a new id: a static member rejoining under the same
    /// group.instance.id while its old join was pending crashed the mock's group coordinator
    /// (librdkafka 2.0.2: rdkafka_mock_cgrp.c:567 `!member->resp`), and the mock enforces no
    /// fencing anyway.
    private func nextWorkerID(_ i: Int) -> String {
        options.broker == "embedded" && slots[i].starts > 0 ? "\(slots[i].id)-\(slots[i].starts + 1)" : slots[i].id
    }

    private func startWorker(_ i: Int) throws {
        let workerID = nextWorkerID(i)
        let process = try ChaosProcess(name: workerID, executable: leveePath, arguments: workerArguments(workerID),
                                       log: workDirectory.appendingPathComponent("\(slots[i].id).log"))
        slots[i].process = process
        say("started \(workerID) (pid \(process.pid))")
        slots[i].restartAt = nil
        slots[i].terminatingSince = nil
        slots[i].killed = false
        slots[i].starts += 1
    }

    /// Notices exits (expected or not), restarts stopped workers when due, and SIGKILLs a graceful
    /// stop that takes too long.
    private func supervise(now: ContinuousClock.Instant, restartNow: Bool = false) throws {
        for i in slots.indices {
            if let p = slots[i].process, !p.isRunning {
                let status = p.exitStatus ?? -1
                ChaosChildren.shared.forget(p.pid)
                if slots[i].terminatingSince != nil {
                    if status == 0 { gracefulStops += 1 } else {
                        gracefulProblems += 1
                        say("\(slots[i].id) (pid \(p.pid)) ended its graceful stop with status \(status)")
                    }
                    slots[i].restartAt = now + .milliseconds(500)
                } else if !slots[i].killed {
                    unexpectedExits += 1
                    say("\(slots[i].id) (pid \(p.pid)) exited on its own with status \(status); restarting it (see \(slots[i].id).log)")
                    slots[i].restartAt = now + .seconds(1)
                }
                slots[i].process = nil
                slots[i].terminatingSince = nil
            }
            if let since = slots[i].terminatingSince, now - since > Self.gracefulGrace, let p = slots[i].process {
                say("\(slots[i].id) (pid \(p.pid)) did not stop within \(Self.gracefulGrace) of SIGTERM; SIGKILL")
                p.signal(SIGKILL)
            }
            if slots[i].process == nil, restartNow || (slots[i].restartAt.map { now >= $0 } ?? true) {
                try startWorker(i)
            }
        }
    }

    private func running(excluding: Set<Int> = []) -> [Int] {
        slots.indices.filter { slots[$0].process?.isRunning == true && slots[$0].terminatingSince == nil && !slots[$0].killed && !excluding.contains($0) }
    }

    private var lastKilled: Int?

    private func killOne(now: ContinuousClock.Instant) {
        let candidates = running()
        guard let i = candidates.randomElement(using: &random), let p = slots[i].process else { return }
        p.signal(SIGKILL)
        kills.append(ChaosKill(workerID: slots[i].id, pid: p.pid, at: .now()))
        slots[i].killed = true
        slots[i].restartAt = now + .milliseconds(Int64.random(in: 200...1500, using: &random))
        lastKilled = i
        say("SIGKILL \(slots[i].id) (pid \(p.pid))")
    }

    private func terminateOne(now: ContinuousClock.Instant) {
        // Only workers that have had time to start: before its signal handler is installed a
        // worker simply dies of SIGTERM, which tests nothing.
        let candidates = running(excluding: lastKilled.map { [$0] } ?? []).filter {
            slots[$0].process.map { now - $0.startedAt > .seconds(3) } ?? false
        }
        guard candidates.count >= 2 || (candidates.count == 1 && slots.count == 1),
              let i = candidates.randomElement(using: &random), let p = slots[i].process else { return }
        p.signal(SIGTERM)
        slots[i].terminatingSince = now
        say("SIGTERM \(slots[i].id) (pid \(p.pid))")
    }

    private func stopWorkers() async {
        await withTaskGroup(of: Void.self) { group in
            for slot in slots {
                if let p = slot.process { group.addTask { await p.stop(grace: Self.gracefulGrace) } }
            }
        }
        for i in slots.indices { slots[i].process = nil }
    }

    /// Stops everything still running (the error path).
    func stopEverything() async {
        for slot in slots { slot.process?.signal(SIGKILL) }
        for slot in slots { await slot.process?.waitForExit(timeout: .seconds(5)) }
        await stopBrokers()
        ChaosChildren.shared.killAll()
    }

    // MARK: - Submitting

    private func submit(_ connection: KafkaConnection) async throws -> [ChaosJob] {
        let n = options.jobs
        let poison = n >= 20 ? max(1, n / 50) : 0
        let oversize = n >= 50 ? min(20, max(1, n / 200)) : 0
        let expired = n >= 20 ? max(1, n / 50) : 0
        var kinds = [ChaosJobKind](repeating: .poison, count: poison) + [ChaosJobKind](repeating: .oversize, count: oversize)
            + [ChaosJobKind](repeating: .expired, count: expired)
        kinds += [ChaosJobKind](repeating: .normal, count: n - kinds.count)
        kinds.shuffle(using: &random)

        let client = try JobClient(connection: connection)
        var big = JobLimits()
        big.maxRecordBytes = 900_000
        let bigClient = try JobClient(connection: connection, limits: big)
        let raw = try KafkaProducer(configuration: connection.configuration())
        // Records up to 2× the producer's default limit (--near-limit), as a careless producer may write.
        let rawLarge = try KafkaProducer(configuration: connection.configuration(["message.max.bytes": "4000000"]))
        let deadLetterBound = RecordLimits().limit(for: connection.layout.deadLetters)
        let nearLimit = options.nearLimit
        do { try await client.prepare(timeout: .seconds(30)) } catch {
            throw CommandFailure.failed("cannot reach the broker at \(bootstrap): \(error)")
        }
        var failed = 0
        var accepted: [ChaosJob] = []
        let jobsTopic = connection.layout.jobs
        let started = ContinuousClock.now
        for chunk in stride(from: 0, to: kinds.count, by: 500) {
            let slice = Array(kinds[chunk..<min(kinds.count, chunk + 500)].enumerated()).map { ($0.offset + chunk, $0.element) }
            let chosen = slice.map { ($0.0, $0.1, Bool.random(using: &random), Double.random(in: 0.9...2.0, using: &random)) }
            try await withThrowingTaskGroup(of: ChaosJob?.self) { group in
                for (i, kind, coin, factor) in chosen {
                    group.addTask {
                        do {
                            var job = JobClient.makeJob(tenant: "chaos", kind: .textGenerate, model: "synthetic",
                                                        input: JobInput(prompt: "chaos job \(i)"),
                                                        params: JobParameters(maxTokens: 16, seed: UInt64(i)),
                                                        metadata: ["chaos_kind": kind.rawValue])
                            switch kind {
                            case .normal:
                                _ = try await client.submit(job)
                            case .expired:
                                job.deadline = job.submittedAt.adding(milliseconds: 1)
                                _ = try await client.submit(job)
                            case .oversize where nearLimit:
                                // A job the size of 0.9× to 2× the dead-letter bound, straight to the topic.
                                job.input = JobInput(prompt: "x")
                                let small = try LeveeJSON.encode(job).count
                                job.input = JobInput(prompt: String(repeating: "x", count: max(1, Int(Double(deadLetterBound) * factor) - small)))
                                _ = try await rawLarge.send(ProducerRecord(topic: jobsTopic, key: Array(job.jobID.description.utf8),
                                                                           value: Array(try LeveeJSON.encode(job))))
                                return ChaosJob(id: job.jobID, kind: kind, viaClient: false)
                            case .oversize:
                                job.input = JobInput(prompt: String(repeating: "x", count: 270_000))
                                _ = try await bigClient.submit(job)
                            case .poison where coin:
                                // Not a job at all: cut-off JSON under a job id key.
                                let bytes = Array("{\"schema\":\"levee.job/v1\",\"job_id\":\"\(job.jobID)\",\"kind\":".utf8)
                                _ = try await raw.send(ProducerRecord(topic: jobsTopic, key: Array(job.jobID.description.utf8), value: bytes))
                                return ChaosJob(id: job.jobID, kind: kind, viaClient: false)
                            case .poison:
                                // A well-formed job for a model no worker serves.
                                job.model = "no-such-model"
                                _ = try await client.submit(job)
                            }
                            return ChaosJob(id: job.jobID, kind: kind, viaClient: true)
                        } catch {
                            return nil
                        }
                    }
                }
                for try await job in group { if let job { accepted.append(job) } else { failed += 1 } }
            }
        }
        try await client.close()
        try await bigClient.close()
        try await raw.close()
        try await rawLarge.close()
        submitFailures = failed
        say(String(format: "submitted %d jobs in %.1f s (%d poison, %d oversize, %d expired)%@", accepted.count,
                   (ContinuousClock.now - started).seconds, poison, oversize, expired, failed > 0 ? " — \(failed) submits failed" as NSString : "" as NSString))
        return accepted
    }

    private var submitFailures = 0

    // MARK: - Summary

    private func summarize(jobs: [ChaosJob], committed: ResultTally, uncommitted: ResultTally, trace: TraceTally,
                           report: ReconcileReport, requeued: Int, chaosSeconds: Double, drainSeconds: Double) -> ChaosSummary {
        let ids = Set(jobs.map(\.id))
        var terminal: [String: Int] = [:]
        var unexpected = 0
        var lost: [String] = []
        for job in jobs {
            guard let first = committed.records[job.id]?.first else { lost.append(job.id.description); continue }
            terminal[first.status.rawValue, default: 0] += 1
            if !job.kind.expected.contains(first.status) { unexpected += 1 }
        }
        lost.sort()
        let duplicates = ChaosSummary.DuplicateCounts(readCommitted: ChaosSummary.duplicates(committed, among: ids),
                                                      readUncommitted: ChaosSummary.duplicates(uncommitted, among: ids))
        let traceCheck = ChaosSummary.traceCheck(jobs: jobs, trace: trace)
        let recovery = ChaosSummary.killRecovery(kills: kills, trace: trace, results: committed, ids: ids)
        var failures: [String] = []
        var notes: [String] = []
        if !lost.isEmpty { failures.append("\(lost.count) job(s) have no terminal record") }
        let rule: String
        if options.broker == "noida" {
            rule = "noida: lost = 0 and read_committed duplicates = 0"
            if duplicates.readCommitted.extraRecords > 0 {
                failures.append("\(duplicates.readCommitted.jobs) job(s) have more than one committed terminal record")
            }
            if duplicates.readUncommitted.extraRecords > duplicates.readCommitted.extraRecords {
                notes.append("read_uncommitted shows \(duplicates.readUncommitted.extraRecords - duplicates.readCommitted.extraRecords) more terminal record(s): results inside transactions that were aborted (a worker killed mid-commit, its transaction aborted when its successor started); read_committed readers never see them")
            }
        } else {
            rule = "embedded: lost = 0 and every job has a terminal record (duplicates reported, not failed on)"
            if duplicates.readCommitted.extraRecords > 0 {
                notes.append("\(duplicates.readCommitted.extraRecords) duplicate terminal record(s): librdkafka's mock cluster does not enforce transactions — records of a killed worker's unfinished transaction stay visible even to read_committed readers, and the job then runs again on its next owner. Readers keep the first record per job; on noida or Apache Kafka these records are aborted")
            }
        }
        if kills.isEmpty { notes.append("no worker was killed (the jobs drained before the first kill: use more jobs, longer delays or a shorter --kill-every)") }
        if unexpected > 0 { notes.append("\(unexpected) job(s) ended with a status their kind should not end in") }
        if !traceCheck.complete { notes.append("\(traceCheck.incomplete) job trace(s) are incomplete") }
        if submitFailures > 0 { notes.append("\(submitFailures) submit(s) failed and are not counted") }
        var submitted: [String: Int] = [:]
        for job in jobs { submitted[job.kind.rawValue, default: 0] += 1 }
        return ChaosSummary(
            broker: options.broker, bootstrap: bootstrap, jobs: jobs.count, submitted: submitted, submitFailures: submitFailures,
            workers: options.workers, chaosSeconds: (chaosSeconds * 10).rounded() / 10, drainSeconds: (drainSeconds * 10).rounded() / 10,
            workerKills: kills.count, gracefulStops: gracefulStops, gracefulStopProblems: gracefulProblems,
            unexpectedExits: unexpectedExits, brokerFaults: faults, terminal: terminal, unexpectedStatus: unexpected,
            lost: lost.count, lostExamples: Array(lost.prefix(10)), duplicates: duplicates, deadLetters: report.dlq.total,
            requeuedByReconciler: requeued, killRecovery: recovery, trace: traceCheck, reconciler: report.verdict,
            logs: workDirectory.path,
            verdict: .init(passed: failures.isEmpty, rule: rule, failures: failures, notes: notes))
    }
}

fileprivate extension Duration {
    var seconds: Double { milliseconds / 1000 }
}

/// CRC-32 (IEEE 802.3, reflected, polynomial 0xEDB88320): the hash librdkafka's mock cluster
/// picks coordinators with.
enum ChaosCRC32 {
    static let table: [UInt32] = (0..<256).map { n in
        var c = UInt32(n)
        for _ in 0..<8 { c = c & 1 != 0 ? 0xEDB8_8320 ^ (c >> 1) : c >> 1 }
        return c
    }

    static func checksum(_ bytes: [UInt8]) -> UInt32 {
        var c: UInt32 = 0xFFFF_FFFF
        for b in bytes { c = table[Int((c ^ UInt32(b)) & 0xFF)] ^ (c >> 8) }
        return c ^ 0xFFFF_FFFF
    }
}
