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

/// What the storage report reads: per-repository figures, the largest images and layers, and
/// what garbage collection would free now. Whole-table aggregates, run when a report is asked for.
extension MetadataStore {
    public struct RepositoryStorage: Sendable, Equatable {
        public var repository: String
        public var namespace: String
        public var images: Int64
        /// Untagged manifests that are not index children or referrers: what an "expire untagged" rule takes.
        public var untaggedImages: Int64
        public var logicalBytes: Int64
        public var physicalBytes: Int64
        /// Images neither pushed nor pulled since the cutoff.
        public var staleImages: Int64
        public var staleLogicalBytes: Int64
        /// Blob bytes that would be freed if this repository's untagged images were expired: blobs
        /// they reference that nothing else in the registry references.
        public var untaggedReclaimableBytes: Int64
        public var lastPushedAt: Int64?
        public var lastPulledAt: Int64?
    }

    public struct LargeImage: Sendable, Equatable {
        public var repository: String
        public var digest: String
        public var tags: [String]
        public var bytes: Int64
    }

    public struct LargeLayer: Sendable, Equatable {
        public var digest: String
        public var bytes: Int64
        /// Repositories that hold it.
        public var repositories: Int64
    }

    /// A manifest no tag, index or subject keeps: `m` is the manifests row.
    private static let untaggedManifest: SQLQueryString = """
        m.subject_digest IS NULL
        AND NOT EXISTS (SELECT 1 FROM tags t WHERE t.repository_id = m.repository_id AND t.digest = m.digest)
        AND NOT EXISTS (SELECT 1 FROM manifest_references x WHERE x.repository_id = m.repository_id AND x.child_digest = m.digest AND x.kind = 'manifest')
        """

    public func repositoryStorage(staleBefore cutoff: Int64) async throws -> [RepositoryStorage] {
        try await database.read { sql in
            let rows = try await sql.raw(
                """
                SELECT r.id, r.name, r.namespace,
                  (SELECT COUNT(*) FROM manifests m WHERE m.repository_id = r.id) AS images,
                  (SELECT COUNT(*) FROM manifests m WHERE m.repository_id = r.id AND \(Self.untaggedManifest)) AS untagged,
                  (SELECT CAST(COALESCE(SUM(m.size), 0) AS BIGINT) FROM manifests m WHERE m.repository_id = r.id)
                    + (SELECT CAST(COALESCE(SUM(b.size), 0) AS BIGINT) FROM manifest_references mr JOIN blobs b ON b.digest = mr.child_digest
                       WHERE mr.repository_id = r.id AND mr.kind = 'blob') AS logical,
                  (SELECT CAST(COALESCE(SUM(b.size), 0) AS BIGINT) FROM repository_blobs rb JOIN blobs b ON b.digest = rb.digest
                   WHERE rb.repository_id = r.id) AS physical,
                  (SELECT COUNT(*) FROM manifests m WHERE m.repository_id = r.id AND COALESCE(m.last_pulled_at, m.pushed_at) < \(bind: cutoff)
                     AND m.pushed_at < \(bind: cutoff)) AS stale,
                  (SELECT CAST(COALESCE(SUM(m.size), 0) AS BIGINT) FROM manifests m
                   WHERE m.repository_id = r.id AND COALESCE(m.last_pulled_at, m.pushed_at) < \(bind: cutoff) AND m.pushed_at < \(bind: cutoff))
                    + (SELECT CAST(COALESCE(SUM(b.size), 0) AS BIGINT) FROM manifest_references mr
                       JOIN manifests m ON m.repository_id = mr.repository_id AND m.digest = mr.manifest_digest
                       JOIN blobs b ON b.digest = mr.child_digest
                       WHERE mr.repository_id = r.id AND mr.kind = 'blob' AND COALESCE(m.last_pulled_at, m.pushed_at) < \(bind: cutoff)
                         AND m.pushed_at < \(bind: cutoff)) AS stale_logical,
                  (SELECT MAX(m.pushed_at) FROM manifests m WHERE m.repository_id = r.id) AS last_pushed,
                  (SELECT MAX(m.last_pulled_at) FROM manifests m WHERE m.repository_id = r.id) AS last_pulled
                FROM repositories r ORDER BY r.name
                """
            ).all()
            var result: [RepositoryStorage] = []
            for row in rows {
                let id = try row.decode(column: "id", as: Int64.self)
                let untagged = try row.decode(column: "untagged", as: Int64.self)
                var reclaimable: Int64 = 0
                if untagged > 0 {
                    reclaimable =
                        try await sql.raw(
                            """
                            SELECT CAST(COALESCE(SUM(b.size), 0) AS BIGINT) AS bytes FROM blobs b
                            WHERE b.digest IN (SELECT mr.child_digest FROM manifest_references mr
                                               JOIN manifests m ON m.repository_id = mr.repository_id AND m.digest = mr.manifest_digest
                                               WHERE mr.repository_id = \(bind: id) AND mr.kind = 'blob' AND \(Self.untaggedManifest))
                              AND NOT EXISTS (SELECT 1 FROM manifest_references o
                                              JOIN manifests m ON m.repository_id = o.repository_id AND m.digest = o.manifest_digest
                                              WHERE o.child_digest = b.digest AND o.kind = 'blob'
                                                AND NOT (o.repository_id = \(bind: id) AND \(Self.untaggedManifest)))
                            """
                        ).first()?.decode(column: "bytes", as: Int64.self) ?? 0
                }
                result.append(
                    RepositoryStorage(
                        repository: try row.decode(column: "name", as: String.self), namespace: try row.decode(column: "namespace", as: String.self),
                        images: try row.decode(column: "images", as: Int64.self), untaggedImages: untagged,
                        logicalBytes: try row.decode(column: "logical", as: Int64.self), physicalBytes: try row.decode(column: "physical", as: Int64.self),
                        staleImages: try row.decode(column: "stale", as: Int64.self),
                        staleLogicalBytes: try row.decode(column: "stale_logical", as: Int64.self), untaggedReclaimableBytes: reclaimable,
                        lastPushedAt: try row.decode(column: "last_pushed", as: Int64?.self),
                        lastPulledAt: try row.decode(column: "last_pulled", as: Int64?.self)))
            }
            return result
        }
    }

