import Dispatch
import Foundation
import Kafka
import Pipeline
import Synchronization

/// `levee broker`: runs an `EmbeddedCluster` (librdkafka's mock cluster) as a standalone process,
/// with line commands on stdin and, optionally, on a unix-domain control socket for fault injection.
enum BrokerCommand: LeveeCommand {
    static let name = "broker"
    static let summary = "Run an embedded, memory-only Kafka cluster for development and tests"
    static let help = """
    Usage: levee broker [--brokers N] [--partitions N] [--topic NAME[:PARTITIONS]]...
                        [--levee-topics PREFIX | --no-levee-topics] [--control-socket PATH] [--json]

    Runs librdkafka's mock Kafka cluster in this process, for development and tests only:
      - memory only: nothing is kept when it stops, and only about 5 MiB per partition is kept
        while it runs (older records are dropped);
      - transactions are NOT enforced: read_committed consumers also see aborted and open
        transactions, and offsets sent with a transaction are dropped (use noida-db or Apache
        Kafka to test transactions);
      - the mock is an experimental librdkafka API; Admin CreateTopics does not work on it.

    The first line on stdout is the bootstrap address (host:port,...); after it, stdout carries
    only the replies to commands read from stdin, one line each, starting with "ok" or "error:".
    When stdin ends the broker keeps running until SIGTERM or SIGINT (or a "quit" command), then
    exits 0.

    Options:
      --brokers N              number of brokers, ids 1..N (default 1)
      --partitions N           partitions of Levee's topics and of topics created here without
                               a count (default 12, what the other commands expect)  [LEVEE_PARTITIONS]
      --topic NAME[:P]         create a topic at start (repeatable)
      --levee-topics PREFIX    the prefix of Levee's seven topics, created at start with
                               --partitions partitions (default "", i.e. levee.jobs, ...;
                               the mock cannot create topics through the Admin API, so
                               `levee topics create` does not work here)       [LEVEE_PREFIX]
      --no-levee-topics        create none of Levee's topics
      --control-socket PATH    also accept the commands on a unix-domain socket at PATH, one
                               reply line per command line (e.g. with `nc -U PATH`)
      --json                   print the first line as JSON: {"bootstrap":..., "brokers":[...],
                               "topics":{...}}

    Commands (stdin or control socket):
      down B                       take broker B down (connections closed, new ones refused)
      up B                         bring broker B back up
      rtt B MS                     delay every response of broker B by MS milliseconds (0 = none)
      errors API CODE[,CODE...]    fail the next requests of type API on any broker, one code
                                   each, e.g. errors produce NOT_LEADER_FOR_PARTITION,REQUEST_TIMED_OUT
      broker-errors B API CODE...  the same on broker B only (takes precedence)
      clear-errors API             drop cluster-wide errors not used yet for API
      leader TOPIC PARTITION B     move a partition's leadership to broker B
      topic NAME [PARTITIONS]      create a topic
      status                       one line: bootstrap, brokers (and which are down), topics
      help                         list the commands
      quit                         stop the broker (exit 0)
    API is a Kafka request type: produce, fetch, listOffsets, metadata, offsetCommit, offsetFetch,
    findCoordinator, joinGroup, heartbeat, leaveGroup, syncGroup, initProducerId,
    addPartitionsToTxn, addOffsetsToTxn, endTxn, txnOffsetCommit, ... (or its number).
    CODE is librdkafka's error name, e.g. NOT_LEADER_FOR_PARTITION, REQUEST_TIMED_OUT,
    _TRANSPORT (drop the connection), NOT_COORDINATOR, CONCURRENT_TRANSACTIONS.
    """

