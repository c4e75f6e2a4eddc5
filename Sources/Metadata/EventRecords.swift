import OCI
import SQLKit

#if canImport(FoundationEssentials)
import FoundationEssentials
#else
import Foundation
#endif

/// Something that happened to stored content, as the outbox holds it.
public struct RegistryEvent: Sendable, Equatable {
    public enum Kind: String, Sendable, CaseIterable {
        /// A manifest was pushed (by tag or by digest), whether or not its bytes were new.
        case push
        /// A tag that pointed at one manifest now points at another.
        case tagMove = "tag"
        /// A manifest, or only a tag, was deleted.
        case delete
        /// A scan finished (`detail`: status, severity counts, the highest severity found).
        case scan
        /// A condition operators must act on started or ended (`detail`: which, its figures and
        /// `state` firing or resolved): a namespace near its quota (repository = the namespace), the
        /// disk nearly full or the vulnerability database too old (repository empty: registry-wide).
        case alert
    }

    public var id: Int64 = 0
    public var kind: Kind
    public var repository: String
    public var digest: String?
    public var tag: String?
    public var mediaType: String?
    public var size: Int64?
    public var actor: String?
    public var occurredAt: Int64
    /// A JSON object with what else the event says (a scan's outcome), or nil.
    public var detail: String?

    public var namespace: String { RepositoryName(repository).map { String($0.namespace) } ?? repository }

    public init(
        kind: Kind, repository: String, digest: String?, tag: String? = nil, mediaType: String? = nil, size: Int64? = nil, actor: String?,
        occurredAt: Int64, detail: String? = nil
    ) {
        self.detail = detail
        self.kind = kind
        self.repository = repository
        self.digest = digest
        self.tag = tag
        self.mediaType = mediaType
        self.size = size
        self.actor = actor
        self.occurredAt = occurredAt
    }
}

/// What a scan event's `detail` holds.
public struct ScanDetail: Sendable, Codable, Equatable {
    /// Severities from lowest to highest, ECR's words.
    public static let severities = ["UNDEFINED", "INFORMATIONAL", "LOW", "MEDIUM", "HIGH", "CRITICAL"]

    /// COMPLETE or FAILED.
    public var status: String
    /// Findings per severity (VEX-suppressed ones excluded).
    public var findings: [String: Int]
    /// The highest severity among them, or nil when there are none.
    public var highestSeverity: String?
    /// Why a scan failed.
    public var reason: String?

    public init(status: String, findings: [String: Int], reason: String? = nil) {
        self.status = status
        self.findings = findings.filter { $0.value > 0 }
        self.highestSeverity = Self.severities.last { (findings[$0] ?? 0) > 0 }
        self.reason = reason
    }

    public init?(_ json: String?) {
        guard let json, let decoded = try? JSONDecoder().decode(ScanDetail.self, from: Data(json.utf8)) else { return nil }
        self = decoded
    }

    public var json: String {
        let encoder = JSONEncoder()
        encoder.outputFormatting = [.sortedKeys]
        return (try? encoder.encode(self)).map { String(decoding: $0, as: UTF8.self) } ?? "{}"
    }
}

public struct WebhookRecord: Sendable, Equatable {
    public var id: Int64
    /// Nil: every namespace's events.
    public var namespace: String?
    public var url: String
    /// Sealed with the master key.
    public var sealedSecret: String
    public var format: String
    public var events: [String]
    public var enabled: Bool
    public var createdAt: Int64
    /// For `vulnerability` events: the lowest severity that triggers one.
    public var minimumSeverity: String?

    public init(
        id: Int64, namespace: String?, url: String, sealedSecret: String, format: String, events: [String], enabled: Bool, createdAt: Int64,
        minimumSeverity: String? = nil
    ) {
        self.minimumSeverity = minimumSeverity
        self.id = id
        self.namespace = namespace
        self.url = url
        self.sealedSecret = sealedSecret
        self.format = format
        self.events = events
        self.enabled = enabled
        self.createdAt = createdAt
    }
}