    public func largestImages(limit: Int) async throws -> [LargeImage] {
        try await database.read { sql in
            let rows = try await sql.raw(
                """
                SELECT r.name, m.digest,
                  m.size + (SELECT CAST(COALESCE(SUM(b.size), 0) AS BIGINT) FROM manifest_references mr JOIN blobs b ON b.digest = mr.child_digest
                            WHERE mr.repository_id = m.repository_id AND mr.manifest_digest = m.digest AND mr.kind = 'blob') AS bytes
                FROM manifests m JOIN repositories r ON r.id = m.repository_id
                ORDER BY bytes DESC, r.name, m.digest LIMIT \(literal: limit)
                """
            ).all()
            var images: [LargeImage] = []
            for row in rows {
                let name = try row.decode(column: "name", as: String.self)
                let digest = try row.decode(column: "digest", as: String.self)
                let tags = try await sql.raw(
                    """
                    SELECT t.name FROM tags t JOIN repositories r ON r.id = t.repository_id WHERE r.name = \(bind: name) AND t.digest = \(bind: digest)
                    ORDER BY t.name
                    """
                ).all().map { try $0.decode(column: "name", as: String.self) }
                images.append(LargeImage(repository: name, digest: digest, tags: tags, bytes: try row.decode(column: "bytes", as: Int64.self)))
            }
            return images
        }
    }

    public func largestLayers(limit: Int) async throws -> [LargeLayer] {
        try await database.read { sql in
            try await sql.raw(
                """
                SELECT b.digest, b.size, (SELECT COUNT(*) FROM repository_blobs rb WHERE rb.digest = b.digest) AS repositories
                FROM blobs b ORDER BY b.size DESC, b.digest LIMIT \(literal: limit)
                """
            ).all().map {
                LargeLayer(
                    digest: try $0.decode(column: "digest", as: String.self), bytes: try $0.decode(column: "size", as: Int64.self),
                    repositories: try $0.decode(column: "repositories", as: Int64.self))
            }
        }
    }

