import Foundation
import Kafka

/// `levee bench kafka`: produce and consume throughput of the Swift Kafka layer against an
/// embedded cluster, next to librdkafka's own C path (and kcat, when installed) in the same run.
enum KafkaBench {
    static let summary = "Produce/consume throughput of the Swift Kafka layer vs raw librdkafka"
    static let help = """
    Usage: levee bench kafka [--messages N] [--size B] [--partitions P] [--runs R] [--no-kcat]
                             [-X key=value]... [--json]

    Starts an embedded (in-memory, librdkafka mock) cluster with one broker and, for each side,
    produces N messages of B bytes to a fresh topic of P partitions, then consumes them back:
      raw     librdkafka's C API in a plain loop (rd_kafka_produce + rd_kafka_poll, then
              rd_kafka_consumer_poll over an assignment of every partition)
      swift   Levee's KafkaProducer (sendAndForget, then flush) and KafkaConsumer (assign every
              partition from the beginning, read `messages`)
      kcat    the kcat tool, timed as a process (when installed; --no-kcat skips it)
    Each side runs R times (the sides take turns); the best run of each is reported, and the
    median next to it (the machine may be busy).
    All sides use the Swift producer's and consumer's default properties (enable.idempotence=true,
    acks=all, partitioner=murmur2_random; read_committed, no auto commit), plus any -X given here.

    The mock keeps only about 5 MiB per partition, so N × B / P must stay under 4 MiB.

    Options:
      --messages N     messages per run (default 100000)
      --size B         payload bytes per message (default 1024)
      --partitions P   partitions of each topic (default 32)
      --runs R         runs per side; the best is reported (default 3)
      --consumer-buffer N
                       the Swift consumer's buffer in messages (default: KafkaConsumer's
                       default); when it fills, the consumer pauses its partitions
      --no-kcat        leave kcat out
      -X key=value     librdkafka property for every producer and consumer (repeatable)
      --json           one JSON object instead of the table
    """

    static func run(_ arguments: inout Arguments) async throws {
        let messages = try arguments.option("--messages", as: Int.self) ?? 100_000
        let size = try arguments.option("--size", as: Int.self) ?? 1024
        let partitions = try arguments.option("--partitions", as: Int.self) ?? 32
        let runs = try arguments.option("--runs", as: Int.self) ?? 3
        let consumerBuffer = try arguments.option("--consumer-buffer", as: Int.self)
        let skipKcat = arguments.flag("--no-kcat")
        let extra = try arguments.values("-X")
        let json = arguments.flag("--json")
        try arguments.finish()

        guard messages >= 1 else { throw CommandFailure.usage("--messages must be at least 1") }
        guard size >= 1, size <= 1_000_000 else { throw CommandFailure.usage("--size must be between 1 and 1000000 bytes") }
        guard (1...1000).contains(partitions) else { throw CommandFailure.usage("--partitions must be between 1 and 1000") }
        guard (1...20).contains(runs) else { throw CommandFailure.usage("--runs must be between 1 and 20") }
        if let consumerBuffer, consumerBuffer < 1 { throw CommandFailure.usage("--consumer-buffer must be at least 1") }
        let perPartition = Double(messages) * Double(size) / Double(partitions)
        guard perPartition <= 4 * 1_048_576 else {
            let needed = Int((Double(messages) * Double(size) / (4 * 1_048_576)).rounded(.up))
            throw CommandFailure.usage("the embedded cluster keeps only about 5 MiB per partition: use --partitions \(needed) or more for \(messages) × \(size) B")
        }
        // Both sides get the Swift producer's and consumer's defaults, so they do the same work.
        var properties = KafkaProducer.defaultProperties
        for item in extra {
            guard let equals = item.firstIndex(of: "="), equals != item.startIndex else {
                throw CommandFailure.usage("-X expects key=value, got '\(item)'")
            }
            properties[String(item[..<equals])] = String(item[item.index(after: equals)...])
        }
        let kcat = skipKcat ? nil : ["/usr/bin/kcat", "/usr/local/bin/kcat"].first(where: FileManager.default.isExecutableFile(atPath:))

        let cluster: EmbeddedCluster
        do { cluster = try EmbeddedCluster(brokers: 1) } catch { throw CommandFailure.failed("could not start the embedded cluster: \(error)") }
        let setup = Setup(cluster: cluster, messages: messages, size: size, partitions: partitions, properties: properties,
                          consumerBuffer: consumerBuffer)

        var sides: [Side] = [
            Side(name: "raw", label: "raw librdkafka (C API)", produce: rawProduce, consume: rawConsume),
            Side(name: "swift", label: "Swift Kafka layer", produce: swiftProduce, consume: swiftConsume),
        ]
        if let kcat {
            sides.append(Side(name: "kcat", label: "kcat (process)", produce: { try await kcatProduce(kcat, $0, $1) },
                              consume: { try await kcatConsume(kcat, $0, $1) }))
        }

        var results: [String: SideResult] = [:]
        for run in 1...runs {
            for side in sides {
                let topic = "levee.bench.\(side.name).\(run)"
                do {
                    try cluster.createTopic(topic, partitions: partitions)
                    let produced = try await side.produce(setup, topic)
                    let consumed = try await side.consume(setup, topic)
                    results[side.name, default: SideResult()].add(produce: produced, consume: consumed)
                    if !json {
                        printError("run \(run) " + side.name.padding(toLength: 6, withPad: " ", startingAt: 0) + String(format: "produce %9.0f msg/s  consume %9.0f msg/s",
                                          produced.messagesPerSecond, consumed.messagesPerSecond))
                    }
                } catch {
                    throw CommandFailure.failed("\(side.label), run \(run): \(error)")
                }
            }
        }

        let report = Report(messages: messages, size: size, partitions: partitions, runs: runs, properties: properties,
                            consumerBuffer: consumerBuffer,
                            sides: sides.map { side in results[side.name].map { ReportSide(name: side.name, label: side.label, $0) } }.compactMap { $0 })
        if json {
            try printJSON(report)
        } else {
            printOut(report.table())
        }
        withExtendedLifetime(cluster) {}
    }

