import Foundation
import Testing

/// `levee bench kafka`, run small: it must report what it measured for every side, or refuse
/// bad input. (Speeds are not asserted; they go in BENCHMARKS.md.)
@Suite("levee bench kafka", .serialized)
struct KafkaBenchCommandTests {
    struct Report: Decodable {
        struct Throughput: Decodable {
            var messagesPerSecond: Double
            var megabytesPerSecond: Double
            var runs: [Double]
        }
        struct Side: Decodable {
            var name: String
            var produce: Throughput
            var consume: Throughput
        }
        struct Ratio: Decodable {
            var produce: Double
            var consume: Double
        }
        var messages: Int
        var size: Int
        var partitions: Int
        var runs: Int
        var properties: [String: String]
        var sides: [Side]
        var swiftToRaw: Ratio?
    }

    @Test("--json reports raw, Swift and kcat sides with one figure per run", .timeLimit(.minutes(2)))
    func smallRun() async throws {
        let output = try await LeveeProcess.run(["bench", "kafka", "--messages", "500", "--size", "200", "--partitions", "3",
                                           "--runs", "2", "--json"], timeout: 110)
        #expect(output.status == 0, "\(output)")
        let report = try JSONDecoder().decode(Report.self, from: Data(output.stdout.utf8))
        #expect(report.messages == 500)
        #expect(report.size == 200)
        #expect(report.partitions == 3)
        #expect(report.properties["enable.idempotence"] == "true")
        #expect(Set(report.sides.map(\.name)).isSuperset(of: ["raw", "swift"]))
        if FileManager.default.isExecutableFile(atPath: "/usr/bin/kcat") {
            #expect(report.sides.contains { $0.name == "kcat" })
        }
        for side in report.sides {
            #expect(side.produce.runs.count == 2)
            #expect(side.consume.runs.count == 2)
            #expect(side.produce.messagesPerSecond == side.produce.runs.max())
            #expect(side.consume.messagesPerSecond > 0)
            // 200-byte payloads: MB/s follows from messages/s.
            #expect(abs(side.produce.megabytesPerSecond - side.produce.messagesPerSecond * 200 / 1e6) < 0.11)
        }
        // The ratio is Swift ÷ raw of the best runs, to two decimals (a loaded machine can make it
        // round to 0, so check the arithmetic rather than a floor).
        let ratio = try #require(report.swiftToRaw)
        let swift = try #require(report.sides.first { $0.name == "swift" })
        let raw = try #require(report.sides.first { $0.name == "raw" })
        #expect(swift.produce.messagesPerSecond > 0 && raw.produce.messagesPerSecond > 0)
        #expect(abs(ratio.produce - swift.produce.messagesPerSecond / raw.produce.messagesPerSecond) <= 0.0051, "\(ratio)")
        #expect(abs(ratio.consume - swift.consume.messagesPerSecond / raw.consume.messagesPerSecond) <= 0.0051, "\(ratio)")
    }

    @Test("the table names every side and the Swift ÷ raw ratio", .timeLimit(.minutes(2)))
    func table() async throws {
        let output = try await LeveeProcess.run(["bench", "kafka", "--messages", "300", "--size", "100", "--partitions", "2",
                                           "--runs", "1", "--no-kcat"], timeout: 110)
        #expect(output.status == 0, "\(output)")
        #expect(output.stdout.contains("raw librdkafka"))
        #expect(output.stdout.contains("Swift Kafka layer"))
        #expect(output.stdout.contains("Swift ÷ raw"))
        #expect(!output.stdout.contains("kcat"))
    }

    @Test("bad input exits 64", arguments: [
        ["--messages", "0"], ["--size", "-1"], ["--partitions", "1", "--messages", "100000"], ["--runs", "0"],
        ["-X", "novalue"], ["--bogus"],
    ])
    func badInput(arguments: [String]) async throws {
        let output = try await LeveeProcess.run(["bench", "kafka"] + arguments, timeout: 30)
        #expect(output.status == 64, "\(output)")
        #expect(output.stderr.contains("levee bench: "))
    }
}
