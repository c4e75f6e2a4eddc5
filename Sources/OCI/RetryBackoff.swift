import Foundation

/// How long to wait before retrying background work that failed (webhook deliveries,
/// replication): `first` × 2^(attempt−1), capped at `maximum`, plus up to 25 % jitter so many
/// retries started together do not arrive together.
public struct RetryBackoff: Sendable {
    public var first: Duration
    public var maximum: Duration

    public init(first: Duration, maximum: Duration) {
        self.first = first
        self.maximum = maximum
    }

    /// The wait before attempt `attempt + 1`, in milliseconds (`attempt` ≥ 1 failures so far).
    public func millis(afterAttempt attempt: Int) -> Int64 {
        let firstMillis = Double(first.components.seconds) * 1000 + Double(first.components.attoseconds) / 1e15
        let cap = Double(maximum.components.seconds) * 1000 + Double(maximum.components.attoseconds) / 1e15
        let base = min(cap, firstMillis * pow(2, Double(min(max(attempt, 1) - 1, 30))))
        return Int64(base * Double.random(in: 1.0...1.25))
    }
}