    // MARK: - Sides

    struct Setup: Sendable {
        var cluster: EmbeddedCluster
        var messages: Int
        var size: Int
        var partitions: Int
        var properties: [String: String]
        /// The Swift consumer's `bufferCapacity`, or nil for its default.
        var consumerBuffer: Int?
    }

    struct Side {
        var name: String
        var label: String
        var produce: (Setup, String) async throws -> RawBaseline.Measurement
        var consume: (Setup, String) async throws -> RawBaseline.Measurement
    }

    static func swiftProduce(_ setup: Setup, _ topic: String) async throws -> RawBaseline.Measurement {
        let producer = try KafkaProducer(configuration: KafkaConfiguration(bootstrapServers: setup.cluster.bootstrapServers, setup.properties))
        let payload = [UInt8](repeating: 0x61, count: setup.size)
        let clock = ContinuousClock()
        let start = clock.now
        for index in 0..<setup.messages {
            // The same key as the raw side: the index as 8 big-endian bytes.
            let key = withUnsafeBytes(of: UInt64(index).bigEndian) { Array($0) }
            try await producer.sendAndForget(ProducerRecord(topic: topic, key: key, value: payload))
        }
        try await producer.flush(timeout: .seconds(120))
        let elapsed = clock.now - start
        try await producer.close()
        return RawBaseline.Measurement(messages: setup.messages, bytes: setup.messages * setup.size, seconds: elapsed.seconds)
    }

    static func swiftConsume(_ setup: Setup, _ topic: String) async throws -> RawBaseline.Measurement {
        let configuration = KafkaConfiguration(bootstrapServers: setup.cluster.bootstrapServers, consumerProperties(setup.properties))
        let consumer = try setup.consumerBuffer.map { try KafkaConsumer(configuration: configuration, bufferCapacity: $0) }
            ?? KafkaConsumer(configuration: configuration)
        let clock = ContinuousClock()
        let start = clock.now
        try consumer.assign((0..<setup.partitions).map { TopicPartitionOffset(topic, Int32($0), offset: KafkaOffset.beginning) })
        var received = 0
        var bytes = 0
        var finished = start
        // A watchdog closes the consumer (ending the sequence) if the messages do not all arrive.
        let watchdog = Task {
            try await Task.sleep(for: .seconds(120))
            await consumer.close()
        }
        for try await message in consumer.messages {
            received += 1
            bytes += message.value?.count ?? 0
            if received == setup.messages {
                finished = clock.now
                break
            }
        }
        watchdog.cancel()
        await consumer.close()
        guard received == setup.messages else {
            throw CommandFailure.failed("the Swift consumer read \(received) of \(setup.messages) messages in 120 s")
        }
        return RawBaseline.Measurement(messages: received, bytes: bytes, seconds: (finished - start).seconds)
    }

    static func rawProduce(_ setup: Setup, _ topic: String) async throws -> RawBaseline.Measurement {
        try await onThread {
            try RawBaseline.produce(bootstrapServers: setup.cluster.bootstrapServers, topic: topic, messages: setup.messages,
                                    size: setup.size, properties: setup.properties)
        }
    }