public struct WebhookDelivery: Sendable, Equatable {
    public enum Status: String, Sendable {
        case pending = "PENDING"
        case delivered = "DELIVERED"
        case failed = "FAILED"
    }
    public var id: Int64
    public var webhookID: Int64
    public var eventKind: String
    public var repository: String
    public var body: String
    public var status: Status
    public var attempts: Int
    public var nextAttemptAt: Int64
    public var lastStatus: Int?
    public var lastError: String?
    public var createdAt: Int64
    public var deliveredAt: Int64?
}

/// The outbox, webhooks and their deliveries. Events are appended inside the transactions of
/// `putManifest`, `deleteManifest` and `deleteTag`; everything else here is the dispatcher's.
extension MetadataStore {
    static func appendEvent(_ event: RegistryEvent, _ sql: any SQLDatabase) async throws {
        try await sql.raw(
            """
            INSERT INTO event_outbox (kind, namespace, repository, digest, tag, media_type, size, actor, occurred_at, detail)
            VALUES (\(bind: event.kind.rawValue), \(bind: event.namespace), \(bind: event.repository), \(bind: event.digest), \(bind: event.tag),
                    \(bind: event.mediaType), \(bind: event.size), \(bind: event.actor), \(bind: event.occurredAt), \(bind: event.detail))
            """
        ).run()
    }

    // MARK: Webhooks

    public func createWebhook(
        namespace: String?, url: String, sealedSecret: String, format: String, events: [String], minimumSeverity: String? = nil
    ) async throws -> WebhookRecord {
        let now = Timestamp.nowMillis()
        return try await database.transaction { sql in
            let row = try await sql.raw(
                """
                INSERT INTO webhooks (namespace, url, secret, format, events, enabled, created_at, minimum_severity)
                VALUES (\(bind: namespace), \(bind: url), \(bind: sealedSecret), \(bind: format), \(bind: events.joined(separator: ",")), \(bind: true), \(bind: now),
                        \(bind: minimumSeverity))
                RETURNING id
                """
            ).first()
            return WebhookRecord(
                id: try row!.decode(column: "id", as: Int64.self), namespace: namespace, url: url, sealedSecret: sealedSecret, format: format,
                events: events, enabled: true, createdAt: now, minimumSeverity: minimumSeverity)
        }
    }

    /// Every webhook, or those of one namespace (`.some(nil)`: the registry-wide ones).
    public func webhooks(namespace: String?? = .none) async throws -> [WebhookRecord] {
        try await database.read { sql in
            let query: SQLQueryString =
                switch namespace {
                case .none: "SELECT * FROM webhooks ORDER BY id"
                case .some(.none): "SELECT * FROM webhooks WHERE namespace IS NULL ORDER BY id"
                case .some(.some(let name)): "SELECT * FROM webhooks WHERE namespace = \(bind: name) ORDER BY id"
                }
            return try await sql.raw(query).all().map(Self.webhook)
        }
    }

    public func webhook(_ id: Int64) async throws -> WebhookRecord? {
        try await database.read { sql in try await sql.raw("SELECT * FROM webhooks WHERE id = \(bind: id)").first().map(Self.webhook) }
    }

    public func setWebhookEnabled(_ id: Int64, _ enabled: Bool) async throws -> Bool {
        try await database.transaction { sql in
            try await !sql.raw("UPDATE webhooks SET enabled = \(bind: enabled) WHERE id = \(bind: id) RETURNING id").all().isEmpty
        }
    }

    /// Deletes the webhook and its delivery log.
    public func deleteWebhook(_ id: Int64) async throws -> Bool {
        try await database.transaction { sql in
            try await sql.raw("DELETE FROM webhook_deliveries WHERE webhook_id = \(bind: id)").run()
            return try await !sql.raw("DELETE FROM webhooks WHERE id = \(bind: id) RETURNING id").all().isEmpty
        }
    }

    private static func webhook(_ row: any SQLRow) throws -> WebhookRecord {
        WebhookRecord(
            id: try row.decode(column: "id", as: Int64.self), namespace: try row.decode(column: "namespace", as: String?.self),
            url: try row.decode(column: "url", as: String.self), sealedSecret: try row.decode(column: "secret", as: String.self),
            format: try row.decode(column: "format", as: String.self),
            events: try row.decode(column: "events", as: String.self).split(separator: ",").map(String.init),
            enabled: try row.decode(column: "enabled", as: Bool.self), createdAt: try row.decode(column: "created_at", as: Int64.self),
            minimumSeverity: try row.decode(column: "minimum_severity", as: String?.self))
    }

