import Foundation
import Logging
import NIOCore
import OCI
import SQLKit
import Synchronization

/// The registry's source of truth: repositories, blobs and who may see them, manifests, tags,
/// referrers and upload sessions. Catalog, tag lists and referrers are indexed queries here,
/// never walks over storage.
public struct MetadataStore: Sendable {
    public let database: Database
    /// Shared by every copy of this store.
    private let defaults = StoreDefaults()

    public init(database: Database) {
        self.database = database
    }

    /// The encryption a repository gets when something other than an explicit create makes it (a
    /// push, a settings change): the registry's default domain, or nil for plain.
    public var defaultEncryption: NewRepositoryEncryption? {
        get { defaults.encryption.withLock { $0 } }
        nonmutating set { defaults.encryption.withLock { $0 = newValue } }
    }

    /// Opens the database at `url` and brings its schema up to date.
    public static func open(url: String, logger: Logger) async throws -> MetadataStore {
        let database = try await Database.open(url: url, logger: logger)
        do {
            try await Migrations.run(on: database, logger: logger)
        } catch {
            await database.close()
            throw error
        }
        return MetadataStore(database: database)
    }

    public func close() async { await database.close() }

    /// Applies any pending migrations; returns the versions applied (none when up to date).
    @discardableResult
    public func migrate(logger: Logger) async throws -> [Int] {
        try await Migrations.run(on: database, logger: logger)
    }

    // MARK: Repositories

    public func repositoryExists(_ name: RepositoryName) async throws -> Bool {
        try await database.read { sql in
            try await sql.raw("SELECT id FROM repositories WHERE name = \(bind: name.value)").first() != nil
        }
    }

    /// Repository names in ASCII order, after `last`, at most `limit`, limited to `filter` when given.
    public func listRepositories(after last: String?, limit: Int, filter: RepositoryFilter? = nil) async throws -> [String] {
        try await database.read { sql in
            var query: SQLQueryString = "SELECT name FROM repositories WHERE name > \(bind: last ?? "")"
            if let filter {
                if filter.namespaces.isEmpty && filter.repositories.isEmpty { return [] }
                var clauses: [SQLQueryString] = []
                if !filter.namespaces.isEmpty { clauses.append("namespace IN (\(binds: filter.namespaces.sorted()))") }
                if !filter.repositories.isEmpty { clauses.append("name IN (\(binds: filter.repositories.sorted()))") }
                query += " AND (" + clauses.joined(separator: " OR ") + ")"
            }
            query += " ORDER BY name LIMIT \(literal: limit)"
            return try await joinedNames(query, sql)
        }
    }

    /// Runs `pageQuery` (one `name` column, ordered by name) and returns its names, read as one
    /// aggregated value: decoding thousands of rows one by one costs several times the query.
    /// Tag and repository names cannot contain a comma, so it can separate them.
    func joinedNames(_ pageQuery: SQLQueryString, _ sql: any SQLDatabase) async throws -> [String] {
        // SQLite concatenates in the order the ordered subquery yields rows; asking group_concat to
        // sort again costs a sorter pass, so the order is checked (and mended) here instead.
        let aggregate = database.dialect == .postgres ? "string_agg(name, ',' ORDER BY name)" : "group_concat(name, ',')"
        let query: SQLQueryString = "SELECT \(unsafeRaw: aggregate) AS names FROM (" + pageQuery + ") page"
        guard let joined = try await sql.raw(query).first()?.decode(column: "names", as: String?.self), !joined.isEmpty else {
            return []
        }
        return Self.splitNames(joined)
    }

    /// Splits comma-joined names, in byte order. Works on the UTF-8 bytes: String's own split and
    /// comparisons go by Character and cost more than the query for a page of 1,000 names.
    static func splitNames(_ joined: String) -> [String] {
        var joined = joined
        return joined.withUTF8 { bytes in
            var names: [String] = []
            var inByteOrder = true
            var previous: Range<Int>?
            var start = 0
            for index in 0...bytes.count where index == bytes.count || bytes[index] == UInt8(ascii: ",") {
                let range = start..<index
                if let previous, inByteOrder {
                    inByteOrder = UnsafeBufferPointer(rebasing: bytes[previous]).lexicographicallyPrecedes(UnsafeBufferPointer(rebasing: bytes[range]))
                }
                names.append(String(decoding: UnsafeBufferPointer(rebasing: bytes[range]), as: UTF8.self))
                previous = range
                start = index + 1
            }
            if !inByteOrder { names.sort { $0.utf8.lexicographicallyPrecedes($1.utf8) } }
            return names
        }
    }

