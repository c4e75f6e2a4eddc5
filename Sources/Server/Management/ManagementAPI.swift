import Access
import BlobStore
import Foundation
import HTTPTypes
import Hummingbird
import Lifecycle
import Metadata
import NIOCore
import OCI
import UseCases

/// The management REST API under `/api/v1`: users, access tokens, robot accounts, namespaces,
/// members, the audit log and signing keys. Callers authenticate like on `/v2` (Basic with a
/// password or access token, or a bearer token). The route table below is also the source of the
/// OpenAPI document served at `/api/v1/openapi.json`, so the two cannot drift apart.
struct ManagementAPI: Sendable {
    let authentication: RequestAuthentication
    /// Repository settings, lifecycle, quotas and garbage collection; nil in tests of identities alone.
    var storage: StorageManagement?
    var access: AccessControl { authentication.access }

    typealias Handler = @Sendable (Request, WharfRequestContext, Caller) async throws -> Response

    struct Route: Sendable {
        let method: HTTPRequest.Method
        /// OpenAPI form, relative to `/api/v1`: `/users/{name}`.
        let path: String
        let summary: String
        let requestSchema: String?
        /// A schema name, `[Name]` for an array of them, or nil for no body.
        let responseSchema: String?
        let status: HTTPResponse.Status
        let query: [(name: String, description: String)]
        let handler: Handler

        init(
            _ method: HTTPRequest.Method, _ path: String, _ summary: String, request: String? = nil, response: String? = nil,
            status: HTTPResponse.Status = .ok, query: [(name: String, description: String)] = [], _ handler: @escaping Handler
        ) {
            self.method = method
            self.path = path
            self.summary = summary
            self.requestSchema = request
            self.responseSchema = response
            self.status = status
            self.query = query
            self.handler = handler
        }
    }

    func register(on router: Router<WharfRequestContext>) {
        let all = routes
        // Repository names contain '/', so routes under /repositories/{repository}/ are matched by
        // their suffix, longest first, and the rest of the path is the name.
        let repositoryRoutes = all.filter { $0.path.hasPrefix(Self.repositoryPrefix) }
            .sorted { $0.path.count > $1.path.count }
        for method in Set(repositoryRoutes.map(\.method)) {
            router.on("/api/v1/repositories/**", method: method) { request, context in
                let rest = String(request.uri.path.dropFirst("/api/v1/repositories/".count))
                for route in repositoryRoutes where route.method == request.method {
                    let suffix = "/" + route.path.dropFirst(Self.repositoryPrefix.count)
                    guard rest.hasSuffix(suffix), rest.count > suffix.count else { continue }
                    var context = context
                    context.coreContext.parameters["repository"] = Substring(rest.dropLast(suffix.count))
                    return await handle(route, request, context)
                }
                return Self.error(.notFound, "NOT_FOUND", "no such endpoint: \(request.method) \(request.uri.path)")
            }
        }
        for route in all where !route.path.hasPrefix(Self.repositoryPrefix) {
            let hummingbirdPath = "/api/v1" + route.path.replacing("{", with: ":").replacing("}", with: "")
            router.on(RouterPath(hummingbirdPath), method: route.method) { request, context in
                await handle(route, request, context)
            }
        }
        let document = ByteBuffer(bytes: OpenAPIDocument.make(routes: all))
        router.get("/api/v1/openapi.json") { _, _ in
            Response(status: .ok, headers: [.contentType: "application/json"], body: .init(byteBuffer: document))
        }
    }

