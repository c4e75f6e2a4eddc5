import SQLKit

/// ECR's pull time update exclusions: principals whose pulls do not move last-pull times.
extension MetadataStore {
    public struct PullTimeExclusion: Sendable, Equatable {
        public var principalARN: String
        public var createdAt: Int64
    }

    public enum PullTimeExclusionChange: Sendable, Equatable {
        case added(PullTimeExclusion)
        case alreadyExists
        case limitReached
    }

    public func pullTimeExclusions() async throws -> [PullTimeExclusion] {
        try await database.read { sql in
            try await sql.raw("SELECT principal_arn, created_at FROM pull_time_exclusions ORDER BY principal_arn").all().map {
                PullTimeExclusion(
                    principalARN: try $0.decode(column: "principal_arn", as: String.self), createdAt: try $0.decode(column: "created_at", as: Int64.self))
            }
        }
    }

    /// Adds an exclusion unless it exists or `limit` are stored already (checked in the same transaction).
    public func addPullTimeExclusion(_ principalARN: String, limit: Int, now: Int64 = Timestamp.nowMillis()) async throws -> PullTimeExclusionChange {
        do {
            return try await insertPullTimeExclusion(principalARN, limit: limit, now: now)
        } catch is LimitReached {
            return .limitReached
        }
    }

    private func insertPullTimeExclusion(_ principalARN: String, limit: Int, now: Int64) async throws -> PullTimeExclusionChange {
        try await database.transaction { sql in
            let count = try await sql.raw("SELECT COUNT(*) AS n FROM pull_time_exclusions").first()?.decode(column: "n", as: Int64.self) ?? 0
            let inserted = try await sql.raw(
                """
                INSERT INTO pull_time_exclusions (principal_arn, created_at) VALUES (\(bind: principalARN), \(bind: now))
                ON CONFLICT (principal_arn) DO NOTHING RETURNING principal_arn
                """
            ).all()
            guard !inserted.isEmpty else { return .alreadyExists }
            guard count < limit else { throw LimitReached() }
            return .added(PullTimeExclusion(principalARN: principalARN, createdAt: now))
        }
    }

    /// Thrown inside the transaction so the insert is rolled back.
    struct LimitReached: Error {}

    public func removePullTimeExclusion(_ principalARN: String) async throws -> Bool {
        try await database.transaction { sql in
            try await !sql.raw("DELETE FROM pull_time_exclusions WHERE principal_arn = \(bind: principalARN) RETURNING principal_arn").all().isEmpty
        }
    }
}