    /// Returns the id of `name`, creating the repository when it does not exist yet.
    /// The repository's id, creating it if needed. A repository created here by a push into an
    /// encrypted domain (the registry's default) gets that domain, fixed from then on.
    /// The repository's id, creating it when needed. A repository created here (by a push, not an
    /// explicit create) gets the settings of the creation template that applies, if any.
    static func ensureRepository(
        _ name: RepositoryName, _ sql: any SQLDatabase, encryption: NewRepositoryEncryption?, applyingTemplate: Bool = true
    ) async throws -> Int64 {
        if let row = try await sql.raw("SELECT id FROM repositories WHERE name = \(bind: name.value)").first() {
            return try row.decode(column: "id", as: Int64.self)
        }
        if let inserted = try await sql.raw(
            """
            INSERT INTO repositories (name, namespace, created_at)
            VALUES (\(bind: name.value), \(bind: String(name.namespace)), \(bind: Timestamp.nowMillis()))
            ON CONFLICT (name) DO NOTHING
            RETURNING id
            """
        ).first() {
            let id = try inserted.decode(column: "id", as: Int64.self)
            if applyingTemplate, let template = try await creationTemplate(for: name, sql) {
                var settings = template.settings
                if settings.encryption == nil, let encryption {
                    settings.encryption = RepositorySettings.Encryption(type: encryption.type, kmsKey: encryption.kmsKey, domain: encryption.domain)
                }
                let chosen = settings
                _ = try await updateSettings(repositoryID: id, { $0 = chosen }, sql)
                for tag in template.resourceTags where tag.count == 2 { try await putLabel(repositoryID: id, key: tag[0], value: tag[1], sql) }
                return id
            }
            if let encryption {
                try await sql.raw(
                    """
                    INSERT INTO repository_settings (repository_id, tag_mutability, scan_on_push, encryption_type, kms_key, encryption_domain, updated_at)
                    VALUES (\(bind: id), 'MUTABLE', \(bind: false), \(bind: encryption.type), \(bind: encryption.kmsKey), \(bind: encryption.domain),
                            \(bind: Timestamp.nowMillis()))
                    """
                ).run()
            }
            return id
        }
        guard let row = try await sql.raw("SELECT id FROM repositories WHERE name = \(bind: name.value)").first() else {
            throw MetadataError.internalError("repository insert returned no id")
        }
        return try row.decode(column: "id", as: Int64.self)
    }

    static func repositoryID(_ name: RepositoryName, _ sql: any SQLDatabase) async throws -> Int64? {
        try await sql.raw("SELECT id FROM repositories WHERE name = \(bind: name.value)").first()?
            .decode(column: "id", as: Int64.self)
    }

    // MARK: Blobs

    /// The blob if `repository` may see it.
    public func blob(_ digest: Digest, in repository: RepositoryName) async throws -> BlobRecord? {
        try await database.read { sql in
            let row = try await sql.raw(
                """
                SELECT b.size FROM repositories r
                JOIN repository_blobs rb ON rb.repository_id = r.id
                JOIN blobs b ON b.digest = rb.digest
                WHERE r.name = \(bind: repository.value) AND rb.digest = \(bind: digest.description)
                """
            ).first()
            return try row.map { BlobRecord(digest: digest, size: try $0.decode(column: "size", as: Int64.self)) }
        }
    }

    /// The blob if any repository holds it (for de-duplicating uploads; never exposed to clients as-is).
    public func committedBlob(_ digest: Digest) async throws -> BlobRecord? {
        try await database.read { sql in
            let row = try await sql.raw("SELECT size FROM blobs WHERE digest = \(bind: digest.description)").first()
            return try row.map { BlobRecord(digest: digest, size: try $0.decode(column: "size", as: Int64.self)) }
        }
    }

