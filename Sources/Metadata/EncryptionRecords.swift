import Foundation
import OCI
import SQLKit

/// One domain's encrypted copy of a blob.
public struct EncryptedBlobRecord: Sendable, Equatable {
    public var domain: String
    public var digest: Digest
    /// The digest-shaped key the stored object has in the blob store.
    public var objectKey: Digest
    /// The object's data keys, wrapped (the registry's encoding).
    public var wrappedKeys: String
    public var segmentSize: Int
    public var createdAt: Int64

    public init(domain: String, digest: Digest, objectKey: Digest, wrappedKeys: String, segmentSize: Int, createdAt: Int64) {
        self.domain = domain
        self.digest = digest
        self.objectKey = objectKey
        self.wrappedKeys = wrappedKeys
        self.segmentSize = segmentSize
        self.createdAt = createdAt
    }
}

/// What a blob link knows of encryption (see `MetadataStore.linkBlob`). The default is plain bytes.
public struct BlobLinkEncryption: Sendable {
    /// The domain the bytes were stored for; nil for plain bytes.
    public var domain: String?
    /// The encrypted copy to record with the link.
    public var copy: EncryptedBlobRecord?

    public init(domain: String? = nil, copy: EncryptedBlobRecord? = nil) {
        self.domain = domain
        self.copy = copy
    }
}

/// The encryption to give a repository a push creates (the registry's default domain).
public struct NewRepositoryEncryption: Sendable, Equatable {
    public var type: String
    public var kmsKey: String?
    public var domain: String

    public init(type: String, kmsKey: String?, domain: String) {
        self.type = type
        self.kmsKey = kmsKey
        self.domain = domain
    }
}

extension MetadataStore {
    // MARK: Domains of repositories

    /// The domain a repository's content is encrypted in: nil when it is stored plain, or when the
    /// repository does not exist (`exists` tells the two apart).
    /// A repository's encryption domain; for one that does not exist yet, the domain its creation
    /// template gives it (nil: the registry's default applies).
    public func encryptionDomain(of repository: RepositoryName) async throws -> (exists: Bool, domain: String?) {
        try await database.read { sql in
            guard
                let row = try await sql.raw(
                    """
                    SELECT r.id, s.encryption_domain FROM repositories r LEFT JOIN repository_settings s ON s.repository_id = r.id
                    WHERE r.name = \(bind: repository.value)
                    """
                ).first()
            else { return (false, try await Self.creationTemplate(for: repository, sql)?.settings.encryption?.domain) }
            return (true, try row.decode(column: "encryption_domain", as: String?.self))
        }
    }

    static func encryptionDomain(repositoryID: Int64, _ sql: any SQLDatabase) async throws -> String? {
        try await sql.raw("SELECT encryption_domain FROM repository_settings WHERE repository_id = \(bind: repositoryID)").first()?
            .decode(column: "encryption_domain", as: String?.self)
    }

    // MARK: Encrypted copies of blobs

    public func encryptedBlob(_ digest: Digest, domain: String) async throws -> EncryptedBlobRecord? {
        try await database.read { sql in
            try await sql.raw("SELECT * FROM encrypted_blobs WHERE domain = \(bind: domain) AND digest = \(bind: digest.description)").first()
                .map(Self.encryptedBlob)
        }
    }

    /// A page of a domain's copies (all domains when nil), in digest order after `after`: rotation walks them.
    public func encryptedBlobs(domain: String?, after: (String, String)?, limit: Int) async throws -> [EncryptedBlobRecord] {
        try await database.read { sql in
            let (afterDomain, afterDigest) = after ?? ("", "")
            return try await sql.raw(
                """
                SELECT * FROM encrypted_blobs
                WHERE (\(bind: domain ?? "") = '' OR domain = \(bind: domain ?? ""))
                  AND (domain > \(bind: afterDomain) OR (domain = \(bind: afterDomain) AND digest > \(bind: afterDigest)))
                ORDER BY domain, digest LIMIT \(literal: limit)
                """
            ).all().map(Self.encryptedBlob)
        }
    }

