import Synchronization

/// A small map whose entries expire, bounded in count. Keeps the expensive parts of
/// authentication (bcrypt, ECDSA verification, membership queries) off the hot path.
public final class TTLCache<Key: Hashable & Sendable, Value: Sendable>: Sendable {
    private struct Entry {
        let value: Value
        let expires: ContinuousClock.Instant
    }

    private let entries = Mutex<[Key: Entry]>([:])
    private let timeToLive: Duration
    private let capacity: Int

    public init(timeToLive: Duration, capacity: Int = 50_000) {
        self.timeToLive = timeToLive
        self.capacity = capacity
    }

    public func get(_ key: Key) -> Value? {
        let now = ContinuousClock.now
        return entries.withLock { entries in
            guard let entry = entries[key] else { return nil }
            if entry.expires <= now {
                entries.removeValue(forKey: key)
                return nil
            }
            return entry.value
        }
    }

    /// Stores `value` until `expires` (at most the cache's time to live from now).
    public func set(_ key: Key, _ value: Value, expires: ContinuousClock.Instant? = nil) {
        let now = ContinuousClock.now
        let limit = now + timeToLive
        let until = expires.map { min($0, limit) } ?? limit
        entries.withLock { entries in
            if entries.count >= capacity {
                entries = entries.filter { $0.value.expires > now }
                if entries.count >= capacity { entries.removeAll(keepingCapacity: true) }
            }
            entries[key] = Entry(value: value, expires: until)
        }
    }

    public func remove(_ key: Key) {
        _ = entries.withLock { $0.removeValue(forKey: key) }
    }

    public func removeAll() {
        entries.withLock { $0.removeAll(keepingCapacity: true) }
    }
}