    /// Records a blob and makes it visible in `repository`. `publish`, when given, makes the bytes
    /// durable in the blob store inside the same transaction, under the digest's lock: the garbage
    /// collector deletes a blob's row and bytes under that lock too, so a blob being uploaded
    /// again can never lose its bytes to a collection running at the same moment.
    /// `endingSession`: the upload session that produced the blob, removed in the same transaction,
    /// so a crash can never leave a session whose bytes were already published (it claimed a full
    /// `Range` and its closing PUT then answered BLOB_UPLOAD_UNKNOWN).
    /// - Parameter encryption: the domain the bytes were stored for (checked against the
    ///   repository's, in the transaction: a repository created meanwhile with other encryption
    ///   refuses them) and the encrypted copy to record.
    public func linkBlob(
        _ blob: BlobRecord, to repository: RepositoryName, endingSession: String? = nil, encryption: BlobLinkEncryption = BlobLinkEncryption(),
        publish: (@Sendable (_ copyRecorded: Bool) async throws -> Void)? = nil
    ) async throws {
        try await database.transaction { sql in
            try await database.lock("blob:\(blob.digest)", in: sql)
            let repositoryID = try await Self.ensureRepository(repository, sql, encryption: defaultEncryption)
            let domain = try await Self.encryptionDomain(repositoryID: repositoryID, sql)
            guard domain == encryption.domain else {
                throw MetadataError.encryptionMismatch(
                    "\(repository) is encrypted as \(domain ?? "plain"), but these bytes were stored as \(encryption.domain ?? "plain")")
            }
            // Whether the domain already records a copy: then the stored object is that copy, and
            // this upload's is discarded; otherwise any object under the key is a leftover of a
            // commit that failed after publishing, and this one replaces it.
            var copyRecorded = false
            if let copy = encryption.copy {
                copyRecorded =
                    try await sql.raw(
                        "SELECT 1 AS found FROM encrypted_blobs WHERE domain = \(bind: copy.domain) AND digest = \(bind: copy.digest.description)"
                    ).first() != nil
            }
            if let publish { try await publish(copyRecorded) }
            if let copy = encryption.copy, !copyRecorded { try await Self.insertEncryptedBlob(copy, sql) }
            if let endingSession { try await sql.raw("DELETE FROM upload_sessions WHERE id = \(bind: endingSession)").run() }
            let now = Timestamp.nowMillis()
            try await sql.raw(
                """
                INSERT INTO blobs (digest, size, created_at, touched_at) VALUES (\(bind: blob.digest.description), \(bind: blob.size), \(bind: now), \(bind: now))
                ON CONFLICT (digest) DO UPDATE SET touched_at = excluded.touched_at
                """
            ).run()
            try await sql.raw(
                """
                INSERT INTO repository_blobs (repository_id, digest, linked_at) VALUES (\(bind: repositoryID), \(bind: blob.digest.description), \(bind: now))
                ON CONFLICT (repository_id, digest) DO UPDATE SET linked_at = excluded.linked_at
                """
            ).run()
        }
    }

    /// Refreshes a link's grace clock: a client that was just told "this blob exists" (HEAD) may
    /// rely on it in a manifest moments later, so the collector must not take it meanwhile.
    public func touchLink(_ digest: Digest, in repository: RepositoryName) async throws {
        try await database.transaction { sql in
            try await sql.raw(
                """
                UPDATE repository_blobs SET linked_at = \(bind: Timestamp.nowMillis())
                WHERE digest = \(bind: digest.description) AND repository_id = (SELECT id FROM repositories WHERE name = \(bind: repository.value))
                """
            ).run()
        }
    }

    /// When the repository's link to a blob was created or last refreshed (Unix ms), if it exists.
    public func linkTime(_ digest: Digest, in repository: RepositoryName) async throws -> Int64? {
        try await database.read { sql in
            try await sql.raw(
                """
                SELECT rb.linked_at FROM repository_blobs rb JOIN repositories r ON r.id = rb.repository_id
                WHERE r.name = \(bind: repository.value) AND rb.digest = \(bind: digest.description)
                """
            ).first()?.decode(column: "linked_at", as: Int64.self)
        }
    }

    /// Cross-repository mount: links `digest` into `target` if `source` holds it. Returns the blob, or nil.
    /// Only within one encryption domain: the target reads the same stored copy as the source. A
    /// mount across domains answers nil, and the client uploads the bytes (sealed for the target).
    public func mountBlob(
        _ digest: Digest, from source: RepositoryName, to target: RepositoryName
    ) async throws -> BlobRecord? {
        try await database.transaction { sql in
            try await database.lock("blob:\(digest)", in: sql)
            let row = try await sql.raw(
                """
                SELECT b.size, s.encryption_domain FROM repositories r
                JOIN repository_blobs rb ON rb.repository_id = r.id
                JOIN blobs b ON b.digest = rb.digest
                LEFT JOIN repository_settings s ON s.repository_id = r.id
                WHERE r.name = \(bind: source.value) AND rb.digest = \(bind: digest.description)
                """
            ).first()
            guard let row else { return nil }
            let size = try row.decode(column: "size", as: Int64.self)
            let sourceDomain = try row.decode(column: "encryption_domain", as: String?.self)
            let repositoryID = try await Self.ensureRepository(target, sql, encryption: defaultEncryption)
            guard try await Self.encryptionDomain(repositoryID: repositoryID, sql) == sourceDomain else { return nil }
            try await sql.raw(
                """
                INSERT INTO repository_blobs (repository_id, digest, linked_at) VALUES (\(bind: repositoryID), \(bind: digest.description), \(bind: Timestamp.nowMillis()))
                ON CONFLICT (repository_id, digest) DO UPDATE SET linked_at = excluded.linked_at
                """
            ).run()
            return BlobRecord(digest: digest, size: size)
        }
    }

