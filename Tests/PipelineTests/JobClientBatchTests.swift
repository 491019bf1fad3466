import Foundation
import Kafka
import Testing
@testable import Pipeline

/// The batch submit API and the client's single trace record, on the embedded cluster.
@Suite struct JobClientBatchTests {
    /// Every job of a batch gets its own outcome, in order: invalid jobs their validation error,
    /// the rest a receipt for the record that is really in the jobs topic at that place.
    @Test(.timeLimit(.minutes(2))) func batchGivesEachJobItsOwnReceiptOrError() async throws {
        let h = try PipelineHarness(partitions: 4)
        let client = try JobClient(connection: h.connection)
        try await client.prepare()
        var jobs = (0..<1200).map { h.chatJob("job \($0)") }
        jobs[7].params.maxTokens = 0                                    // invalid: max_tokens
        jobs[600].tenant = ""                                           // invalid: tenant
        jobs[601].input = JobInput(messages: [ChatTurn(role: "user", content: String(repeating: "x", count: 300_000))])  // oversize
        let results = await client.submit(jobs)
        #expect(results.count == jobs.count)
        for i in [7, 600, 601] {
            guard case .failure(let error) = results[i] else { Issue.record("job \(i) should have failed"); continue }
            #expect(error is JobValidationError, "job \(i): \(error)")
        }
        var receipts: [Int: SubmitReceipt] = [:]
        for (i, r) in results.enumerated() where ![7, 600, 601].contains(i) {
            guard case .success(let receipt) = r else { Issue.record("job \(i) failed: \(r)"); continue }
            #expect(receipt.jobID == jobs[i].jobID)
            receipts[i] = receipt
        }
        #expect(receipts.count == jobs.count - 3)
        // Each receipt names the place its own job was written.
        for i in [0, 1, 599, 602, 1199] {
            let receipt = try #require(receipts[i])
            let read = try await KafkaConsumer.readWindow(configuration: h.connection.configuration(),
                                                          partition: TopicPartition(receipt.topic, receipt.partition),
                                                          from: receipt.offset, maxMessages: 1)
            let job = try LeveeJSON.decode(JobEnvelope.self, from: Data(try #require(read.first?.value)))
            #expect(job == jobs[i], "job \(i)")
        }
        try await client.close()
    }

    /// One trace record per job by default (the `accepted` event with partition and offset), and
    /// the trace reader still shows `submitted` then `accepted`, at the submit time and the ack.
    @Test(.timeLimit(.minutes(2))) func oneTraceRecordPerJobAndTheTraceStillShowsBothSteps() async throws {
        let h = try PipelineHarness(partitions: 1)
        let client = try JobClient(connection: h.connection)
        try await client.prepare()
        let single = h.chatJob("one")
        let receipt = try await client.submit(single)
        let batch = (0..<20).map { h.chatJob("batch \($0)") }
        _ = await client.submit(batch)
        try await client.close()
        let records = try await KafkaConsumer.readWindow(configuration: h.connection.configuration(),
                                                         partition: TopicPartition(h.connection.layout.trace, 0),
                                                         from: KafkaOffset.beginning, maxMessages: 1000, timeout: .seconds(5))
        let events = records.compactMap { $0.value.flatMap { try? LeveeJSON.decode(TraceEvent.self, from: Data($0)) } }
        #expect(records.count == 21 && events.count == 21, "one record per job")
        #expect(events.allSatisfy { $0.stage == .accepted && $0.partition != nil && $0.offset != nil && $0.durationMs != nil })

        let trace = try #require(try await TraceReader.trace(h.connection, jobID: single.jobID))
        #expect(trace.events.map(\.stage) == [.submitted, .accepted], "\(trace.events.map(\.stage))")
        let submitted = trace.events[0], accepted = trace.events[1]
        #expect(submitted.at == single.submittedAt && submitted.worker?.id == "client" && submitted.topic == h.connection.layout.jobs)
        #expect(submitted.partition == nil && submitted.offset == nil)
        #expect(accepted.partition == receipt.partition && accepted.offset == receipt.offset && accepted.durationMs == nil)
        #expect(trace.diagnosis.hasPrefix("queued: accepted at"), "\(trace.diagnosis)")
    }
}

/// The expansion of the client's one record into the two steps readers show (pure).
@Suite struct ClientTraceEventTests {
    let id = JobID.make()
    let t0 = Timestamp(millisecondsSinceEpoch: 1_790_000_000_000)
    let client = WorkerIdentity(id: "client", host: "h", pid: 1)

    @Test func anAcceptedRecordWithItsDurationStandsForSubmittedAndAccepted() {
        let accepted = TraceEvent(jobID: id, stage: .accepted, at: t0.adding(milliseconds: 7), attempt: 1, traceparent: .make(),
                                  worker: client, topic: "levee.jobs", partition: 2, offset: 40, durationMs: 7)
        let received = TraceEvent(jobID: id, stage: .received, at: t0.adding(milliseconds: 9), attempt: 1)
        let out = TraceEvent.expandingClientEvents([accepted, received])
        #expect(out.map(\.stage) == [.submitted, .accepted, .received])
        #expect(out[0].at == t0 && out[0].traceparent == accepted.traceparent && out[0].worker == client && out[0].topic == "levee.jobs")
        #expect(out[0].partition == nil && out[0].durationMs == nil)
        var plain = accepted
        plain.durationMs = nil
        #expect(out[1] == plain)
    }

    @Test func theOlderTwoRecordFormPassesThroughUnchanged() {
        let submitted = TraceEvent(jobID: id, stage: .submitted, at: t0, attempt: 1, worker: client, topic: "levee.jobs")
        let accepted = TraceEvent(jobID: id, stage: .accepted, at: t0.adding(milliseconds: 3), attempt: 1, worker: client,
                                  topic: "levee.jobs", partition: 0, offset: 1)
        #expect(TraceEvent.expandingClientEvents([submitted, accepted]) == [submitted, accepted])
        // Also when a duration is present but the submitted step of that attempt was written.
        var timed = accepted
        timed.durationMs = 3
        #expect(TraceEvent.expandingClientEvents([submitted, timed]) == [submitted, timed])
    }
}
