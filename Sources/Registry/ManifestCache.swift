import NIOCore
import OCI
import Synchronization

/// A manifest as served on a pull: exact bytes, media type, digest.
public struct ServedManifest: Sendable {
    public let digest: Digest
    public let mediaType: String
    public let content: ByteBuffer
}

/// In-memory cache of manifests and tag → digest resolutions, so a pull by tag usually touches no
/// database. Bounded by bytes; evicts in bulk when full.
///
/// Coherence: this node invalidates entries on every write it makes. When several nodes share a
/// PostgreSQL database, `timeToLive` bounds how long another node's tag move can go unseen; with
/// embedded SQLite only this process writes, so entries live until evicted.
final class ManifestCache: Sendable {
    private struct Key: Hashable {
        let repository: String
        let reference: String
    }

    private struct Entry<Value> {
        let value: Value
        let expires: ContinuousClock.Instant?
    }

    private struct State {
        var manifests: [Key: Entry<ServedManifest>] = [:]
        var tags: [Key: Entry<Digest>] = [:]
        var bytes = 0
    }

    private let state = Mutex(State())
    private let maximumBytes: Int
    private let maximumTags: Int
    private let timeToLive: Duration?

    init(maximumBytes: Int, timeToLive: Duration?, maximumTags: Int = 200_000) {
        self.maximumBytes = maximumBytes
        self.timeToLive = timeToLive
        self.maximumTags = maximumTags
    }

    private var expiry: ContinuousClock.Instant? { timeToLive.map { .now + $0 } }

    private func isLive<V>(_ entry: Entry<V>) -> Bool {
        guard let expires = entry.expires else { return true }
        return ContinuousClock.now < expires
    }

    func manifest(_ digest: Digest, in repository: String) -> ServedManifest? {
        guard maximumBytes > 0 else { return nil }
        let key = Key(repository: repository, reference: digest.description)
        return state.withLock { state in
            guard let entry = state.manifests[key], isLive(entry) else { return nil }
            return entry.value
        }
    }

    func digest(forTag tag: String, in repository: String) -> Digest? {
        guard maximumBytes > 0 else { return nil }
        let key = Key(repository: repository, reference: tag)
        return state.withLock { state in
            guard let entry = state.tags[key], isLive(entry) else { return nil }
            return entry.value
        }
    }

    func store(_ manifest: ServedManifest, in repository: String, tag: String? = nil) {
        guard maximumBytes > 0, manifest.content.readableBytes <= maximumBytes / 8 else { return }
        let expires = expiry
        state.withLock { state in
            let key = Key(repository: repository, reference: manifest.digest.description)
            if let old = state.manifests.updateValue(Entry(value: manifest, expires: expires), forKey: key) {
                state.bytes -= old.value.content.readableBytes
            }
            state.bytes += manifest.content.readableBytes
            if let tag {
                state.tags[Key(repository: repository, reference: tag)] = Entry(value: manifest.digest, expires: expires)
            }
            if state.bytes > maximumBytes { evictManifests(&state) }
            if state.tags.count > maximumTags { state.tags.removeAll(keepingCapacity: true) }
        }
    }

    /// Drops about a quarter of the cached manifests (the dictionary's order is effectively random).
    private func evictManifests(_ state: inout State) {
        let target = maximumBytes * 3 / 4
        while state.bytes > target, let victim = state.manifests.first {
            state.manifests.removeValue(forKey: victim.key)
            state.bytes -= victim.value.value.content.readableBytes
        }
    }

    func invalidate(tag: String, in repository: String) {
        _ = state.withLock { $0.tags.removeValue(forKey: Key(repository: repository, reference: tag)) }
    }

    func invalidate(manifest digest: Digest, in repository: String) {
        state.withLock { state in
            if let old = state.manifests.removeValue(forKey: Key(repository: repository, reference: digest.description)) {
                state.bytes -= old.value.content.readableBytes
            }
        }
    }

    /// Forgets everything about one repository (it was deleted).
    func invalidate(repository: String) {
        state.withLock { state in
            for key in state.manifests.keys where key.repository == repository {
                state.bytes -= state.manifests.removeValue(forKey: key)?.value.content.readableBytes ?? 0
            }
            for key in state.tags.keys where key.repository == repository { state.tags.removeValue(forKey: key) }
        }
    }
}