    /// Stores re-wrapped keys, unless the row changed since it was read (then the caller reads again).
    public func replaceWrappedKeys(_ record: EncryptedBlobRecord, with wrapped: String) async throws -> Bool {
        try await database.transaction { sql in
            try await !sql.raw(
                """
                UPDATE encrypted_blobs SET wrapped_keys = \(bind: wrapped), rewrapped_at = \(bind: Timestamp.nowMillis())
                WHERE domain = \(bind: record.domain) AND digest = \(bind: record.digest.description) AND wrapped_keys = \(bind: record.wrappedKeys)
                RETURNING digest
                """
            ).all().isEmpty
        }
    }

    /// Rewraps upload sessions' keys too (they hold data keys until they commit).
    public func encryptedUploads() async throws -> [UploadRecord] {
        try await database.read { sql in
            try await sql.raw("SELECT * FROM upload_sessions WHERE encryption IS NOT NULL").all().map(Self.uploadRecord)
        }
    }

    public func replaceUploadEncryption(_ id: String, from old: String, to new: String) async throws -> Bool {
        try await database.transaction { sql in
            try await !sql.raw(
                "UPDATE upload_sessions SET encryption = \(bind: new) WHERE id = \(bind: id) AND encryption = \(bind: old) RETURNING id"
            ).all().isEmpty
        }
    }

    /// Which of `keys` are stored objects of encrypted copies (the orphan scan keeps them).
    public func recordedObjectKeys(among keys: [Digest]) async throws -> Set<Digest> {
        guard !keys.isEmpty else { return [] }
        return try await database.read { sql in
            var found = Set<Digest>()
            for chunk in keys.map(\.description).chunked(500) {
                for row in try await sql.raw("SELECT object_key FROM encrypted_blobs WHERE object_key IN (\(binds: Array(chunk)))").all() {
                    if let digest = Digest(try row.decode(column: "object_key", as: String.self)) { found.insert(digest) }
                }
            }
            return found
        }
    }

    /// Copies no repository of their domain links any more, recorded before `cutoff`: the collector
    /// deletes them (the plain blob row may live on for other repositories).
    public func unneededEncryptedBlobs(before cutoff: Int64, limit: Int) async throws -> [EncryptedBlobRecord] {
        try await database.read { sql in
            try await sql.raw(
                """
                SELECT e.* FROM encrypted_blobs e
                WHERE e.created_at < \(bind: cutoff) AND NOT EXISTS (
                    SELECT 1 FROM repository_blobs rb JOIN repository_settings s ON s.repository_id = rb.repository_id
                    WHERE rb.digest = e.digest AND s.encryption_domain = e.domain)
                ORDER BY e.created_at LIMIT \(literal: limit)
                """
            ).all().map(Self.encryptedBlob)
        }
    }

    /// Deletes the rows of `records` that are still unneeded, running `remove` on those (the
    /// stored objects go to the trash) inside the same transaction, under each blob's lock.
    public func deleteUnneededEncryptedBlobs(
        _ records: [EncryptedBlobRecord], before cutoff: Int64, remove: @Sendable ([Digest]) async throws -> Void
    ) async throws -> [EncryptedBlobRecord] {
        guard !records.isEmpty else { return [] }
        return try await database.transaction { sql in
            var deleted: [EncryptedBlobRecord] = []
            for record in records {
                try await database.lock("blob:\(record.digest)", in: sql)
                let gone = try await sql.raw(
                    """
                    DELETE FROM encrypted_blobs AS e
                    WHERE e.domain = \(bind: record.domain) AND e.digest = \(bind: record.digest.description) AND e.created_at < \(bind: cutoff)
                      AND NOT EXISTS (
                        SELECT 1 FROM repository_blobs rb JOIN repository_settings s ON s.repository_id = rb.repository_id
                        WHERE rb.digest = e.digest AND s.encryption_domain = e.domain)
                    RETURNING digest
                    """
                ).all()
                if !gone.isEmpty { deleted.append(record) }
            }
            try await remove(deleted.map(\.objectKey))
            return deleted
        }
    }

