import Foundation
import Testing

/// `levee bench reconcile` in small: both variants run in their own process and report what they
/// hold; the compact one keeps no finished job in full, the full one keeps them all.
@Suite struct ReconcileBenchTests {
    @Test(.timeLimit(.minutes(3))) func smallRunComparesFullAndCompactState() async throws {
        let output = try await LeveeProcess.run(["bench", "reconcile", "--jobs", "3000", "--new", "100", "--passes", "2", "--json"],
                                                timeout: 170)
        #expect(output.status == 0, "\(output)")
        let line = output.stdout.split(separator: "\n").last.map(String.init) ?? ""
        let report = try #require(try JSONSerialization.jsonObject(with: Data(line.utf8)) as? [String: Any], "\(output)")
        let runs = try #require(report["runs"] as? [[String: Any]])
        #expect(runs.count == 2)
        let full = try #require(runs.first { $0["compact"] as? Bool == false })
        let compact = try #require(runs.first { $0["compact"] as? Bool == true })
        for run in [full, compact] {
            #expect(run["jobs"] as? Int == 3000 && run["reported_jobs"] as? Int == 3200, "\(run)")
            #expect((run["pass_ms"] as? [Double])?.count == 2, "\(run)")
        }
        #expect(full["open_jobs"] as? Int == 3200 && full["settled_jobs"] as? Int == 0, "\(full)")
        #expect(compact["open_jobs"] as? Int == 0 && compact["settled_jobs"] as? Int == 3200, "\(compact)")
        // Bad input is a usage error naming the option.
        let bad = try await LeveeProcess.run(["bench", "reconcile", "--jobs", "lots"])
        #expect(bad.status == 64 && bad.stderr.contains("--jobs"), "\(bad)")
    }
}