    static func run(_ arguments: inout Arguments) async throws {
        let environment = ProcessInfo.processInfo.environment
        let brokers = try arguments.option("--brokers", as: Int.self) ?? 1
        // The same defaults as every other command's --partitions and --prefix, so that
        // `levee broker` followed by `levee worker/submit/doctor --brokers ADDR` needs no other flag.
        let partitionsText = try arguments.option("--partitions") ?? environment["LEVEE_PARTITIONS"].flatMap { $0.isEmpty ? nil : $0 }
            ?? String(TopicLayout().partitions)
        let topicSpecs = try arguments.values("--topic")
        let prefixOption = try arguments.option("--levee-topics")
        let noLeveeTopics = arguments.flag("--no-levee-topics")
        let socketPath = try arguments.option("--control-socket")
        let json = arguments.flag("--json")
        try arguments.finish()

        guard (1...64).contains(brokers) else { throw CommandFailure.usage("--brokers must be between 1 and 64, got \(brokers)") }
        guard let partitions = Int(partitionsText), (1...100_000).contains(partitions) else {
            throw CommandFailure.usage("--partitions must be a whole number of at least 1, got '\(partitionsText)'")
        }
        if noLeveeTopics, prefixOption != nil { throw CommandFailure.usage("--levee-topics and --no-levee-topics exclude each other") }
        let leveePrefix = noLeveeTopics ? nil : (prefixOption ?? environment["LEVEE_PREFIX"] ?? "")
        var topics = try topicSpecs.map { try parseTopic($0, defaultPartitions: partitions) }
        if let leveePrefix {
            topics += TopicLayout(prefix: leveePrefix, partitions: partitions).specs.map { (name: $0.name, partitions: $0.partitions) }
        }
        if let socketPath, socketPath.isEmpty { throw CommandFailure.usage("--control-socket needs a path") }

        let cluster: EmbeddedCluster
        do { cluster = try EmbeddedCluster(brokers: brokers) } catch {
            throw CommandFailure.failed("could not start the cluster: \(error)")
        }
        let console = BrokerConsole(cluster: cluster, defaultPartitions: partitions)
        for topic in topics {
            do { try console.createTopic(topic.name, partitions: topic.partitions) } catch {
                throw CommandFailure.usage("--topic \(topic.name): \(error)")
            }
        }

        let (events, continuation) = AsyncStream.makeStream(of: String.self, bufferingPolicy: .bufferingNewest(4))
        var server: ControlSocketServer?
        if let socketPath {
            do {
                server = try ControlSocketServer(path: socketPath, handler: console.handle,
                                                 onQuit: { continuation.yield("quit") })
            } catch {
                throw CommandFailure.failed("control socket \(socketPath): \(error)")
            }
        }
        defer { server?.close() }

        if json {
            try printJSON(StartLine(bootstrap: cluster.bootstrapServers, brokers: cluster.brokerIDs,
                                    topics: Dictionary(topics.map { ($0.name, $0.partitions) }) { $1 },
                                    controlSocket: socketPath))
        } else {
            printOut(cluster.bootstrapServers + "\n")
        }
        printError("levee broker: \(brokers) broker(s) at \(cluster.bootstrapServers) (memory only, transactions not enforced)"
                   + (leveePrefix.map { "; Levee's topics\($0.isEmpty ? "" : " under \($0)") with \(partitions) partitions" } ?? "")
                   + (socketPath.map { "; control socket \($0)" } ?? ""))

        let signals = [SIGTERM, SIGINT].map { number -> DispatchSourceSignal in
            signal(number, SIG_IGN)
            let source = DispatchSource.makeSignalSource(signal: number, queue: .global())
            source.setEventHandler { continuation.yield("signal") }
            source.resume()
            return source
        }
        defer { signals.forEach { $0.cancel() } }

        server?.start()
        // Blocking reads of stdin stay on their own thread, off the cooperative pool.
        Thread.detachNewThread {
            while let line = readLine(strippingNewline: true) {
                let (reply, quit) = console.handle(line)
                if let reply { printOut(reply + "\n") }
                if quit { continuation.yield("quit"); return }
            }
            // stdin ended: keep serving until a signal or `quit` on the control socket.
        }

        for await _ in events { break }
        withExtendedLifetime(cluster) {}
    }

    private struct StartLine: Encodable {
        var bootstrap: String
        var brokers: [Int32]
        var topics: [String: Int]
        var controlSocket: String?
    }

