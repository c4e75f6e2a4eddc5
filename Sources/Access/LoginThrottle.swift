import Synchronization

/// Slows down password guessing: after repeated failures an account, or a source address, must
/// wait before trying again, and the wait doubles with each further failure up to a cap. The lock
/// always expires and a successful login clears the account, so the real user is never locked out
/// for good. State is per node (an attacker spread over nodes still meets each node's limit).
public final class LoginThrottle: Sendable {
    public struct Policy: Sendable {
        /// Failures allowed within `window` before waits begin.
        public var accountThreshold = 5
        /// Higher for addresses: many users may share one NAT.
        public var sourceThreshold = 20
        public var window: Duration = .seconds(15 * 60)
        public var firstDelay: Duration = .seconds(2)
        public var maximumDelay: Duration = .seconds(5 * 60)

        public init() {}
    }

    private struct Entry {
        var failures = 0
        var firstFailure: ContinuousClock.Instant
        var lockedUntil: ContinuousClock.Instant?
    }

    private let accounts = Mutex<[String: Entry]>([:])
    private let sources = Mutex<[String: Entry]>([:])
    public let policy: Policy

    public init(policy: Policy = Policy()) {
        self.policy = policy
    }

    /// Seconds to wait before another attempt is allowed, or nil when an attempt may proceed now.
    public func retryAfter(account: String, source: String?) -> Int? {
        let now = ContinuousClock.now
        func wait(_ table: borrowing Mutex<[String: Entry]>, _ key: String) -> Duration? {
            table.withLock { entries in
                guard let until = entries[key]?.lockedUntil, until > now else { return nil }
                return until - now
            }
        }
        let waits = [wait(accounts, account.lowercased()), source.flatMap { wait(sources, $0) }].compactMap { $0 }
        guard let longest = waits.max() else { return nil }
        return max(1, Int(longest.components.seconds) + (longest.components.attoseconds > 0 ? 1 : 0))
    }

    public func recordFailure(account: String, source: String?) {
        let now = ContinuousClock.now
        func bump(_ table: borrowing Mutex<[String: Entry]>, _ key: String, threshold: Int) {
            table.withLock { entries in
                var entry = entries[key] ?? Entry(firstFailure: now)
                if now - entry.firstFailure > policy.window { entry = Entry(firstFailure: now) }
                entry.failures += 1
                if entry.failures >= threshold {
                    let doublings = min(entry.failures - threshold, 20)
                    let delay = min(policy.firstDelay * (1 << doublings), policy.maximumDelay)
                    entry.lockedUntil = now + delay
                }
                entries[key] = entry
                if entries.count > 100_000 { entries = entries.filter { now - $0.value.firstFailure <= policy.window } }
            }
        }
        bump(accounts, account.lowercased(), threshold: policy.accountThreshold)
        if let source { bump(sources, source, threshold: policy.sourceThreshold) }
    }

    public func recordSuccess(account: String) {
        _ = accounts.withLock { $0.removeValue(forKey: account.lowercased()) }
    }
}
