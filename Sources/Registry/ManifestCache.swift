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
/// Coherence: this node invalidates entries on every write it makes, and on PostgreSQL hears every
/// other node's writes at once (`CacheCoherence`: LISTEN/NOTIFY); `timeToLive` stays as a backstop
/// for a notification lost with its connection. With embedded SQLite only this process writes.
final class ManifestCache: Sendable {
    private struct Key: Hashable {
        let repository: String
        let reference: String
    }

    private struct Entry<Value> {
        let value: Value
        let expires: ContinuousClock.Instant?
    }

    typealias Generation = (epoch: UInt64, count: UInt64)

    private struct State {
        var manifests: [Key: Entry<ServedManifest>] = [:]
        var tags: [Key: Entry<Digest>] = [:]
        var bytes = 0
        /// Whole sorted tag lists with their JSON, for fast tag-list pages.
        var tagLists: [String: Entry<EncodedTagList>] = [:]
        var tagListEntries = 0
        /// Repositories whose whole tag list is being read in the background.
        var tagListFills: Set<String> = []
        /// Repositories found to have more tags than are kept whole, at the generation they were counted.
        var oversizedTagLists: [String: Generation] = [:]
        /// Bumped whenever a repository's tags change, so a list read before the change is not stored after it.
        var tagGenerations: [String: UInt64] = [:]
        var epoch: UInt64 = 0
    }

    /// Longest tag list kept whole; longer ones are paged from the database.
    static let maximumCachedTagList = 50_000
    private static let maximumCachedTagEntries = 500_000

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

    /// Stores a manifest, and with `tag` the tag's digest, unless the repository's tags changed
    /// since `generation` was taken before the database was read: a read that raced a tag move
    /// must not put the old digest back after the move invalidated it (it would be served until
    /// this node moved the tag again).
    func store(_ manifest: ServedManifest, in repository: String, tag: String? = nil, generation: Generation? = nil) {
        guard maximumBytes > 0, manifest.content.readableBytes <= maximumBytes / 8 else { return }
        let expires = expiry
        state.withLock { state in
            let current = (state.epoch, state.tagGenerations[repository] ?? 0)
            let tag = tag.flatMap { tag in generation.map { $0 == current } == true ? tag : nil }
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
        state.withLock { state in
            state.tags.removeValue(forKey: Key(repository: repository, reference: tag))
            Self.forgetTagList(repository, &state)
        }
    }

    private static func forgetTagList(_ repository: String, _ state: inout State) {
        if let list = state.tagLists.removeValue(forKey: repository) { state.tagListEntries -= list.value.tags.count }
        if state.tagGenerations.count > 100_000 {
            // Bounded: a new epoch makes every list read before now unstorable.
            state.tagGenerations.removeAll(keepingCapacity: true)
            state.epoch &+= 1
        }
        state.tagGenerations[repository, default: 0] &+= 1
    }

    /// A token to present when storing a tag list read after this call.
    func tagListGeneration(_ repository: String) -> Generation {
        state.withLock { ($0.epoch, $0.tagGenerations[repository] ?? 0) }
    }

    /// Claims the background read of a repository's whole tag list: false when one is already
    /// running, when caching is off, or when the list was found too long to keep and has not changed since.
    func beginTagListFill(_ repository: String, generation: Generation) -> Bool {
        guard maximumBytes > 0 else { return false }
        return state.withLock { state in
            if let oversized = state.oversizedTagLists[repository], oversized == generation { return false }
            return state.tagListFills.insert(repository).inserted
        }
    }

    func endTagListFill(_ repository: String) {
        _ = state.withLock { $0.tagListFills.remove(repository) }
    }

    /// Remembers that a repository has more tags than are kept whole, until its tags change.
    func markTagListOversized(_ repository: String, generation: Generation) {
        state.withLock { state in
            if state.oversizedTagLists.count >= 10_000 { state.oversizedTagLists.removeAll(keepingCapacity: true) }
            state.oversizedTagLists[repository] = generation
        }
    }

    func tagList(_ repository: String) -> EncodedTagList? {
        guard maximumBytes > 0 else { return nil }
        return state.withLock { state in
            guard let entry = state.tagLists[repository], isLive(entry) else { return nil }
            return entry.value
        }
    }

    /// Stores a repository's sorted tags unless they changed since `generation` was taken.
    func storeTagList(_ list: EncodedTagList, for repository: String, generation: Generation) {
        let tags = list.tags
        guard maximumBytes > 0, tags.count <= Self.maximumCachedTagList else { return }
        let expires = expiry
        state.withLock { state in
            guard (state.epoch, state.tagGenerations[repository] ?? 0) == generation else { return }
            if state.tagListEntries + tags.count > Self.maximumCachedTagEntries {
                state.tagLists.removeAll(keepingCapacity: true)
                state.tagListEntries = 0
            }
            if let old = state.tagLists.updateValue(Entry(value: list, expires: expires), forKey: repository) { state.tagListEntries -= old.value.tags.count }
            state.tagListEntries += tags.count
        }
    }

    func invalidate(manifest digest: Digest, in repository: String) {
        state.withLock { state in
            if let old = state.manifests.removeValue(forKey: Key(repository: repository, reference: digest.description)) {
                state.bytes -= old.value.content.readableBytes
            }
        }
    }

    /// Forgets everything (notifications from other nodes may have been missed).
    func invalidateAll() {
        state.withLock { state in
            state.manifests.removeAll()
            state.tags.removeAll()
            state.bytes = 0
            state.tagLists.removeAll()
            state.tagListEntries = 0
            state.oversizedTagLists.removeAll()
            // A new epoch: no tag list read before now may be stored.
            state.tagGenerations.removeAll()
            state.epoch &+= 1
        }
    }

    /// Forgets everything about one repository (it was deleted).
    func invalidate(repository: String) {
        state.withLock { state in
            for key in state.manifests.keys where key.repository == repository {
                state.bytes -= state.manifests.removeValue(forKey: key)?.value.content.readableBytes ?? 0
            }
            for key in state.tags.keys where key.repository == repository { state.tags.removeValue(forKey: key) }
            Self.forgetTagList(repository, &state)
        }
    }
}
