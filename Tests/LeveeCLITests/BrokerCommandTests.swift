import Foundation
import Kafka
import Testing

/// `levee broker`, run as a separate process the way scripts use it; kcat is the client.
@Suite("levee broker", .serialized)
struct BrokerCommandTests {
    @Test("prints the bootstrap address as its first stdout line, then exits 0 on SIGTERM after stdin ends")
    func bootstrapLineAndSigterm() async throws {
        let broker = try LeveeProcess.start(["broker", "--brokers", "2"])
        let bootstrap = try #require(await broker.readLine())
        let addresses = bootstrap.split(separator: ",")
        #expect(addresses.count == 2)
        #expect(addresses.allSatisfy { $0.hasPrefix("127.0.0.1:") && Int($0.split(separator: ":").last ?? "") != nil })
        broker.closeInput()
        // Still serving after stdin ended.
        #expect(try Kcat.metadata(bootstrap).brokers.count == 2)
        #expect(broker.isRunning)
        broker.signal(SIGTERM)
        let output = await broker.waitForExit()
        #expect(output.status == 0)
        #expect(!output.timedOut)
        #expect(output.stdout.isEmpty)
        #expect(output.stderr.contains("memory only"))
    }

    @Test("kcat produces to and consumes from a pre-created topic")
    func kcatRoundTrip() async throws {
        let broker = try LeveeProcess.start(["broker", "--topic", "levee.cli.jobs:3"])
        let bootstrap = try #require(await broker.readLine())
        let metadata = try Kcat.metadata(bootstrap, topic: "levee.cli.jobs")
        #expect(metadata.topics.first?.partitions.count == 3)
        let lines = (1...20).map { "job-\($0)" }
        let produced = try Kcat.run(["-P", "-b", bootstrap, "-t", "levee.cli.jobs"], input: lines.joined(separator: "\n") + "\n")
        #expect(produced.status == 0, "\(produced.stderr)")
        let consumed = try Kcat.run(["-C", "-b", bootstrap, "-t", "levee.cli.jobs", "-o", "beginning", "-c", "20", "-e", "-q"])
        #expect(Set(consumed.stdout.split(separator: "\n").map(String.init)) == Set(lines))
        broker.send("quit\n")
        #expect(await broker.readLine() == "ok bye")
        #expect(await broker.waitForExit().status == 0)
    }

    @Test("stdin commands answer one line each, ok or error:")
    func stdinCommands() async throws {
        let broker = try LeveeProcess.start(["broker", "--brokers", "3", "--partitions", "2", "--no-levee-topics"])
        let bootstrap = try #require(await broker.readLine())
        let script: [(command: String, ok: Bool)] = [
            ("topic levee.cli.a", true),
            ("topic levee.cli.b 5", true),
            ("topic bad/name 1", false),
            ("down 2", true),
            ("down 9", false),
            ("up 2", true),
            ("rtt 1 20", true),
            ("rtt 1 soon", false),
            ("errors produce NOT_LEADER_FOR_PARTITION,REQUEST_TIMED_OUT", true),
            ("errors produce NOT_A_REAL_ERROR", false),
            ("errors producer REQUEST_TIMED_OUT", false),
            ("broker-errors 3 fetch NOT_LEADER_FOR_PARTITION REQUEST_TIMED_OUT", true),
            ("broker-errors 4 fetch REQUEST_TIMED_OUT", false),
            ("clear-errors produce", true),
            ("help", true),
            ("frobnicate", false),
            ("down 3", true),
        ]
        for step in script {
            broker.send(step.command + "\n")
            let reply = try #require(await broker.readLine(), "no reply to '\(step.command)'")
            #expect(reply.hasPrefix(step.ok ? "ok" : "error: "), "'\(step.command)' answered '\(reply)'")
        }
        broker.send("status\n")
        let status = try #require(await broker.readLine())
        #expect(status.hasPrefix("ok bootstrap=\(bootstrap) "))
        #expect(status.contains("brokers=1(rtt=20ms),2,3(down)"))
        #expect(status.contains("topics=levee.cli.a:2,levee.cli.b:5"))
        let metadata = try Kcat.metadata(bootstrap, topic: "levee.cli.b")
        #expect(metadata.topics.first?.partitions.count == 5)
        broker.send("help\n")
        let help = try #require(await broker.readLine())
        #expect(help.contains("broker-errors"))
        broker.closeInput()
        broker.signal(SIGINT)
        #expect(await broker.waitForExit().status == 0)
    }

