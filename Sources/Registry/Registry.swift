import BlobStore
import Encryption
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
    /// Data keys of encrypted repositories; nil where no key service is set up (tests of other things).
    public let encryption: BlobEncryption?
    /// Unwrapped data keys of encrypted upload sessions on this node, so a PATCH needs no KMS call.
    let uploadKeyCache = Mutex<[String: ObjectKeys]>([:])

    public init(
        metadata: MetadataStore, blobs: any BlobStore, configuration: RegistryConfiguration, logger: Logger, space: StorageSpace? = nil,
        metrics: WharfMetrics = WharfMetrics(), encryption: BlobEncryption? = nil
    ) {
        self.encryption = encryption
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
        let record = try await blobInfo(digest, in: repository)
        if let domain = try await encryptionDomain(of: repository) {
            return try await openEncrypted(record, domain: domain, in: repository)
        }
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
        // Keys first: a disabled KMS key refuses the push before anything is stored.
        var sealing: (ObjectKeys, String)?
        if let domain = try await encryptionDomain(of: repository) { sealing = try await newUploadEncryption(domain, in: repository) }
        try await blobs.createUpload(id, resumable: true)
        let now = Timestamp.nowMillis()
        do {
            try await metadata.createUpload(
                UploadRecord(
                    id: id, repository: repository.value, size: 0, algorithm: algorithm, createdAt: now, updatedAt: now, encryption: sealing?.1),
                owner: owner, maximumPerOwner: configuration.maximumUploadsPerIdentity)
        } catch MetadataError.limitReached(let message) {
            try? await blobs.deleteUpload(id)
            throw RegistryError(.tooManyRequests, "\(message); finish or cancel some (DELETE the session) before starting more", status: 429)
        } catch {
            try? await blobs.deleteUpload(id)
            throw error
        }
        hashStates.withLock { $0[id] = UploadHashState(hasher: DigestHasher(algorithm), size: 0) }
        if let keys = sealing?.0 { uploadKeyCache.withLock { $0[id] = keys } }
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
        if let sealed = upload.encryption {
            // Stored bytes are records; what they hold in plaintext is checked against the row.
            let layers = try UploadEncryption.decode(sealed).keys.count
            let segment = Int64(SegmentedEnvelope.defaultSegmentSize)
            let records = upload.size / segment
            let needed = records == 0 ? 0 : SegmentedEnvelope.storedOffset(fullRecords: records, layers: layers)
            if stored >= needed { return UploadStatus(id: id, size: upload.size) }
            // Records lost to a crash: what whole records survive (the next request re-reads them).
            let survived = max(0, stored - Int64(SegmentedEnvelope.headerSize)) / (segment + Int64(SegmentedEnvelope.overhead(layers: layers)))
            return UploadStatus(id: id, size: survived * segment)
        }
        return UploadStatus(id: id, size: min(upload.size, stored))
    }

    private func forgetLostSession(_ id: String) async throws {
        logger.warning("upload session without its bytes (left by a crash); removed", metadata: ["upload": "\(id)"])
        hashStates.withLock { _ = $0.removeValue(forKey: id) }
        forgetUploadKeys(id)
        try await metadata.deleteUpload(id)
    }

    /// PATCH: appends `body`. With `start` (from `Content-Range`) the chunk must begin where the upload ends.
    public func appendToUpload<Body: AsyncSequence>(
        _ id: String, in repository: RepositoryName, start: Int64?, length: Int64?, body: Body
    ) async throws -> UploadStatus where Body.Element == ByteBuffer {
        try await sessionLocks.withLock(id) {
            let upload = try await loadUpload(id, in: repository)
            var state = try await hashState(for: upload, in: repository)
            let received = try await receive(
                body, into: upload, in: repository, state: &state.hasher, at: state.size, start: start, length: length, final: false)
            state.size = received.size
            // A 202 promises the chunk: its bytes reach the disk before the size that counts them.
            // (The closing PUT's fsync then has little left to write.)
            try await blobs.prepareUpload(id)
            try await metadata.updateUpload(id, size: state.size, sealedTail: received.sealedTail)
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
            var state = try await hashState(for: upload, in: repository)
            state.size = try await receive(
                body, into: upload, in: repository, state: &state.hasher, at: state.size, start: start, length: length, final: true
            ).size
            let computed: Digest
            if digest.algorithm == state.hasher.algorithm {
                computed = state.hasher.finalize()
            } else {
                var other = upload
                other.algorithm = digest.algorithm
                other.size = state.size
                computed = try await rehash(other, in: repository, sealedComplete: true).hasher.finalize()
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
            try await commit(upload: id, sealing: upload.encryption, as: record, to: repository, endingSession: true)
            hashStates.withLock { _ = $0.removeValue(forKey: id) }
            forgetUploadKeys(id)
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
        var sealing: (ObjectKeys, String)?
        if let domain = try await encryptionDomain(of: repository) { sealing = try await newUploadEncryption(domain, in: repository) }
        try await blobs.createUpload(id, resumable: false)
        if let keys = sealing?.0 { uploadKeyCache.withLock { $0[id] = keys } }
        defer { forgetUploadKeys(id) }
        do {
            var hasher = DigestHasher(digest.algorithm)
            let upload = UploadRecord(
                id: id, repository: repository.value, size: 0, algorithm: digest.algorithm, createdAt: 0, updatedAt: 0, encryption: sealing?.1)
            let size = try await receive(
                body, into: upload, in: repository, state: &hasher, at: 0, start: nil, length: length, knownDigest: digest, final: true
            ).size
            let computed = hasher.finalize()
            guard computed == digest else {
                throw RegistryError.digestInvalid("the uploaded content has digest \(computed), not \(digest)")
            }
            let record = BlobRecord(digest: digest, size: size)
            try await checkQuota(adding: record, to: repository)
            try await commit(upload: id, sealing: upload.encryption, as: record, to: repository)
            return record
        } catch {
            try? await blobs.deleteUpload(id)
            throw error
        }
    }

    /// Publishes a verified upload as the blob `record` and links it to `repository`. The fsync
    /// runs before the blob's lock is taken; a blob the store already holds (the same layer pushed
    /// again) needs none, and this copy is discarded.
    private func commit(
        upload id: String, sealing: String?, as record: BlobRecord, to repository: RepositoryName, endingSession: Bool = false
    ) async throws {
        let blobs = self.blobs
        guard let sealing else {
            let isNew = try await blobs.size(of: record.digest) == nil
            if isNew { try await blobs.prepareUpload(id) }
            try await linkChecked(record, to: repository, endingSession: endingSession ? id : nil, encryption: BlobLinkEncryption()) { _ in
                try await blobs.publishUpload(id, as: record.digest, prepared: isNew)
            }
            return
        }
        // The domain's own copy, under its derived key; another domain's copy is never reused.
        let upload = try UploadEncryption.decode(sealing)
        guard let domain = EncryptionDomain(identifier: upload.domain), let objectKey = Digest(domain.objectKey(for: record.digest.description)) else {
            throw RegistryError(.unknown, "an upload session names an unknown encryption domain", status: 500)
        }
        let isNew = try await blobs.size(of: objectKey) == nil
        if isNew { try await blobs.prepareUpload(id) }
        let copy = EncryptedBlobRecord(
            domain: domain.identifier, digest: record.digest, objectKey: objectKey, wrappedKeys: WrappedKeys.encode(try upload.wrapped()),
            segmentSize: SegmentedEnvelope.defaultSegmentSize, createdAt: Timestamp.nowMillis())
        try await linkChecked(
            record, to: repository, endingSession: endingSession ? id : nil, encryption: BlobLinkEncryption(domain: domain.identifier, copy: copy)
        ) { copyRecorded in
            if !copyRecorded, !isNew { try await blobs.delete(objectKey) }
            try await blobs.publishUpload(id, as: objectKey, prepared: isNew)
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

    /// Streams `body` to the end of the upload, hashing as it goes. Returns the new size, and for
    /// an encrypted upload that continues (`final` false) the sealed partial segment to keep.
    private func receive<Body: AsyncSequence>(
        _ body: Body, into upload: UploadRecord, in repository: RepositoryName, state hasher: inout DigestHasher,
        at offset: Int64, start: Int64?, length: Int64?, knownDigest: Digest? = nil, final: Bool
    ) async throws -> (size: Int64, sealedTail: String?) where Body.Element == ByteBuffer {
        if let start, start != offset {
            throw UploadError.outOfOrder(UploadStatus(id: upload.id, size: offset), requestedStart: start)
        }
        let sealing = try await uploadKeys(upload, in: repository)
        let writer: any UploadWriter
        do {
            if let (_, keys) = sealing {
                // Whole records only are stored; the partial segment after them lives in the row.
                let segment = Int64(SegmentedEnvelope.defaultSegmentSize)
                let records = offset / segment
                let tail = try Self.openTail(upload.sealedTail, keys: keys, expected: Int(offset - records * segment))
                let sealer = EnvelopeSealer(keys: keys, startIndex: UInt64(records), tail: tail)
                let stored: any UploadWriter
                if records == 0 {
                    stored = try await blobs.appendToUpload(upload.id, at: 0)
                    try await stored.write(ByteBuffer(bytes: sealer.header))
                } else {
                    stored = try await blobs.appendToUpload(upload.id, at: SegmentedEnvelope.storedOffset(fullRecords: records, layers: keys.layers.count))
                }
                writer = EncryptingUploadWriter(stored: stored, sealer: sealer)
            } else {
                writer = try await blobs.appendToUpload(upload.id, at: offset)
            }
        } catch BlobStoreError.uploadNotFound {
            try await forgetLostSession(upload.id)
            throw RegistryError.uploadUnknown(upload.id)
        }
        do {
            try space?.checkWritable()
        } catch {
            try? await writer.close()
            throw RegistryError(.unknown, error.description, status: 507)
        }
        var working = hasher
        var received: Int64 = 0
        var limit: UploadLimit?
        if let repository = RepositoryName(upload.repository) {
            limit = try await uploadLimit(in: repository, excluding: upload.id, digest: knownDigest)
        }
        var sealedTail: String?
        do {
            for try await chunk in body {
                received += Int64(chunk.readableBytes)
                if let length, received > length { break }
                if let limit, offset + received > limit.bytes { throw limit.exceeded }
                // No blob grows past the bound every offset a client names is checked against.
                guard offset + received <= ClientNumber.maximumByteOffset else {
                    throw RegistryError(.sizeInvalid, "a blob may hold at most \(ClientNumber.maximumByteOffset) bytes")
                }
                if writer is EncryptingUploadWriter {
                    // Sealing overlaps hashing on another core: both only read the chunk.
                    async let sealed: Void = writer.write(chunk)
                    working.update(chunk)
                    try await sealed
                } else {
                    working.update(chunk)
                    try await writer.write(chunk)
                }
            }
            if let length, received != length {
                // The bytes past `offset` are discarded by the next append, which truncates to the recorded size.
                throw UploadError.lengthMismatch(UploadStatus(id: upload.id, size: offset), declared: length, received: received)
            }
            if let sealer = writer as? EncryptingUploadWriter, let (_, keys) = sealing {
                if final {
                    try await sealer.finish()
                } else {
                    sealedTail = try Self.sealTail(try await sealer.takeTailAndClose(), keys: keys)
                }
            } else {
                try await writer.close()
            }
        } catch {
            try? await writer.close()
            throw error
        }
        hasher = working
        return (offset + received, sealedTail)
    }

    /// The upload's hash state: from memory, or rebuilt by reading its bytes (after a restart).
    private func hashState(for upload: UploadRecord, in repository: RepositoryName) async throws -> UploadHashState {
        if let cached = hashStates.withLock({ $0[upload.id] }), cached.size == upload.size, cached.hasher.algorithm == upload.algorithm {
            return cached
        }
        let rebuilt = try await rehash(upload, in: repository, sealedComplete: false)
        if rebuilt.size != upload.size {
            // Fewer bytes survived than were acknowledged (an OS crash before the data reached the
            // disk). Tell the truth: the client resumes from what is really there.
            logger.warning(
                "upload shorter than recorded; resuming from the stored size",
                metadata: [
                    "upload": "\(upload.id)", "recorded": "\(upload.size)", "stored": "\(rebuilt.size)",
                ])
            // An encrypted upload that lost records lost its tail's place too: it resumes at a record boundary.
            try await metadata.updateUpload(upload.id, size: rebuilt.size, sealedTail: nil)
        }
        return rebuilt
    }

    /// Hashes the first `upload.size` bytes of an upload (its plaintext, for an encrypted one:
    /// whole stored records, then the sealed tail from the row; with `sealedComplete` the stored
    /// bytes already end with the last record, as after a closing request).
    private func rehash(_ upload: UploadRecord, in repository: RepositoryName, sealedComplete: Bool) async throws -> UploadHashState {
        var hasher = DigestHasher(upload.algorithm)
        var hashed: Int64 = 0
        let size = upload.size
        let sealing = try await uploadKeys(upload, in: repository)
        let segment = Int64(SegmentedEnvelope.defaultSegmentSize)
        // Plaintext the stored records must give: all of it once sealed to the end, else whole segments.
        let fromRecords = sealing == nil || sealedComplete ? size : (size / segment) * segment
        var opener = sealing.map { EnvelopeOpener(keys: $0.1) }
        var torn = false
        do {
            try await blobs.readUpload(upload.id) { chunk in
                guard fromRecords - hashed > 0, !torn else { return }
                var plaintext = chunk
                if opener != nil {
                    // A record torn by a crash fails to open: what came before it is what survived.
                    guard let opened = try? opener!.feed(chunk) else {
                        torn = true
                        return
                    }
                    plaintext = opened
                }
                let remaining = fromRecords - hashed
                let slice = plaintext.getSlice(at: plaintext.readerIndex, length: Int(min(Int64(plaintext.readableBytes), remaining)))!
                hasher.update(slice)
                hashed += Int64(slice.readableBytes)
            }
        } catch BlobStoreError.uploadNotFound {
            try await forgetLostSession(upload.id)
            throw RegistryError.uploadUnknown(upload.id)
        }
        if let (_, keys) = sealing, !sealedComplete, hashed == fromRecords, size > fromRecords {
            let tail = try Self.openTail(upload.sealedTail, keys: keys, expected: Int(size - fromRecords))
            hasher.update(ByteBuffer(bytes: tail))
            hashed += Int64(tail.count)
        }
        return UploadHashState(hasher: hasher, size: hashed)
    }
}
