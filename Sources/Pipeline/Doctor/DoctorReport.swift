/// One pre-flight check: what was looked at, how it went, and what to do when it did not go well.
public struct DoctorCheck: Sendable, Equatable, Codable {
    /// `ok` passed; `warn` works but is risky or only fit for development; `fail` will not work
    /// (or will lose guarantees) as configured; `skip` does not apply here, with the reason.
    public enum Status: String, Sendable, Codable {
        case ok, warn, fail, skip
    }

    /// What was checked, e.g. `brokers`, `topic levee.results`, `model`.
    public var name: String
    public var status: Status
    /// What was found (numbers, versions, the reason for a skip). Never holds a secret.
    public var detail: String
    /// For `warn` and `fail`: the command or setting that fixes it.
    public var fix: String?

    public init(_ name: String, _ status: Status, _ detail: String, fix: String? = nil) {
        self.name = name
        self.status = status
        self.detail = detail
        self.fix = fix
    }
}

/// Everything `levee doctor` found. `ok` is false when any check failed.
public struct DoctorReport: Sendable, Equatable, Codable {
    public var schema: String
    public var at: Timestamp
    public var ok: Bool
    /// Checks by status: `{"ok": 9, "warn": 1, "fail": 0, "skip": 2}`.
    public var counts: [String: Int]
    public var checks: [DoctorCheck]

    public init(checks: [DoctorCheck], at: Timestamp = .now()) {
        schema = "levee.doctor/v1"
        self.at = at
        self.checks = checks
        ok = !checks.contains { $0.status == .fail }
        var counts: [String: Int] = ["ok": 0, "warn": 0, "fail": 0, "skip": 0]
        for check in checks { counts[check.status.rawValue, default: 0] += 1 }
        self.counts = counts
    }

    /// The checks with a status, in report order.
    public func checks(_ status: DoctorCheck.Status) -> [DoctorCheck] { checks.filter { $0.status == status } }

    /// The check called `name`, if the report has it.
    public func check(_ name: String) -> DoctorCheck? { checks.first { $0.name == name } }
}
