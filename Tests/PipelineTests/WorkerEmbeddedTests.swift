import Foundation
import Inference
import Kafka
import Testing
@testable import Pipeline

/// The worker against librdkafka's embedded mock cluster. The mock does not enforce transactions
/// (see KAFKA-HERE.md), so these tests check routing, outcomes and offsets; the transaction
/// guarantee itself is tested against noida-db.
@Suite(.serialized) struct WorkerEmbeddedTests {
    @Test(.timeLimit(.minutes(2))) func jobsThroughTwoWorkersEndWithOneResultEach() async throws {
        let h = try PipelineHarness(partitions: 4)
        let engine = ScriptedEngine()
        let workers = [Worker(connection: h.connection, configuration: h.workerConfiguration("w-a"), engine: engine),
                       Worker(connection: h.connection, configuration: h.workerConfiguration("w-b"), engine: engine)]
        let client = try JobClient(connection: h.connection)
        let collector = try await ResultCollector(connection: h.connection)
        try await withThrowingTaskGroup(of: Void.self) { group in
            for w in workers { group.addTask { try await w.run() } }
            group.addTask { try await collector.run() }
            var ids: Set<JobID> = []
            for i in 0..<40 {
                let receipt = try await client.submit(h.chatJob("job \(i)"))
                #expect(receipt.offset >= 0)
                ids.insert(receipt.jobID)
            }
            let missing = await collector.waitFor(ids, timeout: .seconds(60))
            #expect(missing.isEmpty, "jobs without a result: \(missing.count)")
            for w in workers { w.shutdown() }
            try await group.next()
            try await group.next()
            let snap = collector.snapshot
            #expect(snap.duplicates.isEmpty, "duplicate results: \(snap.duplicates)")
            #expect(ids.allSatisfy { snap.results[$0]?.status == .succeeded })
            #expect(snap.results[ids.first!]?.output?.text.hasPrefix("echo:job") == true)
            let done = workers.map(\.statistics.succeeded).reduce(0, +)
            #expect(done == 40)
            await collector.close()
            group.cancelAll()
        }
        try await client.close()
    }
}