    static func parseTopic(_ spec: String, defaultPartitions: Int) throws -> (name: String, partitions: Int) {
        let parts = spec.split(separator: ":", omittingEmptySubsequences: false)
        guard parts.count <= 2, let name = parts.first, !name.isEmpty else {
            throw CommandFailure.usage("--topic expects NAME or NAME:PARTITIONS, got '\(spec)'")
        }
        guard parts.count == 2 else { return (String(name), defaultPartitions) }
        guard let count = Int(parts[1]), count >= 1 else {
            throw CommandFailure.usage("--topic \(name): partitions must be a whole number of at least 1, got '\(parts[1])'")
        }
        return (String(name), count)
    }
}

/// Interprets the broker's line commands against the cluster and keeps what `status` reports.
/// Shared by the stdin reader and the control-socket connections, hence the lock.
final class BrokerConsole: Sendable {
    private struct State {
        var down: Set<Int32> = []
        var roundTrips: [Int32: Int] = [:]
        var topics: [String: Int] = [:]
    }

    private let cluster: EmbeddedCluster
    private let defaultPartitions: Int
    private let state = Mutex(State())

    init(cluster: EmbeddedCluster, defaultPartitions: Int) {
        self.cluster = cluster
        self.defaultPartitions = defaultPartitions
    }

    static let commandList = "down B | up B | rtt B MS | errors API CODE[,CODE...] | broker-errors B API CODE... | clear-errors API | leader TOPIC PARTITION B | topic NAME [PARTITIONS] | status | help | quit"

    func createTopic(_ name: String, partitions: Int) throws {
        try cluster.createTopic(name, partitions: partitions)
        state.withLock { $0.topics[name] = partitions }
    }

    /// The reply line for one command line (nil for blank lines and `#` comments), and whether
    /// the command asks the broker to stop.
    func handle(_ line: String) -> (reply: String?, quit: Bool) {
        let words = line.split(whereSeparator: \.isWhitespace).map(String.init)
        guard let command = words.first?.lowercased(), !command.hasPrefix("#") else { return (nil, false) }
        do {
            if command == "quit" || command == "exit" {
                try expect(words, count: 1, usage: "quit")
                return ("ok bye", true)
            }
            return ("ok " + (try perform(command, Array(words.dropFirst()))), false)
        } catch let error as KafkaError {
            return ("error: \(error)", false)
        } catch {
            return ("error: \(error)", false)
        }
    }

    private func perform(_ command: String, _ arguments: [String]) throws -> String {
        let all = [command] + arguments
        switch command {
        case "down":
            try expect(all, count: 2, usage: "down B")
            let id = try broker(arguments[0])
            try cluster.setBrokerDown(id)
            state.withLock { _ = $0.down.insert(id) }
            return "broker \(id) down"
        case "up":
            try expect(all, count: 2, usage: "up B")
            let id = try broker(arguments[0])
            try cluster.setBrokerUp(id)
            state.withLock { _ = $0.down.remove(id) }
            return "broker \(id) up"
        case "rtt":
            try expect(all, count: 3, usage: "rtt B MS")
            let id = try broker(arguments[0])
            guard let milliseconds = Int(arguments[1]) else { throw ConsoleError("rtt: MS must be a whole number, got '\(arguments[1])'") }
            try cluster.setRoundTripTime(broker: id, milliseconds: milliseconds)
            state.withLock { $0.roundTrips[id] = milliseconds }
            return "broker \(id) rtt \(milliseconds) ms"
        case "errors":
            guard arguments.count >= 2 else { throw ConsoleError("usage: errors API CODE[,CODE...]") }
            let api = try apiKey(arguments[0])
            let codes = try errorCodes(arguments.dropFirst())
            cluster.pushRequestErrors(api: api, errors: codes)
            return "pushed \(codes.count) \(api.name) error(s): " + codes.map(\.name).joined(separator: ",")
        case "broker-errors":
            guard arguments.count >= 3 else { throw ConsoleError("usage: broker-errors B API CODE[,CODE...]") }
            let id = try broker(arguments[0])
            let api = try apiKey(arguments[1])
            let codes = try errorCodes(arguments.dropFirst(2))
            try cluster.pushRequestErrors(broker: id, api: api, errors: codes)
            return "pushed \(codes.count) \(api.name) error(s) on broker \(id): " + codes.map(\.name).joined(separator: ",")
        case "clear-errors":
            try expect(all, count: 2, usage: "clear-errors API")
            let api = try apiKey(arguments[0])
            cluster.clearRequestErrors(api: api)
            return "cleared \(api.name) errors"
        case "leader":
            try expect(all, count: 4, usage: "leader TOPIC PARTITION B")
            guard let partition = Int32(arguments[1]), partition >= 0 else {
                throw ConsoleError("leader: PARTITION must be a whole number, got '\(arguments[1])'")
            }
            let id = try broker(arguments[2])
            try cluster.setPartitionLeader(topic: arguments[0], partition: partition, broker: id)
            return "topic \(arguments[0]) partition \(partition) leader \(id)"
        case "topic":
            guard arguments.count == 1 || arguments.count == 2 else { throw ConsoleError("usage: topic NAME [PARTITIONS]") }
            var partitions = defaultPartitions
            if arguments.count == 2 {
                guard let count = Int(arguments[1]) else { throw ConsoleError("topic: PARTITIONS must be a whole number, got '\(arguments[1])'") }
                partitions = count
            }
            try createTopic(arguments[0], partitions: partitions)
            return "topic \(arguments[0]) \(partitions) partition(s)"
        case "status":
            try expect(all, count: 1, usage: "status")
            return status()
        case "help":
            return "commands: " + Self.commandList
        default:
            throw ConsoleError("unknown command '\(command)' (commands: \(Self.commandList))")
        }
    }