    /// Blob bytes no manifest anywhere references: what garbage collection frees once their grace
    /// window has passed.
    public func unreferencedBlobBytes() async throws -> (blobs: Int64, bytes: Int64) {
        try await database.read { sql in
            let row = try await sql.raw(
                """
                SELECT COUNT(*) AS n, CAST(COALESCE(SUM(b.size), 0) AS BIGINT) AS bytes FROM blobs b
                WHERE NOT EXISTS (SELECT 1 FROM manifest_references mr WHERE mr.child_digest = b.digest AND mr.kind = 'blob')
                """
            ).first()
            return (try row?.decode(column: "n", as: Int64.self) ?? 0, try row?.decode(column: "bytes", as: Int64.self) ?? 0)
        }
    }
}

/// Growth over time and egress, for the storage report.
extension MetadataStore {
    /// `YYYY-MM-DD` (UTC) of a Unix-millisecond time.
    public static func day(_ millis: Int64) -> String { String(Timestamp.rfc3339(millis: millis).prefix(10)) }

    /// Stores today's figures (replacing earlier ones of the same day): the registry under
    /// namespace '', then each namespace.
    public func recordSnapshot(day: String, totals: StorageTotals) async throws {
        let logical = totals.namespaces.values.reduce(0) { $0 + $1.logicalBytes }
        let rows = [("", logical, totals.blobBytes)] + totals.namespaces.map { ($0.key, $0.value.logicalBytes, $0.value.physicalBytes) }
        try await database.transaction { sql in
            for chunk in rows.chunked(200) {
                var query: SQLQueryString = "INSERT INTO storage_snapshots (day, namespace, logical_bytes, physical_bytes) VALUES "
                for (index, row) in chunk.enumerated() {
                    query += "\(unsafeRaw: index == 0 ? "" : ", ")(\(bind: day), \(bind: row.0), \(bind: row.1), \(bind: row.2))"
                }
                query += " ON CONFLICT (day, namespace) DO UPDATE SET logical_bytes = excluded.logical_bytes, physical_bytes = excluded.physical_bytes"
                try await sql.raw(query).run()
            }
        }
    }

    public typealias DayFigures = (day: String, logicalBytes: Int64, physicalBytes: Int64)

    /// The registry's daily figures since `day` (inclusive), oldest first.
    public func registrySnapshots(since day: String) async throws -> [DayFigures] {
        try await snapshots(since: day)[""] ?? []
    }

    /// Daily figures since `day` (inclusive) of the registry (key '') and of every namespace, oldest first.
    public func snapshots(since day: String) async throws -> [String: [DayFigures]] {
        try await database.read { sql in
            var series: [String: [DayFigures]] = [:]
            for row in try await sql.raw(
                "SELECT day, namespace, logical_bytes, physical_bytes FROM storage_snapshots WHERE day >= \(bind: day) ORDER BY day"
            ).all() {
                series[try row.decode(column: "namespace", as: String.self), default: []].append(
                    (
                        try row.decode(column: "day", as: String.self), try row.decode(column: "logical_bytes", as: Int64.self),
                        try row.decode(column: "physical_bytes", as: Int64.self)
                    ))
            }
            return series
        }
    }

    /// Adds served bytes to each repository's count for `day`.
    public func addEgress(_ bytes: [String: Int64], day: String) async throws {
        guard !bytes.isEmpty else { return }
        try await database.transaction { sql in
            for chunk in Array(bytes).chunked(200) {
                var query: SQLQueryString = "INSERT INTO repository_egress (day, repository, bytes) VALUES "
                for (index, entry) in chunk.enumerated() {
                    query += "\(unsafeRaw: index == 0 ? "" : ", ")(\(bind: day), \(bind: entry.key), \(bind: entry.value))"
                }
                query += " ON CONFLICT (day, repository) DO UPDATE SET bytes = repository_egress.bytes + excluded.bytes"
                try await sql.raw(query).run()
            }
        }
    }

    /// Bytes served per repository since `day` (inclusive).
    public func egress(since day: String) async throws -> [String: Int64] {
        try await database.read { sql in
            var result: [String: Int64] = [:]
            for row in try await sql.raw(
                "SELECT repository, CAST(SUM(bytes) AS BIGINT) AS bytes FROM repository_egress WHERE day >= \(bind: day) GROUP BY repository"
            ).all() {
                result[try row.decode(column: "repository", as: String.self)] = try row.decode(column: "bytes", as: Int64.self)
            }
            return result
        }
    }
}