    private func handle(_ route: Route, _ request: Request, _ context: WharfRequestContext) async -> Response {
        do {
            let authenticated = try await authentication.caller(for: request, context: context, challengeScope: nil)
            guard authenticated.identity.kind != .anonymous else {
                return Self.error(
                    .unauthorized, "UNAUTHORIZED", "sign in with Basic credentials (a password, an access token or a robot secret)",
                    headers: [.wwwAuthenticate: "Basic realm=\"Wharf\""])
            }
            // Registry bearer tokens and ECR logins are narrow, short-lived grants for /v2: they
            // carry no management rights, whatever their owner may do.
            switch authenticated.credential {
            case .bearerToken, .registryLoginToken, .none:
                return Self.error(
                    .unauthorized, "UNAUTHORIZED",
                    "the management API takes a password, an access token or a robot secret, not \(authenticated.credential.kindDescription)",
                    headers: [.wwwAuthenticate: "Basic realm=\"Wharf\""])
            case .password, .accessToken, .robotSecret, .accessKey:
                break
            }
            // The account as it is now, not as a cached credential saw it: a disabled, demoted or
            // deleted account loses its rights with its next request.
            guard let current = try await access.currentIdentity(of: authenticated.identity) else {
                return Self.error(
                    .unauthorized, "UNAUTHORIZED", "the account behind these credentials is disabled, expired or gone",
                    headers: [.wwwAuthenticate: "Basic realm=\"Wharf\""])
            }
            let caller = Caller(identity: current, credential: authenticated.credential, token: nil, source: authenticated.source)
            return try await route.handler(request, context, caller)
        } catch let error as AccessError {
            switch error {
            case .notFound(let message): return Self.error(.notFound, "NOT_FOUND", message)
            case .conflict(let message): return Self.error(.conflict, "CONFLICT", message)
            case .invalid(let message): return Self.error(.badRequest, "INVALID", message)
            case .forbidden(let message): return Self.error(.forbidden, "FORBIDDEN", message)
            }
        } catch let error as UseCaseError {
            switch error {
            case .repositoryNotFound: return Self.error(.notFound, "NOT_FOUND", error.description)
            case .invalidLifecyclePolicy, .invalid: return Self.error(.badRequest, "INVALID", error.description)
            }
        } catch let error as RegistryError {
            var headers = HTTPFields()
            for (name, value) in error.headers { if let field = HTTPField.Name(name) { headers[field] = value } }
            return Self.error(HTTPResponse.Status(code: error.status), error.code.rawValue, error.message, headers: headers)
        } catch let error as LifecyclePolicy.ValidationError {
            // Reached when a stored policy no longer validates (written before a bound existed): reported, never evaluated.
            return Self.error(.badRequest, "INVALID", "the lifecycle policy is invalid: \(error.message); put a corrected policy")
        } catch let error as DecodingError {
            return Self.error(.badRequest, "INVALID", "the request body does not match the schema: \(error)")
        } catch is NIOTooManyBytesError {
            return Self.error(.contentTooLarge, "INVALID", "request body too large")
        } catch  where StorageSpace.isNoSpace(error) {
            return Self.error(.init(code: 507), "STORAGE_FULL", ErrorResponse.storageFull)
        } catch {
            context.logger.error("management request failed", metadata: ["error": "\(String(reflecting: error))"])
            return Self.error(.internalServerError, "INTERNAL", "internal server error; see the server log")
        }
    }

    static func error(_ status: HTTPResponse.Status, _ code: String, _ message: String, headers: HTTPFields = [:]) -> Response {
        var headers = headers
        headers[.contentType] = "application/json"
        let body = (try? JSONEncoder().encode(API.ErrorBody(error: .init(code: code, message: message)))) ?? Data()
        return Response(status: status, headers: headers, body: .init(byteBuffer: ByteBuffer(bytes: body)))
    }

    static func json(_ value: some Encodable, status: HTTPResponse.Status = .ok) throws -> Response {
        let encoder = JSONEncoder()
        encoder.outputFormatting = [.sortedKeys, .withoutEscapingSlashes]
        // Times are RFC 3339 strings with milliseconds, as the OpenAPI document says (Foundation's
        // default would be seconds since 2001; `.iso8601` drops the milliseconds).
        encoder.dateEncodingStrategy = .custom { date, encoder in
            var container = encoder.singleValueContainer()
            try container.encode(date.formatted(.iso8601.year().month().day().time(includingFractionalSeconds: true).timeZone(separator: .omitted)))
        }
        return Response(status: status, headers: [.contentType: "application/json"], body: .init(byteBuffer: ByteBuffer(bytes: try encoder.encode(value))))
    }

