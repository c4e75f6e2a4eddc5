import NIOCore
import OCI
import SQLKit

/// What the consistency checker (`wharf fsck`) and the garbage collector's orphan scan ask of the
/// blob tables: the SQL stays with the store that owns the tables.
extension MetadataStore {
    /// Recorded blobs after `digest` in digest order, at most `limit`: (digest, recorded size).
    public func blobRows(after digest: String, limit: Int) async throws -> [(digest: String, size: Int64)] {
        try await database.read { sql in
            try await sql.raw("SELECT digest, size FROM blobs WHERE digest > \(bind: digest) ORDER BY digest LIMIT \(literal: max(1, limit))").all().map {
                (try $0.decode(column: "digest", as: String.self), try $0.decode(column: "size", as: Int64.self))
            }
        }
    }

    /// Corrects a blob's recorded size to what its file holds.
    public func correctBlobSize(_ digest: Digest, to size: Int64) async throws {
        try await database.transaction { sql in
            try await sql.raw("UPDATE blobs SET size = \(bind: size) WHERE digest = \(bind: digest.description)").run()
        }
    }

    /// Manifest references to blobs that are not linked in the manifest's repository.
    public func danglingBlobReferences() async throws -> [(repository: String, manifest: String, blob: String)] {
        try await database.read { sql in
            try await sql.raw(
                """
                SELECT r.name, mr.manifest_digest, mr.child_digest FROM manifest_references mr
                JOIN repositories r ON r.id = mr.repository_id
                WHERE mr.kind = 'blob' AND NOT EXISTS (
                    SELECT 1 FROM repository_blobs rb WHERE rb.repository_id = mr.repository_id AND rb.digest = mr.child_digest)
                ORDER BY r.name
                """
            ).all().map {
                (
                    try $0.decode(column: "name", as: String.self), try $0.decode(column: "manifest_digest", as: String.self),
                    try $0.decode(column: "child_digest", as: String.self)
                )
            }
        }
    }

    /// Records a blob whose verified file exists but whose row was lost.
    public func recordBlob(_ digest: Digest, size: Int64) async throws {
        try await database.transaction { sql in
            let now = Timestamp.nowMillis()
            try await sql.raw(
                """
                INSERT INTO blobs (digest, size, created_at, touched_at) VALUES (\(bind: digest.description), \(bind: size), \(bind: now), \(bind: now))
                ON CONFLICT (digest) DO NOTHING
                """
            ).run()
        }
    }

    /// Links a recorded blob into a repository again (a manifest there references it).
    public func relinkBlob(_ digest: String, in repository: RepositoryName) async throws {
        try await database.transaction { sql in
            try await sql.raw(
                """
                INSERT INTO repository_blobs (repository_id, digest, linked_at)
                SELECT id, \(bind: digest), \(bind: Timestamp.nowMillis()) FROM repositories WHERE name = \(bind: repository.value)
                ON CONFLICT (repository_id, digest) DO NOTHING
                """
            ).run()
        }
    }

    /// Removes a blob's row and every link to it (its bytes are gone or corrupt).
    public func forgetBlob(_ digest: Digest) async throws {
        try await database.transaction { sql in
            try await sql.raw("DELETE FROM repository_blobs WHERE digest = \(bind: digest.description)").run()
            try await sql.raw("DELETE FROM blobs WHERE digest = \(bind: digest.description)").run()
        }
    }

    /// Blobs no repository links.
    public func unlinkedBlobCount() async throws -> Int {
        try await database.read { sql in
            try await sql.raw(
                "SELECT COUNT(*) AS n FROM blobs b WHERE NOT EXISTS (SELECT 1 FROM repository_blobs rb WHERE rb.digest = b.digest)"
            ).first()?.decode(column: "n", as: Int.self) ?? 0
        }
    }

    /// Runs `body` (deleting an orphan file) under the digest's lock, only if no row records the
    /// blob: an upload of the same content cannot be publishing it at that moment.
    public func whileBlobUnrecorded(_ digest: Digest, _ body: @Sendable () async throws -> Void) async throws {
        try await database.transaction { sql in
            try await database.lock("blob:\(digest)", in: sql)
            if try await sql.raw("SELECT digest FROM blobs WHERE digest = \(bind: digest.description)").first() == nil {
                try await body()
            }
        }
    }
}
