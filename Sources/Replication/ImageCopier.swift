import BlobStore
import NIOCore
import OCI
import Registry
import Synchronization

/// Copies one manifest and everything it needs from this registry to another, in the order that
/// keeps the destination consistent: blobs before the manifest that names them, an index's
/// children before the index, a referrer's subject before the referrer. What the destination
/// already has is skipped (HEAD first; a blob it holds in another repository is mounted). Blobs
/// stream from storage in chunks, so memory stays bounded whatever their size; a large blob's
/// upload is resumed where it stopped when a copy is retried.
final class ImageCopier: Sendable {
    let registry: Registry
    let remote: RemoteRegistry
    /// Where the destination's uploads stand and where it holds blobs (shared by a destination's copies).
    let state: DestinationState
    /// Blobs up to this size go in one request; larger ones in chunks of this size.
    let chunkSize: Int
    /// Blobs of one image copied at once.
    let parallelBlobs: Int
    /// Bytes sent so far.
    let copied = Atomic<Int64>(0)

    init(registry: Registry, remote: RemoteRegistry, state: DestinationState, chunkSize: Int, parallelBlobs: Int) {
        self.registry = registry
        self.remote = remote
        self.state = state
        self.chunkSize = chunkSize
        self.parallelBlobs = parallelBlobs
    }

    /// Copies `digest` of `source` (recursively) to `target` at the destination unless it has it
    /// already; with `tag`, the destination's tag is pointed at it too (one PUT by tag when the
    /// manifest is new). The top-level image's referrers (signatures, SBOMs) follow it.
    func copyManifest(_ digest: Digest, from source: RepositoryName, to target: String, tag: String? = nil, depth: Int = 0) async throws {
        guard depth < 8 else { throw RemoteRegistryError("manifests nest deeper than 8 levels") }
        let served = try await registry.manifest(.digest(digest), in: source, recordPull: false)
        if let tag, try await remote.manifestDigest(tag, in: target, accepting: [served.mediaType]) == digest { return }
        let present = try await remote.manifestDigest(digest.description, in: target, accepting: [served.mediaType]) == digest
        if !present {
            let parsed = try ManifestParser.parse(Array(served.content.readableBytesView), contentType: served.mediaType)
            if let subject = parsed.subject, (try? await registry.manifest(.digest(subject.digest), in: source, recordPull: false)) != nil {
                try await copyManifest(subject.digest, from: source, to: target, depth: depth + 1)
            }
            for child in parsed.manifests {
                try await copyManifest(child.digest, from: source, to: target, depth: depth + 1)
            }
            try await copyBlobs(parsed.requiredBlobs, from: source, to: target)
        }
        if !present || tag != nil {
            try await remote.putManifest(served.content, mediaType: served.mediaType, as: tag ?? digest.description, in: target)
            copied.add(Int64(served.content.readableBytes), ordering: .relaxed)
        }
        if depth == 0, !present {
            for referrer in try await registry.referrers(of: digest, in: source, artifactType: nil) {
                try await copyManifest(referrer.digest, from: source, to: target, depth: depth + 1)
            }
        }
    }

    func copyBlobs(_ blobs: [Descriptor], from source: RepositoryName, to target: String) async throws {
        var seen = Set<Digest>()
        let unique = blobs.filter { seen.insert($0.digest).inserted }
        try await withThrowingTaskGroup(of: Void.self) { group in
            var running = 0
            for blob in unique {
                if running == parallelBlobs {
                    try await group.next()
                    running -= 1
                }
                group.addTask { try await self.copyBlob(blob.digest, from: source, to: target) }
                running += 1
            }
            try await group.waitForAll()
        }
    }

    /// Blobs this small are sent without asking first whether the destination has them: sending
    /// them costs less than the round trip (image configs, small layers).
    static let sendWithoutAsking: Int64 = 16 << 10

