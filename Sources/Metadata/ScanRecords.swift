import OCI
import SQLKit

/// A scan of one manifest: the queued job and, once done, its result (JSON the scanner writes).
public struct ImageScanRecord: Sendable, Equatable {
    public enum Status: String, Sendable {
        case pending = "PENDING"
        case inProgress = "IN_PROGRESS"
        case complete = "COMPLETE"
        case failed = "FAILED"
    }

    public var digest: String
    public var repository: String
    public var status: Status
    public var requestedAt: Int64
    public var startedAt: Int64?
    public var completedAt: Int64?
    public var description: String?
    public var result: String?
}

extension MetadataStore {
    /// Queues a scan of `digest` (found in `repository`). A scan already waiting or running is left
    /// as it is; a finished one is queued again, unless `keepCompleted` and it completed in the
    /// same repository (a push of an image already scanned there: its findings are kept current by
    /// re-matching, so reading its layers again would find the same).
    public func enqueueScan(_ digest: Digest, in repository: RepositoryName, keepCompleted: Bool = false) async throws {
        try await database.transaction { sql in
            try await sql.raw(
                """
                INSERT INTO image_scans (digest, repository, status, requested_at)
                VALUES (\(bind: digest.description), \(bind: repository.value), 'PENDING', \(bind: Timestamp.nowMillis()))
                ON CONFLICT (digest) DO UPDATE SET status = 'PENDING', repository = excluded.repository,
                    requested_at = excluded.requested_at, description = NULL
                WHERE image_scans.status NOT IN ('PENDING', 'IN_PROGRESS')
                  AND NOT (\(bind: keepCompleted) AND image_scans.status = 'COMPLETE' AND image_scans.repository = excluded.repository)
                """
            ).run()
        }
    }

    /// Takes the oldest waiting scan, marking it in progress; nil when none waits.
    public func claimNextScan() async throws -> ImageScanRecord? {
        // One statement claims the job, so the workers of several nodes never take the same one:
        // on PostgreSQL a row another node is claiming is skipped, not waited for; SQLite has one writer.
        let skipLocked: SQLQueryString = database.dialect == .postgres ? " FOR UPDATE SKIP LOCKED" : ""
        return try await database.transaction { sql in
            guard
                let row = try await sql.raw(
                    """
                    UPDATE image_scans SET status = 'IN_PROGRESS', started_at = \(bind: Timestamp.nowMillis())
                    WHERE status = 'PENDING' AND digest = (
                        SELECT digest FROM image_scans WHERE status = 'PENDING' ORDER BY requested_at LIMIT 1\(skipLocked))
                    RETURNING digest
                    """
                ).first()
            else { return nil }
            return try await Self.scanRecord(try row.decode(column: "digest", as: String.self), sql)
        }
    }

    /// Ends a job. `databaseVersion` is the vulnerability database the result was matched against.
    /// Stores a scan's outcome and, in the same transaction, its event (webhooks: `scan`, `vulnerability`).
    public func finishScan(
        _ digest: String, status: ImageScanRecord.Status, description: String?, result: String?,
        databaseVersion: String? = nil, event: RegistryEvent? = nil
    ) async throws {
        try await transactionAppendingEvents { sql in
            try await sql.raw(
                """
                UPDATE image_scans SET status = \(bind: status.rawValue), completed_at = \(bind: Timestamp.nowMillis()),
                    description = \(bind: description), result = \(bind: result), database_version = \(bind: databaseVersion)
                WHERE digest = \(bind: digest)
                """
            ).run()
            if let event { try await Self.appendEvent(event, sql) }
        }
    }

    /// Scans a crash or shutdown interrupted go back to the queue.
    public func requeueInterruptedScans() async throws {
        try await database.transaction { sql in
            try await sql.raw("UPDATE image_scans SET status = 'PENDING' WHERE status = 'IN_PROGRESS'").run()
        }
    }

    public func scanRecord(_ digest: Digest) async throws -> ImageScanRecord? {
        try await database.read { sql in try await Self.scanRecord(digest.description, sql) }
    }

