import Synchronization

/// A set of metric families that renders itself in the Prometheus text exposition format 0.0.4.
///
/// Families are registered once (usually at start-up) and then updated from any thread: each
/// family has its own lock, so a scrape renders one family at a time and never blocks the
/// worker's hot path for longer than copying one family's values.
public final class MetricsRegistry: Sendable {
    /// The `Content-Type` of `render()`'s output.
    public static let contentType = "text/plain; version=0.0.4; charset=utf-8"

    private let families = Mutex<[any MetricFamily]>([])

    public init() {}

    /// Registers (or returns the already registered) counter `name`.
    /// Counter names end in `_total` by convention; the registry does not add it.
    public func counter(_ name: String, help: String, labelNames: [String] = []) -> Counter {
        register(Counter(name: name, help: help, labelNames: labelNames))
    }

    /// Registers (or returns the already registered) gauge `name`.
    public func gauge(_ name: String, help: String, labelNames: [String] = []) -> Gauge {
        register(Gauge(name: name, help: help, labelNames: labelNames))
    }

    /// Registers (or returns the already registered) histogram `name` with upper bounds `buckets`
    /// (sorted and de-duplicated here; `+Inf` is always added).
    public func histogram(_ name: String, help: String, labelNames: [String] = [], buckets: [Double]) -> Histogram {
        register(Histogram(name: name, help: help, labelNames: labelNames, buckets: buckets))
    }

    /// Registering a name twice returns the first family if kind, help and labels agree;
    /// anything else is a programming error caught at start-up.
    private func register<F: MetricFamily>(_ family: F) -> F {
        families.withLock { families in
            if let existing = families.first(where: { $0.name == family.name }) {
                guard let same = existing as? F, same.labelNames == family.labelNames else {
                    preconditionFailure("metric \(family.name) is already registered with another type or labels")
                }
                return same
            }
            families.append(family)
            return family
        }
    }

    /// The names of the registered families, in registration order.
    public var names: [String] { families.withLock { $0.map(\.name) } }

    /// Every family in the text exposition format 0.0.4, in registration order.
    public func render() -> String {
        let snapshot = families.withLock { $0 }
        var out = ""
        out.reserveCapacity(snapshot.count * 256)
        for family in snapshot {
            out += "# HELP \(family.name) \(PrometheusText.escapeHelp(family.help))\n"
            out += "# TYPE \(family.name) \(family.typeName)\n"
            family.renderSamples(into: &out)
        }
        return out
    }
}

/// What the registry needs from every kind of metric.
protocol MetricFamily: AnyObject, Sendable {
    var name: String { get }
    var help: String { get }
    var labelNames: [String] { get }
    var typeName: String { get }
    func renderSamples(into out: inout String)
}

/// Checks shared by the three kinds of family. Bad names are programming errors (the names are
/// constants in the code), so they stop the process at start-up rather than at the first scrape.
private func validateFamily(name: String, labelNames: [String], reserved: Set<String> = []) {
    precondition(PrometheusText.isValidMetricName(name), "invalid Prometheus metric name \(name)")
    precondition(Set(labelNames).count == labelNames.count, "duplicate label names in \(name)")
    for label in labelNames {
        precondition(PrometheusText.isValidLabelName(label) && !reserved.contains(label),
                     "invalid label name \(label) in \(name)")
    }
}

/// A monotonically increasing value per label set (`# TYPE counter`).
public final class Counter: MetricFamily {
    public let name: String
    public let help: String
    public let labelNames: [String]
    var typeName: String { "counter" }
    private let values: Mutex<[[String]: Double]>

    init(name: String, help: String, labelNames: [String]) {
        validateFamily(name: name, labelNames: labelNames)
        self.name = name
        self.help = help
        self.labelNames = labelNames
        // An unlabelled counter shows 0 from the start, so rate() works from the first scrape.
        values = Mutex(labelNames.isEmpty ? [[]: 0] : [:])
    }

    /// The series for these label values (in `labelNames` order).
    public func labels(_ values: String...) -> Series { labels(values) }

    public func labels(_ values: [String]) -> Series {
        precondition(values.count == labelNames.count, "\(name) takes labels \(labelNames), got \(values)")
        return Series(family: self, labelValues: values)
    }

    /// Adds `amount` (which must not be negative: a counter only goes up) to the unlabelled series.
    public func increment(by amount: Double = 1) { add(amount, to: []) }

    /// The current value of one series (0 if it was never incremented).
    public func value(_ labelValues: String...) -> Double { values.withLock { $0[labelValues] ?? 0 } }

    fileprivate func add(_ amount: Double, to labelValues: [String]) {
        precondition(labelValues.count == labelNames.count, "\(name) takes labels \(labelNames)")
        guard amount >= 0, amount.isFinite else { return }  // a counter never goes down
        values.withLock { $0[labelValues, default: 0] += amount }
    }