    private static func noContent() -> Response { Response(status: .noContent) }

    static func decode<T: Decodable>(_ type: T.Type, _ request: Request) async throws -> T {
        let body = try await request.body.collect(upTo: 1024 * 1024)
        return try JSONDecoder().decode(T.self, from: Data(body.readableBytesView))
    }

    static func parameter(_ context: WharfRequestContext, _ name: String) throws -> String {
        guard let value = context.parameters.get(name) else { throw AccessError.invalid("missing path parameter \(name)") }
        return value.removingPercentEncoding ?? value
    }

    // MARK: Routes

    var routes: [Route] {
        identityRoutes + (storage.map(storageRoutes) ?? []) + (storage.map(webhookRoutes) ?? []) + (storage.map(reportRoutes) ?? [])
            + (storage.map(replicationRoutes) ?? [])
    }

    /// List, create, disable/enable and delete the access keys of a user or a robot.
    func accessKeyRoutes(owner collection: String, _ owner: @escaping @Sendable (String) -> AccessControl.AccessKeyOwner) -> [Route] {
        let access = self.access
        let kind = collection == "users" ? "user" : "robot"
        return [
            Route(.get, "/\(collection)/{name}/access-keys", "List a \(kind)'s access keys (ECR API credentials)", response: "[AccessKey]") {
                _, context, caller in
                try Self.json(try await access.listAccessKeys(of: owner(try Self.parameter(context, "name")), by: caller.identity).map { API.AccessKey($0) })
            },
            Route(
                .post, "/\(collection)/{name}/access-keys", "Create an access key for the ECR API; the secret is shown only in this response",
                request: "CreateAccessKey", response: "AccessKey", status: .created
            ) { request, context, caller in
                let body = try await Self.decode(API.CreateAccessKey.self, request)
                let (record, secret) = try await access.createAccessKey(
                    for: owner(try Self.parameter(context, "name")), by: caller.identity,
                    credential: caller.credential, description: body.description, source: caller.source)
                return try Self.json(API.AccessKey(record, secret: secret), status: .created)
            },
            Route(.patch, "/\(collection)/{name}/access-keys/{key}", "Disable or re-enable an access key", request: "UpdateAccessKey", status: .noContent) {
                request, context, caller in
                let body = try await Self.decode(API.UpdateAccessKey.self, request)
                try await access.setAccessKeyDisabled(
                    try Self.parameter(context, "key"), of: owner(try Self.parameter(context, "name")),
                    disabled: body.disabled, by: caller.identity, source: caller.source)
                return Self.noContent()
            },
            Route(.delete, "/\(collection)/{name}/access-keys/{key}", "Delete an access key", status: .noContent) { _, context, caller in
                try await access.deleteAccessKey(
                    try Self.parameter(context, "key"), of: owner(try Self.parameter(context, "name")),
                    by: caller.identity, source: caller.source)
                return Self.noContent()
            },
        ]
    }

