import NIOCore
import OCI
import Testing

@testable import Registry

/// The manifest cache under the race the push/pull/GC stress test met: a tag read from the database
/// just before a move must not be cached after the move invalidated it.
@Suite("Manifest cache")
struct ManifestCacheTests {
    @Test("a tag read before a move is not stored after it; one read after is")
    func staleTagIsNotStored() {
        let cache = ManifestCache(maximumBytes: 1 << 20, timeToLive: nil)
        let content = ByteBuffer(string: #"{"schemaVersion":2}"#)
        let old = ServedManifest(digest: Digest.of(Array(content.readableBytesView)), mediaType: MediaType.ociManifest, content: content)
        let before = cache.tagListGeneration("team/app")
        cache.invalidate(tag: "v1", in: "team/app")  // the move commits between the read and the store
        cache.store(old, in: "team/app", tag: "v1", generation: before)
        #expect(cache.digest(forTag: "v1", in: "team/app") == nil)
        #expect(cache.manifest(old.digest, in: "team/app") != nil)  // content by digest never goes stale
        let after = cache.tagListGeneration("team/app")
        cache.store(old, in: "team/app", tag: "v1", generation: after)
        #expect(cache.digest(forTag: "v1", in: "team/app") == old.digest)
        // A move in another repository does not stop this one's tags from being cached.
        let current = cache.tagListGeneration("team/app")
        cache.invalidate(tag: "v1", in: "other/app")
        cache.store(old, in: "team/app", tag: "v2", generation: current)
        #expect(cache.digest(forTag: "v2", in: "team/app") == old.digest)
    }
}