    func renderSamples(into out: inout String) {
        let snapshot = values.withLock { $0 }
        for (labelValues, value) in snapshot.sorted(by: { $0.key.lexicographicallyPrecedes($1.key) }) {
            out += PrometheusText.sample(name, labelNames, labelValues, value)
        }
    }

    /// One label set of a counter.
    public struct Series: Sendable {
        let family: Counter
        let labelValues: [String]
        public func increment(by amount: Double = 1) { family.add(amount, to: labelValues) }
        public var value: Double { family.values.withLock { $0[labelValues] ?? 0 } }
    }
}

/// A value that goes up and down per label set (`# TYPE gauge`).
public final class Gauge: MetricFamily {
    public let name: String
    public let help: String
    public let labelNames: [String]
    var typeName: String { "gauge" }
    private let values: Mutex<[[String]: Double]>

    init(name: String, help: String, labelNames: [String]) {
        validateFamily(name: name, labelNames: labelNames)
        self.name = name
        self.help = help
        self.labelNames = labelNames
        values = Mutex(labelNames.isEmpty ? [[]: 0] : [:])
    }

    public func labels(_ values: String...) -> Series { labels(values) }

    public func labels(_ values: [String]) -> Series {
        precondition(values.count == labelNames.count, "\(name) takes labels \(labelNames), got \(values)")
        return Series(family: self, labelValues: values)
    }

    public func set(_ value: Double) { update([]) { $0 = value } }
    public func increment(by amount: Double = 1) { update([]) { $0 += amount } }
    public func decrement(by amount: Double = 1) { update([]) { $0 -= amount } }
    public func value(_ labelValues: String...) -> Double { values.withLock { $0[labelValues] ?? 0 } }

    /// Drops one series (a partition revoked from this worker should stop reporting its lag).
    public func remove(_ labelValues: String...) { _ = values.withLock { $0.removeValue(forKey: labelValues) } }

    /// Drops every labelled series (and resets an unlabelled gauge to 0).
    public func removeAll() { values.withLock { $0 = labelNames.isEmpty ? [[]: 0] : [:] } }

    fileprivate func update(_ labelValues: [String], _ change: (inout Double) -> Void) {
        precondition(labelValues.count == labelNames.count, "\(name) takes labels \(labelNames)")
        values.withLock { change(&$0[labelValues, default: 0]) }
    }

    func renderSamples(into out: inout String) {
        let snapshot = values.withLock { $0 }
        for (labelValues, value) in snapshot.sorted(by: { $0.key.lexicographicallyPrecedes($1.key) }) {
            out += PrometheusText.sample(name, labelNames, labelValues, value)
        }
    }

    /// One label set of a gauge.
    public struct Series: Sendable {
        let family: Gauge
        let labelValues: [String]
        public func set(_ value: Double) { family.update(labelValues) { $0 = value } }
        public func increment(by amount: Double = 1) { family.update(labelValues) { $0 += amount } }
        public func decrement(by amount: Double = 1) { family.update(labelValues) { $0 -= amount } }
        public var value: Double { family.values.withLock { $0[labelValues] ?? 0 } }
    }
}

/// Observations counted into fixed buckets per label set (`# TYPE histogram`): renders
/// cumulative `_bucket{le="…"}` series ending in `le="+Inf"`, then `_sum` and `_count`.
public final class Histogram: MetricFamily {
    public let name: String
    public let help: String
    public let labelNames: [String]
    /// The finite upper bounds, ascending (the `+Inf` bucket is implicit).
    public let buckets: [Double]
    var typeName: String { "histogram" }

    struct State: Sendable {
        /// Per-bucket (not cumulative) counts; the last slot is the `+Inf` bucket.
        var counts: [UInt64]
        var sum: Double = 0
        var count: UInt64 = 0
    }
    private let series: Mutex<[[String]: State]>

    init(name: String, help: String, labelNames: [String], buckets: [Double]) {
        validateFamily(name: name, labelNames: labelNames, reserved: ["le"])
        self.name = name
        self.help = help
        self.labelNames = labelNames
        self.buckets = Array(Set(buckets.filter { $0.isFinite })).sorted()
        let empty = State(counts: Array(repeating: 0, count: self.buckets.count + 1))
        series = Mutex(labelNames.isEmpty ? [[]: empty] : [:])
    }

    public func labels(_ values: String...) -> Series { labels(values) }

    public func labels(_ values: [String]) -> Series {
        precondition(values.count == labelNames.count, "\(name) takes labels \(labelNames), got \(values)")
        return Series(family: self, labelValues: values)
    }

    /// Records one observation in the unlabelled series.
    public func observe(_ value: Double) { observe(value, labelValues: []) }

    /// How many observations one series holds, and their sum.
    public func countAndSum(_ labelValues: String...) -> (count: UInt64, sum: Double) {
        series.withLock { s in s[labelValues].map { ($0.count, $0.sum) } ?? (0, 0) }
    }

