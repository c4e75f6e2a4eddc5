import Logging
import Metadata
import SQLKit
import ServiceLifecycle
import Synchronization

/// One thing that happened: who did what, to what, when, from where, and how it ended.
/// The id of the request being answered (`X-Request-Id`), set by the HTTP edge for the request's
/// task, so an audit event records it without every use-case passing it along.
public enum RequestTrace {
    @TaskLocal public static var requestID: String?
}

public struct AuditEvent: Sendable, Equatable, Codable {
    public enum Result: String, Sendable, Codable {
        case success
        case denied
        case failure
    }

    public var id: Int64?
    /// Unix milliseconds.
    public var at: Int64
    public var actor: String?
    public var actorKind: String
    /// `login`, `token`, `push`, `pull`, `delete`, `user.create`, `namespace.member.set`, …
    public var action: String
    public var namespace: String?
    public var repository: String?
    /// A tag, digest, user or robot name, depending on the action.
    public var target: String?
    public var result: Result
    /// The client's address.
    public var source: String?
    /// Extra facts as a JSON object.
    public var detail: String?
    /// How many identical events this row stands for (pulls are aggregated).
    public var count: Int64
    /// The request that caused it (`X-Request-Id`); nil for aggregated pulls and background work.
    public var requestID: String?

    public init(
        at: Int64 = Timestamp.nowMillis(), actor: Identity?, action: String, namespace: String? = nil, repository: String? = nil,
        target: String? = nil, result: Result = .success, source: String? = nil, detail: String? = nil, count: Int64 = 1
    ) {
        self.at = at
        self.actor = actor.flatMap { $0.kind == .anonymous ? nil : $0.name }
        self.actorKind = actor?.kind.rawValue ?? "system"
        self.action = action
        self.namespace = namespace
        self.repository = repository
        self.target = target
        self.result = result
        self.source = source
        self.detail = detail
        self.count = count
        self.requestID = RequestTrace.requestID
    }
}

public struct AuditQuery: Sendable {
    public var namespace: String?
    public var actor: String?
    public var action: String?
    public var repository: String?
    public var since: Int64?
    public var until: Int64?
    /// Only events with an id below this (for paging backwards through the log).
    public var before: Int64?
    /// Only what one request did.
    public var requestID: String?
    public var limit: Int

    public init(
        namespace: String? = nil, actor: String? = nil, action: String? = nil, repository: String? = nil,
        since: Int64? = nil, until: Int64? = nil, before: Int64? = nil, limit: Int = 100, requestID: String? = nil
    ) {
        self.requestID = requestID
        self.namespace = namespace
        self.actor = actor
        self.action = action
        self.repository = repository
        self.since = since
        self.until = until
        self.before = before
        self.limit = limit
    }
}

/// The audit log. Events are buffered and written in batches so recording one never slows a
/// request; pulls are aggregated per actor, repository, digest, source and flush interval.
/// Buffered events are flushed on shutdown.
public final class AuditLog: Service, Sendable {
    private struct PullKey: Hashable {
        let actor: String?
        let actorKind: String
        let namespace: String
        let repository: String
        let target: String
        let source: String?
    }

    private struct Pending {
        var events: [AuditEvent] = []
        var pulls: [PullKey: (first: Int64, count: Int64)] = [:]
    }

    private let database: Database
    private let pending = Mutex(Pending())
    /// The latest flush; each waits for the one before it.
    private let flushes = Mutex<Task<Void, Never>?>(nil)
    private let interval: Duration
    private let logger: Logger

    public init(database: Database, interval: Duration = .seconds(2), logger: Logger) {
        self.database = database
        self.interval = interval
        self.logger = logger
    }

    public func record(_ event: AuditEvent) {
        pending.withLock { $0.events.append(event) }
    }

    public func recordPull(by identity: Identity, repository: String, namespace: String, digest: String, source: String?) {
        let key = PullKey(
            actor: identity.kind == .anonymous ? nil : identity.name, actorKind: identity.kind.rawValue,
            namespace: namespace, repository: repository, target: digest, source: source)
        let now = Timestamp.nowMillis()
        pending.withLock { pending in
            let existing = pending.pulls[key]
            pending.pulls[key] = (existing?.first ?? now, (existing?.count ?? 0) + 1)
        }
    }

