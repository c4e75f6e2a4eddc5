import BlobStore
import Logging
import Metadata
import Monitoring
import NIOCore
import OCI
import Synchronization

public struct RegistryConfiguration: Sendable {
    /// Accept image indexes whose child manifests are not (yet) in the repository.
    public var allowSparseIndexes = false
    /// Memory for cached manifests; 0 disables the cache.
    public var manifestCacheBytes = 64 * 1024 * 1024
    /// How long a cached tag or manifest may be served without re-reading the database. Nil (the
    /// default with embedded SQLite) means "until this node changes it"; set it when nodes share PostgreSQL.
    public var cacheTimeToLive: Duration? = nil
    /// How often pull times are written to the database.
    public var pullRecordInterval: Duration = .seconds(10)
    /// Advertised as `OCI-Chunk-Min-Length` when set.
    public var chunkMinimumLength: Int? = nil
    /// A HEAD of a blob refreshes the repository's link when it is older than this, so the
    /// garbage collector (whose grace window should be at least twice this) leaves it alone.
    public var linkRefreshInterval: Duration = .seconds(300)
    /// Upload sessions one identity may hold open at once (nil: unbounded).
    public var maximumUploadsPerIdentity: Int? = 256

    public init() {}
}

/// The Distribution API's use-cases, independent of HTTP: blob uploads and downloads, manifests,
/// tags, catalog and referrers. Errors are `RegistryError`s carrying the spec's codes.
public final class Registry: Sendable {
    public let metadata: MetadataStore
    public let blobs: any BlobStore
    public let configuration: RegistryConfiguration
    public let pulls: PullRecorder
    let cache: ManifestCache
    let logger: Logger

    /// One request at a time per upload session.
    let sessionLocks = KeyedLock()
    /// Hash state of recent upload sessions, so appending a chunk never re-reads earlier bytes.
    /// Lost on restart, then rebuilt from the stored bytes.
    let hashStates = Mutex<[String: UploadHashState]>([:])

    /// Free-space guard of the blob store's filesystem; nil where none applies (tests of other things).
    public let space: StorageSpace?
    /// Namespaces' tag rules, checked on every push that names a tag.
    public let tagRules: TagRuleBook
    /// Where this registry and the services built on it (GC, lifecycle, scanning) count what they do.
    public let metrics: WharfMetrics
    /// Account settings and pull-time exclusions, cached for the paths that read them per request.
    public let settings: RegistryWideSettings

    public init(
        metadata: MetadataStore, blobs: any BlobStore, configuration: RegistryConfiguration, logger: Logger, space: StorageSpace? = nil,
        metrics: WharfMetrics = WharfMetrics()
    ) {
        self.metrics = metrics
        self.space = space
        self.metadata = metadata
        self.blobs = blobs
        self.configuration = configuration
        self.logger = logger
        self.cache = ManifestCache(maximumBytes: configuration.manifestCacheBytes, timeToLive: configuration.cacheTimeToLive)
        self.pulls = PullRecorder(metadata: metadata, interval: configuration.pullRecordInterval, logger: logger)
        self.tagRules = TagRuleBook(metadata: metadata)
        self.settings = RegistryWideSettings(metadata: metadata, timeToLive: configuration.cacheTimeToLive ?? .seconds(5))
    }
}

struct UploadHashState: Sendable {
    var hasher: DigestHasher
    var size: Int64
}

// MARK: - Blobs

extension Registry {
    /// HEAD: the blob's size if the repository may see it. Refreshes the link's grace clock: a
    /// client that hears "exists" skips the upload and will reference the blob shortly.
    public func blobInfo(_ digest: Digest, in repository: RepositoryName, refreshLink: Bool = false) async throws -> BlobRecord {
        guard let record = try await metadata.blob(digest, in: repository) else { throw RegistryError.blobUnknown(digest) }
        if refreshLink, let linked = try await metadata.linkTime(digest, in: repository),
            Timestamp.nowMillis() - linked > Int64(configuration.linkRefreshInterval.components.seconds) * 1000
        {
            try await metadata.touchLink(digest, in: repository)
        }
        return record
    }

