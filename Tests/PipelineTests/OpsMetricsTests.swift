import Foundation
import Testing
@testable import Pipeline

/// A small, strict reader of the Prometheus text exposition format 0.0.4, written from the
/// format's description, to check what `MetricsRegistry.render()` produces.
struct Exposition {
    struct Sample: Equatable {
        var name: String
        var labels: [String: String]
        var value: Double
    }

    var help: [String: String] = [:]
    var types: [String: String] = [:]
    var samples: [Sample] = []

    struct ParseError: Error, CustomStringConvertible {
        var line: Int
        var text: String
        var why: String
        var description: String { "line \(line): \(why): \(text)" }
    }

    init(parsing text: String) throws {
        #expect(text.hasSuffix("\n"), "the exposition ends with a line feed")
        var seenSeries = Set<String>()
        var familyOrder: [String] = []
        for (number, line) in text.split(separator: "\n", omittingEmptySubsequences: false).enumerated() {
            let fail = { (why: String) in ParseError(line: number + 1, text: String(line), why: why) }
            if line.isEmpty { continue }
            if line.hasPrefix("# HELP ") {
                let rest = line.dropFirst(7)
                guard let space = rest.firstIndex(of: " ") else { throw fail("HELP without text") }
                let name = String(rest[..<space])
                guard help[name] == nil else { throw fail("second HELP for \(name)") }
                guard types[name] == nil else { throw fail("HELP after TYPE for \(name)") }
                help[name] = try Self.unescape(rest[rest.index(after: space)...], quotes: false)
                familyOrder.append(name)
                continue
            }
            if line.hasPrefix("# TYPE ") {
                let parts = line.dropFirst(7).split(separator: " ")
                guard parts.count == 2 else { throw fail("TYPE needs a name and a type") }
                let name = String(parts[0])
                guard types[name] == nil else { throw fail("second TYPE for \(name)") }
                guard ["counter", "gauge", "histogram", "summary", "untyped"].contains(parts[1]) else { throw fail("unknown type") }
                types[name] = String(parts[1])
                continue
            }
            if line.hasPrefix("#") { continue }
            let sample = try Self.parseSample(line, fail: fail)
            guard Self.isMetricName(sample.name) else { throw fail("bad metric name") }
            let family = family(of: sample.name)
            guard types[family] != nil else { throw fail("sample before its TYPE line") }
            guard familyOrder.last == family else { throw fail("samples of \(family) are not grouped under its HELP/TYPE") }
            let key = sample.name + "|" + sample.labels.sorted { $0.key < $1.key }.map { "\($0.key)=\($0.value)" }.joined(separator: ",")
            guard seenSeries.insert(key).inserted else { throw fail("duplicate series") }
            samples.append(sample)
        }
    }

    /// The family a sample belongs to (histogram samples carry a suffix).
    func family(of name: String) -> String {
        for suffix in ["_bucket", "_sum", "_count"] where name.hasSuffix(suffix) {
            let base = String(name.dropLast(suffix.count))
            if types[base] == "histogram" { return base }
        }
        return name
    }

    func value(_ name: String, _ labels: [String: String] = [:]) -> Double? {
        samples.first { $0.name == name && $0.labels == labels }?.value
    }

    static func isMetricName(_ s: String) -> Bool {
        guard let first = s.unicodeScalars.first, !("0"..."9").contains(first) else { return false }
        return s.unicodeScalars.allSatisfy { $0.properties.isASCIIHexDigit || ("a"..."z").contains($0) || ("A"..."Z").contains($0) || $0 == "_" || $0 == ":" }
    }

