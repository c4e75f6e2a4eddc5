import Access
import Foundation
import HTTPTypes
import Hummingbird
import Metadata
import NIOCore
import OCI

/// The Docker token endpoint (`docs/content/spec/auth/token.md` and `oauth.md`):
/// - `GET /auth/token?service=…&scope=…` with Basic credentials or none;
/// - `POST /auth/token` with `grant_type=password` or `grant_type=refresh_token` (OAuth2).
/// The token grants the intersection of what was asked and what is allowed; a partial grant is not an error.
struct TokenEndpoint: Sendable {
    let authentication: RequestAuthentication
    private var access: AccessControl { authentication.access }

    func get(_ request: Request, context: WharfRequestContext) async -> Response {
        await respond(request) {
            let query = request.uri.queryParameters
            try checkService(query.get("service"))
            let caller = try await authentication.caller(for: request, context: context, challengeScope: nil)
            guard caller.token == nil else {
                throw RegistryError(.unauthorized, "use Basic credentials (or none) to request a token")
            }
            let scopes = query.getAll("scope").flatMap { AccessScope.parseList($0) }
            var refreshToken: String?
            if query.get("offline_token") == "true" {
                refreshToken = try await newRefreshToken(for: caller.identity, credential: caller.credential, clientID: query.get("client_id"))
            }
            return try await issue(to: caller, scopes: scopes, refreshToken: refreshToken, oauth: false)
        }
    }

    func post(_ request: Request, context: WharfRequestContext) async -> Response {
        await respond(request) {
            let body = try await request.body.collect(upTo: 64 * 1024)
            let form = Self.parseForm(String(buffer: body))
            try checkService(form["service"]?.first)
            let scopes = (form["scope"] ?? []).flatMap { AccessScope.parseList($0) }
            let source = context.sourceAddress
            switch form["grant_type"]?.first {
            case "password":
                guard let username = form["username"]?.first, let password = form["password"]?.first else {
                    throw OAuthError.invalidRequest("username and password are required for grant_type=password")
                }
                switch try await access.authenticator.authenticate(username: username, password: password, source: source) {
                case .authenticated(let identity, let credential):
                    let caller = Caller(identity: identity, credential: credential, token: nil, source: source)
                    var refreshToken: String?
                    if form["access_type"]?.first == "offline" {
                        refreshToken = try await newRefreshToken(for: identity, credential: credential, clientID: form["client_id"]?.first)
                    }
                    return try await issue(to: caller, scopes: scopes, refreshToken: refreshToken, oauth: true)
                case .invalid:
                    access.audit.record(AuditEvent(actor: nil, action: "login", target: username, result: .failure, source: source))
                    throw OAuthError.invalidGrant("invalid username or password")
                case .throttled(let retryAfter):
                    throw RegistryError(.tooManyRequests, "too many failed sign-ins; retry in \(retryAfter) s", headers: [("Retry-After", String(retryAfter))])
                }
            case "refresh_token":
                guard let refreshToken = form["refresh_token"]?.first else {
                    throw OAuthError.invalidRequest("refresh_token is required for grant_type=refresh_token")
                }
                guard let user = try await access.store.refreshTokenOwner(hash: Secrets.sha256Hex(refreshToken), now: Timestamp.nowMillis()),
                    !user.disabled
                else {
                    throw OAuthError.invalidGrant("the refresh token is unknown, expired or revoked")
                }
                let identity = Identity(kind: .user, name: user.name, id: user.id, isAdmin: user.isAdmin)
                return try await issue(
                    to: Caller(identity: identity, credential: .bearerToken, token: nil, source: source), scopes: scopes,
                    refreshToken: refreshToken, oauth: true)
            case let other:
                throw OAuthError.unsupportedGrantType(other ?? "(none)")
            }
        }
    }