    /// GET: the blob opened for streaming.
    public func openBlob(_ digest: Digest, in repository: RepositoryName) async throws -> any BlobReader {
        _ = try await blobInfo(digest, in: repository)
        guard let reader = try await blobs.open(digest) else {
            logger.error("blob is recorded but missing from storage; run `wharf fsck`", metadata: ["digest": "\(digest)"])
            throw RegistryError(.blobUnknown, "blob \(digest) is recorded but its bytes are missing from storage")
        }
        return reader
    }

    /// DELETE: removes the blob from the repository's view; bytes are reclaimed by garbage collection.
    public func deleteBlob(_ digest: Digest, in repository: RepositoryName) async throws {
        space?.releaseReserveIfLow()
        guard try await metadata.unlinkBlob(digest, from: repository) else { throw RegistryError.blobUnknown(digest) }
    }

    /// Cross-repository mount. Nil when `source` does not hold the blob (the caller then starts an upload).
    /// Also nil when the registry's `BLOB_MOUNTING` account setting is `DISABLED`.
    public func mountBlob(_ digest: Digest, from source: RepositoryName, into target: RepositoryName) async throws -> BlobRecord? {
        guard try await settings.blobMountingEnabled() else { return nil }
        if let blob = try await metadata.blob(digest, in: source) {
            try await checkQuota(adding: blob, to: target)
        }
        return try await metadata.mountBlob(digest, from: source, to: target)
    }

    /// Refuses a blob that would take the namespace over its quota. Each blob counts once per
    /// namespace, so one the namespace already holds is always fine. (Concurrent pushes may
    /// overshoot by what is in flight; the next push is then refused.)
    /// The size an upload into `repository` may reach while it streams, or nil without a quota.
    /// (In-flight bytes were not counted once: 24 MiB of open uploads went into a namespace with a
    /// 1 MiB quota.) The bytes of all open sessions together never exceed the quota. What is
    /// already stored counts too when the content is known not to be a duplicate (a monolithic
    /// push of a blob the namespace does not hold); a session's digest is known only when it
    /// closes, and the commit then checks precisely, counting a blob the namespace holds once.
    func uploadLimit(in repository: RepositoryName, excluding session: String?, digest: Digest? = nil) async throws -> UploadLimit? {
        let namespace = String(repository.namespace)
        guard let quota = try await metadata.namespaceQuota(namespace) else { return nil }
        let inFlight = try await metadata.inFlightUploadBytes(namespace: namespace, excluding: session)
        guard let digest else { return UploadLimit(namespace: namespace, quota: quota, used: nil, inFlight: inFlight) }
        if try await metadata.namespaceHolds(digest, namespace: namespace) { return nil }
        return UploadLimit(namespace: namespace, quota: quota, used: try await metadata.namespaceUsage(namespace), inFlight: inFlight)
    }

    struct UploadLimit {
        let namespace: String
        let quota: Int64
        /// Stored bytes, when they count (see `uploadLimit`).
        let used: Int64?
        let inFlight: Int64
        var bytes: Int64 { max(0, quota - inFlight - (used ?? 0)) }

        var exceeded: RegistryError {
            let stored = used.map { "\($0) bytes used + " } ?? ""
            return RegistryError(
                .denied,
                "storage quota exceeded for namespace '\(namespace)': \(stored)\(inFlight) bytes in uploads in progress leave this upload at most \(bytes) bytes of the limit of \(quota) bytes"
            )
        }
    }

