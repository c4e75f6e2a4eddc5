import Synchronization

/// Slows down password guessing without handing attackers a way to lock out their victims.
///
/// Waits are keyed by account *and* source address: after repeated failures for one account from
/// one address, that pair must wait, and the wait doubles with each further failure up to a cap.
/// The same account from any other address is not slowed, so five wrong passwords for `admin`
/// from anywhere no longer lock the real administrator out. An address that fails for many
/// accounts (a spray) is slowed for accounts it has not signed in to recently; accounts that did
/// sign in from it (colleagues behind the same NAT or proxy) keep working. Only passwords are
/// throttled: access tokens, robot secrets and registry logins carry 256 random bits and cannot
/// be guessed, so they are never refused for someone else's failures. State is per node.
public final class LoginThrottle: Sendable {
    public struct Policy: Sendable {
        /// Failures of one account from one address within `window` before that pair waits.
        public var accountThreshold = 5
        /// Failures from one address (any accounts) within `window` before it waits for
        /// accounts it has not signed in to recently.
        public var sourceThreshold = 20
        public var window: Duration = .seconds(15 * 60)
        public var firstDelay: Duration = .seconds(2)
        public var maximumDelay: Duration = .seconds(5 * 60)
        /// How long a successful sign-in from an address exempts that account there from the address's wait.
        public var trustedFor: Duration = .seconds(24 * 3600)

        public init() {}
    }

    private struct Entry {
        var failures = 0
        var firstFailure: ContinuousClock.Instant
        var lockedUntil: ContinuousClock.Instant?
    }

    private struct State {
        var pairs: [String: Entry] = [:]
        var sources: [String: Entry] = [:]
        /// account + source → last successful sign-in.
        var trusted: [String: ContinuousClock.Instant] = [:]
    }

    private let state = Mutex(State())
    public let policy: Policy

    public init(policy: Policy = Policy()) {
        self.policy = policy
    }

    private static func pairKey(_ account: String, _ source: String?) -> String { account.lowercased() + "\u{0}" + (source ?? "?") }

    /// Seconds to wait before another password attempt for `account` from `source` is allowed,
    /// or nil when it may proceed now.
    public func retryAfter(account: String, source: String?, now: ContinuousClock.Instant = .now) -> Int? {
        let pair = Self.pairKey(account, source)
        let wait: Duration? = state.withLock { state in
            var waits: [Duration] = []
            if let until = state.pairs[pair]?.lockedUntil, until > now { waits.append(until - now) }
            if let source, let until = state.sources[source]?.lockedUntil, until > now {
                let trustedSince = state.trusted[pair]
                if trustedSince.map({ now - $0 > policy.trustedFor }) ?? true { waits.append(until - now) }
            }
            return waits.max()
        }
        guard let wait else { return nil }
        return max(1, Int(wait.components.seconds) + (wait.components.attoseconds > 0 ? 1 : 0))
    }

    public func recordFailure(account: String, source: String?, now: ContinuousClock.Instant = .now) {
        let pair = Self.pairKey(account, source)
        state.withLock { state in
            func bump(_ entry: Entry?, threshold: Int) -> Entry {
                var entry = entry ?? Entry(firstFailure: now)
                if now - entry.firstFailure > policy.window { entry = Entry(firstFailure: now) }
                entry.failures += 1
                if entry.failures >= threshold {
                    let doublings = min(entry.failures - threshold, 20)
                    entry.lockedUntil = now + min(policy.firstDelay * (1 << doublings), policy.maximumDelay)
                }
                return entry
            }
            state.pairs[pair] = bump(state.pairs[pair], threshold: policy.accountThreshold)
            if let source { state.sources[source] = bump(state.sources[source], threshold: policy.sourceThreshold) }
            // Bounded memory under a flood of distinct names or addresses.
            if state.pairs.count > 100_000 { state.pairs = state.pairs.filter { now - $0.value.firstFailure <= policy.window } }
            if state.sources.count > 100_000 { state.sources = state.sources.filter { now - $0.value.firstFailure <= policy.window } }
        }
    }

    public func recordSuccess(account: String, source: String?, now: ContinuousClock.Instant = .now) {
        let pair = Self.pairKey(account, source)
        state.withLock { state in
            state.pairs.removeValue(forKey: pair)
            state.trusted[pair] = now
            if state.trusted.count > 100_000 { state.trusted = state.trusted.filter { now - $0.value <= policy.trustedFor } }
        }
    }
}