    // MARK: Dispatching

    /// A delivery to create for an event: which webhook, and the body it gets.
    public struct PlannedDelivery: Sendable {
        public var webhookID: Int64
        public var body: String
        public init(webhookID: Int64, body: String) {
            self.webhookID = webhookID
            self.body = body
        }
    }

    /// Takes up to `limit` of the oldest events off the outbox and files the deliveries `plan`
    /// makes of each. The bodies are made before the write transaction (it holds SQLite's single
    /// writer, which pushes wait for); inside it, only events this call actually deleted get their
    /// deliveries, so an event is never lost and never fanned out twice, even with several nodes
    /// dispatching. Returns how many events were taken.
    ///
    /// `replicate` names the replication destinations an event's image goes to: each gets a
    /// `replication_tasks` row in the same transaction, so a committed push is never left uncopied.
    public func fanOutEvents(
        limit: Int, plan: @Sendable (RegistryEvent) -> [PlannedDelivery], replicate: @Sendable (RegistryEvent) -> [PlannedReplication] = { _ in [] }
    ) async throws -> Int {
        let events = try await database.read { sql in
            try await sql.raw(
                """
                SELECT id, kind, repository, digest, tag, media_type, size, actor, occurred_at, detail FROM event_outbox ORDER BY id LIMIT \(literal: limit)
                """
            ).all().map(Self.event)
        }
        guard !events.isEmpty else { return 0 }
        let planned = events.map { (id: $0.id, kind: $0.kind, repository: $0.repository, deliveries: plan($0)) }
        let replications = events.flatMap { event in replicate(event).map { (event: event, plan: $0) } }
        let now = Timestamp.nowMillis()
        return try await database.transaction { sql in
            let taken = Set(
                try await sql.raw("DELETE FROM event_outbox WHERE id IN (\(binds: events.map(\.id))) RETURNING id").all().map {
                    try $0.decode(column: "id", as: Int64.self)
                })
            let rows = planned.filter { taken.contains($0.id) }.flatMap { event in event.deliveries.map { (event, $0) } }
            for chunk in rows.chunked(100) {
                var query: SQLQueryString =
                    "INSERT INTO webhook_deliveries (webhook_id, event_kind, repository, body, status, attempts, next_attempt_at, created_at) VALUES "
                for (index, (event, delivery)) in chunk.enumerated() {
                    query += "\(unsafeRaw: index == 0 ? "" : ", ")(\(bind: delivery.webhookID), \(bind: event.kind.rawValue), \(bind: event.repository), "
                    query += "\(bind: delivery.body), 'PENDING', 0, \(bind: now), \(bind: now))"
                }
                try await sql.raw(query).run()
            }
            for chunk in replications.filter({ taken.contains($0.event.id) }).chunked(100) {
                try await Self.insertReplicationTasks(Array(chunk), now: now, sql)
            }
            return taken.count
        }
    }

    private static func event(_ row: any SQLRow) throws -> RegistryEvent {
        var event = RegistryEvent(
            kind: RegistryEvent.Kind(rawValue: try row.decode(column: "kind", as: String.self)) ?? .push,
            repository: try row.decode(column: "repository", as: String.self), digest: try row.decode(column: "digest", as: String?.self),
            tag: try row.decode(column: "tag", as: String?.self), mediaType: try row.decode(column: "media_type", as: String?.self),
            size: try row.decode(column: "size", as: Int64?.self), actor: try row.decode(column: "actor", as: String?.self),
            occurredAt: try row.decode(column: "occurred_at", as: Int64.self), detail: try row.decode(column: "detail", as: String?.self))
        event.id = try row.decode(column: "id", as: Int64.self)
        return event
    }

    /// Deliveries due now, at most one per webhook and repository (the oldest pending one), so a
    /// receiver sees each repository's events in the order they happened.
    public func dueDeliveries(now: Int64, limit: Int) async throws -> [WebhookDelivery] {
        try await database.read { sql in
            try await sql.raw(
                """
                SELECT * FROM webhook_deliveries d
                WHERE d.status = 'PENDING' AND d.next_attempt_at <= \(bind: now)
                  AND NOT EXISTS (SELECT 1 FROM webhook_deliveries e
                                  WHERE e.webhook_id = d.webhook_id AND e.repository = d.repository AND e.status = 'PENDING' AND e.id < d.id)
                ORDER BY d.id LIMIT \(literal: limit)
                """
            ).all().map(Self.delivery)
        }
    }