    /// Removes the blob from `repository`'s view. The bytes stay until garbage collection.
    /// Returns false when the repository did not hold it.
    public func unlinkBlob(_ digest: Digest, from repository: RepositoryName) async throws -> Bool {
        try await database.transaction { sql in
            guard let repositoryID = try await Self.repositoryID(repository, sql) else { return false }
            let removed = try await sql.raw(
                """
                DELETE FROM repository_blobs WHERE repository_id = \(bind: repositoryID) AND digest = \(bind: digest.description)
                RETURNING digest
                """
            ).all()
            return !removed.isEmpty
        }
    }

    // MARK: Upload sessions

    /// Records a new session opened by `owner` (nil when authentication is off). With
    /// `maximumPerOwner`, refuses (`MetadataError.limitReached`) an owner who already holds that many.
    public func createUpload(_ upload: UploadRecord, owner: String? = nil, maximumPerOwner: Int? = nil) async throws {
        try await database.transaction { sql in
            if let owner, let maximumPerOwner {
                let open =
                    try await sql.raw("SELECT COUNT(*) AS open FROM upload_sessions WHERE owner = \(bind: owner)").first()?
                    .decode(column: "open", as: Int.self) ?? 0
                guard open < maximumPerOwner else { throw MetadataError.limitReached("\(owner) already has \(open) upload sessions open") }
            }
            try await sql.raw(
                """
                INSERT INTO upload_sessions (id, repository, size, algorithm, created_at, updated_at, owner, encryption)
                VALUES (\(bind: upload.id), \(bind: upload.repository), \(bind: upload.size), \(bind: upload.algorithm.rawValue), \(bind: upload.createdAt),
                        \(bind: upload.updatedAt), \(bind: owner), \(bind: upload.encryption))
                """
            ).run()
        }
    }

    /// Bytes held by open upload sessions of a namespace's repositories, except `excluding`'s:
    /// they count against the namespace's quota before they become blobs.
    public func inFlightUploadBytes(namespace: String, excluding: String? = nil) async throws -> Int64 {
        try await database.read { sql in
            try await sql.raw(
                """
                SELECT CAST(COALESCE(SUM(size), 0) AS BIGINT) AS total FROM upload_sessions
                WHERE (repository = \(bind: namespace) OR substr(repository, 1, \(bind: namespace.utf8.count + 1)) = \(bind: namespace + "/"))
                  AND id <> \(bind: excluding ?? "")
                """
            ).first()?.decode(column: "total", as: Int64.self) ?? 0
        }
    }

    public func upload(_ id: String) async throws -> UploadRecord? {
        try await database.read { sql in
            guard let row = try await sql.raw("SELECT * FROM upload_sessions WHERE id = \(bind: id)").first() else { return nil }
            return try Self.uploadRecord(row)
        }
    }

    /// Durable before the 202 that reports it: an acknowledged chunk survives a power cut (its
    /// bytes were fsynced first). The size is still checked against the bytes when the session is
    /// next used (Registry.hashState), in case a disk lies.
    /// An encrypted upload's sealed tail changes with its size, in the same write.
    public func updateUpload(_ id: String, size: Int64, sealedTail: String? = nil) async throws {
        try await database.transaction { sql in
            try await sql.raw(
                """
                UPDATE upload_sessions SET size = \(bind: size), sealed_tail = \(bind: sealedTail), updated_at = \(bind: Timestamp.nowMillis())
                WHERE id = \(bind: id)
                """
            ).run()
        }
    }

    /// Returns false when there was no such session.
    @discardableResult
    public func deleteUpload(_ id: String) async throws -> Bool {
        try await database.transaction { sql in
            try await !sql.raw("DELETE FROM upload_sessions WHERE id = \(bind: id) RETURNING id").all().isEmpty
        }
    }

    /// Sessions not touched since `cutoff` (Unix ms): abandoned uploads.
    public func uploads(notUpdatedSince cutoff: Int64, limit: Int) async throws -> [UploadRecord] {
        try await database.read { sql in
            try await sql.raw(
                """
                SELECT * FROM upload_sessions WHERE updated_at < \(bind: cutoff) ORDER BY updated_at LIMIT \(literal: limit)
                """
            ).all().map(Self.uploadRecord)
        }
    }

    static func uploadRecord(_ row: any SQLRow) throws -> UploadRecord {
        let algorithmName = try row.decode(column: "algorithm", as: String.self)
        return UploadRecord(
            id: try row.decode(column: "id", as: String.self),
            repository: try row.decode(column: "repository", as: String.self),
            size: try row.decode(column: "size", as: Int64.self),
            algorithm: DigestAlgorithm(rawValue: algorithmName) ?? .sha256,
            createdAt: try row.decode(column: "created_at", as: Int64.self),
            updatedAt: try row.decode(column: "updated_at", as: Int64.self),
            encryption: try row.decode(column: "encryption", as: String?.self),
            sealedTail: try row.decode(column: "sealed_tail", as: String?.self)
        )
    }