    static func encryptedBlob(_ row: any SQLRow) throws -> EncryptedBlobRecord {
        func digest(_ column: String) throws -> Digest {
            let text = try row.decode(column: column, as: String.self)
            guard let digest = Digest(text) else { throw MetadataError.internalError("stored \(column) \(text) is not a digest") }
            return digest
        }
        return EncryptedBlobRecord(
            domain: try row.decode(column: "domain", as: String.self), digest: try digest("digest"), objectKey: try digest("object_key"),
            wrappedKeys: try row.decode(column: "wrapped_keys", as: String.self),
            segmentSize: try row.decode(column: "segment_size", as: Int.self), createdAt: try row.decode(column: "created_at", as: Int64.self))
    }

    static func insertEncryptedBlob(_ record: EncryptedBlobRecord, _ sql: any SQLDatabase) async throws {
        try await sql.raw(
            """
            INSERT INTO encrypted_blobs (domain, digest, object_key, wrapped_keys, segment_size, created_at)
            VALUES (\(bind: record.domain), \(bind: record.digest.description), \(bind: record.objectKey.description), \(bind: record.wrappedKeys),
                    \(bind: record.segmentSize), \(bind: record.createdAt))
            ON CONFLICT (domain, digest) DO NOTHING
            """
        ).run()
    }

    /// Whether a repository storing plain bytes links the blob, or none links it: then its plain
    /// file must exist. (A blob only encrypted repositories hold has no plain file.)
    public func needsPlainFile(_ digest: Digest) async throws -> Bool {
        try await database.read { sql in
            let links = try await sql.raw(
                """
                SELECT s.encryption_domain FROM repository_blobs rb LEFT JOIN repository_settings s ON s.repository_id = rb.repository_id
                WHERE rb.digest = \(bind: digest.description)
                """
            ).all()
            if links.isEmpty {
                // Unlinked, awaiting collection: plain unless an encrypted copy is all there ever was.
                return try await sql.raw("SELECT 1 AS found FROM encrypted_blobs WHERE digest = \(bind: digest.description)").first() == nil
            }
            return try links.contains { try $0.decode(column: "encryption_domain", as: String?.self) == nil }
        }
    }

    /// Blobs that repositories hold, but only encrypted ones, recorded before `cutoff`, in digest
    /// order after `after`: their plain file (left by a plain repository that let go of them) is
    /// not needed, and is plaintext of an encrypted repository's content at rest.
    public func blobsHeldOnlyEncrypted(before cutoff: Int64, after: String, limit: Int) async throws -> [Digest] {
        try await database.read { sql in
            try await sql.raw(
                """
                SELECT b.digest FROM blobs b
                WHERE b.digest > \(bind: after) AND b.created_at < \(bind: cutoff)
                  AND EXISTS (SELECT 1 FROM encrypted_blobs e WHERE e.digest = b.digest)
                  AND EXISTS (SELECT 1 FROM repository_blobs rb WHERE rb.digest = b.digest)
                  AND NOT EXISTS (
                    SELECT 1 FROM repository_blobs rb LEFT JOIN repository_settings s ON s.repository_id = rb.repository_id
                    WHERE rb.digest = b.digest AND s.encryption_domain IS NULL)
                ORDER BY b.digest LIMIT \(literal: limit)
                """
            ).all().compactMap { Digest(try $0.decode(column: "digest", as: String.self)) }
        }
    }