    private func issue(to caller: Caller, scopes: [AccessScope], refreshToken: String?, oauth: Bool) async throws -> Response {
        let granted = try await access.authorizer.grant(scopes, to: caller.identity)
        var namespaceIDs: [String: Int64] = [:]
        for scope in granted where scope.type == "repository" {
            guard let repository = RepositoryName(scope.name) else { continue }
            let namespace = String(repository.namespace)
            if namespaceIDs[namespace] == nil { namespaceIDs[namespace] = try await access.authorizer.namespaceID(namespace) }
        }
        let token = try await access.tokens.issue(to: caller.identity, access: granted, namespaceIDs: namespaceIDs.isEmpty ? nil : namespaceIDs)
        if caller.identity.kind != .anonymous {
            access.audit.record(
                AuditEvent(
                    actor: caller.identity, action: "token", source: caller.source,
                    detail: AccessControlJSON.object([
                        "requested": scopes.map(\.description).joined(separator: " "),
                        "granted": granted.map(\.description).joined(separator: " "),
                    ])))
        }
        var body: [String: String] = [
            "token": token.token,
            "access_token": token.token,
            "issued_at": ISO8601DateFormatter().string(from: token.issuedAt),
        ]
        if oauth { body["scope"] = granted.map(\.description).joined(separator: " ") }
        if let refreshToken { body["refresh_token"] = refreshToken }
        // expires_in is a number; build the JSON by hand to keep it one.
        var json = "{" + body.sorted { $0.key < $1.key }.map { "\(JSONString.literal($0.key)):\(JSONString.literal($0.value))" }.joined(separator: ",")
        json += ",\"expires_in\":\(token.expiresIn)}"
        var headers = HTTPFields()
        headers[.contentType] = "application/json"
        headers[.cacheControl] = "no-store"
        return Response(status: .ok, headers: headers, body: .init(byteBuffer: ByteBuffer(string: json)))
    }

    /// A refresh token (docker login's identity token) for a user who signed in with a password or
    /// an access token; nil for other credentials, which may not mint a 90-day credential. One minted
    /// with an access token expires with it and is deleted with it.
    private func newRefreshToken(for identity: Identity, credential: Credential, clientID: String?) async throws -> String? {
        guard identity.kind == .user else { return nil }
        let lifetime = Int64(access.configuration.refreshTokenLifetime.components.seconds) * 1000
        var expiresAt = Timestamp.nowMillis() + lifetime
        var accessTokenID: Int64?
        switch credential {
        case .password:
            break
        case .accessToken(let id, let tokenExpiry):
            accessTokenID = id
            if let tokenExpiry { expiresAt = min(expiresAt, tokenExpiry) }
        default:
            return nil
        }
        let token = Secrets.randomToken()
        try await access.store.createRefreshToken(
            userID: identity.id, tokenHash: Secrets.sha256Hex(token), clientID: clientID,
            expiresAt: expiresAt, accessTokenID: accessTokenID)
        return token
    }

    private func checkService(_ service: String?) throws {
        if let service, !service.isEmpty, service != access.tokens.settings.service {
            throw OAuthError.invalidRequest("this token service issues tokens for '\(access.tokens.settings.service)', not '\(service)'")
        }
    }

    private func respond(_ request: Request, _ body: () async throws -> Response) async -> Response {
        do {
            return try await body()
        } catch let error as OAuthError {
            let json = #"{"error":"# + JSONString.literal(error.code) + #","error_description":"# + JSONString.literal(error.message) + "}"
            return Response(status: .badRequest, headers: [.contentType: "application/json"], body: .init(byteBuffer: ByteBuffer(string: json)))
        } catch let error as RegistryError {
            return ErrorResponse.make(error, method: request.method)
        } catch is NIOTooManyBytesError {
            return ErrorResponse.json(status: .contentTooLarge, code: "SIZE_INVALID", message: "request body too large")
        } catch {
            return ErrorResponse.json(status: .internalServerError, code: "UNKNOWN", message: "internal server error; see the server log")
        }
    }

    /// `application/x-www-form-urlencoded` into name → values.
    static func parseForm(_ body: String) -> [String: [String]] {
        var result: [String: [String]] = [:]
        for pair in body.split(separator: "&") {
            let parts = pair.split(separator: "=", maxSplits: 1, omittingEmptySubsequences: false)
            func decode(_ s: Substring) -> String { String(s).replacing("+", with: " ").removingPercentEncoding ?? String(s) }
            let name = decode(parts[0])
            let value = parts.count > 1 ? decode(parts[1]) : ""
            result[name, default: []].append(value)
        }
        return result
    }
}

/// OAuth2 errors (RFC 6749 §5.2): HTTP 400 with `error` and `error_description`.
struct OAuthError: Error {
    let code: String
    let message: String

    static func invalidRequest(_ message: String) -> OAuthError { OAuthError(code: "invalid_request", message: message) }
    static func invalidGrant(_ message: String) -> OAuthError { OAuthError(code: "invalid_grant", message: message) }
    static func unsupportedGrantType(_ type: String) -> OAuthError {
        OAuthError(code: "unsupported_grant_type", message: "grant_type '\(type)' is not supported; use password or refresh_token")
    }
}

enum AccessControlJSON {
    static func object(_ fields: [String: String]) -> String {
        "{" + fields.sorted { $0.key < $1.key }.map { "\(JSONString.literal($0.key)):\(JSONString.literal($0.value))" }.joined(separator: ",") + "}"
    }
}
