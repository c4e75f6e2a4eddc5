import Foundation
import HTTPTypes
import Metadata
import NIOCore
import OCI
import SQLKit
import Testing

@testable import Events

/// The parts of webhook delivery that need no network: signatures, bodies, filters, backoff.
@Suite("Webhooks: signatures, bodies, filters, backoff")
struct WebhookUnitTests {
    let event: RegistryEvent = {
        var event = RegistryEvent(
            kind: .push, repository: "team/app", digest: "sha256:" + String(repeating: "a", count: 64), tag: "v1",
            mediaType: "application/vnd.oci.image.manifest.v1+json", size: 321, actor: "alice", occurredAt: 1_796_600_000_123)
        event.id = 42
        return event
    }()

    @Test("the signature is HMAC-SHA256 of \"<t>.<body>\" under the secret (vector from Python's hmac)")
    func signature() {
        let value = WebhookSignature.value(body: #"{"events":[]}"#, secret: "e2e-webhook-secret-0123456789", timestamp: 1_796_600_000)
        #expect(value == "t=1796600000,v1=5b7728f20f25d58713bb91c5b8f0a8eca93853a6dc0fcfefe04a3542dd034804")
        #expect(WebhookSignature.value(body: #"{"events":[]}"#, secret: "e2e-webhook-secret-0123456789", timestamp: 1_796_600_001) != value)
    }

    @Test("Distribution's envelope and CloudEvents carry the same facts")
    func bodies() throws {
        let distribution = try #require(
            JSONSerialization.jsonObject(with: Data(WebhookPayloads.body(for: event, format: .distribution, registry: "r:5000").utf8)) as? [String: Any])
        let entry = try #require((distribution["events"] as? [[String: Any]])?.first)
        let target = try #require(entry["target"] as? [String: Any])
        #expect(entry["action"] as? String == "push" && entry["id"] as? String == "42")
        #expect(target["repository"] as? String == "team/app" && target["tag"] as? String == "v1" && target["size"] as? Int == 321)
        #expect(target["url"] as? String == "http://r:5000/v2/team/app/manifests/\(event.digest!)")
        #expect((entry["actor"] as? [String: Any])?["name"] as? String == "alice")
        #expect(entry["timestamp"] as? String == "2026-12-06T23:33:20.123Z")

        let cloud = try #require(
            JSONSerialization.jsonObject(with: Data(WebhookPayloads.body(for: event, format: .cloudevents, registry: "r:5000").utf8)) as? [String: Any])
        #expect(cloud["specversion"] as? String == "1.0" && cloud["type"] as? String == "dev.wharf.image.pushed")
        #expect(cloud["source"] as? String == "wharf://r:5000/team/app" && cloud["subject"] as? String == "team/app@\(event.digest!)")
        #expect((cloud["data"] as? [String: Any])?["tag"] as? String == "v1")

        var deleted = event
        deleted.kind = .delete
        #expect(WebhookPayloads.body(for: deleted, format: .distribution, registry: "r").contains(#""action":"delete""#))
    }

    @Test("an event goes to enabled webhooks of its namespace or the whole registry whose filter names it")
    func plan() {
        func hook(_ id: Int64, _ namespace: String?, _ events: [String], enabled: Bool = true) -> WebhookRecord {
            WebhookRecord(
                id: id, namespace: namespace, url: "http://h", sealedSecret: "", format: "distribution", events: events, enabled: enabled, createdAt: 0)
        }
        let hooks = [
            hook(1, nil, ["push"]), hook(2, "team", ["push", "delete"]), hook(3, "other", ["push"]), hook(4, "team", ["delete"]),
            hook(5, "team", ["push"], enabled: false), hook(6, nil, ["tag"]),
        ]
        #expect(WebhookDispatcher.plan(event, webhooks: hooks, registry: "r").map(\.webhookID) == [1, 2])
        var moved = event
        moved.kind = .tagMove
        #expect(WebhookDispatcher.plan(moved, webhooks: hooks, registry: "r").map(\.webhookID) == [6])
    }

    @Test("scan events: every one for `scan`, those at or above the minimum severity for `vulnerability`")
    func scanFilters() {
        func hook(_ id: Int64, _ events: [String], _ minimum: String? = nil) -> WebhookRecord {
            WebhookRecord(
                id: id, namespace: nil, url: "http://h", sealedSecret: "", format: "cloudevents", events: events, enabled: true, createdAt: 0,
                minimumSeverity: minimum)
        }
        let hooks = [hook(1, ["scan"]), hook(2, ["vulnerability"], "HIGH"), hook(3, ["vulnerability"], "CRITICAL"), hook(4, ["push"])]
        func scanned(_ findings: [String: Int], status: String = "COMPLETE") -> RegistryEvent {
            RegistryEvent(
                kind: .scan, repository: "team/app", digest: event.digest, actor: nil, occurredAt: 0,
                detail: ScanDetail(status: status, findings: findings).json)
        }
        #expect(ScanDetail(status: "COMPLETE", findings: ["LOW": 2, "HIGH": 1, "CRITICAL": 0]).highestSeverity == "HIGH")
        #expect(WebhookDispatcher.plan(scanned(["LOW": 2, "HIGH": 1]), webhooks: hooks, registry: "r").map(\.webhookID) == [1, 2])
        #expect(WebhookDispatcher.plan(scanned(["CRITICAL": 1]), webhooks: hooks, registry: "r").map(\.webhookID) == [1, 2, 3])
        #expect(WebhookDispatcher.plan(scanned([:]), webhooks: hooks, registry: "r").map(\.webhookID) == [1])
        #expect(WebhookDispatcher.plan(scanned([:], status: "FAILED"), webhooks: hooks, registry: "r").map(\.webhookID) == [1])
        let body = WebhookPayloads.body(for: scanned(["HIGH": 1]), format: .distribution, registry: "r")
        #expect(body.contains(#""action":"scan""#) && body.contains(#""highestSeverity":"HIGH""#))
    }

    @Test("backoff doubles from the first wait, with at most 25 % jitter, up to the cap")
    func backoff() {
        var settings = WebhookDispatcher.Settings()
        settings.firstBackoff = .seconds(1)
        settings.maximumBackoff = .seconds(60)
        for (attempt, base) in [(1, 1000.0), (2, 2000), (3, 4000), (7, 60000), (40, 60000)] {
            let wait = Double(WebhookDispatcher.backoffMillis(attempt: attempt, settings))
            #expect(wait >= base && wait <= base * 1.25, "attempt \(attempt): \(wait)")
        }
    }

    @Test("with authentication off no webhook can exist, and the outbox is still drained")
    func outboxDrainedWithoutAuthentication() async throws {
        try await Harness.withServer { client, server in
            let (manifest, _) = try await client.configOnlyManifest(in: "drain/app")
            let put = try await client.request(
                .put, "/v2/drain/app/manifests/v1", headers: [.contentType: MediaType.ociManifest], body: ByteBuffer(string: manifest))
            #expect(put.status == .created)
            let deadline = ContinuousClock.now + .seconds(20)
            var waiting = 1
            while waiting > 0, ContinuousClock.now < deadline {
                try await Task.sleep(for: .milliseconds(100))
                waiting = try await server.metadata.database.read { sql in
                    try await sql.raw("SELECT COUNT(*) AS n FROM event_outbox").first()?.decode(column: "n", as: Int.self) ?? 0
                }
            }
            #expect(waiting == 0)
        }
    }
}