    // MARK: Manifests

    public func manifest(_ digest: Digest, in repository: RepositoryName) async throws -> ManifestRecord? {
        try await database.read { sql in
            let row = try await sql.raw(
                """
                SELECT m.* FROM manifests m JOIN repositories r ON r.id = m.repository_id
                WHERE r.name = \(bind: repository.value) AND m.digest = \(bind: digest.description)
                """
            ).first()
            return try row.map(Self.manifestRecord)
        }
    }

    /// The manifests of `repository` that use `blob` (as config or layer), newest first, at most
    /// `limit`: what a pull gate judges before serving the blob.
    public func manifests(using blob: Digest, in repository: RepositoryName, limit: Int) async throws -> [ManifestRecord] {
        try await database.read { sql in
            try await sql.raw(
                """
                SELECT m.* FROM manifest_references x
                JOIN repositories r ON r.id = x.repository_id
                JOIN manifests m ON m.repository_id = x.repository_id AND m.digest = x.manifest_digest
                WHERE x.child_digest = \(bind: blob.description) AND x.kind = 'blob' AND r.name = \(bind: repository.value)
                ORDER BY m.pushed_at DESC LIMIT \(literal: max(1, limit))
                """
            ).all().map(Self.manifestRecord)
        }
    }

    /// The manifest a tag points at, in one query (the cache-miss path of a pull by tag).
    public func manifest(tagged tag: Tag, in repository: RepositoryName) async throws -> ManifestRecord? {
        try await database.read { sql in
            let row = try await sql.raw(
                """
                SELECT m.* FROM tags t
                JOIN repositories r ON r.id = t.repository_id
                JOIN manifests m ON m.repository_id = t.repository_id AND m.digest = t.digest
                WHERE r.name = \(bind: repository.value) AND t.name = \(bind: tag.value)
                """
            ).first()
            return try row.map(Self.manifestRecord)
        }
    }

    private static func manifestRecord(_ row: any SQLRow) throws -> ManifestRecord {
        let digestString = try row.decode(column: "digest", as: String.self)
        guard let digest = Digest(digestString) else { throw MetadataError.internalError("stored digest '\(digestString)' is invalid") }
        let subject = try row.decodeNil(column: "subject_digest") ? nil : Digest(try row.decode(column: "subject_digest", as: String.self))
        return ManifestRecord(
            digest: digest,
            mediaType: try row.decode(column: "media_type", as: String.self),
            size: try row.decode(column: "size", as: Int64.self),
            content: try row.decode(column: "content", as: ByteBuffer.self),
            sealedWith: try row.decode(column: "sealed_with", as: String?.self),
            subject: subject,
            artifactType: try row.decode(column: "artifact_type", as: String?.self),
            pushedAt: try row.decode(column: "pushed_at", as: Int64.self),
            lastPulledAt: try row.decode(column: "last_pulled_at", as: Int64?.self)
        )
    }