    @Test("an injected produce error reaches clients")
    func injectedErrorReachesClient() async throws {
        let broker = try LeveeProcess.start(["broker", "--topic", "levee.cli.errors:1"])
        let bootstrap = try #require(await broker.readLine())
        broker.send("errors produce TOPIC_AUTHORIZATION_FAILED\n")
        #expect(await broker.readLine()?.hasPrefix("ok") == true)
        let failed = try Kcat.run(["-P", "-b", bootstrap, "-t", "levee.cli.errors", "-X", "message.timeout.ms=5000"], input: "one\n")
        #expect(failed.status != 0)
        #expect(failed.stderr.contains("Topic authorization failed"))
        let delivered = try Kcat.run(["-P", "-b", bootstrap, "-t", "levee.cli.errors"], input: "two\n")
        #expect(delivered.status == 0)
        broker.send("quit\n")
        #expect(await broker.waitForExit().status == 0)
    }

    @Test("the Swift Kafka layer produces to and consumes from it, across a broker down/up", .timeLimit(.minutes(1)))
    func swiftLayerRoundTrip() async throws {
        let broker = try LeveeProcess.start(["broker", "--brokers", "2", "--topic", "levee.cli.swift:4"])
        let bootstrap = try #require(await broker.readLine())
        let producer = try KafkaProducer(configuration: KafkaConfiguration(bootstrapServers: bootstrap))
        var sent: [String: String] = [:]
        for index in 0..<100 {
            sent["key-\(index)"] = "value-\(index)"
            _ = try await producer.send(ProducerRecord(topic: "levee.cli.swift", key: "key-\(index)", value: "value-\(index)"))
        }
        // Broker 2 goes away and comes back; records sent meanwhile are still delivered.
        broker.send("down 2\n")
        #expect(await broker.readLine() == "ok broker 2 down")
        for index in 100..<150 {
            sent["key-\(index)"] = "value-\(index)"
            try await producer.sendAndForget(ProducerRecord(topic: "levee.cli.swift", key: "key-\(index)", value: "value-\(index)"))
        }
        broker.send("up 2\n")
        #expect(await broker.readLine() == "ok broker 2 up")
        try await producer.flush(timeout: .seconds(30))
        try await producer.close()

        let consumer = try KafkaConsumer(configuration: KafkaConfiguration(bootstrapServers: bootstrap))
        try consumer.assign((0..<4).map { TopicPartitionOffset("levee.cli.swift", Int32($0), offset: KafkaOffset.beginning) })
        var received: [String: String] = [:]
        var count = 0
        for try await message in consumer.messages {
            received[message.key.map { String(decoding: $0, as: UTF8.self) } ?? ""] = message.value.map { String(decoding: $0, as: UTF8.self) }
            count += 1
            if count == sent.count { break }
        }
        await consumer.close()
        #expect(count == 150)
        #expect(received == sent)
        broker.send("quit\n")
        #expect(await broker.waitForExit().status == 0)
    }

    @Test("the control socket takes the same commands, and goes away on exit")
    func controlSocket() async throws {
        let path = FileManager.default.temporaryDirectory.appendingPathComponent("levee-broker-\(getpid())-\(UInt32.random(in: 0...UInt32.max)).sock").path
        let broker = try LeveeProcess.start(["broker", "--control-socket", path])
        let bootstrap = try #require(await broker.readLine())
        #expect(FileManager.default.fileExists(atPath: path))
        let replies = try UnixSocketClient.exchange(path: path, lines: ["status", "down 1", "bogus", "up 1", "topic levee.cli.sock 6"])
        #expect(replies.count == 5)
        #expect(replies[0].hasPrefix("ok bootstrap=\(bootstrap)"))
        #expect(replies[1] == "ok broker 1 down")
        #expect(replies[2].hasPrefix("error: "))
        #expect(replies[3] == "ok broker 1 up")
        #expect(replies[4].hasPrefix("ok"))
        #expect(try Kcat.metadata(bootstrap, topic: "levee.cli.sock").topics.first?.partitions.count == 6)
        // A client that hangs up without reading its replies does not take the broker down.
        for _ in 0..<20 { try UnixSocketClient.sendAndHangUp(path: path, lines: ["status", "help"]) }
        #expect(try UnixSocketClient.exchange(path: path, lines: ["status"]).first?.hasPrefix("ok") == true)
        #expect(broker.isRunning)
        // The socket's commands are not echoed on stdout; `quit` there stops the broker.
        broker.closeInput()
        #expect(try UnixSocketClient.exchange(path: path, lines: ["quit"]) == ["ok bye"])
        let output = await broker.waitForExit()
        #expect(output.status == 0)
        #expect(output.stdout.isEmpty)
        #expect(!FileManager.default.fileExists(atPath: path))
    }