    private func status() -> String {
        let snapshot = state.withLock { $0 }
        let brokers = cluster.brokerIDs.map { id -> String in
            var text = String(id)
            if snapshot.down.contains(id) { text += "(down)" }
            if let rtt = snapshot.roundTrips[id], rtt > 0 { text += "(rtt=\(rtt)ms)" }
            return text
        }
        let topics = snapshot.topics.sorted { $0.key < $1.key }.map { "\($0.key):\($0.value)" }
        return "bootstrap=\(cluster.bootstrapServers) brokers=\(brokers.joined(separator: ",")) topics=\(topics.isEmpty ? "-" : topics.joined(separator: ","))"
    }

    private func expect(_ words: [String], count: Int, usage: String) throws {
        guard words.count == count else { throw ConsoleError("usage: \(usage)") }
    }

    private func broker(_ word: String) throws -> Int32 {
        guard let id = Int32(word) else { throw ConsoleError("broker id must be a whole number, got '\(word)'") }
        return id
    }

    private func apiKey(_ word: String) throws -> KafkaAPIKey {
        guard let api = KafkaAPIKey(name: word) else {
            throw ConsoleError("unknown API '\(word)'; one of: " + KafkaAPIKey.allCases.map(\.name).joined(separator: ", "))
        }
        return api
    }

    private func errorCodes(_ words: ArraySlice<String>) throws -> [KafkaErrorCode] {
        let names = words.flatMap { $0.split(separator: ",").map(String.init) }
        guard !names.isEmpty else { throw ConsoleError("no error codes given") }
        return try names.map { try KafkaErrorCode(named: $0) }
    }
}

private struct ConsoleError: Error, CustomStringConvertible {
    var description: String
    init(_ description: String) { self.description = description }
}

/// A unix-domain stream socket that answers line commands: every line read gets one reply line.
/// Each connection is served on its own thread (blocking reads, off the cooperative pool); there
/// are only ever a few, from scripts.
final class ControlSocketServer: Sendable {
    let path: String
    private let listener: Int32
    private let handler: @Sendable (String) -> (reply: String?, quit: Bool)
    private let onQuit: @Sendable () -> Void