    /// Stores a validated manifest and moves its tags, atomically. Referenced blobs and (unless
    /// sparse) child manifests must be in the repository, checked in the same transaction so a
    /// concurrent delete cannot slip between check and insert.
    /// Returns the tags that changed.
    public func putManifest(_ manifest: NewManifest) async throws -> [TagChange] {
        try await transactionAppendingEvents { sql in
            // The collector unlinks unreferenced blobs under this lock; holding it here means a
            // blob checked below cannot be unlinked before this manifest's references are stored.
            try await database.lock("repository:\(manifest.repository)", in: sql)
            let repositoryID = try await Self.ensureRepository(manifest.repository, sql, encryption: defaultEncryption)
            let domain = try await Self.encryptionDomain(repositoryID: repositoryID, sql)
            let sealedDomain = manifest.sealedWith.flatMap { try? JSONDecoder().decode([String: JSONValue].self, from: Data($0.utf8))["domain"]?.string }
            guard domain == sealedDomain else {
                throw MetadataError.encryptionMismatch(
                    "\(manifest.repository) is encrypted as \(domain ?? "plain"), but the manifest was sealed as \(sealedDomain ?? "plain")")
            }
            try await Self.checkReferences(of: manifest, repositoryID: repositoryID, sql)
            let now = Timestamp.nowMillis()
            let digest = manifest.digest.description
            let inserted = try await sql.raw(
                """
                INSERT INTO manifests (repository_id, digest, media_type, artifact_type, size, content, sealed_with, subject_digest, annotations, pushed_at)
                VALUES (\(bind: repositoryID), \(bind: digest), \(bind: manifest.mediaType), \(bind: manifest.artifactType),
                        \(bind: manifest.plainSize ?? Int64(manifest.content.readableBytes)), \(bind: manifest.content), \(bind: manifest.sealedWith),
                        \(bind: manifest.subject?.description), \(bind: manifest.annotationsJSON), \(bind: now))
                ON CONFLICT (repository_id, digest) DO NOTHING
                RETURNING digest
                """
            ).all()
            if !inserted.isEmpty {
                var references: [(String, String)] = manifest.blobs.map { ($0.digest.description, "blob") }
                references += manifest.children.map { ($0.description, "manifest") }
                for chunk in Self.deduplicated(references).chunked(200) {
                    var query: SQLQueryString = "INSERT INTO manifest_references (repository_id, manifest_digest, child_digest, kind) VALUES "
                    for (i, (child, kind)) in chunk.enumerated() {
                        query += "\(unsafeRaw: i == 0 ? "" : ", ")(\(bind: repositoryID), \(bind: digest), \(bind: child), \(bind: kind))"
                    }
                    query += " ON CONFLICT DO NOTHING"
                    try await sql.raw(query).run()
                }
            }
            var changes: [TagChange] = []
            for tag in manifest.tags {
                if let change = try await Self.moveTag(
                    tag, to: manifest.digest, repositoryID: repositoryID, at: now,
                    immutable: manifest.tagMutability.isImmutable(tag.value), sql)
                {
                    changes.append(change)
                }
            }
            // The events, in the same transaction: a push once (naming its first tag), and each
            // tag that left another manifest for this one.
            let size = manifest.plainSize ?? Int64(manifest.content.readableBytes)
            try await Self.appendEvent(
                RegistryEvent(
                    kind: .push, repository: manifest.repository.value, digest: digest, tag: manifest.tags.first?.value,
                    mediaType: manifest.mediaType, size: size, actor: manifest.actor, occurredAt: now), sql)
            for change in changes where change.previous != nil && change.previous != manifest.digest {
                try await Self.appendEvent(
                    RegistryEvent(
                        kind: .tagMove, repository: manifest.repository.value, digest: digest, tag: change.tag, mediaType: manifest.mediaType,
                        size: size, actor: manifest.actor, occurredAt: now), sql)
            }
            return changes
        }
    }

    private static func deduplicated(_ references: [(String, String)]) -> [(String, String)] {
        var seen = Set<String>()
        return references.filter { seen.insert("\($0.0) \($0.1)").inserted }
    }

    private static func checkReferences(of manifest: NewManifest, repositoryID: Int64, _ sql: any SQLDatabase) async throws {
        let blobDigests = Array(Set(manifest.blobs.map(\.digest.description)))
        var sizes: [String: Int64] = [:]
        for chunk in blobDigests.chunked(500) {
            let rows = try await sql.raw(
                """
                SELECT b.digest, b.size FROM repository_blobs rb JOIN blobs b ON b.digest = rb.digest
                WHERE rb.repository_id = \(bind: repositoryID) AND rb.digest IN (\(binds: Array(chunk)))
                """
            ).all()
            for row in rows {
                sizes[try row.decode(column: "digest", as: String.self)] = try row.decode(column: "size", as: Int64.self)
            }
        }
        for descriptor in manifest.blobs {
            guard let size = sizes[descriptor.digest.description] else {
                throw MetadataError.missingBlob(descriptor.digest)
            }
            guard size == descriptor.size else {
                throw MetadataError.sizeMismatch(descriptor.digest, declared: descriptor.size, actual: size)
            }
        }
        if manifest.allowMissingChildren || manifest.children.isEmpty { return }
        let childDigests = Array(Set(manifest.children.map(\.description)))
        var present = Set<String>()
        for chunk in childDigests.chunked(500) {
            let rows = try await sql.raw(
                """
                SELECT digest FROM manifests WHERE repository_id = \(bind: repositoryID) AND digest IN (\(binds: Array(chunk)))
                """
            ).all()
            for row in rows { present.insert(try row.decode(column: "digest", as: String.self)) }
        }
        for child in manifest.children where !present.contains(child.description) {
            throw MetadataError.missingManifest(child)
        }
    }