    static func scanRecord(_ digest: String, _ sql: any SQLDatabase) async throws -> ImageScanRecord? {
        guard let row = try await sql.raw("SELECT * FROM image_scans WHERE digest = \(bind: digest)").first() else { return nil }
        return ImageScanRecord(
            digest: try row.decode(column: "digest", as: String.self), repository: try row.decode(column: "repository", as: String.self),
            status: ImageScanRecord.Status(rawValue: try row.decode(column: "status", as: String.self)) ?? .failed,
            requestedAt: try row.decode(column: "requested_at", as: Int64.self), startedAt: try row.decode(column: "started_at", as: Int64?.self),
            completedAt: try row.decode(column: "completed_at", as: Int64?.self), description: try row.decode(column: "description", as: String?.self),
            result: try row.decode(column: "result", as: String?.self))
    }
}

extension MetadataStore {
    /// Records a finished scan of `digest` directly (a platform of a scanned index gets its own row,
    /// so a pull of that platform by digest finds its result).
    public func storeScanResult(
        _ digest: String, repository: RepositoryName, status: ImageScanRecord.Status,
        description: String?, result: String?, databaseVersion: String? = nil
    ) async throws {
        let now = Timestamp.nowMillis()
        try await database.transaction { sql in
            try await sql.raw(
                """
                INSERT INTO image_scans (digest, repository, status, requested_at, started_at, completed_at, description, result, database_version)
                VALUES (\(bind: digest), \(bind: repository.value), \(bind: status.rawValue), \(bind: now), \(bind: now), \(bind: now),
                        \(bind: description), \(bind: result), \(bind: databaseVersion))
                ON CONFLICT (digest) DO UPDATE SET status = excluded.status, completed_at = excluded.completed_at,
                    description = excluded.description, result = excluded.result, database_version = excluded.database_version
                WHERE image_scans.status NOT IN ('PENDING', 'IN_PROGRESS')
                """
            ).run()
        }
    }

    /// Finished scans of manifests no repository holds any more; garbage collection removes them.
    public func deleteOrphanScans(limit: Int) async throws -> Int {
        try await database.transaction { sql in
            try await sql.raw(
                """
                DELETE FROM image_scans WHERE digest IN (
                    SELECT digest FROM image_scans s WHERE s.status IN ('COMPLETE', 'FAILED')
                      AND NOT EXISTS (SELECT 1 FROM manifests m WHERE m.digest = s.digest) LIMIT \(unsafeRaw: String(limit)))
                RETURNING digest
                """
            ).all().count
        }
    }
}

extension MetadataStore {
    /// Completed scans in digest order after `digest`, with their results: the pages a re-match walks.
    /// With `notMatchedWith`, only results matched against another database version (or an unknown one).
    public func completedScans(after digest: String?, limit: Int, notMatchedWith version: String? = nil) async throws -> [(digest: String, result: String)] {
        try await database.read { sql in
            let filter: SQLQueryString = version.map { "AND (database_version IS NULL OR database_version <> \(bind: $0))" } ?? ""
            return try await sql.raw(
                """
                SELECT digest, result FROM image_scans WHERE status = 'COMPLETE' AND result IS NOT NULL
                  AND digest > \(bind: digest ?? "") \(filter) ORDER BY digest LIMIT \(unsafeRaw: String(limit))
                """
            ).all().map { (try $0.decode(column: "digest", as: String.self), try $0.decode(column: "result", as: String.self)) }
        }
    }

    /// Replaces a completed scan's result (after matching it against a new database); a scan that
    /// was queued again meanwhile is left to its new run.
    public func updateScanResult(_ digest: String, description: String, result: String, databaseVersion: String? = nil) async throws {
        try await database.transaction { sql in
            try await sql.raw(
                """
                UPDATE image_scans SET description = \(bind: description), result = \(bind: result), database_version = \(bind: databaseVersion)
                WHERE digest = \(bind: digest) AND status = 'COMPLETE'
                """
            ).run()
        }
    }
}