    static func rawConsume(_ setup: Setup, _ topic: String) async throws -> RawBaseline.Measurement {
        try await onThread {
            try RawBaseline.consume(bootstrapServers: setup.cluster.bootstrapServers, topic: topic, partitions: setup.partitions,
                                    messages: setup.messages, properties: consumerProperties(setup.properties))
        }
    }

    /// The consumer's properties: the Swift consumer's defaults plus the -X properties that are
    /// not producer-only (librdkafka warns about those on a consumer).
    static func consumerProperties(_ properties: [String: String]) -> [String: String] {
        let producerOnly: Set = ["enable.idempotence", "acks", "partitioner", "linger.ms", "batch.size", "compression.type"]
        return KafkaConsumer.defaultProperties.merging(properties.filter { !producerOnly.contains($0.key) }) { $1 }
    }

    static func kcatProduce(_ kcat: String, _ setup: Setup, _ topic: String) async throws -> RawBaseline.Measurement {
        // kcat reads one message per line: write the messages to a file first, outside the timing.
        let file = FileManager.default.temporaryDirectory.appendingPathComponent("levee-bench-\(getpid())-\(topic).txt")
        var line = Data(repeating: UInt8(ascii: "a"), count: setup.size)
        line.append(UInt8(ascii: "\n"))
        guard FileManager.default.createFile(atPath: file.path, contents: nil) else {
            throw CommandFailure.failed("could not write \(file.path)")
        }
        defer { try? FileManager.default.removeItem(at: file) }
        let writer = try FileHandle(forWritingTo: file)
        var chunk = Data(capacity: line.count * 1000)
        for index in 0..<setup.messages {
            chunk.append(line)
            if index % 1000 == 999 { writer.write(chunk); chunk.removeAll(keepingCapacity: true) }
        }
        writer.write(chunk)
        try writer.close()
        let arguments = ["-P", "-b", setup.cluster.bootstrapServers, "-t", topic] + setup.properties.sorted { $0.key < $1.key }.flatMap { ["-X", "\($0.key)=\($0.value)"] }
        let seconds = try await timeProcess(kcat, arguments, stdin: file)
        return RawBaseline.Measurement(messages: setup.messages, bytes: setup.messages * setup.size, seconds: seconds)
    }

    static func kcatConsume(_ kcat: String, _ setup: Setup, _ topic: String) async throws -> RawBaseline.Measurement {
        let arguments = ["-C", "-b", setup.cluster.bootstrapServers, "-t", topic, "-o", "beginning", "-c", String(setup.messages), "-e", "-q"]
            + consumerProperties(setup.properties).sorted { $0.key < $1.key }.flatMap { ["-X", "\($0.key)=\($0.value)"] }
        let seconds = try await timeProcess(kcat, arguments, stdin: nil)
        return RawBaseline.Measurement(messages: setup.messages, bytes: setup.messages * setup.size, seconds: seconds)
    }

    /// Runs a process to completion with stdout discarded and returns its wall time.
    static func timeProcess(_ path: String, _ arguments: [String], stdin: URL?) async throws -> Double {
        try await onThread {
            let process = Process()
            process.executableURL = URL(fileURLWithPath: path)
            process.arguments = arguments
            process.standardOutput = FileHandle.nullDevice
            let errors = Pipe()
            process.standardError = errors
            let input = try stdin.map { try FileHandle(forReadingFrom: $0) }
            process.standardInput = input ?? FileHandle.nullDevice
            let start = DispatchTime.now()
            try process.run()
            let errorText = errors.fileHandleForReading.readDataToEndOfFile()
            process.waitUntilExit()
            let seconds = Double(DispatchTime.now().uptimeNanoseconds - start.uptimeNanoseconds) / 1e9
            try input?.close()
            guard process.terminationStatus == 0 else {
                throw CommandFailure.failed("kcat exited \(process.terminationStatus): \(String(decoding: errorText, as: UTF8.self))")
            }
            return seconds
        }
    }

    /// Runs blocking work (C loops, waiting for a process) on its own thread, off the cooperative pool.
    static func onThread<T: Sendable>(_ work: @escaping @Sendable () throws -> T) async throws -> T {
        try await withCheckedThrowingContinuation { continuation in
            Thread.detachNewThread { continuation.resume(with: Result { try work() }) }
        }
    }

    // MARK: - Report

    struct SideResult {
        var produce: [RawBaseline.Measurement] = []
        var consume: [RawBaseline.Measurement] = []

