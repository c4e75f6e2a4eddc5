import OCI
import SQLKit

/// One copy of an image (and optionally a tag on it) to one replication destination.
public struct ReplicationTask: Sendable, Equatable {
    public enum Status: String, Sendable {
        /// Not copied yet: waiting, being copied, or waiting for its next attempt.
        case pending = "PENDING"
        case complete = "COMPLETE"
        /// Given up after the last attempt, or refused for good (no such destination).
        case failed = "FAILED"
    }

    public var id: Int64
    public var destination: String
    public var repository: String
    public var digest: String
    /// The tag to set at the destination once the image is there, if the source still has it there.
    public var tag: String?
    public var status: Status
    public var attempts: Int
    public var nextAttemptAt: Int64
    public var lastError: String?
    /// When the change was committed at the source (the lag is measured from here).
    public var createdAt: Int64
    public var completedAt: Int64?
    /// Bytes sent to the destination (blobs it lacked and manifests).
    public var bytesCopied: Int64?
    /// The repository's name at the destination, when a rule's prefix changes it.
    public var targetRepository: String?
    public var action: ReplicationAction = .copy

    /// Where the image goes at the destination.
    public var destinationRepository: String { targetRepository ?? repository }
}

public enum ReplicationAction: String, Sendable {
    /// Copy the image (and point the tag at it).
    case copy
    /// Delete the image, or only the tag, at the destination.
    case delete
}

/// One task an event makes: where, under what name, and what to do.
public struct PlannedReplication: Sendable, Equatable {
    public var destination: String
    public var targetRepository: String?
    public var action: ReplicationAction
    public init(destination: String, targetRepository: String? = nil, action: ReplicationAction = .copy) {
        self.destination = destination
        self.targetRepository = targetRepository
        self.action = action
    }
}

/// What a destination's queue looks like now.
public struct ReplicationQueueSummary: Sendable, Equatable {
    public var destination: String
    public var pending: Int
    public var failed: Int
    public var complete: Int
    /// When the oldest change still waiting was committed: now minus this is the lag.
    public var oldestPendingCreatedAt: Int64?
    public var lastCompletedAt: Int64?
}

/// The replication queue. Tasks are written by the outbox fan-out (`fanOutEvents`) and by hand
/// (`enqueueReplication`); the replicator takes what is due and records each attempt.
extension MetadataStore {
    static func insertReplicationTasks(_ rows: [(event: RegistryEvent, plan: PlannedReplication)], now: Int64, _ sql: any SQLDatabase) async throws {
        guard !rows.isEmpty else { return }
        var query: SQLQueryString = """
            INSERT INTO replication_tasks (destination, repository, digest, tag, status, attempts, next_attempt_at, created_at, target_repository, action)
            VALUES
            """
        for (index, row) in rows.enumerated() {
            query += "\(unsafeRaw: index == 0 ? "" : ", ")(\(bind: row.plan.destination), \(bind: row.event.repository), \(bind: row.event.digest ?? ""), "
            query += "\(bind: row.event.tag), 'PENDING', 0, \(bind: now), \(bind: row.event.occurredAt), \(bind: row.plan.targetRepository), "
            query += "\(bind: row.plan.action.rawValue))"
        }
        try await sql.raw(query).run()
    }

    /// Queues copies outside the event flow (a manual replication, a reconcile repair).
    public func enqueueReplication(
        destination: String, repository: String, digest: String, tag: String?, targetRepository: String? = nil
    ) async throws {
        let now = Timestamp.nowMillis()
        let event = RegistryEvent(kind: .push, repository: repository, digest: digest, tag: tag, actor: nil, occurredAt: now)
        let plan = PlannedReplication(destination: destination, targetRepository: targetRepository)
        try await database.transaction { sql in try await Self.insertReplicationTasks([(event, plan)], now: now, sql) }
    }