    var identityRoutes: [Route] {
        let access = self.access
        return [
            Route(.get, "/me", "The identity of the caller", response: "Identity") { _, _, caller in
                try Self.json(API.Identity(name: caller.identity.name, kind: caller.identity.kind.rawValue, admin: caller.identity.isAdmin))
            },
            // Users
            Route(.get, "/users", "List users (system administrators)", response: "[User]") { _, _, caller in
                try Self.json(try await access.listUsers(by: caller.identity).map(API.User.init))
            },
            Route(.post, "/users", "Create a user (system administrators)", request: "CreateUser", response: "User", status: .created) { request, _, caller in
                let body = try await Self.decode(API.CreateUser.self, request)
                let user: UserRecord
                switch (body.password, body.passwordHash) {
                case (let password?, nil):
                    user = try await access.createUser(
                        by: caller.identity, name: body.name, password: password, email: body.email,
                        isAdmin: body.admin ?? false, source: caller.source)
                case (nil, let hash?):
                    user = try await access.importUser(
                        by: caller.identity, name: body.name, bcryptHash: hash, email: body.email,
                        isAdmin: body.admin ?? false, source: caller.source)
                default:
                    throw AccessError.invalid("give either password or passwordHash (a bcrypt hash from an htpasswd file)")
                }
                return try Self.json(API.User(user), status: .created)
            },
            Route(.get, "/users/{name}", "Show a user (administrators, or the user)", response: "User") { _, context, caller in
                try Self.json(API.User(try await access.user(try Self.parameter(context, "name"), by: caller.identity)))
            },
            Route(.patch, "/users/{name}", "Change a user's email, administrator flag or disabled state", request: "UpdateUser", response: "User") {
                request, context, caller in
                let body = try await Self.decode(API.UpdateUser.self, request)
                let user = try await access.updateUser(
                    try Self.parameter(context, "name"), by: caller.identity, email: body.email.map { .some($0) },
                    isAdmin: body.admin, disabled: body.disabled, source: caller.source)
                return try Self.json(API.User(user))
            },
            Route(.delete, "/users/{name}", "Delete a user", status: .noContent) { _, context, caller in
                try await access.deleteUser(try Self.parameter(context, "name"), by: caller.identity, source: caller.source)
                return Self.noContent()
            },
            Route(.put, "/users/{name}/password", "Set a password (users give their current one)", request: "SetPassword", status: .noContent) {
                request, context, caller in
                let body = try await Self.decode(API.SetPassword.self, request)
                try await access.setPassword(
                    of: try Self.parameter(context, "name"), by: caller.identity, newPassword: body.password,
                    currentPassword: body.currentPassword, source: caller.source)
                return Self.noContent()
            },
            // Personal access tokens
            Route(.get, "/users/{name}/tokens", "List a user's access tokens", response: "[AccessToken]") { _, context, caller in
                try Self.json(try await access.listAccessTokens(for: try Self.parameter(context, "name"), by: caller.identity).map { API.AccessToken($0) })
            },
            Route(
                .post, "/users/{name}/tokens", "Create an access token; the token is shown only in this response", request: "CreateAccessToken",
                response: "AccessToken", status: .created
            ) { request, context, caller in
                let body = try await Self.decode(API.CreateAccessToken.self, request)
                let (record, token) = try await access.createAccessToken(
                    for: try Self.parameter(context, "name"), by: caller.identity, credential: caller.credential, tokenName: body.name,
                    expiresAt: try API.parseTime(body.expiresAt, field: "expiresAt"), source: caller.source)
                return try Self.json(API.AccessToken(record, token: token), status: .created)
            },
            Route(.delete, "/users/{name}/tokens/{token}", "Revoke an access token", status: .noContent) { _, context, caller in
                try await access.deleteAccessToken(
                    for: try Self.parameter(context, "name"), by: caller.identity,
                    tokenName: try Self.parameter(context, "token"), source: caller.source)
                return Self.noContent()
            },
            // Access keys (SigV4, for the ECR API) of users and robots
        ] + accessKeyRoutes(owner: "users", AccessControl.AccessKeyOwner.user) + accessKeyRoutes(owner: "robots", AccessControl.AccessKeyOwner.robot) + [
            // Robot accounts
            Route(.get, "/robots", "List the robot accounts the caller may manage", response: "[Robot]") { _, _, caller in
                try Self.json(try await access.listRobots(by: caller.identity).map { API.Robot($0) })
            },
            Route(
                .post, "/robots", "Create a robot account; the secret is shown only in this response", request: "CreateRobot", response: "Robot",
                status: .created
            ) { request, _, caller in
                let body = try await Self.decode(API.CreateRobot.self, request)
                let (robot, secret) = try await access.createRobot(
                    by: caller.identity, credential: caller.credential, name: body.name, description: body.description,
                    expiresAt: try API.parseTime(body.expiresAt, field: "expiresAt"),
                    permissions: try body.permissions.map { try $0.model() }, source: caller.source)
                return try Self.json(API.Robot(robot, secret: secret), status: .created)
            },
            Route(.get, "/robots/{name}", "Show a robot account", response: "Robot") { _, context, caller in
                try Self.json(API.Robot(try await access.robot(try Self.parameter(context, "name"), by: caller.identity)))
            },
            Route(.patch, "/robots/{name}", "Change a robot's description, expiry, disabled state or permissions", request: "UpdateRobot", response: "Robot") {
                request, context, caller in
                let body = try await Self.decode(API.UpdateRobot.self, request)
                let robot = try await access.updateRobot(
                    try Self.parameter(context, "name"), by: caller.identity, credential: caller.credential,
                    description: body.description.map { .some($0) },
                    expiresAt: try API.parseTime(body.expiresAt, field: "expiresAt").map { .some($0) },
                    disabled: body.disabled, permissions: try body.permissions?.map { try $0.model() }, source: caller.source)
                return try Self.json(API.Robot(robot))
            },
            Route(.post, "/robots/{name}/secret", "Rotate a robot's secret; the new one is shown only in this response", response: "Robot") {
                _, context, caller in
                let name = try Self.parameter(context, "name")
                let secret = try await access.rotateRobotSecret(name, by: caller.identity, credential: caller.credential, source: caller.source)
                return try Self.json(API.Robot(try await access.robot(name, by: caller.identity), secret: secret))
            },
            Route(.delete, "/robots/{name}", "Delete a robot account", status: .noContent) { _, context, caller in
                try await access.deleteRobot(try Self.parameter(context, "name"), by: caller.identity, source: caller.source)
                return Self.noContent()
            },
            // Namespaces and members
            Route(.get, "/namespaces", "List the namespaces the caller may see", response: "[Namespace]") { _, _, caller in
                try Self.json(try await access.listNamespaces(by: caller.identity).map(API.Namespace.init))
            },
            Route(.post, "/namespaces", "Create a namespace", request: "CreateNamespace", response: "Namespace", status: .created) { request, _, caller in
                let body = try await Self.decode(API.CreateNamespace.self, request)
                return try Self.json(
                    API.Namespace(
                        try await access.createNamespace(by: caller.identity, name: body.name, isPublic: body.public ?? false, source: caller.source)),
                    status: .created)
            },
            Route(.get, "/namespaces/{name}", "Show a namespace", response: "Namespace") { _, context, caller in
                try Self.json(API.Namespace(try await access.namespace(try Self.parameter(context, "name"), by: caller.identity)))
            },
            Route(.patch, "/namespaces/{name}", "Make a namespace public (anonymous pulls) or private", request: "UpdateNamespace", response: "Namespace") {
                request, context, caller in
                let body = try await Self.decode(API.UpdateNamespace.self, request)
                return try Self.json(
                    API.Namespace(
                        try await access.setNamespacePublic(try Self.parameter(context, "name"), body.public, by: caller.identity, source: caller.source)))
            },
            Route(.delete, "/namespaces/{name}", "Delete an empty namespace", status: .noContent) { _, context, caller in
                let name = try Self.parameter(context, "name")
                try await access.deleteNamespace(name, by: caller.identity, source: caller.source)
                storage?.scans.pullGate.forgetPolicy(of: name)  // removed with the namespace, as are its VEX documents
                storage?.scans.vex.forget(namespace: name)
                storage?.registry.tagRules.forget(name)
                storage?.signatures.forget(namespace: name)
                storage?.scans.pullGate.forgetScans()
                return Self.noContent()
            },
            Route(.get, "/namespaces/{name}/members", "List a namespace's members", response: "[Member]") { _, context, caller in
                try Self.json(try await access.members(of: try Self.parameter(context, "name"), by: caller.identity).map(API.Member.init))
            },
            Route(.put, "/namespaces/{name}/members/{user}", "Add a member or change their role", request: "SetMember", status: .noContent) {
                request, context, caller in
                let body = try await Self.decode(API.SetMember.self, request)
                try await access.setMember(
                    try Self.parameter(context, "user"), of: try Self.parameter(context, "name"), role: body.role, by: caller.identity, source: caller.source)
                return Self.noContent()
            },
            Route(.delete, "/namespaces/{name}/members/{user}", "Remove a member", status: .noContent) { _, context, caller in
                try await access.removeMember(
                    try Self.parameter(context, "user"), of: try Self.parameter(context, "name"), by: caller.identity, source: caller.source)
                return Self.noContent()
            },
            // Audit log
            Route(.get, "/audit", "Query the audit log, newest first", response: "[Event]", query: Self.auditQueryParameters) { request, _, caller in
                try Self.json(try await access.auditEvents(try Self.auditQuery(request), by: caller.identity).map(API.Event.init))
            },
            Route(.get, "/audit/export", "Export the audit log as JSON lines (application/x-ndjson)", response: "Event", query: Self.auditQueryParameters) {
                request, _, caller in
                var query = try Self.auditQuery(request)
                if request.uri.queryParameters.get("limit") == nil { query.limit = 10_000 }
                let events = try await access.auditEvents(query, by: caller.identity)
                let encoder = JSONEncoder()
                encoder.outputFormatting = [.sortedKeys, .withoutEscapingSlashes]
                var buffer = ByteBuffer()
                for event in events.reversed() {
                    buffer.writeBytes(try encoder.encode(API.Event(event)))
                    buffer.writeString("\n")
                }
                return Response(status: .ok, headers: [.contentType: "application/x-ndjson"], body: .init(byteBuffer: buffer))
            },
            // Keys
            Route(.post, "/keys/rotate", "Start signing tokens with a new key (old tokens stay valid until they expire)", response: "SigningKey") {
                _, _, caller in
                try Self.json(API.SigningKey(kid: try await access.rotateSigningKey(by: caller.identity, source: caller.source)))
            },
        ]
    }

