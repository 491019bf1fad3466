/// Exponential backoff with full jitter for retried jobs: attempt n waits a random time in
/// [base·2^(n-1)/2, base·2^(n-1)], capped at `max`. Jitter spreads a burst of failures so the
/// retries do not all hit a recovering backend at once.
public struct Backoff: Sendable, Equatable {
    public var baseMilliseconds: Int64
    public var maxMilliseconds: Int64
    public var maxAttempts: Int

    public init(baseMilliseconds: Int64 = 1000, maxMilliseconds: Int64 = 60_000, maxAttempts: Int = 4) {
        self.baseMilliseconds = baseMilliseconds
        self.maxMilliseconds = maxMilliseconds
        self.maxAttempts = maxAttempts
    }

    /// Whether a job that just failed its `attempt`-th try (counting from 1) gets another.
    public func allowsRetry(afterAttempt attempt: Int) -> Bool { attempt < maxAttempts }

    /// The delay before attempt `attempt + 1`, after attempt `attempt` failed.
    public func delay<R: RandomNumberGenerator>(afterAttempt attempt: Int, using rng: inout R) -> Int64 {
        let exponent = min(max(attempt - 1, 0), 30)
        let ceiling = min(maxMilliseconds, baseMilliseconds.multipliedReportingOverflow(by: Int64(1) << exponent).partialValue)
        let floor = ceiling / 2
        guard ceiling > floor else { return ceiling }
        return Int64.random(in: floor...ceiling, using: &rng)
    }

    public func delay(afterAttempt attempt: Int) -> Int64 {
        var rng = SystemRandomNumberGenerator()
        return delay(afterAttempt: attempt, using: &rng)
    }
}