    func checkQuota(adding blob: BlobRecord, to repository: RepositoryName) async throws {
        let namespace = String(repository.namespace)
        guard let quota = try await metadata.namespaceQuota(namespace) else { return }
        if try await metadata.namespaceHolds(blob.digest, namespace: namespace) { return }
        let usage = try await metadata.namespaceUsage(namespace)
        guard usage + blob.size <= quota else {
            throw RegistryError(
                .denied, "storage quota exceeded for namespace '\(namespace)': \(usage) bytes used + \(blob.size) for this blob > limit of \(quota) bytes")
        }
    }
}

// MARK: - Uploads

/// Where an upload session stands: what the client may be told in `Range`.
public struct UploadStatus: Sendable, Equatable {
    public let id: String
    public let size: Int64
}

/// Why an upload request was refused, beyond the spec's plain error codes: the HTTP layer needs
/// the session's state to answer 416 with the current `Range`.
public enum UploadError: Error, Sendable {
    /// The chunk does not start where the upload ends.
    case outOfOrder(UploadStatus, requestedStart: Int64)
    /// The chunk's `Content-Range` and the bytes received disagree.
    case lengthMismatch(UploadStatus, declared: Int64, received: Int64)
}

extension Registry {
    /// POST: opens a session for `owner` (the identity's name; nil when authentication is off).
    public func startUpload(in repository: RepositoryName, algorithm: DigestAlgorithm = .sha256, owner: String? = nil) async throws -> UploadStatus {
        let id = UUIDv4.make()
        try await blobs.createUpload(id, resumable: true)
        let now = Timestamp.nowMillis()
        do {
            try await metadata.createUpload(
                UploadRecord(id: id, repository: repository.value, size: 0, algorithm: algorithm, createdAt: now, updatedAt: now),
                owner: owner, maximumPerOwner: configuration.maximumUploadsPerIdentity)
        } catch MetadataError.limitReached(let message) {
            try? await blobs.deleteUpload(id)
            throw RegistryError(.tooManyRequests, "\(message); finish or cancel some (DELETE the session) before starting more", status: 429)
        } catch {
            try? await blobs.deleteUpload(id)
            throw error
        }
        hashStates.withLock { $0[id] = UploadHashState(hasher: DigestHasher(algorithm), size: 0) }
        return UploadStatus(id: id, size: 0)
    }

    public func uploadStatus(_ id: String, in repository: RepositoryName) async throws -> UploadStatus {
        let upload = try await loadUpload(id, in: repository)
        // Never claim bytes that are not there: a session whose file is gone (a crash between
        // publishing its blob and committing) is removed and reported unknown, so the client
        // starts over instead of closing an upload it cannot close.
        guard let stored = try await blobs.uploadSize(id) else {
            try await forgetLostSession(id)
            throw RegistryError.uploadUnknown(id)
        }
        return UploadStatus(id: id, size: min(upload.size, stored))
    }

    private func forgetLostSession(_ id: String) async throws {
        logger.warning("upload session without its bytes (left by a crash); removed", metadata: ["upload": "\(id)"])
        hashStates.withLock { _ = $0.removeValue(forKey: id) }
        try await metadata.deleteUpload(id)
    }

    /// PATCH: appends `body`. With `start` (from `Content-Range`) the chunk must begin where the upload ends.
    public func appendToUpload<Body: AsyncSequence>(
        _ id: String, in repository: RepositoryName, start: Int64?, length: Int64?, body: Body
    ) async throws -> UploadStatus where Body.Element == ByteBuffer {
        try await sessionLocks.withLock(id) {
            let upload = try await loadUpload(id, in: repository)
            var state = try await hashState(for: upload)
            state.size = try await receive(body, into: upload, state: &state.hasher, at: state.size, start: start, length: length)
            // A 202 promises the chunk: its bytes reach the disk before the size that counts them.
            // (The closing PUT's fsync then has little left to write.)
            try await blobs.prepareUpload(id)
            try await metadata.updateUpload(id, size: state.size)
            hashStates.withLock { $0[id] = state }
            return UploadStatus(id: id, size: state.size)
        }
    }