    static func parseSample(_ line: Substring, fail: (String) -> ParseError) throws -> Sample {
        var i = line.startIndex
        while i < line.endIndex, line[i] != "{", line[i] != " " { i = line.index(after: i) }
        let name = String(line[..<i])
        var labels: [String: String] = [:]
        if i < line.endIndex, line[i] == "{" {
            i = line.index(after: i)
            while true {
                guard i < line.endIndex else { throw fail("unterminated labels") }
                if line[i] == "}" { i = line.index(after: i); break }
                let nameStart = i
                while i < line.endIndex, line[i] != "=" { i = line.index(after: i) }
                let label = String(line[nameStart..<i])
                guard i < line.endIndex, line.index(after: i) < line.endIndex, line[line.index(after: i)] == "\"" else { throw fail("label value must be quoted") }
                i = line.index(i, offsetBy: 2)
                var raw = ""
                while true {
                    guard i < line.endIndex else { throw fail("unterminated label value") }
                    let c = line[i]
                    if c == "\\" {
                        let next = line.index(after: i)
                        guard next < line.endIndex else { throw fail("dangling backslash") }
                        raw.append(c)
                        raw.append(line[next])
                        i = line.index(after: next)
                        continue
                    }
                    if c == "\"" { i = line.index(after: i); break }
                    raw.append(c)
                    i = line.index(after: i)
                }
                guard labels[label] == nil else { throw fail("label \(label) twice") }
                labels[label] = try unescape(Substring(raw), quotes: true)
                if i < line.endIndex, line[i] == "," { i = line.index(after: i) }
            }
        }
        guard i < line.endIndex, line[i] == " " else { throw fail("no value") }
        let fields = line[line.index(after: i)...].split(separator: " ")
        guard fields.count == 1 || fields.count == 2 else { throw fail("expected value [timestamp]") }
        let value: Double
        switch fields[0] {
        case "+Inf": value = .infinity
        case "-Inf": value = -.infinity
        case "NaN": value = .nan
        default:
            guard let v = Double(fields[0]) else { throw fail("bad value") }
            value = v
        }
        return Sample(name: name, labels: labels, value: value)
    }

    static func unescape(_ s: Substring, quotes: Bool) throws -> String {
        var out = ""
        var escaping = false
        for c in s {
            if escaping {
                switch c {
                case "\\": out.append("\\")
                case "n": out.append("\n")
                case "\"" where quotes: out.append("\"")
                default: throw ParseError(line: 0, text: String(s), why: "bad escape \\\(c)")
                }
                escaping = false
            } else if c == "\\" {
                escaping = true
            } else {
                guard c != "\n", !(quotes && c == "\"") else { throw ParseError(line: 0, text: String(s), why: "unescaped character") }
                out.append(c)
            }
        }
        return out
    }

    /// Checks every histogram: cumulative buckets never decrease, the last is `+Inf`, equal to `_count`, and `_sum` exists.
    func checkHistograms() {
        for (family, type) in types where type == "histogram" {
            var groups: [[String: String]: [(le: Double, count: Double)]] = [:]
            for s in samples where s.name == family + "_bucket" {
                var rest = s.labels
                guard let le = rest.removeValue(forKey: "le") else {
                    Issue.record("\(family) bucket without le")
                    continue
                }
                let bound = le == "+Inf" ? Double.infinity : Double(le)
                #expect(bound != nil, "le=\(le) is not a number")
                groups[rest, default: []].append((bound ?? .nan, s.value))
            }
            for (labels, buckets) in groups {
                #expect(buckets.map(\.le) == buckets.map(\.le).sorted(), "\(family) buckets in ascending le order")
                #expect(buckets.last?.le == .infinity, "\(family) ends with le=\"+Inf\"")
                for (a, b) in zip(buckets, buckets.dropFirst()) {
                    #expect(a.count <= b.count, "\(family)\(labels) buckets are cumulative")
                }
                #expect(value(family + "_count", labels) == buckets.last?.count, "\(family)\(labels): _count equals the +Inf bucket")
                #expect(value(family + "_sum", labels) != nil, "\(family)\(labels) has _sum")
            }
        }
    }
}

@Suite struct OpsMetricsTests {
    @Test func countersGaugesAndHistogramsRenderAndParseBack() throws {
        let registry = MetricsRegistry()
        let requests = registry.counter("levee_test_requests_total", help: "Requests.\nSecond line with a \\ backslash.")
        let errors = registry.counter("levee_test_errors_total", help: "Errors by reason.", labelNames: ["reason", "path"])
        let temperature = registry.gauge("levee_test_temperature_celsius", help: "A gauge.")
        let latency = registry.histogram("levee_test_latency_seconds", help: "Latency.", buckets: [0.5, 0.1, 1, 1])

        requests.increment()
        requests.increment(by: 2)
        requests.increment(by: -5)  // ignored: counters never go down
        errors.labels("timeout", "/a").increment()
        errors.labels("weird \"quoted\" \\ back\nline", "/b").increment(by: 3)
        temperature.set(21.5)
        temperature.decrement(by: 1.5)
        for v in [0.05, 0.1, 0.3, 0.5, 0.7, 2.0] { latency.observe(v) }

        let text = registry.render()
        let parsed = try Exposition(parsing: text)
        parsed.checkHistograms()

        #expect(parsed.help["levee_test_requests_total"] == "Requests.\nSecond line with a \\ backslash.")
        #expect(parsed.types["levee_test_requests_total"] == "counter")
        #expect(parsed.types["levee_test_temperature_celsius"] == "gauge")
        #expect(parsed.types["levee_test_latency_seconds"] == "histogram")
        #expect(parsed.value("levee_test_requests_total") == 3)
        #expect(parsed.value("levee_test_errors_total", ["reason": "timeout", "path": "/a"]) == 1)
        #expect(parsed.value("levee_test_errors_total", ["reason": "weird \"quoted\" \\ back\nline", "path": "/b"]) == 3,
                "label values with quotes, backslashes and line feeds survive escaping")
        #expect(parsed.value("levee_test_temperature_celsius") == 20)

