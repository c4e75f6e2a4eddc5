import Access
import Events
import Foundation
import Hummingbird
import Metadata
import OCI
import UseCases

extension API {
    struct Webhook: Encodable {
        var id: Int64
        var namespace: String?
        var url: String
        var format: String
        var events: [String]
        var enabled: Bool
        var createdAt: Date
        var minimumSeverity: String?
        /// Only in the answer to its creation.
        var secret: String?

        init(_ record: WebhookRecord, secret: String? = nil) {
            id = record.id
            namespace = record.namespace
            url = record.url
            format = record.format
            events = record.events
            enabled = record.enabled
            createdAt = Date(timeIntervalSince1970: Double(record.createdAt) / 1000)
            minimumSeverity = record.minimumSeverity
            self.secret = secret
        }
    }

    struct WebhookDelivery: Encodable {
        var id: Int64
        var event: String
        var repository: String
        var status: String
        var attempts: Int
        var lastStatus: Int?
        var lastError: String?
        var createdAt: Date
        var nextAttemptAt: Date?
        var deliveredAt: Date?
        var body: String

        init(_ delivery: Metadata.WebhookDelivery) {
            id = delivery.id
            event = delivery.eventKind
            repository = delivery.repository
            status = delivery.status.rawValue
            attempts = delivery.attempts
            lastStatus = delivery.lastStatus
            lastError = delivery.lastError
            createdAt = Date(timeIntervalSince1970: Double(delivery.createdAt) / 1000)
            nextAttemptAt = delivery.status == .pending ? Date(timeIntervalSince1970: Double(delivery.nextAttemptAt) / 1000) : nil
            deliveredAt = delivery.deliveredAt.map { Date(timeIntervalSince1970: Double($0) / 1000) }
            body = delivery.body
        }
    }

    struct UpdateWebhook: Decodable {
        var enabled: Bool
    }
}

extension ManagementAPI {
    /// Webhooks: registry-wide ones are the system administrators', a namespace's its admins'.
    func webhookRoutes(_ storage: StorageManagement) -> [Route] {
        let access = self.access
        let webhooks = storage.webhooks
        let metadata = storage.registry.metadata
        @Sendable func authorize(_ namespace: String?, _ caller: Caller) async throws {
            if let namespace {
                try await access.requireNamespaceAdministration(namespace, by: caller.identity)
            } else {
                try access.requireSystemAdministrator(caller.identity)
            }
        }
        @Sendable func webhook(_ context: WharfRequestContext, _ caller: Caller) async throws -> WebhookRecord {
            let text = try Self.parameter(context, "id")
            guard let id = ClientNumber.parse(text, in: 1...Int(Int64.max)), let record = try await metadata.webhook(Int64(id)) else {
                throw AccessError.notFound("webhook '\(text)' does not exist")
            }
            try await authorize(record.namespace, caller)
            return record
        }
        return [
            Route(
                .post, "/webhooks",
                "Create a webhook: registry-wide (system administrators) or for one namespace (its admins); the secret is shown only in this response",
                request: "CreateWebhook", response: "Webhook", status: .created
            ) { request, _, caller in
                let body = try await Self.decode(WebhookChanges.NewWebhook.self, request)
                if let namespace = body.namespace, try await access.store.namespace(named: namespace) == nil {
                    throw AccessError.notFound("namespace '\(namespace)' does not exist")
                }
                try await authorize(body.namespace, caller)
                let (record, secret) = try await webhooks.create(body, by: caller.requester)
                return try Self.json(API.Webhook(record, secret: secret), status: .created)
            },
            Route(
                .get, "/webhooks", "List webhooks: all of them (system administrators), or one namespace's (its admins)", response: "[Webhook]",
                query: [("namespace", "only this namespace's webhooks")]
            ) { request, _, caller in
                let namespace = request.uri.queryParameters.get("namespace")
                try await authorize(namespace, caller)
                return try Self.json(try await metadata.webhooks(namespace: namespace.map { .some($0) } ?? .none).map { API.Webhook($0) })
            },
            Route(.get, "/webhooks/{id}", "A webhook", response: "Webhook") { _, context, caller in
                try Self.json(API.Webhook(try await webhook(context, caller)))
            },
            Route(.patch, "/webhooks/{id}", "Enable or disable a webhook", request: "UpdateWebhook", response: "Webhook") { request, context, caller in
                var record = try await webhook(context, caller)
                let body = try await Self.decode(API.UpdateWebhook.self, request)
                try await webhooks.setEnabled(record, body.enabled, by: caller.requester)
                record.enabled = body.enabled
                return try Self.json(API.Webhook(record))
            },
            Route(.delete, "/webhooks/{id}", "Delete a webhook and its delivery log", status: .noContent) { _, context, caller in
                try await webhooks.delete(try await webhook(context, caller), by: caller.requester)
                return Response(status: .noContent)
            },
            Route(
                .get, "/webhooks/{id}/deliveries", "A webhook's delivery log, newest first: status, attempts, last answer or error, the body",
                response: "[WebhookDelivery]", query: [("limit", "at most this many (default 100, at most 1000)")]
            ) { request, context, caller in
                let record = try await webhook(context, caller)
                var limit = 100
                if let value = request.uri.queryParameters.get("limit") {
                    guard let parsed = ClientNumber.parse(String(value), in: 1...1000) else { throw AccessError.invalid("limit must be 1 to 1000") }
                    limit = parsed
                }
                return try Self.json(try await metadata.deliveries(of: record.id, limit: limit).map { API.WebhookDelivery($0) })
            },
            Route(
                .post, "/webhooks/{id}/deliveries/{delivery}/redeliver", "Send a delivery again now, from its first attempt", status: .accepted
            ) { _, context, caller in
                let record = try await webhook(context, caller)
                let text = try Self.parameter(context, "delivery")
                guard let delivery = ClientNumber.parse(text, in: 1...Int(Int64.max)),
                    try await webhooks.redeliver(Int64(delivery), of: record, by: caller.requester)
                else { throw AccessError.notFound("webhook \(record.id) has no delivery '\(text)'") }
                return Response(status: .accepted)
            },
        ]
    }
}