    /// Points `tag` at `digest`, recording the move in the tag history. Nil when it already pointed there.
    private static func moveTag(
        _ tag: Tag, to digest: Digest, repositoryID: Int64, at now: Int64, immutable: Bool, _ sql: any SQLDatabase
    ) async throws -> TagChange? {
        let previousRow = try await sql.raw(
            """
            SELECT digest FROM tags WHERE repository_id = \(bind: repositoryID) AND name = \(bind: tag.value)
            """
        ).first()
        let previous = try previousRow.flatMap { Digest(try $0.decode(column: "digest", as: String.self)) }
        if previous == digest { return nil }
        if previous != nil, immutable { throw MetadataError.immutableTag(tag.value) }
        try await sql.raw(
            """
            INSERT INTO tags (repository_id, name, digest, updated_at) VALUES (\(bind: repositoryID), \(bind: tag.value), \(bind: digest.description), \(bind: now))
            ON CONFLICT (repository_id, name) DO UPDATE SET digest = excluded.digest, updated_at = excluded.updated_at
            """
        ).run()
        try await sql.raw(
            """
            INSERT INTO tag_history (repository_id, tag, digest, previous_digest, changed_at)
            VALUES (\(bind: repositoryID), \(bind: tag.value), \(bind: digest.description), \(bind: previous?.description), \(bind: now))
            """
        ).run()
        return TagChange(tag: tag.value, previous: previous, current: digest)
    }

    /// Deletes a manifest and every tag pointing at it. Returns the removed tags, or nil if the
    /// repository did not hold the manifest. Blob bytes stay until garbage collection.
    public func deleteManifest(_ digest: Digest, in repository: RepositoryName, actor: String? = nil) async throws -> [String]? {
        try await transactionAppendingEvents { sql in
            guard let repositoryID = try await Self.repositoryID(repository, sql) else { return nil }
            let exists = try await sql.raw(
                """
                SELECT digest FROM manifests WHERE repository_id = \(bind: repositoryID) AND digest = \(bind: digest.description)
                """
            ).first()
            guard exists != nil else { return nil }
            let now = Timestamp.nowMillis()
            let removedTags = try await sql.raw(
                """
                DELETE FROM tags WHERE repository_id = \(bind: repositoryID) AND digest = \(bind: digest.description) RETURNING name
                """
            ).all().map { try $0.decode(column: "name", as: String.self) }
            for tag in removedTags {
                try await sql.raw(
                    """
                    INSERT INTO tag_history (repository_id, tag, digest, previous_digest, changed_at)
                    VALUES (\(bind: repositoryID), \(bind: tag), NULL, \(bind: digest.description), \(bind: now))
                    """
                ).run()
            }
            try await sql.raw(
                """
                DELETE FROM manifest_references WHERE repository_id = \(bind: repositoryID) AND manifest_digest = \(bind: digest.description)
                """
            ).run()
            try await sql.raw(
                """
                DELETE FROM manifests WHERE repository_id = \(bind: repositoryID) AND digest = \(bind: digest.description)
                """
            ).run()
            try await Self.appendEvent(
                RegistryEvent(kind: .delete, repository: repository.value, digest: digest.description, actor: actor, occurredAt: now), sql)
            return removedTags.sorted()
        }
    }

    // MARK: Tags

    public func resolveTag(_ tag: Tag, in repository: RepositoryName) async throws -> Digest? {
        try await database.read { sql in
            let row = try await sql.raw(
                """
                SELECT t.digest FROM tags t JOIN repositories r ON r.id = t.repository_id
                WHERE r.name = \(bind: repository.value) AND t.name = \(bind: tag.value)
                """
            ).first()
            return try row.flatMap { Digest(try $0.decode(column: "digest", as: String.self)) }
        }
    }

    /// Removes a tag (the manifest stays). Returns the digest it pointed at, or nil if there was no such tag.
    public func deleteTag(_ tag: Tag, in repository: RepositoryName, actor: String? = nil) async throws -> Digest? {
        try await transactionAppendingEvents { sql in
            guard let repositoryID = try await Self.repositoryID(repository, sql) else { return nil }
            let row = try await sql.raw(
                """
                DELETE FROM tags WHERE repository_id = \(bind: repositoryID) AND name = \(bind: tag.value) RETURNING digest
                """
            ).first()
            guard let row, let digest = Digest(try row.decode(column: "digest", as: String.self)) else { return nil }
            try await sql.raw(
                """
                INSERT INTO tag_history (repository_id, tag, digest, previous_digest, changed_at)
                VALUES (\(bind: repositoryID), \(bind: tag.value), NULL, \(bind: digest.description), \(bind: Timestamp.nowMillis()))
                """
            ).run()
            try await Self.appendEvent(
                RegistryEvent(
                    kind: .delete, repository: repository.value, digest: digest.description, tag: tag.value, actor: actor,
                    occurredAt: Timestamp.nowMillis()), sql)
            return digest
        }
    }

    /// Up to `limit` of a repository's tags after `last`, in byte order; nil when the repository
    /// does not exist. Read as one aggregated value: row by row, 10,000 tags take about 10 ms to
    /// decode, one comma-joined string (tag names hold no commas) a third of that.
    public func listTags(in repository: RepositoryName, after last: String?, limit: Int) async throws -> [String]? {
        try await database.read { sql -> [String]? in
            guard let repositoryID = try await Self.repositoryID(repository, sql) else { return nil }
            return try await joinedNames(
                """
                SELECT name FROM tags WHERE repository_id = \(bind: repositoryID) AND name > \(bind: last ?? "")
                ORDER BY name LIMIT \(literal: limit)
                """, sql)
        }
    }