    /// PUT ?digest=: appends an optional final chunk, verifies the digest of the whole blob and
    /// commits it. On a digest mismatch the session is discarded.
    public func completeUpload<Body: AsyncSequence>(
        _ id: String, in repository: RepositoryName, digest: Digest, start: Int64?, length: Int64?, body: Body
    ) async throws -> BlobRecord where Body.Element == ByteBuffer {
        try await sessionLocks.withLock(id) {
            let upload = try await loadUpload(id, in: repository)
            var state = try await hashState(for: upload)
            state.size = try await receive(body, into: upload, state: &state.hasher, at: state.size, start: start, length: length)
            let computed: Digest
            if digest.algorithm == state.hasher.algorithm {
                computed = state.hasher.finalize()
            } else {
                computed = try await rehash(id, size: state.size, algorithm: digest.algorithm).hasher.finalize()
            }
            guard computed == digest else {
                try? await discardUpload(id)
                throw RegistryError.digestInvalid("the uploaded content has digest \(computed), not \(digest); the upload session was discarded")
            }
            let record = BlobRecord(digest: digest, size: state.size)
            do {
                try await checkQuota(adding: record, to: repository)
            } catch {
                try? await discardUpload(id)
                throw error
            }
            try await commit(upload: id, as: record, to: repository, endingSession: true)
            hashStates.withLock { _ = $0.removeValue(forKey: id) }
            return record
        }
    }

    /// DELETE: cancels the session and frees its storage.
    public func cancelUpload(_ id: String, in repository: RepositoryName) async throws {
        try await sessionLocks.withLock(id) {
            _ = try await loadUpload(id, in: repository)
            try await discardUpload(id)
        }
    }

    /// POST ?digest=: the whole blob in one request.
    public func pushBlob<Body: AsyncSequence>(
        _ body: Body, in repository: RepositoryName, digest: Digest, length: Int64?
    ) async throws -> BlobRecord where Body.Element == ByteBuffer {
        // A storage-only upload: if the server dies mid-request, garbage collection removes the file.
        let id = "mono-" + UUIDv4.make()
        try await blobs.createUpload(id, resumable: false)
        do {
            var hasher = DigestHasher(digest.algorithm)
            let upload = UploadRecord(id: id, repository: repository.value, size: 0, algorithm: digest.algorithm, createdAt: 0, updatedAt: 0)
            let size = try await receive(body, into: upload, state: &hasher, at: 0, start: nil, length: length, knownDigest: digest)
            let computed = hasher.finalize()
            guard computed == digest else {
                throw RegistryError.digestInvalid("the uploaded content has digest \(computed), not \(digest)")
            }
            let record = BlobRecord(digest: digest, size: size)
            try await checkQuota(adding: record, to: repository)
            try await commit(upload: id, as: record, to: repository)
            return record
        } catch {
            try? await blobs.deleteUpload(id)
            throw error
        }
    }

    /// Publishes a verified upload as the blob `record` and links it to `repository`. The fsync
    /// runs before the blob's lock is taken; a blob the store already holds (the same layer pushed
    /// again) needs none, and this copy is discarded.
    private func commit(upload id: String, as record: BlobRecord, to repository: RepositoryName, endingSession: Bool = false) async throws {
        let isNew = try await blobs.size(of: record.digest) == nil
        if isNew { try await blobs.prepareUpload(id) }
        let blobs = self.blobs
        try await metadata.linkBlob(record, to: repository, endingSession: endingSession ? id : nil) {
            try await blobs.publishUpload(id, as: record.digest, prepared: isNew)
        }
    }

    private func loadUpload(_ id: String, in repository: RepositoryName) async throws -> UploadRecord {
        guard UUIDv4.isValid(id), let upload = try await metadata.upload(id), upload.repository == repository.value else {
            throw RegistryError.uploadUnknown(id)
        }
        return upload
    }

