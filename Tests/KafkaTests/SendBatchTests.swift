import Foundation
import Kafka
import Testing

/// `sendBatch` reports each record's own outcome: a caller can tell which record of a batch was
/// refused, and the others are still delivered.
@Suite("sendBatch")
struct SendBatchTests {
    @Test(.timeLimit(.minutes(1))) func aRecordTooLargeFailsAloneWithARefusal() async throws {
        let cluster = try EmbeddedCluster(brokers: 1)
        let topic = uniqueName("batch")
        try cluster.createTopic(topic, partitions: 2)
        let producer = try KafkaProducer(configuration: KafkaConfiguration([
            "bootstrap.servers": cluster.bootstrapServers, "message.max.bytes": "10000"]))
        let records = (0..<5).map { i in
            ProducerRecord(topic: topic, key: Array("k\(i)".utf8), value: Array(repeating: UInt8(ascii: "x"), count: i == 2 ? 20_000 : 100))
        }
        let results = await producer.sendBatch(records)
        #expect(results.count == 5)
        for (i, result) in results.enumerated() {
            switch result {
            case .success(let report):
                #expect(i != 2 && report.topic == topic && report.offset >= 0)
            case .failure(let error):
                #expect(i == 2, "record \(i): \(error)")
                #expect(error.codeName == "MSG_SIZE_TOO_LARGE" && error.refusesRecord, "\(error)")
            }
        }
        // A transient failure is not a refusal.
        #expect(!KafkaError(kind: .retriable, codeName: "NOT_LEADER_FOR_PARTITION", message: "moving").refusesRecord)
        #expect(await producer.sendBatch([]).isEmpty)
        try await producer.close()
    }
}