    /// The recorded moves of a tag, newest first.
    public func tagHistory(_ tag: Tag, in repository: RepositoryName, limit: Int = 100) async throws -> [TagChange] {
        try await database.read { sql in
            guard let repositoryID = try await Self.repositoryID(repository, sql) else { return [] }
            return try await sql.raw(
                """
                SELECT digest, previous_digest FROM tag_history WHERE repository_id = \(bind: repositoryID) AND tag = \(bind: tag.value)
                ORDER BY id DESC LIMIT \(literal: limit)
                """
            ).all().map { row in
                TagChange(
                    tag: tag.value,
                    previous: try row.decode(column: "previous_digest", as: String?.self).flatMap { Digest($0) },
                    current: try row.decode(column: "digest", as: String?.self).flatMap { Digest($0) }
                )
            }
        }
    }

    // MARK: Referrers

    /// Manifests in `repository` whose subject is `subject`, optionally only of one artifact type.
    public func referrers(of subject: Digest, in repository: RepositoryName, artifactType: String?) async throws -> [ReferrerRecord] {
        try await database.read { sql in
            var query: SQLQueryString = """
                SELECT m.digest, m.media_type, m.size, m.artifact_type, m.annotations FROM manifests m
                JOIN repositories r ON r.id = m.repository_id
                WHERE r.name = \(bind: repository.value) AND m.subject_digest = \(bind: subject.description)
                """
            if let artifactType { query += " AND m.artifact_type = \(bind: artifactType)" }
            query += " ORDER BY m.pushed_at, m.digest"
            return try await sql.raw(query).all().compactMap { row in
                guard let digest = Digest(try row.decode(column: "digest", as: String.self)) else { return nil }
                return ReferrerRecord(
                    digest: digest,
                    mediaType: try row.decode(column: "media_type", as: String.self),
                    size: try row.decode(column: "size", as: Int64.self),
                    artifactType: try row.decode(column: "artifact_type", as: String?.self),
                    annotationsJSON: try row.decode(column: "annotations", as: String?.self)
                )
            }
        }
    }

    // MARK: Pull times

    /// Records when manifests were last pulled, many at once (pulls are batched, never one write each).
    public func recordPulls(_ pulls: [(repository: String, digest: Digest, at: Int64)]) async throws {
        guard !pulls.isEmpty else { return }
        try await database.transaction { sql in
            for pull in pulls {
                try await sql.raw(
                    """
                    UPDATE manifests SET last_pulled_at = \(bind: pull.at)
                    WHERE digest = \(bind: pull.digest.description)
                      AND repository_id = (SELECT id FROM repositories WHERE name = \(bind: pull.repository))
                      AND (last_pulled_at IS NULL OR last_pulled_at < \(bind: pull.at))
                    """
                ).run()
            }
        }
    }
}

/// The repositories a caller may see: those in these namespaces, plus these repositories.
public struct RepositoryFilter: Sendable, Equatable {
    public var namespaces: Set<String>
    public var repositories: Set<String>

    public init(namespaces: Set<String>, repositories: Set<String>) {
        self.namespaces = namespaces
        self.repositories = repositories
    }
}

public enum MetadataError: Error, Sendable, Equatable, CustomStringConvertible {
    case missingBlob(Digest)
    case missingManifest(Digest)
    case sizeMismatch(Digest, declared: Int64, actual: Int64)
    case immutableTag(String)
    case invalid(String)
    /// Bytes stored for one encryption domain offered to a repository of another.
    case encryptionMismatch(String)
    case conflict(String)
    /// A bound on open resources (upload sessions per identity) was reached.
    case limitReached(String)
    case internalError(String)

    public var description: String {
        switch self {
        case .immutableTag(let tag): "tag '\(tag)' is immutable"
        case .invalid(let message), .conflict(let message), .limitReached(let message), .encryptionMismatch(let message): message
        case .missingBlob(let digest): "blob \(digest) is not in the repository"
        case .missingManifest(let digest): "manifest \(digest) is not in the repository"
        case .sizeMismatch(let digest, let declared, let actual): "blob \(digest) has size \(actual), but the manifest declares \(declared)"
        case .internalError(let message): message
        }
    }
}

extension Array {
    func chunked(_ size: Int) -> [ArraySlice<Element>] {
        stride(from: 0, to: count, by: size).map { self[$0..<Swift.min($0 + size, count)] }
    }
}

final class StoreDefaults: Sendable {
    let encryption = Mutex<NewRepositoryEncryption?>(nil)
}
