import Testing
@testable import Pipeline

/// Job ids and trace contexts draw from a pooled kernel random source (4 KiB per refill): the
/// values must stay unpredictable-looking and never repeat across refills.
@Suite struct PooledRandomTests {
    @Test func drawsAcrossManyRefillsAreDistinctAndBalanced() {
        var rng = PooledRandom()
        let draws = (0..<20_000).map { _ in rng.next() }  // about 39 refills of 512 values
        #expect(Set(draws).count == draws.count, "no value handed out twice")
        // Each of the 64 bit positions is set in about half the draws (binomial, σ ≈ 71).
        for bit in 0..<64 {
            let ones = draws.reduce(0) { $0 + Int(($1 >> UInt64(bit)) & 1) }
            #expect(abs(ones - 10_000) < 600, "bit \(bit) set in \(ones) of 20000")
        }
    }

    @Test func jobIDsAndTraceContextsStayUniqueAndWellFormed() {
        let ids = (0..<10_000).map { _ in JobID.make() }
        #expect(Set(ids).count == ids.count)
        #expect(ids.allSatisfy { $0.version == 7 })
        let traces = (0..<10_000).map { _ in TraceParent.make() }
        #expect(Set(traces.map(\.traceID)).count == traces.count)
        #expect(traces.allSatisfy { TraceParent($0.description) == $0 })
        let children = (0..<1000).map { _ in traces[0].child().parentID }
        #expect(Set(children).count == children.count)
    }
}