    @Test("with no flags it creates Levee's topics with the partitions the other commands expect; --no-levee-topics creates none")
    func leveeTopicsByDefault() async throws {
        let broker = try LeveeProcess.start(["broker", "--json"], environment: ["LEVEE_PREFIX": "", "LEVEE_PARTITIONS": ""])
        let line = try #require(await broker.readLine())
        let start = try #require(try JSONSerialization.jsonObject(with: Data(line.utf8)) as? [String: Any])
        let bootstrap = try #require(start["bootstrap"] as? String)
        let expected = ["levee.jobs": 12, "levee.jobs.retry": 12, "levee.results": 12, "levee.dlq": 3, "levee.trace": 12,
                        "levee.workers": 1, "levee.control": 12]
        #expect(start["topics"] as? [String: Int] == expected)
        for (topic, partitions) in expected {
            #expect(try Kcat.metadata(bootstrap, topic: topic).topics.first?.partitions.count == partitions, "\(topic)")
        }
        // A newcomer who runs `levee topics create` next finds them there (it used to wait 20 s for
        // the mock's CreateTopics and fail).
        let create = try await LeveeProcess.run(["topics", "create", "--brokers", bootstrap, "--prefix", "", "--partitions", "12", "--json"],
                                                timeout: 60)
        #expect(create.status == 0, "\(create)")
        broker.signal(SIGTERM)
        let output = await broker.waitForExit()
        #expect(output.status == 0)
        #expect(output.stderr.contains("Levee's topics with 12 partitions"), "\(output.stderr)")

        // LEVEE_PREFIX / LEVEE_PARTITIONS are honoured as by the other commands; the opt-out creates nothing.
        let prefixed = try LeveeProcess.start(["broker", "--json"], environment: ["LEVEE_PREFIX": "dev.", "LEVEE_PARTITIONS": "3"])
        let prefixedLine = try #require(await prefixed.readLine())
        let prefixedStart = try #require(try JSONSerialization.jsonObject(with: Data(prefixedLine.utf8)) as? [String: Any])
        #expect((prefixedStart["topics"] as? [String: Int])?["dev.levee.jobs"] == 3, "\(prefixedStart)")
        prefixed.signal(SIGTERM)
        #expect(await prefixed.waitForExit().status == 0)
        let none = try LeveeProcess.start(["broker", "--json", "--no-levee-topics"])
        let noneLine = try #require(await none.readLine())
        let noneStart = try #require(try JSONSerialization.jsonObject(with: Data(noneLine.utf8)) as? [String: Any])
        #expect((noneStart["topics"] as? [String: Int])?.isEmpty == true, "\(noneStart)")
        none.signal(SIGTERM)
        #expect(await none.waitForExit().status == 0)
    }

    @Test("--help explains what it is and lists the commands")
    func help() async throws {
        let output = try await LeveeProcess.run(["broker", "--help"])
        #expect(output.status == 0)
        for text in ["memory only", "transactions are NOT enforced", "development and tests", "--control-socket",
                     "--no-levee-topics", "down B", "up B", "rtt B MS", "errors API", "broker-errors B", "topic NAME", "status", "quit"] {
            #expect(output.stdout.contains(text), "help lacks '\(text)'")
        }
    }

    @Test("bad flags exit 64 with a message", arguments: [
        ["--brokers", "0"], ["--brokers", "two"], ["--partitions", "0"], ["--topic", "a:x"], ["--topic", ":3"],
        ["--bogus"], ["extra"], ["--brokers"], ["--no-levee-topics", "--levee-topics", "x."], ["--partitions", "many"],
    ])
    func badFlags(arguments: [String]) async throws {
        let output = try await LeveeProcess.run(["broker"] + arguments, timeout: 20)
        #expect(output.status == 64, "\(output)")
        #expect(output.stderr.hasPrefix("levee broker: "))
        #expect(output.stdout.isEmpty)
    }
}

