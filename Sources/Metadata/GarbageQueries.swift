import OCI
import SQLKit

/// The garbage collector's view of the database. Every deletion re-checks its condition inside
/// the deleting statement, under the same locks writers take, so something that became referenced
/// again after it was listed is never deleted.
extension MetadataStore {
    public struct Link: Sendable, Hashable {
        public var repositoryID: Int64
        public var repository: String
        public var digest: Digest
    }

    /// The condition for a link nobody needs: no manifest in its repository references the blob,
    /// and it was not created or refreshed since `cutoff`.
    private static func unneededLink(_ cutoff: Int64) -> SQLQueryString {
        """
        rb.linked_at < \(bind: cutoff) AND NOT EXISTS (
            SELECT 1 FROM manifest_references mr
            WHERE mr.repository_id = rb.repository_id AND mr.child_digest = rb.digest AND mr.kind = 'blob')
        """
    }

    public func unneededLinks(before cutoff: Int64, limit: Int) async throws -> [Link] {
        try await database.read { sql in
            try await sql.raw(
                """
                SELECT rb.repository_id, r.name, rb.digest FROM repository_blobs rb JOIN repositories r ON r.id = rb.repository_id
                WHERE \(Self.unneededLink(cutoff)) ORDER BY rb.repository_id, rb.digest LIMIT \(literal: limit)
                """
            ).all().compactMap { row in
                guard let digest = Digest(try row.decode(column: "digest", as: String.self)) else { return nil }
                return Link(
                    repositoryID: try row.decode(column: "repository_id", as: Int64.self),
                    repository: try row.decode(column: "name", as: String.self), digest: digest)
            }
        }
    }

    /// Removes links that are still unneeded; returns how many went. One statement per repository.
    public func deleteUnneededLinks(_ links: [Link], before cutoff: Int64) async throws -> Int {
        guard !links.isEmpty else { return 0 }
        return try await database.transaction { sql in
            // Same lock as putManifest, taken in a fixed order so two collectors cannot deadlock.
            for repository in Set(links.map(\.repository)).sorted() {
                try await database.lock("repository:\(repository)", in: sql)
            }
            var removed = 0
            for (repositoryID, group) in Dictionary(grouping: links, by: \.repositoryID) {
                for chunk in group.map(\.digest.description).chunked(500) {
                    removed += try await sql.raw(
                        """
                        DELETE FROM repository_blobs AS rb
                        WHERE rb.repository_id = \(bind: repositoryID) AND rb.digest IN (\(binds: Array(chunk))) AND \(Self.unneededLink(cutoff))
                        RETURNING digest
                        """
                    ).all().count
                }
            }
            return removed
        }
    }

    /// Blobs no repository links to, untouched since `cutoff`.
    public func unlinkedBlobs(before cutoff: Int64, limit: Int) async throws -> [BlobRecord] {
        try await database.read { sql in
            try await sql.raw(
                """
                SELECT b.digest, b.size FROM blobs b
                WHERE COALESCE(b.touched_at, b.created_at) < \(bind: cutoff)
                  AND NOT EXISTS (SELECT 1 FROM repository_blobs rb WHERE rb.digest = b.digest)
                ORDER BY b.digest LIMIT \(literal: limit)
                """
            ).all().compactMap { row in
                guard let digest = Digest(try row.decode(column: "digest", as: String.self)) else { return nil }
                return BlobRecord(digest: digest, size: try row.decode(column: "size", as: Int64.self))
            }
        }
    }

    /// Deletes blob rows that are still unlinked and old, then runs `removeBytes` with the deleted
    /// digests inside the same transaction (under the digests' locks, as uploads take them), so a
    /// failure leaves both rows and bytes. Returns the deleted blobs.
    public func deleteUnlinkedBlobs(
        _ blobs: [BlobRecord], before cutoff: Int64,
        removeBytes: @Sendable ([Digest]) async throws -> Void
    ) async throws -> [BlobRecord] {
        guard !blobs.isEmpty else { return [] }
        return try await database.transaction { sql in
            let sorted = blobs.sorted(by: { $0.digest < $1.digest })
            for blob in sorted { try await database.lock("blob:\(blob.digest)", in: sql) }
            var deleted = Set<String>()
            for chunk in sorted.map(\.digest.description).chunked(500) {
                for row in try await sql.raw(
                    """
                    DELETE FROM blobs AS b WHERE b.digest IN (\(binds: Array(chunk)))
                      AND COALESCE(b.touched_at, b.created_at) < \(bind: cutoff)
                      AND NOT EXISTS (SELECT 1 FROM repository_blobs rb WHERE rb.digest = b.digest)
                    RETURNING digest
                    """
                ).all() {
                    deleted.insert(try row.decode(column: "digest", as: String.self))
                }
            }
            let gone = sorted.filter { deleted.contains($0.digest.description) }
            if !gone.isEmpty { try await removeBytes(gone.map(\.digest)) }
            return gone
        }
    }

    /// Whether any row records this blob (used for orphan files and trash recovery).
    public func blobRecorded(_ digest: Digest) async throws -> Bool {
        try await database.read { sql in
            try await sql.raw("SELECT digest FROM blobs WHERE digest = \(bind: digest.description)").first() != nil
        }
    }