        // Bounds are inclusive: 0.1 falls in le=0.1, 0.5 in le=0.5; duplicates were merged.
        let buckets = parsed.samples.filter { $0.name == "levee_test_latency_seconds_bucket" }
        #expect(buckets.map { $0.labels["le"]! } == ["0.1", "0.5", "1", "+Inf"])
        #expect(buckets.map(\.value) == [2, 4, 5, 6])
        #expect(parsed.value("levee_test_latency_seconds_count") == 6)
        let sum = try #require(parsed.value("levee_test_latency_seconds_sum"))
        #expect(abs(sum - 3.65) < 1e-9)
    }

    @Test func labelledFamiliesStartEmptyAndUnlabelledOnesAtZero() throws {
        let registry = MetricsRegistry()
        _ = registry.counter("levee_a_total", help: "a")
        _ = registry.counter("levee_b_total", help: "b", labelNames: ["reason"])
        _ = registry.histogram("levee_c_seconds", help: "c", buckets: [1])
        let parsed = try Exposition(parsing: registry.render())
        #expect(parsed.value("levee_a_total") == 0, "rate() needs the zero before the first increment")
        #expect(!parsed.samples.contains { $0.name == "levee_b_total" })
        #expect(parsed.value("levee_c_seconds_bucket", ["le": "+Inf"]) == 0)
        #expect(parsed.types["levee_b_total"] == "counter", "HELP and TYPE are there even without samples")
    }

    @Test func registeringTheSameNameTwiceReturnsTheSameFamily() {
        let registry = MetricsRegistry()
        let first = registry.counter("levee_x_total", help: "x", labelNames: ["k"])
        let second = registry.counter("levee_x_total", help: "x", labelNames: ["k"])
        first.labels("v").increment()
        #expect(second.labels("v").value == 1)
        #expect(registry.names == ["levee_x_total"])
    }

    @Test func valuesAreFormattedForPrometheus() {
        #expect(PrometheusText.formatValue(3) == "3")
        #expect(PrometheusText.formatValue(0.25) == "0.25")
        #expect(PrometheusText.formatValue(.infinity) == "+Inf")
        #expect(PrometheusText.formatValue(-.infinity) == "-Inf")
        #expect(PrometheusText.formatValue(.nan) == "NaN")
        #expect(Double(PrometheusText.formatValue(1e-5)) == 1e-5)
        #expect(PrometheusText.isValidMetricName("levee_jobs_total"))
        #expect(!PrometheusText.isValidMetricName("9lives"))
        #expect(!PrometheusText.isValidMetricName("levee-jobs"))
        #expect(PrometheusText.isValidLabelName("reason"))
        #expect(!PrometheusText.isValidLabelName("__reserved"))
    }

    @Test func concurrentUpdatesAreNotLost() async {
        let registry = MetricsRegistry()
        let counter = registry.counter("levee_concurrent_total", help: "c", labelNames: ["worker"])
        let histogram = registry.histogram("levee_concurrent_seconds", help: "h", buckets: [1, 2])
        let gauge = registry.gauge("levee_concurrent_in_flight", help: "g")
        await withTaskGroup(of: Void.self) { group in
            for task in 0..<8 {
                group.addTask {
                    for i in 0..<2000 {
                        counter.labels(String(task % 2)).increment()
                        histogram.observe(Double(i % 3))
                        gauge.increment()
                        gauge.decrement()
                        if i % 100 == 0 { _ = registry.render() }  // scrapes race with updates
                    }
                }
            }
        }
        #expect(counter.labels("0").value == 8000)
        #expect(counter.labels("1").value == 8000)
        #expect(histogram.countAndSum().count == 16_000)
        #expect(gauge.value() == 0)
    }

    @Test func workerMetricsFollowNamingConventionsAndMove() throws {
        let metrics = WorkerMetrics()
        let before = try Exposition(parsing: metrics.registry.render())
        for name in metrics.registry.names {
            #expect(name.hasPrefix("levee_"), "\(name) has the levee_ prefix")
            let type = try #require(before.types[name])
            #expect((type == "counter") == name.hasSuffix("_total"), "\(name): _total exactly on counters")
            #expect(!(before.help[name] ?? "").isEmpty, "\(name) has HELP text")
            #expect(!name.contains("milliseconds"), "\(name) uses base units")
        }
        let expected = ["levee_jobs_received_total", "levee_jobs_succeeded_total", "levee_jobs_failed_total",
                        "levee_job_retries_total", "levee_jobs_dead_lettered_total", "levee_jobs_in_flight",
                        "levee_inference_batch_size", "levee_inference_duration_seconds", "levee_inference_tokens",
                        "levee_job_queue_wait_seconds", "levee_transactions_committed_total", "levee_transactions_aborted_total",
                        "levee_consumer_rebalances_total", "levee_consumer_lag_records",
                        "levee_worker_last_heartbeat_timestamp_seconds"]
        for name in expected { #expect(before.types[name] != nil, "\(name) is exported") }

        // What a worker does for two jobs, one failing with a timeout and retried.
        metrics.jobsReceived.increment(by: 2)
        metrics.inFlight.increment(by: 2)
        metrics.queueWaitSeconds.observe(0.2)
        metrics.batchSize.observe(2)
        metrics.recordInference(seconds: 0.8, promptTokens: 40, completionTokens: 100)
        metrics.jobsSucceeded.increment()
        metrics.recordFailure(.timeout)
        metrics.recordRetry(.timeout)
        metrics.recordDeadLetter(.poisonInput)
        metrics.inFlight.decrement(by: 2)
        metrics.transactionCommits.increment()
        metrics.transactionAborts.labels("fenced").increment()
        metrics.rebalances.labels("assigned").increment()
        let p3 = TopicPartitionRef(topic: "levee.jobs", partition: 3)
        metrics.setLag(p3, records: 42)
        metrics.setLag(TopicPartitionRef(topic: "levee.jobs", partition: 4), records: 7)
        metrics.removeLag(p3)
        metrics.heartbeat(at: 1_763_700_000)

        let after = try Exposition(parsing: metrics.registry.render())
        after.checkHistograms()
        #expect(after.value("levee_jobs_received_total") == 2)
        #expect(after.value("levee_jobs_succeeded_total") == 1)
        #expect(after.value("levee_jobs_failed_total", ["reason": "timeout"]) == 1)
        #expect(after.value("levee_job_retries_total", ["reason": "timeout"]) == 1)
        #expect(after.value("levee_jobs_dead_lettered_total", ["reason": "poison_input"]) == 1)
        #expect(after.value("levee_jobs_in_flight") == 0)
        #expect(after.value("levee_inference_tokens_count", ["kind": "completion"]) == 1)
        #expect(after.value("levee_inference_tokens_bucket", ["kind": "prompt", "le": "32"]) == 0)
        #expect(after.value("levee_inference_tokens_bucket", ["kind": "prompt", "le": "64"]) == 1)
        #expect(after.value("levee_inference_duration_seconds_sum") == 0.8)
        #expect(after.value("levee_transactions_committed_total") == 1)
        #expect(after.value("levee_transactions_aborted_total", ["reason": "fenced"]) == 1)
        #expect(after.value("levee_consumer_rebalances_total", ["kind": "assigned"]) == 1)
        #expect(after.value("levee_consumer_lag_records", ["topic": "levee.jobs", "partition": "4"]) == 7)
        #expect(after.value("levee_consumer_lag_records", ["topic": "levee.jobs", "partition": "3"]) == nil, "a revoked partition's lag is gone")
        #expect(after.value("levee_worker_last_heartbeat_timestamp_seconds") == 1_763_700_000)
    }

    @Test func theParserRejectsMalformedExpositions() {
        // The checks above are only as good as the parser: make sure it fails on bad input.
        let bad = [
            "levee_x_total 1\n",                                                        // sample before TYPE
            "# HELP a x\n# TYPE a counter\na{l=\"unterminated} 1\n",                     // unterminated label value
            "# HELP a x\n# TYPE a counter\na{l=\"v\"} one\n",                             // bad value
            "# HELP a x\n# TYPE a counter\na 1\na 2\n",                                  // duplicate series
            "# HELP a x\n# TYPE a counter\n# HELP a y\n",                                // HELP twice / after TYPE
            "# HELP a x\n# TYPE a counter\na{l=\"bad \\q escape\"} 1\n",                  // bad escape
        ]
        for text in bad {
            #expect(throws: Exposition.ParseError.self, "\(text)") { _ = try Exposition(parsing: text) }
        }
    }
}