/// kcat (installed by scripts/setup) as an independent Kafka client.
enum Kcat {
    struct Metadata: Decodable {
        struct Broker: Decodable { var id: Int32 }
        struct Topic: Decodable {
            struct Partition: Decodable { var partition: Int32 }
            var topic: String
            var partitions: [Partition]
        }
        var brokers: [Broker]
        var topics: [Topic]
    }

    static func metadata(_ bootstrap: String, topic: String? = nil) throws -> Metadata {
        var arguments = ["-L", "-J", "-b", bootstrap, "-m", "10"]
        if let topic { arguments += ["-t", topic] }
        let result = try run(arguments)
        guard result.status == 0 else { throw LeveeProcess.Failure(description: "kcat -L failed: \(result.stderr)") }
        return try JSONDecoder().decode(Metadata.self, from: Data(result.stdout.utf8))
    }

    static func run(_ arguments: [String], input: String = "") throws -> LeveeProcess.Output {
        guard let path = ["/usr/bin/kcat", "/usr/local/bin/kcat"].first(where: FileManager.default.isExecutableFile(atPath:)) else {
            throw LeveeProcess.Failure(description: "kcat is not installed (scripts/setup installs it)")
        }
        let process = Process()
        process.executableURL = URL(fileURLWithPath: path)
        process.arguments = arguments
        let stdin = Pipe(), stdout = Pipe(), stderr = Pipe()
        process.standardInput = stdin
        process.standardOutput = stdout
        process.standardError = stderr
        try process.run()
        stdin.fileHandleForWriting.write(Data(input.utf8))
        try stdin.fileHandleForWriting.close()
        let out = stdout.fileHandleForReading.readDataToEndOfFile()
        let err = stderr.fileHandleForReading.readDataToEndOfFile()
        process.waitUntilExit()
        return LeveeProcess.Output(status: process.terminationStatus, stdout: String(decoding: out, as: UTF8.self),
                                   stderr: String(decoding: err, as: UTF8.self), timedOut: false)
    }
}

/// A unix-domain socket client: sends lines and reads one reply line for each.
enum UnixSocketClient {
    /// Sends the lines and closes at once, without reading the replies.
    static func sendAndHangUp(path: String, lines: [String]) throws {
        let fd = try connectedSocket(path)
        let request = Array((lines.joined(separator: "\n") + "\n").utf8)
        _ = request.withUnsafeBytes { write(fd, $0.baseAddress, $0.count) }
        close(fd)
    }

    static func exchange(path: String, lines: [String]) throws -> [String] {
        let fd = try connectedSocket(path)
        defer { close(fd) }
        let request = Array((lines.joined(separator: "\n") + "\n").utf8)
        guard request.withUnsafeBytes({ write(fd, $0.baseAddress, $0.count) }) == request.count else {
            throw LeveeProcess.Failure(description: "write failed")
        }
        var received: [UInt8] = []
        var chunk = [UInt8](repeating: 0, count: 4096)
        while received.filter({ $0 == UInt8(ascii: "\n") }).count < lines.count {
            let count = chunk.withUnsafeMutableBytes { read(fd, $0.baseAddress, $0.count) }
            guard count > 0 else { break }
            received += chunk[0..<count]
        }
        return String(decoding: received, as: UTF8.self).split(separator: "\n").map(String.init)
    }

    private static func connectedSocket(_ path: String) throws -> Int32 {
        #if os(Linux)
        let fd = socket(AF_UNIX, Int32(SOCK_STREAM.rawValue), 0)
        #else
        let fd = socket(AF_UNIX, SOCK_STREAM, 0)
        #endif
        guard fd >= 0 else { throw LeveeProcess.Failure(description: "socket failed") }
        var timeout = timeval(tv_sec: 20, tv_usec: 0)
        setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &timeout, socklen_t(MemoryLayout<timeval>.size))
        var address = sockaddr_un()
        address.sun_family = sa_family_t(AF_UNIX)
        let bytes = Array(path.utf8)
        withUnsafeMutableBytes(of: &address.sun_path) { raw in
            raw.copyBytes(from: bytes)
            raw[bytes.count] = 0
        }
        let connected = withUnsafePointer(to: &address) {
            $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { connect(fd, $0, socklen_t(MemoryLayout<sockaddr_un>.size)) }
        }
        guard connected == 0 else {
            close(fd)
            throw LeveeProcess.Failure(description: "connect \(path): \(String(cString: strerror(errno)))")
        }
        return fd
    }
}