    /// Which of these digests have rows.
    public func recordedBlobs(among digests: [Digest]) async throws -> Set<Digest> {
        guard !digests.isEmpty else { return [] }
        return try await database.read { sql in
            var found = Set<Digest>()
            for chunk in digests.map(\.description).chunked(500) {
                for row in try await sql.raw("SELECT digest FROM blobs WHERE digest IN (\(binds: Array(chunk)))").all() {
                    if let digest = Digest(try row.decode(column: "digest", as: String.self)) { found.insert(digest) }
                }
            }
            return found
        }
    }

    public struct ManifestLocation: Sendable, Hashable {
        public var repository: String
        public var digest: Digest
    }

    /// Manifests without tags that no index in their repository references and that are not
    /// referrers, pushed before `cutoff`.
    public func untaggedManifests(before cutoff: Int64, limit: Int) async throws -> [ManifestLocation] {
        try await database.read { sql in
            try await sql.raw(
                """
                SELECT r.name, m.digest FROM manifests m JOIN repositories r ON r.id = m.repository_id
                WHERE m.pushed_at < \(bind: cutoff) AND m.subject_digest IS NULL
                  AND NOT EXISTS (SELECT 1 FROM tags t WHERE t.repository_id = m.repository_id AND t.digest = m.digest)
                  AND NOT EXISTS (SELECT 1 FROM manifest_references mr
                                  WHERE mr.repository_id = m.repository_id AND mr.child_digest = m.digest AND mr.kind = 'manifest')
                ORDER BY r.name, m.digest LIMIT \(literal: limit)
                """
            ).all().compactMap(Self.location)
        }
    }

    /// Referrers (signatures, SBOMs) whose subject is not in their repository, pushed before
    /// `cutoff`: left behind when the image they describe was deleted.
    public func orphanReferrers(before cutoff: Int64, limit: Int) async throws -> [ManifestLocation] {
        try await database.read { sql in
            try await sql.raw(
                """
                SELECT r.name, m.digest FROM manifests m JOIN repositories r ON r.id = m.repository_id
                WHERE m.pushed_at < \(bind: cutoff) AND m.subject_digest IS NOT NULL
                  AND NOT EXISTS (SELECT 1 FROM manifests s WHERE s.repository_id = m.repository_id AND s.digest = m.subject_digest)
                  AND NOT EXISTS (SELECT 1 FROM tags t WHERE t.repository_id = m.repository_id AND t.digest = m.digest)
                ORDER BY r.name, m.digest LIMIT \(literal: limit)
                """
            ).all().compactMap(Self.location)
        }
    }

    private static func location(_ row: any SQLRow) throws -> ManifestLocation? {
        guard let digest = Digest(try row.decode(column: "digest", as: String.self)) else { return nil }
        return ManifestLocation(repository: try row.decode(column: "name", as: String.self), digest: digest)
    }

    /// Bytes of distinct blobs linked in the namespace's repositories: what a quota counts.
    public func namespaceUsage(_ namespace: String) async throws -> Int64 {
        try await database.read { sql in
            let row = try await sql.raw(
                """
                SELECT CAST(COALESCE(SUM(b.size), 0) AS BIGINT) AS total FROM blobs b
                WHERE b.digest IN (SELECT DISTINCT rb.digest FROM repository_blobs rb JOIN repositories r ON r.id = rb.repository_id
                                   WHERE r.namespace = \(bind: namespace))
                """
            ).first()
            return try row?.decode(column: "total", as: Int64.self) ?? 0
        }
    }

    /// Whether the namespace already holds this blob (then linking it again costs no quota).
    public func namespaceHolds(_ digest: Digest, namespace: String) async throws -> Bool {
        try await database.read { sql in
            try await sql.raw(
                """
                SELECT 1 AS present FROM repository_blobs rb JOIN repositories r ON r.id = rb.repository_id
                WHERE r.namespace = \(bind: namespace) AND rb.digest = \(bind: digest.description) LIMIT 1
                """
            ).first() != nil
        }
    }

    /// The namespace's storage quota in bytes, or nil for none.
    public func namespaceQuota(_ namespace: String) async throws -> Int64? {
        try await database.read { sql in
            try await sql.raw("SELECT quota_bytes FROM namespaces WHERE name = \(bind: namespace)").first()?
                .decode(column: "quota_bytes", as: Int64?.self)
        }
    }

    public func setNamespaceQuota(_ namespace: String, bytes: Int64?) async throws -> Bool {
        try await database.transaction { sql in
            try await !sql.raw("UPDATE namespaces SET quota_bytes = \(bind: bytes) WHERE name = \(bind: namespace) RETURNING id").all().isEmpty
        }
    }

    public func recordGCRun(startedAt: Int64, finishedAt: Int64, trigger: String, dryRun: Bool, report: String) async throws {
        try await database.transaction { sql in
            try await sql.raw(
                """
                INSERT INTO gc_runs (started_at, finished_at, trigger, dry_run, report)
                VALUES (\(bind: startedAt), \(bind: finishedAt), \(bind: trigger), \(bind: dryRun), \(bind: report))
                """
            ).run()
        }
    }

    public func recentGCRuns(limit: Int) async throws -> [String] {
        try await database.read { sql in
            try await sql.raw("SELECT report FROM gc_runs ORDER BY id DESC LIMIT \(literal: limit)").all()
                .compactMap { try $0.decode(column: "report", as: String?.self) }
        }
    }
}
