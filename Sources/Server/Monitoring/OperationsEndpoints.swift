import Access
import BlobStore
import HTTPTypes
import Hummingbird
import Metadata
import Monitoring
import NIOCore

#if canImport(FoundationEssentials)
import FoundationEssentials
#else
import Foundation
#endif

/// What operators and their tools ask of a running Wharf: `/healthz` (the process answers),
/// `/readyz` (it can serve: database, storage and free space) and `/metrics` (Prometheus).
struct OperationsEndpoints: Sendable {
    /// Who may read `/metrics` on a listener.
    enum MetricsAccess: Sendable {
        /// Anyone who reaches the listener (a separate metrics listener, or authentication off).
        case open
        /// `Authorization: Bearer <token>` with the configured token, or a system administrator.
        case tokenOrAdministrator(token: String?, authentication: RequestAuthentication)
    }

    let metrics: WharfMetrics?
    let metadata: MetadataStore
    let blobs: any BlobStore
    let space: StorageSpace
    /// A check that takes longer than this fails: a probe must answer while the thing it checks hangs.
    var checkTimeout: Duration = .seconds(2)

    func register(on router: Router<WharfRequestContext>, metricsAccess: MetricsAccess?) {
        router.get("/healthz") { _, _ in Self.json(.ok, ["status": "alive"]) }
        router.head("/healthz") { _, _ in Response(status: .ok) }
        router.get("/readyz") { _, _ in await readiness() }
        if let metricsAccess {
            router.get("/metrics") { request, context in await scrape(request, context: context, access: metricsAccess) }
        }
    }

    // MARK: Readiness

    /// 200 when every check passes, else 503; the body names each check and, when one fails, why
    /// in words that reveal no path or address (the endpoint needs no credentials).
    func readiness() async -> Response {
        async let database = check { try await metadata.ping() }
        async let storage = check { try await probeStorage() }
        let disk: (ok: Bool, reason: String?)
        do {
            try space.checkWritable()
            disk = (true, nil)
        } catch {
            disk = (false, "free space is below storage.minimumFreeMiB")
        }
        let results = [("database", await database), ("storage", await storage), ("disk", disk)]
        var checks: [String: [String: String]] = [:]
        for (name, result) in results {
            checks[name] = result.ok ? ["status": "ok"] : ["status": "failed", "reason": result.reason ?? "failed"]
        }
        let ready = results.allSatisfy(\.1.ok)
        return Self.json(ready ? .ok : .serviceUnavailable, ReadinessBody(status: ready ? "ready" : "not ready", checks: checks))
    }

    struct ReadinessBody: Encodable {
        var status: String
        var checks: [String: [String: String]]
    }

    /// Writes, syncs and removes a small upload file: the path every push takes.
    private func probeStorage() async throws {
        let id = "readyz-\(UUID().uuidString.lowercased())"
        try await blobs.createUpload(id, resumable: false)
        do {
            let writer = try await blobs.appendToUpload(id, at: 0)
            try await writer.write(ByteBuffer(string: "ready"))
            try await writer.close()
        } catch {
            try? await blobs.deleteUpload(id)
            throw error
        }
        try await blobs.deleteUpload(id)
    }

    private func check(_ body: @escaping @Sendable () async throws -> Void) async -> (ok: Bool, reason: String?) {
        let timeout = checkTimeout
        return await withTaskGroup(of: (ok: Bool, reason: String?).self) { group in
            group.addTask {
                do {
                    try await body()
                    return (true, nil)
                } catch {
                    return (false, "the check failed (details in the server log)")
                }
            }
            group.addTask {
                try? await Task.sleep(for: timeout)
                return (false, "the check did not answer within \(timeout)")
            }
            let first = await group.next() ?? (false, "no answer")
            group.cancelAll()
            return first
        }
    }

    // MARK: Metrics

    func scrape(_ request: Request, context: WharfRequestContext, access: MetricsAccess) async -> Response {
        guard let metrics else { return Self.json(.notFound, ["error": "metrics are turned off (metrics.enabled: false)"]) }
        if case .tokenOrAdministrator(let token, let authentication) = access {
            guard await Self.mayScrape(request, context: context, token: token, authentication: authentication) else {
                var response = Self.json(.unauthorized, ["error": "metrics need the metrics token (metrics.tokenFile) or a system administrator's credentials"])
                response.headers[.wwwAuthenticate] = #"Bearer realm="wharf-metrics""#
                return response
            }
        }
        let bytes = metrics.exposition()
        return Response(
            status: .ok, headers: [.contentType: "text/plain; version=0.0.4; charset=utf-8"],
            body: .init(byteBuffer: ByteBuffer(bytes: bytes)))
    }

    static func mayScrape(_ request: Request, context: WharfRequestContext, token: String?, authentication: RequestAuthentication) async -> Bool {
        if let token, case .bearer(let offered) = RequestAuthentication.credentials(request), Secrets.constantTimeEquals(offered, token) {
            return true
        }
        guard let caller = try? await authentication.caller(for: request, context: context, challengeScope: nil),
            let current = try? await authentication.access.currentIdentity(of: caller.identity)
        else { return false }
        return current.isAdmin
    }

    static func json(_ status: HTTPResponse.Status, _ value: some Encodable) -> Response {
        let encoder = JSONEncoder()
        encoder.outputFormatting = [.sortedKeys]
        let body = (try? encoder.encode(value)) ?? Data("{}".utf8)
        return Response(status: status, headers: [.contentType: "application/json"], body: .init(byteBuffer: ByteBuffer(bytes: body)))
    }
}