    /// Writes every event recorded before the call; returns when they are committed. Flushes run
    /// one after another: a reader that flushes before querying (`auditEvents`) must not return
    /// while the periodic flush still holds the batch it took, uncommitted.
    public func flush() async {
        let flush = flushes.withLock { previous -> Task<Void, Never> in
            let earlier = previous
            let next = Task { [self] in
                await earlier?.value
                await writePending()
            }
            previous = next
            return next
        }
        await flush.value
    }

    private func writePending() async {
        let batch = pending.withLock { pending -> [AuditEvent] in
            var events = pending.events
            for (key, value) in pending.pulls {
                var event = AuditEvent(
                    at: value.first, actor: nil, action: "pull", namespace: key.namespace, repository: key.repository,
                    target: key.target, source: key.source, count: value.count)
                event.actor = key.actor
                event.actorKind = key.actorKind
                events.append(event)
            }
            pending = Pending()
            return events
        }
        guard !batch.isEmpty else { return }
        do {
            try await database.transaction { sql in
                for event in batch {
                    try await sql.raw(
                        """
                        INSERT INTO audit_events (at, actor, actor_kind, action, namespace, repository, target, result, source, detail, count, request_id)
                        VALUES (\(bind: event.at), \(bind: event.actor), \(bind: event.actorKind), \(bind: event.action), \(bind: event.namespace),
                                \(bind: event.repository), \(bind: event.target), \(bind: event.result.rawValue), \(bind: event.source),
                                \(bind: event.detail), \(bind: event.count), \(bind: event.requestID))
                        """
                    ).run()
                }
            }
        } catch {
            logger.error("could not write audit events; keeping them for the next flush", metadata: ["error": "\(error)", "count": "\(batch.count)"])
            pending.withLock { $0.events.insert(contentsOf: batch, at: 0) }
        }
    }

    public func run() async throws {
        while !Task.isShuttingDownGracefully && !Task.isCancelled {
            try? await cancelWhenGracefulShutdown { try await Task.sleep(for: self.interval) }
            await flush()
        }
        await flush()
    }

    /// Events matching `query`, newest first.
    public func events(matching query: AuditQuery) async throws -> [AuditEvent] {
        try await database.read { sql in
            var conditions: [SQLQueryString] = []
            if let namespace = query.namespace { conditions.append("namespace = \(bind: namespace)") }
            if let actor = query.actor { conditions.append("actor = \(bind: actor)") }
            if let action = query.action { conditions.append("action = \(bind: action)") }
            if let repository = query.repository { conditions.append("repository = \(bind: repository)") }
            if let since = query.since { conditions.append("at >= \(bind: since)") }
            if let until = query.until { conditions.append("at < \(bind: until)") }
            if let before = query.before { conditions.append("id < \(bind: before)") }
            if let requestID = query.requestID { conditions.append("request_id = \(bind: requestID)") }
            var statement: SQLQueryString = "SELECT * FROM audit_events"
            if !conditions.isEmpty { statement += " WHERE " + conditions.joined(separator: " AND ") }
            statement += " ORDER BY id DESC LIMIT \(literal: max(1, min(query.limit, 10_000)))"
            return try await sql.raw(statement).all().map { row in
                var event = AuditEvent(
                    at: try row.decode(column: "at", as: Int64.self), actor: nil,
                    action: try row.decode(column: "action", as: String.self),
                    namespace: try row.decode(column: "namespace", as: String?.self),
                    repository: try row.decode(column: "repository", as: String?.self),
                    target: try row.decode(column: "target", as: String?.self),
                    result: AuditEvent.Result(rawValue: try row.decode(column: "result", as: String.self)) ?? .failure,
                    source: try row.decode(column: "source", as: String?.self),
                    detail: try row.decode(column: "detail", as: String?.self),
                    count: try row.decode(column: "count", as: Int64.self)
                )
                event.id = try row.decode(column: "id", as: Int64.self)
                event.actor = try row.decode(column: "actor", as: String?.self)
                event.actorKind = try row.decode(column: "actor_kind", as: String.self)
                event.requestID = try row.decode(column: "request_id", as: String?.self)
                return event
            }
        }
    }
}