    /// Runs `body` under the blob's lock if no plain repository holds it (a plain push that links
    /// it takes the same lock, so its file cannot be removed under it).
    public func whileNoPlainRepositoryHolds(_ digest: Digest, _ body: @Sendable () async throws -> Void) async throws {
        try await database.transaction { sql in
            try await database.lock("blob:\(digest)", in: sql)
            let plain = try await sql.raw(
                """
                SELECT 1 AS found FROM repository_blobs rb LEFT JOIN repository_settings s ON s.repository_id = rb.repository_id
                WHERE rb.digest = \(bind: digest.description) AND s.encryption_domain IS NULL
                """
            ).first()
            if plain == nil { try await body() }
        }
    }

    /// The plaintext size recorded for a blob.
    public func recordedBlobSize(_ digest: Digest) async throws -> Int64? {
        try await database.read { sql in
            try await sql.raw("SELECT size FROM blobs WHERE digest = \(bind: digest.description)").first()?.decode(column: "size", as: Int64.self)
        }
    }

    // MARK: The local key service's keys

    public func encryptionKey(_ keyID: String) async throws -> EncryptionKeyRow? {
        try await database.read { sql in
            try await sql.raw("SELECT * FROM encryption_keys WHERE key_id = \(bind: keyID)").first().map(Self.encryptionKey)
        }
    }

    public func createEncryptionKey(_ key: EncryptionKeyRow) async throws -> EncryptionKeyRow {
        try await database.transaction { sql in
            try await sql.raw(
                """
                INSERT INTO encryption_keys (key_id, state, versions, created_at, updated_at)
                VALUES (\(bind: key.keyID), \(bind: key.state), \(bind: Self.encodeVersions(key.versions)), \(bind: key.createdAt), \(bind: key.updatedAt))
                ON CONFLICT (key_id) DO NOTHING
                """
            ).run()
            guard let row = try await sql.raw("SELECT * FROM encryption_keys WHERE key_id = \(bind: key.keyID)").first() else {
                throw MetadataError.internalError("key \(key.keyID) vanished after its insert")
            }
            return try Self.encryptionKey(row)
        }
    }

    public func updateEncryptionKey(_ key: EncryptionKeyRow) async throws {
        try await database.transaction { sql in
            try await sql.raw(
                """
                UPDATE encryption_keys SET state = \(bind: key.state), versions = \(bind: Self.encodeVersions(key.versions)), updated_at = \(bind: key.updatedAt)
                WHERE key_id = \(bind: key.keyID)
                """
            ).run()
        }
    }

    public func encryptionKeys() async throws -> [EncryptionKeyRow] {
        try await database.read { sql in
            try await sql.raw("SELECT * FROM encryption_keys ORDER BY key_id").all().map(Self.encryptionKey)
        }
    }

    private static func encodeVersions(_ versions: [String]) -> String {
        String(decoding: (try? JSONEncoder().encode(versions)) ?? Data("[]".utf8), as: UTF8.self)
    }

    static func encryptionKey(_ row: any SQLRow) throws -> EncryptionKeyRow {
        let versions = try row.decode(column: "versions", as: String.self)
        return EncryptionKeyRow(
            keyID: try row.decode(column: "key_id", as: String.self), state: try row.decode(column: "state", as: String.self),
            versions: (try? JSONDecoder().decode([String].self, from: Data(versions.utf8))) ?? [],
            createdAt: try row.decode(column: "created_at", as: Int64.self), updatedAt: try row.decode(column: "updated_at", as: Int64.self))
    }
}

/// A key of the built-in key service as stored: material versions sealed by the master key.
public struct EncryptionKeyRow: Sendable, Equatable {
    public var keyID: String
    public var state: String
    public var versions: [String]
    public var createdAt: Int64
    public var updatedAt: Int64

    public init(keyID: String, state: String, versions: [String], createdAt: Int64, updatedAt: Int64) {
        self.keyID = keyID
        self.state = state
        self.versions = versions
        self.createdAt = createdAt
        self.updatedAt = updatedAt
    }
}