    /// Records one attempt: delivered, or failed with the next try at `retryAt` (nil: given up).
    public func recordDeliveryAttempt(_ id: Int64, delivered: Bool, status: Int?, error: String?, retryAt: Int64?) async throws {
        let now = Timestamp.nowMillis()
        let state: WebhookDelivery.Status = delivered ? .delivered : (retryAt == nil ? .failed : .pending)
        try await database.transaction { sql in
            try await sql.raw(
                """
                UPDATE webhook_deliveries SET status = \(bind: state.rawValue), attempts = attempts + 1, last_status = \(bind: status),
                    last_error = \(bind: error), next_attempt_at = \(bind: retryAt ?? now), delivered_at = \(bind: delivered ? now : nil)
                WHERE id = \(bind: id)
                """
            ).run()
        }
    }

    /// The newest deliveries of a webhook first.
    public func deliveries(of webhookID: Int64, limit: Int) async throws -> [WebhookDelivery] {
        try await database.read { sql in
            try await sql.raw("SELECT * FROM webhook_deliveries WHERE webhook_id = \(bind: webhookID) ORDER BY id DESC LIMIT \(literal: limit)")
                .all().map(Self.delivery)
        }
    }

    /// Queues a delivery again now, from its first attempt. False when it does not belong to the webhook.
    public func redeliver(_ id: Int64, of webhookID: Int64) async throws -> Bool {
        try await database.transaction { sql in
            try await !sql.raw(
                """
                UPDATE webhook_deliveries SET status = 'PENDING', attempts = 0, next_attempt_at = \(bind: Timestamp.nowMillis()), delivered_at = NULL
                WHERE id = \(bind: id) AND webhook_id = \(bind: webhookID) RETURNING id
                """
            ).all().isEmpty
        }
    }

    private static func delivery(_ row: any SQLRow) throws -> WebhookDelivery {
        WebhookDelivery(
            id: try row.decode(column: "id", as: Int64.self), webhookID: try row.decode(column: "webhook_id", as: Int64.self),
            eventKind: try row.decode(column: "event_kind", as: String.self), repository: try row.decode(column: "repository", as: String.self),
            body: try row.decode(column: "body", as: String.self),
            status: WebhookDelivery.Status(rawValue: try row.decode(column: "status", as: String.self)) ?? .failed,
            attempts: try row.decode(column: "attempts", as: Int.self), nextAttemptAt: try row.decode(column: "next_attempt_at", as: Int64.self),
            lastStatus: try row.decode(column: "last_status", as: Int?.self), lastError: try row.decode(column: "last_error", as: String?.self),
            createdAt: try row.decode(column: "created_at", as: Int64.self), deliveredAt: try row.decode(column: "delivered_at", as: Int64?.self))
    }
}

extension MetadataStore {
    /// Namespaces with a storage quota, and the quota.
    public func namespaceQuotas() async throws -> [String: Int64] {
        try await database.read { sql in
            var quotas: [String: Int64] = [:]
            for row in try await sql.raw("SELECT name, quota_bytes FROM namespaces WHERE quota_bytes IS NOT NULL").all() {
                quotas[try row.decode(column: "name", as: String.self)] = try row.decode(column: "quota_bytes", as: Int64.self)
            }
            return quotas
        }
    }

    /// An event that belongs to no change (an alert): written on its own.
    public func appendEvent(_ event: RegistryEvent) async throws {
        try await transactionAppendingEvents { sql in try await Self.appendEvent(event, sql) }
    }

    /// A transaction that may append events: once it commits, this process's dispatcher hears of
    /// it at once (`Database.outboxAppended`) instead of at its next poll. Other nodes poll.
    func transactionAppendingEvents<T: Sendable>(_ body: (any SQLDatabase) async throws -> T) async throws -> T {
        let result = try await database.transaction(body)
        database.outboxAppended.signal()
        return result
    }
}