    func copyBlob(_ digest: Digest, from source: RepositoryName, to name: String) async throws {
        let size = try await registry.blobInfo(digest, in: source).size
        if size > Self.sendWithoutAsking, try await remote.blobExists(digest, in: name) {
            state.holds(digest, in: name)
            return
        }
        // A resumable upload from an earlier attempt, if the destination still has it.
        var location: String?
        var offset: Int64 = 0
        if let previous = state.upload(of: digest, in: name), let held = try await remote.uploadOffset(previous, in: name), held <= size {
            location = previous
            offset = held
        }
        if location == nil, size <= Int64(chunkSize), state.repositoryHolding(digest, besides: name) == nil {
            // Small: read it whole (at most one chunk) and send it in one request where the registry allows.
            let reader = try await registry.openBlob(digest, in: source)
            var whole = ByteBuffer()
            do {
                if size > 0 {
                    try await reader.stream(range: 0...(size - 1)) { buffer in
                        var buffer = buffer
                        whole.writeBuffer(&buffer)
                    }
                }
                try await reader.close()
            } catch {
                try? await reader.close()
                throw error
            }
            try await remote.uploadWhole(whole, digest: digest, in: name)
            copied.add(size, ordering: .relaxed)
            state.holds(digest, in: name)
            return
        }
        if location == nil {
            if let other = state.repositoryHolding(digest, besides: name) {
                guard let started = try await remote.startUpload(in: name, mounting: digest, from: other) else {
                    state.holds(digest, in: name)
                    return
                }
                location = started
            } else {
                location = try await remote.startUpload(in: name)
            }
        }
        guard var current = location else { return }
        let reader = try await registry.openBlob(digest, in: source)
        do {
            var pending = ByteBuffer()
            if offset < size {
                try await reader.stream(range: offset...(size - 1)) { buffer in
                    var buffer = buffer
                    pending.writeBuffer(&buffer)
                    // Whole chunks go as they fill; the remainder goes with the closing PUT.
                    while pending.readableBytes >= chunkSize, size - offset > Int64(chunkSize) {
                        let chunk = pending.readSlice(length: chunkSize)!
                        current = try await remote.appendChunk(chunk, at: offset, to: current, in: name)
                        offset += Int64(chunk.readableBytes)
                        copied.add(Int64(chunk.readableBytes), ordering: .relaxed)
                        state.remember(upload: current, of: digest, in: name)
                        pending.discardReadBytes()
                    }
                }
            }
            try await reader.close()
            let last = pending.readableBytes
            try await remote.finishUpload(current, digest: digest, lastBytes: last > 0 ? pending : nil, in: name)
            copied.add(Int64(last), ordering: .relaxed)
        } catch {
            try? await reader.close()
            throw error
        }
        state.forgetUpload(of: digest, in: name)
        state.holds(digest, in: name)
    }
}

/// What one destination's copies share: uploads that can be resumed and where the destination
/// is known to hold each blob (for cross-repository mounts). Bounded; lost at a restart, which
/// only costs a fresh upload.
final class DestinationState: Sendable {
    private struct State {
        var uploads: [String: String] = [:]
        var holders: [Digest: String] = [:]
    }
    private let state = Mutex(State())
    private static let limit = 10_000

    func upload(of digest: Digest, in repository: String) -> String? { state.withLock { $0.uploads["\(repository)@\(digest)"] } }

    func remember(upload location: String, of digest: Digest, in repository: String) {
        state.withLock { state in
            if state.uploads.count >= Self.limit { state.uploads.removeAll() }
            state.uploads["\(repository)@\(digest)"] = location
        }
    }

    func forgetUpload(of digest: Digest, in repository: String) { _ = state.withLock { $0.uploads.removeValue(forKey: "\(repository)@\(digest)") } }

    func holds(_ digest: Digest, in repository: String) {
        state.withLock { state in
            if state.holders.count >= Self.limit { state.holders.removeAll() }
            state.holders[digest] = repository
        }
    }

    func repositoryHolding(_ digest: Digest, besides repository: String) -> String? {
        state.withLock { $0.holders[digest] }.flatMap { $0 == repository ? nil : $0 }
    }
}