    /// Tasks due now, oldest first, leaving out those `running` and any task that must wait for an
    /// older one still pending for the same destination and repository: one of the same tag (tag
    /// moves arrive in the order they happened), or, when either is a deletion, one of the same
    /// image (a deletion never overtakes the copy it undoes, nor a re-push the deletion). Other
    /// tasks never wait for one another.
    public func dueReplicationTasks(now: Int64, limit: Int, running: Set<Int64>) async throws -> [ReplicationTask] {
        try await database.read { sql in
            try await sql.raw(
                """
                SELECT * FROM replication_tasks t
                WHERE t.status = 'PENDING' AND t.next_attempt_at <= \(bind: now)
                  AND NOT EXISTS (SELECT 1 FROM replication_tasks u
                                  WHERE u.status = 'PENDING' AND u.destination = t.destination AND u.repository = t.repository AND u.id < t.id
                                    AND (u.tag = t.tag OR ((u.action = 'delete' OR t.action = 'delete') AND u.digest = t.digest)))
                ORDER BY t.id LIMIT \(literal: limit + running.count)
                """
            ).all().map(Self.replicationTask).filter { !running.contains($0.id) }.prefix(limit).map { $0 }
        }
    }

    public enum ReplicationOutcome: Sendable {
        case complete(bytes: Int64)
        /// Failed this time; tried again at `at`.
        case retry(at: Int64, error: String)
        case failed(error: String)
    }

    public func recordReplicationAttempt(_ id: Int64, _ outcome: ReplicationOutcome) async throws {
        let now = Timestamp.nowMillis()
        try await database.transaction { sql in
            switch outcome {
            case .complete(let bytes):
                try await sql.raw(
                    """
                    UPDATE replication_tasks SET status = 'COMPLETE', attempts = attempts + 1, last_error = NULL, completed_at = \(bind: now),
                        bytes_copied = \(bind: bytes) WHERE id = \(bind: id)
                    """
                ).run()
            case .retry(let at, let error):
                try await sql.raw(
                    """
                    UPDATE replication_tasks SET attempts = attempts + 1, last_error = \(bind: error), next_attempt_at = \(bind: at)
                    WHERE id = \(bind: id)
                    """
                ).run()
            case .failed(let error):
                try await sql.raw(
                    """
                    UPDATE replication_tasks SET status = 'FAILED', attempts = attempts + 1, last_error = \(bind: error), completed_at = \(bind: now)
                    WHERE id = \(bind: id)
                    """
                ).run()
            }
        }
    }

    /// The newest task of each destination for one image: its replication status.
    public func replicationStatus(repository: String, digest: String) async throws -> [ReplicationTask] {
        let tasks = try await database.read { sql in
            try await sql.raw(
                "SELECT * FROM replication_tasks WHERE repository = \(bind: repository) AND digest = \(bind: digest) ORDER BY id DESC LIMIT 1000"
            ).all().map(Self.replicationTask)
        }
        var seen = Set<String>()
        return tasks.filter { seen.insert($0.destination).inserted }.sorted { $0.destination < $1.destination }
    }

    /// Recent tasks, newest first, optionally of one destination or status.
    public func replicationTasks(destination: String?, status: ReplicationTask.Status?, limit: Int) async throws -> [ReplicationTask] {
        try await database.read { sql in
            var query: SQLQueryString = "SELECT * FROM replication_tasks WHERE 1 = 1"
            if let destination { query += " AND destination = \(bind: destination)" }
            if let status { query += " AND status = \(bind: status.rawValue)" }
            query += " ORDER BY id DESC LIMIT \(literal: limit)"
            return try await sql.raw(query).all().map(Self.replicationTask)
        }
    }

    /// Every destination's queue: counts, and how old the oldest waiting change is.
    public func replicationQueues() async throws -> [ReplicationQueueSummary] {
        try await database.read { sql in
            try await sql.raw(
                """
                SELECT destination,
                       SUM(CASE WHEN status = 'PENDING' THEN 1 ELSE 0 END) AS pending,
                       SUM(CASE WHEN status = 'FAILED' THEN 1 ELSE 0 END) AS failed,
                       SUM(CASE WHEN status = 'COMPLETE' THEN 1 ELSE 0 END) AS complete,
                       MIN(CASE WHEN status = 'PENDING' THEN created_at END) AS oldest_pending,
                       MAX(completed_at) AS last_completed
                FROM replication_tasks GROUP BY destination ORDER BY destination
                """
            ).all().map { row in
                ReplicationQueueSummary(
                    destination: try row.decode(column: "destination", as: String.self), pending: try row.decode(column: "pending", as: Int.self),
                    failed: try row.decode(column: "failed", as: Int.self), complete: try row.decode(column: "complete", as: Int.self),
                    oldestPendingCreatedAt: try row.decode(column: "oldest_pending", as: Int64?.self),
                    lastCompletedAt: try row.decode(column: "last_completed", as: Int64?.self))
            }
        }
    }