    private func discardUpload(_ id: String) async throws {
        hashStates.withLock { _ = $0.removeValue(forKey: id) }
        try await metadata.deleteUpload(id)
        try await blobs.deleteUpload(id)
    }

    /// Streams `body` to the end of the upload, hashing as it goes. Returns the new size.
    private func receive<Body: AsyncSequence>(
        _ body: Body, into upload: UploadRecord, state hasher: inout DigestHasher,
        at offset: Int64, start: Int64?, length: Int64?, knownDigest: Digest? = nil
    ) async throws -> Int64 where Body.Element == ByteBuffer {
        if let start, start != offset {
            throw UploadError.outOfOrder(UploadStatus(id: upload.id, size: offset), requestedStart: start)
        }
        let writer: any UploadWriter
        do {
            writer = try await blobs.appendToUpload(upload.id, at: offset)
        } catch BlobStoreError.uploadNotFound {
            try await forgetLostSession(upload.id)
            throw RegistryError.uploadUnknown(upload.id)
        }
        do {
            try space?.checkWritable()
        } catch {
            throw RegistryError(.unknown, error.description, status: 507)
        }
        var working = hasher
        var received: Int64 = 0
        var limit: UploadLimit?
        if let repository = RepositoryName(upload.repository) {
            limit = try await uploadLimit(in: repository, excluding: upload.id, digest: knownDigest)
        }
        do {
            for try await chunk in body {
                received += Int64(chunk.readableBytes)
                if let length, received > length { break }
                if let limit, offset + received > limit.bytes { throw limit.exceeded }
                // No blob grows past the bound every offset a client names is checked against.
                guard offset + received <= ClientNumber.maximumByteOffset else {
                    throw RegistryError(.sizeInvalid, "a blob may hold at most \(ClientNumber.maximumByteOffset) bytes")
                }
                working.update(chunk)
                try await writer.write(chunk)
            }
            try await writer.close()
        } catch {
            try? await writer.close()
            throw error
        }
        if let length, received != length {
            // The bytes past `offset` are discarded by the next append, which truncates to the recorded size.
            throw UploadError.lengthMismatch(UploadStatus(id: upload.id, size: offset), declared: length, received: received)
        }
        hasher = working
        return offset + received
    }

    /// The upload's hash state: from memory, or rebuilt by reading its bytes (after a restart).
    private func hashState(for upload: UploadRecord) async throws -> UploadHashState {
        if let cached = hashStates.withLock({ $0[upload.id] }), cached.size == upload.size, cached.hasher.algorithm == upload.algorithm {
            return cached
        }
        let rebuilt = try await rehash(upload.id, size: upload.size, algorithm: upload.algorithm)
        if rebuilt.size != upload.size {
            // Fewer bytes survived than were acknowledged (an OS crash before the data reached the
            // disk). Tell the truth: the client resumes from what is really there.
            logger.warning(
                "upload shorter than recorded; resuming from the stored size",
                metadata: [
                    "upload": "\(upload.id)", "recorded": "\(upload.size)", "stored": "\(rebuilt.size)",
                ])
            try await metadata.updateUpload(upload.id, size: rebuilt.size)
        }
        return rebuilt
    }

    /// Hashes the first `size` bytes of an upload.
    private func rehash(_ id: String, size: Int64, algorithm: DigestAlgorithm) async throws -> UploadHashState {
        var hasher = DigestHasher(algorithm)
        var hashed: Int64 = 0
        do {
            try await blobs.readUpload(id) { chunk in
                let remaining = size - hashed
                guard remaining > 0 else { return }
                let slice = chunk.getSlice(at: chunk.readerIndex, length: Int(min(Int64(chunk.readableBytes), remaining)))!
                hasher.update(slice)
                hashed += Int64(slice.readableBytes)
            }
        } catch BlobStoreError.uploadNotFound {
            try await forgetLostSession(id)
            throw RegistryError.uploadUnknown(id)
        }
        return UploadHashState(hasher: hasher, size: hashed)
    }
}
