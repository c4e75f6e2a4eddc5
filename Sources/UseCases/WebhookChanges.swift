import Access
import Crypto
import Events
import Foundation
import Metadata

/// Creating, listing and removing webhooks, reading their delivery logs and sending a delivery
/// again, for every front end: validated, secrets sealed, changes audited.
///
/// Permission is checked by the front end: a registry-wide webhook is the system administrators'
/// business, a namespace's webhook its admins'.
public struct WebhookChanges: Sendable {
    let metadata: MetadataStore
    let sealer: SecretSealer
    let audit: AuditLog?

    public init(metadata: MetadataStore, sealer: SecretSealer, audit: AuditLog?) {
        self.metadata = metadata
        self.sealer = sealer
        self.audit = audit
    }

    public struct NewWebhook: Sendable, Decodable {
        public var namespace: String?
        public var url: String
        /// At least 16 characters; generated (and shown once) when absent.
        public var secret: String?
        public var format: String?
        public var events: [String]
        /// For `vulnerability`: the lowest severity that triggers an event (default HIGH).
        public var minimumSeverity: String?
    }

    /// The created webhook and its secret (the only time it is shown).
    public func create(_ new: NewWebhook, by requester: Requester) async throws -> (WebhookRecord, secret: String) {
        guard new.url.utf8.count <= 2048, let url = URL(string: new.url), ["http", "https"].contains(url.scheme?.lowercased() ?? ""),
            let host = url.host, !host.isEmpty
        else { throw UseCaseError.invalid("url must be an http or https URL with a host, at most 2048 characters") }
        guard !new.events.isEmpty else {
            throw UseCaseError.invalid("events must name at least one of \(WebhookEventFilter.allCases.map(\.rawValue).joined(separator: ", "))")
        }
        for event in new.events where WebhookEventFilter(rawValue: event) == nil {
            throw UseCaseError.invalid("unknown event '\(event)'; events are \(WebhookEventFilter.allCases.map(\.rawValue).joined(separator: ", "))")
        }
        let format = new.format ?? WebhookFormat.distribution.rawValue
        guard WebhookFormat(rawValue: format) != nil else {
            throw UseCaseError.invalid("format must be \(WebhookFormat.allCases.map(\.rawValue).joined(separator: " or "))")
        }
        if let severity = new.minimumSeverity {
            guard ScanDetail.severities.contains(severity) else {
                throw UseCaseError.invalid("minimumSeverity must be one of \(ScanDetail.severities.joined(separator: ", "))")
            }
            guard new.events.contains(WebhookEventFilter.vulnerability.rawValue) else {
                throw UseCaseError.invalid("minimumSeverity applies to vulnerability events; add \"vulnerability\" to events")
            }
        }
        if let secret = new.secret, !(16...256).contains(secret.utf8.count) {
            throw UseCaseError.invalid("secret must be 16 to 256 characters (or leave it out and one is generated)")
        }
        let secret = new.secret ?? Self.generatedSecret()
        let record = try await metadata.createWebhook(
            namespace: new.namespace, url: new.url, sealedSecret: try sealer.seal(secret), format: format, events: Array(Set(new.events)).sorted(),
            minimumSeverity: new.events.contains(WebhookEventFilter.vulnerability.rawValue) ? (new.minimumSeverity ?? "HIGH") : nil)
        audit?.record(
            AuditEvent(
                actor: requester.identity, action: "webhook.create", namespace: new.namespace, target: String(record.id), source: requester.source,
                detail: AuditDetail.object(["url": new.url, "events": record.events.joined(separator: ","), "format": format])))
        return (record, secret)
    }

    public func delete(_ webhook: WebhookRecord, by requester: Requester) async throws {
        guard try await metadata.deleteWebhook(webhook.id) else { return }
        audit?.record(
            AuditEvent(actor: requester.identity, action: "webhook.delete", namespace: webhook.namespace, target: String(webhook.id), source: requester.source))
    }

    public func setEnabled(_ webhook: WebhookRecord, _ enabled: Bool, by requester: Requester) async throws {
        _ = try await metadata.setWebhookEnabled(webhook.id, enabled)
        audit?.record(
            AuditEvent(
                actor: requester.identity, action: enabled ? "webhook.enable" : "webhook.disable", namespace: webhook.namespace,
                target: String(webhook.id), source: requester.source))
    }

    public func redeliver(_ delivery: Int64, of webhook: WebhookRecord, by requester: Requester) async throws -> Bool {
        guard try await metadata.redeliver(delivery, of: webhook.id) else { return false }
        audit?.record(
            AuditEvent(
                actor: requester.identity, action: "webhook.redeliver", namespace: webhook.namespace, target: "\(webhook.id)/\(delivery)",
                source: requester.source))
        return true
    }

    static func generatedSecret() -> String {
        SymmetricKey(size: .bits256).withUnsafeBytes { Data($0) }.base64EncodedString()
            .replacingOccurrences(of: "+", with: "-").replacingOccurrences(of: "/", with: "_").replacingOccurrences(of: "=", with: "")
    }
}