    /// `handler` answers a line; when it asks to quit, `onQuit` runs after the reply is written.
    init(path: String, handler: @escaping @Sendable (String) -> (reply: String?, quit: Bool),
         onQuit: @escaping @Sendable () -> Void) throws {
        self.path = path
        self.handler = handler
        self.onQuit = onQuit
        var address = sockaddr_un()
        address.sun_family = sa_family_t(AF_UNIX)
        let pathBytes = Array(path.utf8)
        let capacity = MemoryLayout.size(ofValue: address.sun_path)
        guard pathBytes.count < capacity else { throw ConsoleError("path is longer than \(capacity - 1) bytes") }

        // A socket file left by a broker that died is removed; one that still answers is in use.
        if FileManager.default.fileExists(atPath: path) {
            if Self.isListening(path) { throw ConsoleError("another process is listening there") }
            var info = stat()
            guard stat(path, &info) == 0, (info.st_mode & S_IFMT) == S_IFSOCK else {
                throw ConsoleError("a file that is not a socket is in the way")
            }
            unlink(path)
        }
        let fd = socket(AF_UNIX, Self.streamType, 0)
        guard fd >= 0 else { throw ConsoleError("socket: " + String(cString: strerror(errno))) }
        withUnsafeMutableBytes(of: &address.sun_path) { raw in
            raw.copyBytes(from: pathBytes)
            raw[pathBytes.count] = 0
        }
        let bound = withUnsafePointer(to: &address) {
            $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { bind(fd, $0, socklen_t(MemoryLayout<sockaddr_un>.size)) }
        }
        guard bound == 0, listen(fd, 16) == 0 else {
            let reason = String(cString: strerror(errno))
            Foundation.close(fd)
            throw ConsoleError("bind: \(reason)")
        }
        listener = fd
    }

    func start() {
        Thread.detachNewThread { [self] in
            while true {
                let connection = accept(listener, nil, nil)
                if connection < 0 {
                    if errno == EINTR || errno == ECONNABORTED { continue }
                    return  // listener closed
                }
                Thread.detachNewThread { [self] in serve(connection) }
            }
        }
    }

    func close() {
        shutdown(listener, Int32(SHUT_RDWR))
        Foundation.close(listener)
        unlink(path)
    }

    private func serve(_ connection: Int32) {
        defer { Foundation.close(connection) }
        var pending: [UInt8] = []
        var buffer = [UInt8](repeating: 0, count: 4096)
        while true {
            let count = buffer.withUnsafeMutableBytes { read(connection, $0.baseAddress, $0.count) }
            if count < 0, errno == EINTR { continue }
            guard count > 0 else { break }
            pending += buffer[0..<count]
            while let newline = pending.firstIndex(of: UInt8(ascii: "\n")) {
                let line = String(decoding: pending[..<newline], as: UTF8.self)
                pending.removeSubrange(...newline)
                let (reply, quit) = handler(line.trimmingCharacters(in: CharacterSet(charactersIn: "\r")))
                if let reply, !writeAll(connection, Array((reply + "\n").utf8)) { return }
                if quit { onQuit(); return }
            }
            guard pending.count < 65_536 else {  // no unbounded buffer for a line that never ends
                _ = writeAll(connection, Array("error: line too long\n".utf8))
                return
            }
        }
    }

    private func writeAll(_ fd: Int32, _ bytes: [UInt8]) -> Bool {
        var offset = 0
        while offset < bytes.count {
            // send with MSG_NOSIGNAL: a client that hung up must not kill the broker with SIGPIPE.
            let written = bytes[offset...].withUnsafeBytes { send(fd, $0.baseAddress, $0.count, Self.noSignal) }
            if written < 0, errno == EINTR { continue }
            guard written > 0 else { return false }
            offset += written
        }
        return true
    }

    private static func isListening(_ path: String) -> Bool {
        let fd = socket(AF_UNIX, streamType, 0)
        guard fd >= 0 else { return false }
        defer { Foundation.close(fd) }
        var address = sockaddr_un()
        address.sun_family = sa_family_t(AF_UNIX)
        let pathBytes = Array(path.utf8)
        withUnsafeMutableBytes(of: &address.sun_path) { raw in
            raw.copyBytes(from: pathBytes)
            raw[pathBytes.count] = 0
        }
        return withUnsafePointer(to: &address) {
            $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { connect(fd, $0, socklen_t(MemoryLayout<sockaddr_un>.size)) }
        } == 0
    }

    #if os(Linux)
    private static let noSignal = Int32(MSG_NOSIGNAL)
    private static let streamType = Int32(SOCK_STREAM.rawValue)
    #else
    private static let noSignal: Int32 = 0
    private static let streamType = SOCK_STREAM
    #endif
}