    fileprivate func observe(_ value: Double, labelValues: [String]) {
        precondition(labelValues.count == labelNames.count, "\(name) takes labels \(labelNames)")
        guard !value.isNaN else { return }
        // Upper bounds are inclusive (le = "less than or equal"): the first bound >= value.
        var low = 0, high = buckets.count
        while low < high {
            let mid = (low + high) / 2
            if buckets[mid] >= value { high = mid } else { low = mid + 1 }
        }
        let index = low
        let bucketCount = buckets.count
        series.withLock { all in
            var state = all[labelValues] ?? State(counts: Array(repeating: 0, count: bucketCount + 1))
            state.counts[index] += 1
            state.sum += value
            state.count += 1
            all[labelValues] = state
        }
    }

    func renderSamples(into out: inout String) {
        let snapshot = series.withLock { $0 }
        let bucketNames = labelNames + ["le"]
        let bounds = buckets.map(PrometheusText.formatValue) + ["+Inf"]
        for (labelValues, state) in snapshot.sorted(by: { $0.key.lexicographicallyPrecedes($1.key) }) {
            var cumulative: UInt64 = 0
            for (i, bound) in bounds.enumerated() {
                cumulative += state.counts[i]
                out += PrometheusText.sample(name + "_bucket", bucketNames, labelValues + [bound], Double(cumulative))
            }
            out += PrometheusText.sample(name + "_sum", labelNames, labelValues, state.sum)
            out += PrometheusText.sample(name + "_count", labelNames, labelValues, Double(state.count))
        }
    }

    /// One label set of a histogram.
    public struct Series: Sendable {
        let family: Histogram
        let labelValues: [String]
        public func observe(_ value: Double) { family.observe(value, labelValues: labelValues) }
    }

    /// `count` bounds starting at `start`, each `factor` times the one before.
    public static func exponentialBuckets(start: Double, factor: Double, count: Int) -> [Double] {
        precondition(start > 0 && factor > 1 && count > 0, "exponential buckets need start > 0, factor > 1, count > 0")
        return (0..<count).map { start * pow(factor, Double($0)) }
    }
}

/// Tiny `pow` without Foundation, enough for bucket layouts.
private func pow(_ base: Double, _ exponent: Double) -> Double {
    var result = 1.0
    for _ in 0..<Int(exponent) { result *= base }
    return result
}

/// The bits of the text exposition format 0.0.4 that need care: names, escaping, numbers.
enum PrometheusText {
    static func isValidMetricName(_ name: String) -> Bool {
        guard let first = name.utf8.first, !(first >= UInt8(ascii: "0") && first <= UInt8(ascii: "9")) else { return false }
        return name.utf8.allSatisfy { isAlnum($0) || $0 == UInt8(ascii: "_") || $0 == UInt8(ascii: ":") }
    }

    static func isValidLabelName(_ name: String) -> Bool {
        guard let first = name.utf8.first, !(first >= UInt8(ascii: "0") && first <= UInt8(ascii: "9")),
              !name.hasPrefix("__") else { return false }
        return name.utf8.allSatisfy { isAlnum($0) || $0 == UInt8(ascii: "_") }
    }

    private static func isAlnum(_ c: UInt8) -> Bool {
        (c >= UInt8(ascii: "a") && c <= UInt8(ascii: "z")) || (c >= UInt8(ascii: "A") && c <= UInt8(ascii: "Z"))
            || (c >= UInt8(ascii: "0") && c <= UInt8(ascii: "9"))
    }

    /// HELP text escapes backslash and line feed.
    static func escapeHelp(_ text: String) -> String {
        var out = ""
        for ch in text.unicodeScalars {
            switch ch {
            case "\\": out += "\\\\"
            case "\n": out += "\\n"
            default: out.unicodeScalars.append(ch)
            }
        }
        return out
    }

    /// Label values also escape the double quote.
    static func escapeLabelValue(_ text: String) -> String {
        var out = ""
        for ch in text.unicodeScalars {
            switch ch {
            case "\\": out += "\\\\"
            case "\n": out += "\\n"
            case "\"": out += "\\\""
            default: out.unicodeScalars.append(ch)
            }
        }
        return out
    }

    /// Integers print without a fraction; infinities and NaN use the format's spellings.
    static func formatValue(_ value: Double) -> String {
        if value.isNaN { return "NaN" }
        if value == .infinity { return "+Inf" }
        if value == -.infinity { return "-Inf" }
        if value == value.rounded(), abs(value) < 9_007_199_254_740_992 { return String(Int64(value)) }
        return String(value)  // shortest round-trip form, e.g. 0.005 or 1e-05: both parse as Go floats
    }

    static func sample(_ name: String, _ labelNames: [String], _ labelValues: [String], _ value: Double) -> String {
        var line = name
        if !labelNames.isEmpty {
            line += "{"
            for (i, label) in labelNames.enumerated() {
                if i > 0 { line += "," }
                line += label + "=\"" + escapeLabelValue(labelValues[i]) + "\""
            }
            line += "}"
        }
        return line + " " + formatValue(value) + "\n"
    }
}
