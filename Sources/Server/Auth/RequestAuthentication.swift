import Access
import HTTPTypes
import Hummingbird
import Monitoring
import NIOCore
import OCI
import UseCases

#if canImport(FoundationEssentials)
import FoundationEssentials
#else
import Foundation
#endif

/// Who sent a request, and with what proof.
struct Caller: Sendable {
    let identity: Identity
    /// What proved the identity: decides what the caller may mint.
    let credential: Credential
    /// The bearer token, when that is how the caller authenticated: it carries the granted access.
    let token: TokenService.VerifiedToken?
    let source: String?

    static func anonymous(source: String?) -> Caller { Caller(identity: .anonymous, credential: .none, token: nil, source: source) }

    /// The caller as the use-cases know it.
    var requester: Requester { Requester(identity: identity, source: source) }
}

/// Reads the `Authorization` header and proves who the caller is. Shared by `/v2`, the token
/// endpoint and the management API.
struct RequestAuthentication: Sendable {
    let access: AccessControl
    /// Configured realm; nil derives `http(s)://<Host>/auth/token` from each request.
    let configuredRealm: String?
    /// The scheme this server answers on (`https` when it serves TLS itself), unless a trusted
    /// proxy says otherwise in `X-Forwarded-Proto`.
    var scheme = "http"
    /// Counts credential checks (successes and failures by scheme) when metrics are on.
    var metrics: WharfMetrics? = nil

    enum Credentials {
        case none
        case basic(username: String, password: String)
        case bearer(String)
        case malformed
    }

    static func credentials(_ request: Request) -> Credentials {
        guard let header = request.headers[.authorization] else { return .none }
        // The common case without splitting or lowercasing: `Bearer <token>`.
        if header.utf8.count > 7, header.utf8.prefix(7).elementsEqual("Bearer ".utf8) {
            let token = header.utf8.dropFirst(7)
            if let first = token.first, first != UInt8(ascii: " "), token.last != UInt8(ascii: " ") { return .bearer(String(Substring(token))) }
        }
        let parts = header.split(separator: " ", maxSplits: 1)
        guard parts.count == 2 else { return .malformed }
        switch parts[0].lowercased() {
        case "basic":
            guard let data = Data(base64Encoded: String(parts[1]).trimmingCharacters(in: " ")),
                let decoded = String(data: data, encoding: .utf8), let colon = decoded.firstIndex(of: ":")
            else { return .malformed }
            return .basic(username: String(decoded[..<colon]), password: String(decoded[decoded.index(after: colon)...]))
        case "bearer":
            return .bearer(String(parts[1]).trimmingCharacters(in: " "))
        default:
            return .malformed
        }
    }

    /// The caller, or an error response (401 for bad credentials, 429 when throttled).
    func caller(for request: Request, context: WharfRequestContext, challengeScope: String?) async throws -> Caller {
        let source = context.sourceAddress
        switch Self.credentials(request) {
        case .none:
            return .anonymous(source: source)
        case .malformed:
            throw unauthorized(request, scope: challengeScope, message: "malformed Authorization header", error: "invalid_request")
        case .basic(let username, let password):
            switch try await access.authenticator.authenticate(username: username, password: password, source: source) {
            case .authenticated(let identity, let credential):
                metrics?.recordAuthentication(scheme: .basic, succeeded: true)
                return Caller(identity: identity, credential: credential, token: nil, source: source)
            case .invalid:
                metrics?.recordAuthentication(scheme: .basic, succeeded: false)
                access.audit.record(AuditEvent(actor: nil, action: "login", target: username, result: .failure, source: source))
                throw unauthorized(request, scope: challengeScope, message: "invalid username or password")
            case .throttled(let retryAfter):
                throw RegistryError(.tooManyRequests, "too many failed sign-ins; retry in \(retryAfter) s", headers: [("Retry-After", String(retryAfter))])
            }
        case .bearer(let token):
            do {
                let verified = try await access.tokens.verify(token)
                metrics?.recordAuthentication(scheme: .bearer, succeeded: true)
                return Caller(identity: verified.identity, credential: .bearerToken, token: verified, source: source)
            } catch {
                metrics?.recordAuthentication(scheme: .bearer, succeeded: false)
                throw unauthorized(request, scope: challengeScope, message: error.description, error: "invalid_token")
            }
        }
    }

    func realm(for request: Request) -> String {
        if let configuredRealm { return configuredRealm }
        let scheme = request.headers[HTTPField.Name("X-Forwarded-Proto")!] ?? self.scheme
        let host = request.headers[HTTPField.Name("X-Forwarded-Host")!] ?? request.head.authority ?? "localhost"
        return "\(scheme)://\(host)/auth/token"
    }

    /// A 401 whose challenge sends clients to the token endpoint (RFC 6750 §3).
    func unauthorized(_ request: Request, scope: String?, message: String, error: String? = nil) -> RegistryError {
        RegistryError(.unauthorized, message, headers: [("WWW-Authenticate", challenge(request, scope: scope, error: error))])
    }

    /// A valid token that lacks the scope: 401 with `error="insufficient_scope"` and the scope
    /// needed in the challenge, as Distribution and Docker Hub answer. Clients (docker, containerd,
    /// the OCI conformance suite) fetch a new token only on 401; a 403 ends their request.
    func insufficientScope(_ request: Request, scope: String?, message: String) -> RegistryError {
        RegistryError(.unauthorized, message, headers: [("WWW-Authenticate", challenge(request, scope: scope, error: "insufficient_scope"))])
    }

    private func challenge(_ request: Request, scope: String?, error: String?) -> String {
        var challenge = "Bearer realm=\"\(realm(for: request))\",service=\"\(access.tokens.settings.service)\""
        if let scope { challenge += ",scope=\"\(scope)\"" }
        if let error { challenge += ",error=\"\(error)\"" }
        return challenge
    }
}

extension WharfRequestContext {
    /// The client's IP address, for logs, throttling and the audit log.
    var sourceAddress: String? { remoteAddress?.ipAddress }
}
