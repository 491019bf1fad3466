import Foundation
import Testing

/// `levee bench submit|pipeline|trace`, run tiny: the --json report must account for every job
/// and have the documented structure. (Speeds are not asserted; they go in BENCHMARKS.md.)
@Suite("levee bench submit, pipeline, trace", .serialized)
struct BenchSmokeTests {
    struct Latency: Decodable {
        var count: Int
        var p50: Double
        var p99: Double
        var p999: Double
        var max: Double
    }
    struct Goal: Decodable {
        var goal: String
        var value: Double
        var met: Bool
    }

    struct SubmitReport: Decodable {
        struct Phase: Decodable {
            var name: String
            var jobs: Int
            var accepted: Int
            var jobsPerSecond: Double
            var ackMs: Latency
            var traceEvents: Bool
            var workers: Int
            var workerJobsDone: Int?
            var targetRate: Double?
        }
        struct Raw: Decodable {
            var messages: Int
            var size: Int
            var messagesPerSecond: Double
        }
        var jobs: Int
        var envelopeBytes: Int
        var phases: [Phase]
        var raw: Raw
        var submitToRaw: Double
        var liveToBacklog: Double?
        var streamToBacklog: Double?
        var goals: [Goal]
    }

    @Test("submit: every phase acknowledges every job, raw side and goals present", .timeLimit(.minutes(3)))
    func submit() async throws {
        let output = try await LeveeProcess.run(["bench", "submit", "--jobs", "200", "--workers", "1", "--rate", "500",
                                           "--steady-seconds", "0.4", "--live-rate", "250", "--partitions", "4", "--json"], timeout: 170)
        #expect(output.status == 0, "\(output)")
        let report = try JSONDecoder().decode(SubmitReport.self, from: Data(output.stdout.utf8))
        #expect(report.jobs == 200)
        #expect(report.phases.map(\.name) == ["burst-batch", "burst-batch-no-trace", "burst", "burst-no-trace", "burst-with-workers",
                                              "stream-with-workers", "steady"])
        for phase in report.phases {
            #expect(phase.accepted == phase.jobs, "\(phase.name)")
            #expect(phase.ackMs.count == phase.jobs, "\(phase.name)")
            #expect(phase.ackMs.p50 <= phase.ackMs.p99 && phase.ackMs.p99 <= phase.ackMs.p999 && phase.ackMs.p999 <= phase.ackMs.max)
            #expect(phase.jobsPerSecond > 0)
        }
        #expect(report.phases[0].jobs == 200 && report.phases[0].traceEvents && !report.phases[1].traceEvents)
        #expect(report.phases[2].traceEvents && !report.phases[3].traceEvents)
        #expect(report.phases[4].workers == 1 && report.phases[4].workerJobsDone != nil)
        // The live stream: 250/s for 0.4 s to a worker; what it finished meanwhile is reported.
        #expect(report.phases[5].jobs == 100 && report.phases[5].targetRate == 250 && report.phases[5].workerJobsDone != nil)
        #expect(report.phases[6].jobs == 200 && report.phases[6].targetRate == 500)  // 500/s for 0.4 s
        #expect(report.raw.messages == 200 && report.raw.size == report.envelopeBytes && report.raw.messagesPerSecond > 0)
        #expect(report.submitToRaw > 0)
        // The stream ÷ backlog goal is there when the workers left a backlog after the burst.
        #expect(report.goals.count == (report.streamToBacklog == nil ? 2 : 3))
        #expect((report.streamToBacklog == nil) == (report.liveToBacklog == nil))
    }

    struct PipelineReport: Decodable {
        struct Mode: Decodable {
            var name: String
            var jobs: Int
            var completed: Int
            var duplicates: Int
            var jobsPerSecond: Double
            var overheadProducedMs: Latency?
            var overheadVisibleMs: Latency?
        }
        struct Raw: Decodable {
            var messages: Int
            var jobsPerSecond: Double
        }
        var engine: String
        var jobs: Int
        var modes: [Mode]
        var raw: Raw
        var exactlyOnceToRaw: Double
        var exactlyOnceToAtLeastOnce: Double
        var goals: [Goal]
    }

    @Test("pipeline: both modes finish every job once; overhead measured for every latency job", .timeLimit(.minutes(4)))
    func pipeline() async throws {
        let output = try await LeveeProcess.run(["bench", "pipeline", "--jobs", "200", "--workers", "1", "--latency-jobs", "20",
                                           "--latency-rate", "100", "--partitions", "4", "--json"], timeout: 230)
        #expect(output.status == 0, "\(output)")
        let report = try JSONDecoder().decode(PipelineReport.self, from: Data(output.stdout.utf8))
        #expect(report.engine.contains("synthetic"))
        #expect(report.modes.map(\.name) == ["exactly-once", "at-least-once"])
        for mode in report.modes {
            #expect(mode.jobs == 200 && mode.completed == 200, "\(mode.name)")
            #expect(mode.duplicates == 0, "\(mode.name)")
            #expect(mode.overheadProducedMs?.count == 20, "\(mode.name)")
            #expect(mode.overheadVisibleMs?.count == 20, "\(mode.name)")
            #expect(mode.jobsPerSecond > 0)
        }
        #expect(report.raw.messages == 200 && report.raw.jobsPerSecond > 0)
        #expect(report.exactlyOnceToRaw > 0 && report.exactlyOnceToAtLeastOnce > 0)
        #expect(report.goals.count == 2)
    }

    struct TraceReport: Decodable {
        struct Sample: Decodable {
            var index: Int
            var recordsScanned: Int
            var eventsFound: Int
            var state: String
        }
        struct Topic: Decodable {
            var name: String
            var jobs: Int
            var traceRecords: Int
            var samples: [Sample]
            var complete: Int
        }
        var eventsPerJob: Int
        var topics: [Topic]
        var largeToSmallMedian: Double
    }

    @Test("trace: every sampled job's trace is found whole in both topics, oldest and newest included", .timeLimit(.minutes(3)))
    func trace() async throws {
        let output = try await LeveeProcess.run(["bench", "trace", "--small", "50", "--large", "500", "--samples", "5",
                                           "--partitions", "8", "--json"], timeout: 170)
        #expect(output.status == 0, "\(output)")
        let report = try JSONDecoder().decode(TraceReport.self, from: Data(output.stdout.utf8))
        #expect(report.eventsPerJob == 6)
        #expect(report.topics.map(\.name) == ["small", "large"])
        #expect(report.topics.map(\.jobs) == [50, 500])
        for topic in report.topics {
            #expect(topic.traceRecords == topic.jobs * 6)
            #expect(topic.samples.map(\.index).first == 0 && topic.samples.map(\.index).last == topic.jobs - 1)
            #expect(topic.samples.count == 5 && topic.complete == 5, "\(topic.name)")
            for sample in topic.samples {
                #expect(sample.eventsFound == 6 && sample.state == "succeeded", "\(topic.name) job \(sample.index)")
                #expect(sample.recordsScanned >= 6)
            }
        }
        #expect(report.largeToSmallMedian > 0)
    }

    @Test("bad input is a usage error", arguments: [
        ["bench", "trace", "--samples", "1"],
        ["bench", "submit", "--rate", "0"],
        ["bench", "pipeline", "--workers", "0"],
        ["bench", "submit", "--jobs", "100000", "--partitions", "1"],
    ])
    func usage(_ arguments: [String]) async throws {
        let output = try await LeveeProcess.run(arguments, timeout: 30)
        #expect(output.status == 64, "\(output)")
    }

    @Test("--help lists the options", arguments: ["submit", "pipeline", "trace"])
    func help(_ bench: String) async throws {
        let output = try await LeveeProcess.run(["bench", bench, "--help"], timeout: 30)
        #expect(output.status == 0)
        #expect(output.stdout.contains("Usage: levee bench \(bench)"))
        #expect(output.stdout.contains("--json"))
    }
}
