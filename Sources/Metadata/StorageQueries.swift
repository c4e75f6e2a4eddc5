import SQLKit

/// Storage figures for monitoring and the storage report: whole-table aggregates, read on a
/// schedule (never per request), so their cost does not grow with traffic.
extension MetadataStore {
    public struct StorageTotals: Sendable, Equatable {
        public struct Namespace: Sendable, Equatable {
            /// What the namespace's images add up to: each manifest's own bytes plus every blob it
            /// references, a blob shared by two manifests counted twice.
            public var logicalBytes: Int64 = 0
            /// The distinct blobs the namespace's repositories hold: what its quota counts.
            public var physicalBytes: Int64 = 0
        }
        public var blobs: Int64 = 0
        public var blobBytes: Int64 = 0
        public var repositories: Int64 = 0
        public var manifests: Int64 = 0
        public var uploadSessions: Int64 = 0
        /// Scans waiting or running.
        public var scanQueue: Int64 = 0
        public var namespaces: [String: Namespace] = [:]
    }

    public func storageTotals() async throws -> StorageTotals {
        try await database.read { sql in
            var totals = StorageTotals()
            if let row = try await sql.raw("SELECT COUNT(*) AS n, CAST(COALESCE(SUM(size), 0) AS BIGINT) AS bytes FROM blobs").first() {
                totals.blobs = try row.decode(column: "n", as: Int64.self)
                totals.blobBytes = try row.decode(column: "bytes", as: Int64.self)
            }
            func count(_ query: SQLQueryString) async throws -> Int64 {
                try await sql.raw(query).first()?.decode(column: "n", as: Int64.self) ?? 0
            }
            totals.repositories = try await count("SELECT COUNT(*) AS n FROM repositories")
            totals.manifests = try await count("SELECT COUNT(*) AS n FROM manifests")
            totals.uploadSessions = try await count("SELECT COUNT(*) AS n FROM upload_sessions")
            totals.scanQueue = try await count("SELECT COUNT(*) AS n FROM image_scans WHERE status IN ('PENDING', 'IN_PROGRESS')")
            for row in try await sql.raw(
                """
                SELECT d.namespace AS namespace, CAST(COALESCE(SUM(b.size), 0) AS BIGINT) AS bytes
                FROM (SELECT DISTINCT r.namespace AS namespace, rb.digest AS digest
                      FROM repository_blobs rb JOIN repositories r ON r.id = rb.repository_id) d
                JOIN blobs b ON b.digest = d.digest
                GROUP BY d.namespace
                """
            ).all() {
                totals.namespaces[try row.decode(column: "namespace", as: String.self), default: .init()].physicalBytes =
                    try row.decode(column: "bytes", as: Int64.self)
            }
            for row in try await sql.raw(
                """
                SELECT r.namespace AS namespace, CAST(COALESCE(SUM(b.size), 0) AS BIGINT) AS bytes
                FROM manifest_references mr JOIN repositories r ON r.id = mr.repository_id JOIN blobs b ON b.digest = mr.child_digest
                WHERE mr.kind = 'blob'
                GROUP BY r.namespace
                """
            ).all() {
                totals.namespaces[try row.decode(column: "namespace", as: String.self), default: .init()].logicalBytes +=
                    try row.decode(column: "bytes", as: Int64.self)
            }
            for row in try await sql.raw(
                """
                SELECT r.namespace AS namespace, CAST(COALESCE(SUM(m.size), 0) AS BIGINT) AS bytes
                FROM manifests m JOIN repositories r ON r.id = m.repository_id
                GROUP BY r.namespace
                """
            ).all() {
                totals.namespaces[try row.decode(column: "namespace", as: String.self), default: .init()].logicalBytes +=
                    try row.decode(column: "bytes", as: Int64.self)
            }
            return totals
        }
    }
}

extension MetadataStore {
    /// One trivial read, for readiness probes: proves a connection can be had and answers.
    public func ping() async throws {
        _ = try await database.read { sql in try await sql.raw("SELECT 1 AS one").first() != nil }
    }
}
