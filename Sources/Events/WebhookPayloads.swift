import Foundation
import Metadata

/// The bodies a webhook receives, in the format it chose.
public enum WebhookFormat: String, Sendable, CaseIterable, Codable {
    /// CNCF Distribution's notification envelope: `{"events": [ … ]}`, media type
    /// `application/vnd.docker.distribution.events.v1+json`, so receivers written for Distribution work.
    case distribution
    /// CloudEvents 1.0 in structured JSON mode (`application/cloudevents+json`).
    case cloudevents

    public var contentType: String {
        switch self {
        case .distribution: "application/vnd.docker.distribution.events.v1+json"
        case .cloudevents: "application/cloudevents+json"
        }
    }
}

/// Which events a webhook asks for (its filter), in the names the management API uses.
public enum WebhookEventFilter: String, Sendable, CaseIterable, Codable {
    case push, tag, delete
    /// Every finished scan (completed or failed).
    case scan
    /// A completed scan that found a vulnerability at or above the webhook's minimum severity.
    case vulnerability
    /// Alerts: a namespace near its quota, the disk nearly full, an old vulnerability database.
    case alert

    public func matches(_ event: RegistryEvent, minimumSeverity: String?) -> Bool {
        switch self {
        case .push: event.kind == .push
        case .tag: event.kind == .tagMove
        case .delete: event.kind == .delete
        case .scan: event.kind == .scan
        case .alert: event.kind == .alert
        case .vulnerability:
            event.kind == .scan
                && (ScanDetail.severities.firstIndex(of: ScanDetail(event.detail)?.highestSeverity ?? "") ?? -1)
                    >= (ScanDetail.severities.firstIndex(of: minimumSeverity ?? "HIGH") ?? ScanDetail.severities.count)
        }
    }
}

public enum WebhookPayloads {
    /// `registry` is this registry's address as clients use it (`host:port`), for target URLs and
    /// the CloudEvents `source`.
    public static func body(for event: RegistryEvent, format: WebhookFormat, registry: String) -> String {
        let timestamp = Timestamp.rfc3339(millis: event.occurredAt)
        let id = "\(event.id)"
        var target: [String: Any] = ["repository": event.repository]
        if let digest = event.digest {
            target["digest"] = digest
            target["url"] = "http://\(registry)/v2/\(event.repository)/manifests/\(digest)"
        }
        if let tag = event.tag { target["tag"] = tag }
        if let mediaType = event.mediaType { target["mediaType"] = mediaType }
        if let size = event.size {
            target["size"] = size
            target["length"] = size
        }
        let detail = event.detail.flatMap { try? JSONSerialization.jsonObject(with: Data($0.utf8)) }
        let object: [String: Any]
        switch format {
        case .distribution:
            // Distribution's actions are push, pull and delete; a tag move is a push of that tag,
            // and a scan (which Distribution does not have) is action "scan" with the outcome.
            let action =
                switch event.kind {
                case .delete: "delete"
                case .scan: "scan"
                case .alert: "alert"
                case .push, .tagMove: "push"
                }
            object = [
                "events": [
                    [
                        "id": id, "timestamp": timestamp, "action": action, "target": target,
                        "actor": ["name": event.actor ?? ""], "source": ["addr": registry],
                        "request": ["host": registry],
                    ].merging(detail.map { [event.kind == .alert ? "alert" : "scan": $0] } ?? [:]) { first, _ in first } as [String: Any]
                ]
            ]
        case .cloudevents:
            var data = target
            data["actor"] = event.actor ?? ""
            if let detail { data[event.kind == .alert ? "alert" : "scan"] = detail }
            object = [
                "specversion": "1.0", "id": id, "source": "wharf://\(registry)/\(event.repository)", "type": cloudEventType(event.kind),
                "time": timestamp, "datacontenttype": "application/json",
                "subject": event.digest.map { "\(event.repository)@\($0)" } ?? event.repository, "data": data,
            ]
        }
        let encoded = (try? JSONSerialization.data(withJSONObject: object, options: [.sortedKeys, .withoutEscapingSlashes])) ?? Data("{}".utf8)
        return String(decoding: encoded, as: UTF8.self)
    }

    static func cloudEventType(_ kind: RegistryEvent.Kind) -> String {
        switch kind {
        case .push: "dev.wharf.image.pushed"
        case .tagMove: "dev.wharf.tag.moved"
        case .delete: "dev.wharf.image.deleted"
        case .scan: "dev.wharf.image.scanned"
        case .alert: "dev.wharf.alert"
        }
    }
}