        mutating func add(produce: RawBaseline.Measurement, consume: RawBaseline.Measurement) {
            self.produce.append(produce)
            self.consume.append(consume)
        }
    }

    struct Throughput: Encodable {
        var messagesPerSecond: Double
        var megabytesPerSecond: Double
        var seconds: Double
        /// Every run's messages per second, in run order.
        var runs: [Double]
        /// The median run's messages per second (steadier than the best on a busy machine).
        var medianMessagesPerSecond: Double

        init(best measurements: [RawBaseline.Measurement]) {
            let best = measurements.max { $0.messagesPerSecond < $1.messagesPerSecond }!
            messagesPerSecond = best.messagesPerSecond.rounded()
            megabytesPerSecond = (best.megabytesPerSecond * 10).rounded() / 10
            seconds = (best.seconds * 1000).rounded() / 1000
            runs = measurements.map { $0.messagesPerSecond.rounded() }
            let sorted = measurements.map(\.messagesPerSecond).sorted()
            let middle = sorted.count / 2
            medianMessagesPerSecond = (sorted.count % 2 == 1 ? sorted[middle] : (sorted[middle - 1] + sorted[middle]) / 2).rounded()
        }
    }

    struct ReportSide: Encodable {
        var name: String
        var label: String
        var produce: Throughput
        var consume: Throughput

        init(name: String, label: String, _ result: SideResult) {
            self.name = name
            self.label = label
            produce = Throughput(best: result.produce)
            consume = Throughput(best: result.consume)
        }
    }

    struct Ratio: Encodable {
        var produce: Double
        var consume: Double
    }

    struct Report: Encodable {
        var messages: Int
        var size: Int
        var partitions: Int
        var runs: Int
        var properties: [String: String]
        var consumerBuffer: Int?
        var sides: [ReportSide]
        /// Swift ÷ raw, best run against best run.
        var swiftToRaw: Ratio?
        /// Swift ÷ raw, median run against median run.
        var swiftToRawMedian: Ratio?

        init(messages: Int, size: Int, partitions: Int, runs: Int, properties: [String: String], consumerBuffer: Int?,
             sides: [ReportSide]) {
            self.consumerBuffer = consumerBuffer
            self.messages = messages
            self.size = size
            self.partitions = partitions
            self.runs = runs
            self.properties = properties
            self.sides = sides
            if let swift = sides.first(where: { $0.name == "swift" }), let raw = sides.first(where: { $0.name == "raw" }) {
                swiftToRaw = Ratio(produce: ratio(swift.produce.messagesPerSecond, raw.produce.messagesPerSecond),
                                   consume: ratio(swift.consume.messagesPerSecond, raw.consume.messagesPerSecond))
                swiftToRawMedian = Ratio(produce: ratio(swift.produce.medianMessagesPerSecond, raw.produce.medianMessagesPerSecond),
                                         consume: ratio(swift.consume.medianMessagesPerSecond, raw.consume.medianMessagesPerSecond))
            }
        }

        func table() -> String {
            var text = "Kafka layer: \(messages) messages × \(size) B, \(partitions) partitions, embedded cluster (1 broker), best of \(runs)"
            text += consumerBuffer.map { ", Swift consumer buffer \($0)" } ?? ""
            text += "\n"
            text += "side                      produce msg/s    MB/s   consume msg/s    MB/s\n"
            for side in sides {
                text += side.label.padding(toLength: 24, withPad: " ", startingAt: 0)
                text += String(format: " %14.0f %7.1f %15.0f %7.1f\n",
                               side.produce.messagesPerSecond, side.produce.megabytesPerSecond,
                               side.consume.messagesPerSecond, side.consume.megabytesPerSecond)
            }
            if let swiftToRaw, let swiftToRawMedian {
                text += "Swift ÷ raw (best)".padding(toLength: 24, withPad: " ", startingAt: 0)
                text += String(format: " %13.2f× %23.2f×   (goal: ≥ 0.80× for 1 KB messages)\n",
                               swiftToRaw.produce, swiftToRaw.consume)
                text += "Swift ÷ raw (median)".padding(toLength: 24, withPad: " ", startingAt: 0)
                text += String(format: " %13.2f× %23.2f×\n", swiftToRawMedian.produce, swiftToRawMedian.consume)
            }
            return text
        }

        private func ratio(_ swift: Double, _ raw: Double) -> Double {
            raw > 0 ? (swift / raw * 100).rounded() / 100 : 0
        }
    }
}

extension Duration {
    /// The duration in seconds, as a `Double`.
    fileprivate var seconds: Double {
        let (whole, attoseconds) = components
        return Double(whole) + Double(attoseconds) / 1e18
    }
}