    /// Sends FAILED tasks (all, or one destination's) back to the queue, from their first attempt.
    public func retryFailedReplications(destination: String?) async throws -> Int {
        try await database.transaction { sql in
            var query: SQLQueryString =
                "UPDATE replication_tasks SET status = 'PENDING', attempts = 0, next_attempt_at = \(bind: Timestamp.nowMillis()), completed_at = NULL WHERE status = 'FAILED'"
            if let destination { query += " AND destination = \(bind: destination)" }
            return try await sql.raw(query + " RETURNING id").all().count
        }
    }

    /// Forgets finished tasks older than `before`, except each image's newest per destination.
    public func pruneReplicationTasks(finishedBefore before: Int64) async throws {
        try await database.transaction { sql in
            try await sql.raw(
                """
                DELETE FROM replication_tasks WHERE status <> 'PENDING' AND completed_at < \(bind: before)
                  AND EXISTS (SELECT 1 FROM replication_tasks n WHERE n.destination = replication_tasks.destination
                              AND n.repository = replication_tasks.repository AND n.digest = replication_tasks.digest
                              AND n.id > replication_tasks.id)
                """
            ).run()
        }
    }

    private static func replicationTask(_ row: any SQLRow) throws -> ReplicationTask {
        ReplicationTask(
            id: try row.decode(column: "id", as: Int64.self), destination: try row.decode(column: "destination", as: String.self),
            repository: try row.decode(column: "repository", as: String.self), digest: try row.decode(column: "digest", as: String.self),
            tag: try row.decode(column: "tag", as: String?.self),
            status: ReplicationTask.Status(rawValue: try row.decode(column: "status", as: String.self)) ?? .failed,
            attempts: try row.decode(column: "attempts", as: Int.self), nextAttemptAt: try row.decode(column: "next_attempt_at", as: Int64.self),
            lastError: try row.decode(column: "last_error", as: String?.self), createdAt: try row.decode(column: "created_at", as: Int64.self),
            completedAt: try row.decode(column: "completed_at", as: Int64?.self), bytesCopied: try row.decode(column: "bytes_copied", as: Int64?.self),
            targetRepository: try row.decode(column: "target_repository", as: String?.self),
            action: ReplicationAction(rawValue: try row.decode(column: "action", as: String.self)) ?? .copy)
    }
}

extension MetadataStore {
    /// A page of a repository's tags with the digests they point at, in byte order (for
    /// replication's reconcile pass). Empty when the repository does not exist.
    public func taggedDigests(in repository: String, after last: String?, limit: Int) async throws -> [(tag: String, digest: String)] {
        try await database.read { sql in
            try await sql.raw(
                """
                SELECT t.name, t.digest FROM tags t JOIN repositories r ON r.id = t.repository_id
                WHERE r.name = \(bind: repository) AND t.name > \(bind: last ?? "") ORDER BY t.name LIMIT \(literal: limit)
                """
            ).all().map { (try $0.decode(column: "name", as: String.self), try $0.decode(column: "digest", as: String.self)) }
        }
    }

    /// Whether a copy of this image to this destination is already waiting.
    public func replicationPending(destination: String, repository: String, digest: String) async throws -> Bool {
        try await database.read { sql in
            try await sql.raw(
                """
                SELECT 1 AS found FROM replication_tasks WHERE status = 'PENDING' AND destination = \(bind: destination)
                  AND repository = \(bind: repository) AND digest = \(bind: digest) LIMIT 1
                """
            ).first() != nil
        }
    }
}

/// One of Wharf's own replication rules (the management API's), as stored.
public struct ReplicationRuleRecord: Sendable, Equatable {
    public enum Trigger: String, Sendable, CaseIterable {
        /// Every push, tag move (and deletion, with `propagateDeletes`) as it happens.
        case push
        /// Only when run by hand (`POST /api/v1/replication/rules/{name}/run`) or on its schedule.
        case manual
    }