    static let auditQueryParameters: [(name: String, description: String)] = [
        ("namespace", "only events in this namespace"), ("actor", "only events by this user or robot"),
        ("action", "only this action, e.g. push, pull, delete, login, token, user.create"), ("repository", "only this repository"),
        ("since", "RFC 3339 time: events at or after"), ("until", "RFC 3339 time: events before"),
        ("before", "event id: events older than this one (paging)"), ("limit", "at most this many events (default 100, at most 10000)"),
        ("requestId", "only what the request with this X-Request-Id did"),
    ]

    private static func auditQuery(_ request: Request) throws -> AuditQuery {
        let parameters = request.uri.queryParameters
        var limit = 100
        if let value = parameters.get("limit") {
            guard let parsed = ClientNumber.parse(value, in: 1...Int.max) else { throw AccessError.invalid("limit must be a positive integer") }
            limit = min(parsed, 10_000)
        }
        return AuditQuery(
            namespace: parameters.get("namespace"), actor: parameters.get("actor"), action: parameters.get("action"),
            repository: parameters.get("repository"), since: try API.parseTime(parameters.get("since"), field: "since"),
            until: try API.parseTime(parameters.get("until"), field: "until"),
            before: try parameters.get("before").map { value -> Int64 in
                guard let id = ClientNumber.parse(value, in: 0...Int64.max) else { throw AccessError.invalid("before must be an event id") }
                return id
            },
            limit: limit, requestID: parameters.get("requestId")
        )
    }
}