    public var id: Int64
    public var name: String
    public var enabled: Bool
    /// Wildcard patterns (`*`) of repository names; any may match.
    public var repositories: [String]
    /// Wildcard patterns of tags; empty: every tag, and images pushed by digest (referrers) too.
    public var tags: [String]
    /// Names of configured destinations.
    public var destinations: [String]
    public var trigger: Trigger
    /// Also compared and repaired this often (a reconcile of the rule's repositories); nil: never.
    public var scheduleSeconds: Int?
    /// Deletions of images and tags at the source are made at the destinations too.
    public var propagateDeletes: Bool
    /// Prepended to repository names at the destinations (`mirror/` copies `team/app` to `mirror/team/app`).
    public var destinationPrefix: String
    public var createdAt: Int64
    public var updatedAt: Int64

    public init(
        id: Int64 = 0, name: String, enabled: Bool = true, repositories: [String], tags: [String] = [], destinations: [String],
        trigger: Trigger = .push, scheduleSeconds: Int? = nil, propagateDeletes: Bool = false, destinationPrefix: String = "",
        createdAt: Int64 = 0, updatedAt: Int64 = 0
    ) {
        self.id = id
        self.name = name
        self.enabled = enabled
        self.repositories = repositories
        self.tags = tags
        self.destinations = destinations
        self.trigger = trigger
        self.scheduleSeconds = scheduleSeconds
        self.propagateDeletes = propagateDeletes
        self.destinationPrefix = destinationPrefix
        self.createdAt = createdAt
        self.updatedAt = updatedAt
    }
}

extension MetadataStore {
    public func replicationRules() async throws -> [ReplicationRuleRecord] {
        try await database.read { sql in try await sql.raw("SELECT * FROM replication_rules ORDER BY name").all().map(Self.replicationRule) }
    }

    /// Creates the rule, or replaces the one of the same name. Returns it as stored.
    @discardableResult
    public func putReplicationRule(_ rule: ReplicationRuleRecord) async throws -> ReplicationRuleRecord {
        let now = Timestamp.nowMillis()
        return try await database.transaction { sql in
            try await sql.raw(
                """
                INSERT INTO replication_rules (name, enabled, repositories, tags, destinations, trigger, schedule_seconds, propagate_deletes,
                                               destination_prefix, created_at, updated_at)
                VALUES (\(bind: rule.name), \(bind: rule.enabled), \(bind: rule.repositories.joined(separator: ",")), \(bind: rule.tags.joined(separator: ",")),
                        \(bind: rule.destinations.joined(separator: ",")), \(bind: rule.trigger.rawValue), \(bind: rule.scheduleSeconds),
                        \(bind: rule.propagateDeletes), \(bind: rule.destinationPrefix), \(bind: now), \(bind: now))
                ON CONFLICT (name) DO UPDATE SET enabled = excluded.enabled, repositories = excluded.repositories, tags = excluded.tags,
                    destinations = excluded.destinations, trigger = excluded.trigger, schedule_seconds = excluded.schedule_seconds,
                    propagate_deletes = excluded.propagate_deletes, destination_prefix = excluded.destination_prefix, updated_at = excluded.updated_at
                """
            ).run()
            return try await sql.raw("SELECT * FROM replication_rules WHERE name = \(bind: rule.name)").first().map(Self.replicationRule)!
        }
    }

    public func deleteReplicationRule(named name: String) async throws -> Bool {
        try await database.transaction { sql in
            try await !sql.raw("DELETE FROM replication_rules WHERE name = \(bind: name) RETURNING id").all().isEmpty
        }
    }

    private static func replicationRule(_ row: any SQLRow) throws -> ReplicationRuleRecord {
        func list(_ column: String) throws -> [String] {
            try row.decode(column: column, as: String.self).split(separator: ",").map(String.init)
        }
        return ReplicationRuleRecord(
            id: try row.decode(column: "id", as: Int64.self), name: try row.decode(column: "name", as: String.self),
            enabled: try row.decode(column: "enabled", as: Bool.self), repositories: try list("repositories"), tags: try list("tags"),
            destinations: try list("destinations"),
            trigger: ReplicationRuleRecord.Trigger(rawValue: try row.decode(column: "trigger", as: String.self)) ?? .manual,
            scheduleSeconds: try row.decode(column: "schedule_seconds", as: Int?.self),
            propagateDeletes: try row.decode(column: "propagate_deletes", as: Bool.self),
            destinationPrefix: try row.decode(column: "destination_prefix", as: String.self),
            createdAt: try row.decode(column: "created_at", as: Int64.self), updatedAt: try row.decode(column: "updated_at", as: Int64.self))
    }
}
