import Access
import Foundation
import HTTPTypes
import HummingbirdTesting
import JWTKit
import Metadata
import NIOCore
import OCI
import Testing
import UseCases

@testable import Server

/// Authentication and authorization over HTTP, with a real server and real tokens.
enum Secure {
    static let adminPassword = "admin-password-for-tests"

    static func withServer<T: Sendable>(
        customize: @escaping @Sendable (inout WharfConfiguration) -> Void = { _ in },
        data: URL? = nil,
        _ body: @Sendable (any TestClientProtocol, WharfServer) async throws -> T
    ) async throws -> T {
        try await Harness.withServer(
            data: data,
            customize: { configuration in
                configuration.authEnabled = true
                configuration.adminPassword = adminPassword
                configuration.loginFailuresBeforeDelay = 3
                configuration.loginFirstDelaySeconds = 1
                configuration.loginMaximumDelaySeconds = 2
                // Cheap hashes: dozens of suites sign in at once on two cores, and what they test is
                // behaviour, not bcrypt's cost (the default stays 12).
                configuration.passwordCost = 6
                customize(&configuration)
            }, body)
    }

    static func basic(_ user: String, _ password: String) -> HTTPFields {
        [.authorization: "Basic " + Data("\(user):\(password)".utf8).base64EncodedString()]
    }

    static func bearer(_ token: String) -> HTTPFields { [.authorization: "Bearer \(token)"] }

    static func administrator(_ server: WharfServer) async throws -> Identity {
        let record = try #require(try await server.access!.store.user(named: "admin"))
        return Identity(kind: .user, name: "admin", id: record.id, isAdmin: true)
    }

    static func token(_ client: any TestClientProtocol, _ credentials: HTTPFields, scopes: [String]) async throws -> String {
        let query = (["service=wharf"] + scopes.map { "scope=\($0)" }).joined(separator: "&")
        let response = try await client.request(.get, "/auth/token?\(query)", headers: credentials)
        #expect(response.status == .ok, "token: \(response.text)")
        struct Body: Decodable { let token: String; let access_token: String; let expires_in: Int }
        let body = try JSONDecoder().decode(Body.self, from: Data(response.body.readableBytesView))
        #expect(body.token == body.access_token)
        #expect(body.expires_in >= 60)
        return body.token
    }

    static func claims(_ token: String) throws -> [String: Any] {
        let payload = String(token.split(separator: ".")[1])
        var base64 = payload.replacingOccurrences(of: "-", with: "+").replacingOccurrences(of: "_", with: "/")
        base64 += String(repeating: "=", count: (4 - base64.count % 4) % 4)
        return try JSONSerialization.jsonObject(with: Data(base64Encoded: base64)!) as! [String: Any]
    }
}

@Suite("Access control: the permission matrix")
struct PermissionMatrixTests {
    enum Caller: String, CaseIterable, Sendable {
        case systemAdmin, nsAdmin, maintainer, developer, reader, outsider, robot, anonymous
    }

    enum Act: String, CaseIterable, Sendable { case pull, push, delete, mount, catalog, manage }

    enum Resource: String, CaseIterable, Sendable {
        case own = "team"  // the namespace the callers are members of
        case other = "other"  // a private namespace they are not in
        case open = "pub"  // a public namespace
    }

    static let passwords: [Caller: (String, String)] = [
        .systemAdmin: ("admin", Secure.adminPassword),
        .nsAdmin: ("alice", "alice-password-1"), .maintainer: ("bob", "bob-password-12"),
        .developer: ("carol", "carol-password-1"), .reader: ("dave", "dave-password-12"),
        .outsider: ("eve", "eve-password-123"),
    ]

    /// The expected answer for every cell: true means allowed.
    static func expected(_ caller: Caller, _ act: Act, _ resource: Resource) -> Bool {
        let role: Role? =
            switch caller {
            case .systemAdmin: .admin
            case .nsAdmin: resource == .own ? .admin : nil
            case .maintainer: resource == .own ? .maintainer : nil
            case .developer: resource == .own ? .developer : nil
            case .reader: resource == .own ? .reader : nil
            case .outsider, .anonymous: nil
            case .robot: resource == .own ? .developer : nil  // robot$team-ci: pull, push in team
            }
        let canPull = role != nil || resource == .open
        // Written out from the README ("`reader` (pull), `developer` (+ push), `maintainer` (+ delete),
        // `admin` (+ members and settings)"), not from the production `Role.actions`, so a wrong
        // role table fails here instead of agreeing with itself.
        let pushers: Set<Role> = [.developer, .maintainer, .admin]
        let deleters: Set<Role> = [.maintainer, .admin]
        switch act {
        case .pull: return canPull
        case .push: return role.map(pushers.contains) ?? false
        case .delete: return role.map(deleters.contains) ?? false
        case .mount:
            // Mount the resource's layer into team/mounted: needs pull on the source and push on team.
            let canPushTeam = expected(caller, .push, .own)
            return canPushTeam && canPull
        case .catalog: return caller != .anonymous && canPull
        case .manage: return caller != .robot && role == .admin
        }
    }

    @Test("role × action × resource, every cell over HTTP")
    func matrix() async throws {
        try await Secure.withServer { client, server in
            let access = server.access!
            let admin = try await Secure.administrator(server)
            let adminAuth = Secure.basic("admin", Secure.adminPassword)
            // The world: three namespaces with an image each, five users, one robot.
            for resource in Resource.allCases {
                _ = try await access.createNamespace(by: admin, name: resource.rawValue, isPublic: resource == .open, source: nil)
            }
            for caller in [Caller.nsAdmin, .maintainer, .developer, .reader, .outsider] {
                let (name, password) = Self.passwords[caller]!
                _ = try await access.createUser(by: admin, name: name, password: password, email: nil, isAdmin: false, source: nil)
            }
            for (caller, role) in [(Caller.nsAdmin, Role.admin), (.maintainer, .maintainer), (.developer, .developer), (.reader, .reader)] {
                try await access.setMember(Self.passwords[caller]!.0, of: "team", role: role, by: admin, source: nil)
            }
            let (_, robotSecret) = try await access.createRobot(
                by: admin, credential: .password, name: "team-ci", description: nil, expiresAt: nil,
                permissions: [RobotPermission(scope: .namespace, name: "team", actions: [.pull, .push])], source: nil)
            var layers: [Resource: Digest] = [:]
            for resource in Resource.allCases {
                layers[resource] = try await pushImage(client, adminAuth, "\(resource.rawValue)/app", layer: "layer of \(resource.rawValue)")
            }

            func credentials(_ caller: Caller) -> HTTPFields {
                switch caller {
                case .anonymous: [:]
                case .robot: Secure.basic("robot$team-ci", robotSecret)
                default: Secure.basic(Self.passwords[caller]!.0, Self.passwords[caller]!.1)
                }
            }

            var failures: [String] = []
            for caller in Caller.allCases {
                let auth = credentials(caller)
                for resource in Resource.allCases {
                    let repository = "\(resource.rawValue)/app"
                    for act in Act.allCases {
                        let expected = Self.expected(caller, act, resource)
                        let allowed: Bool
                        switch act {
                        case .pull:
                            let status = try await client.request(.get, "/v2/\(repository)/manifests/v1", headers: auth).status
                            allowed = status == .ok
                            if !allowed && ![.unauthorized, .forbidden].contains(status) {
                                failures.append("\(caller) pull \(resource): unexpected \(status)")
                            }
                        case .push:
                            let content = Array("pushed by \(caller) into \(resource)".utf8)
                            let status = try await client.request(
                                .post, "/v2/\(repository)/blobs/uploads/?digest=\(Digest.of(content))", headers: auth, body: ByteBuffer(bytes: content)
                            ).status
                            allowed = status == .created
                        case .delete:
                            // A sacrificial blob per cell, pushed by the administrator.
                            let digest = try await client.pushBlob("victim \(caller) \(resource)", to: repository, auth: adminAuth)
                            let status = try await client.request(.delete, "/v2/\(repository)/blobs/\(digest)", headers: auth).status
                            allowed = status == .accepted
                        case .mount:
                            let status = try await client.request(
                                .post, "/v2/team/mounted-\(caller.rawValue.lowercased())/blobs/uploads/?mount=\(layers[resource]!)&from=\(repository)",
                                headers: auth
                            ).status
                            allowed = status == .created
                            if !allowed && Self.expected(caller, .push, .own) && status != .accepted {
                                failures.append("\(caller) mount \(resource): expected a fallback upload session (202), got \(status)")
                            }
                        case .catalog:
                            let response = try await client.request(.get, "/v2/_catalog", headers: auth)
                            if caller == .anonymous {
                                allowed = response.status == .ok
                            } else {
                                allowed = response.text.contains("\"\(repository)\"")
                            }
                        case .manage:
                            let status = try await client.request(
                                .put, "/api/v1/namespaces/\(resource.rawValue)/members/eve", headers: auth.merging(["Content-Type": "application/json"]),
                                body: ByteBuffer(string: #"{"role":"reader"}"#)
                            ).status
                            allowed = status == .noContent
                            if allowed { _ = try await client.request(.delete, "/api/v1/namespaces/\(resource.rawValue)/members/eve", headers: adminAuth) }
                        }
                        if allowed != expected {
                            failures.append(
                                "\(caller) \(act) \(resource): expected \(expected ? "allowed" : "refused"), was \(allowed ? "allowed" : "refused")")
                        }
                    }
                }
            }
            let report = "\(failures.count) cells wrong:\n" + failures.joined(separator: "\n")
            #expect(failures.isEmpty, "\(report)")
            #expect(Caller.allCases.count * Act.allCases.count * Resource.allCases.count == 144)
        }
    }

    private func pushImage(_ client: any TestClientProtocol, _ auth: HTTPFields, _ repository: String, layer: String) async throws -> Digest {
        var digests: [Digest] = []
        for content in ["{}", layer] {
            let digest = Digest.of(Array(content.utf8))
            let response = try await client.request(
                .post, "/v2/\(repository)/blobs/uploads/?digest=\(digest)", headers: auth, body: ByteBuffer(string: content))
            #expect(response.status == .created, "\(response.text)")
            digests.append(digest)
        }
        let manifest =
            #"{"schemaVersion":2,"mediaType":"application/vnd.oci.image.manifest.v1+json","config":{"mediaType":"application/vnd.oci.image.config.v1+json","digest":"\#(digests[0])","size":2},"layers":[{"mediaType":"application/vnd.oci.image.layer.v1.tar","digest":"\#(digests[1])","size":\#(layer.utf8.count)}]}"#
        var headers = auth
        headers[.contentType] = MediaType.ociManifest
        let response = try await client.request(.put, "/v2/\(repository)/manifests/v1", headers: headers, body: ByteBuffer(string: manifest))
        #expect(response.status == .created, "\(response.text)")
        return digests[1]
    }
}

extension HTTPFields {
    func merging(_ other: [String: String]) -> HTTPFields {
        var result = self
        for (name, value) in other { result[HTTPField.Name(name)!] = value }
        return result
    }
}

extension TestClientProtocol {
    /// Pushes a blob as the test administrator (for secure servers).
    @discardableResult
    func pushBlob(_ content: String, to repository: String, auth: HTTPFields) async throws -> Digest {
        let digest = Digest.of(Array(content.utf8))
        let response = try await request(.post, "/v2/\(repository)/blobs/uploads/?digest=\(digest)", headers: auth, body: ByteBuffer(string: content))
        #expect(response.status == .created)
        return digest
    }
}

@Suite("Access control: tokens, identities, throttling, audit")
struct AccessFlowTests {
    @Test("an unauthenticated request gets a Bearer challenge naming realm, service and scope")
    func challenges() async throws {
        try await Secure.withServer { client, _ in
            let base = try await client.request(.get, "/v2/")
            #expect(base.status == .unauthorized)
            #expect(base.errorCode == "UNAUTHORIZED")
            let challenge = try #require(base.header("WWW-Authenticate"))
            #expect(challenge.hasPrefix("Bearer realm=\"http://"))
            #expect(challenge.contains("/auth/token\",service=\"wharf\""))
            let pull = try await client.request(.get, "/v2/team/app/manifests/latest")
            #expect(pull.header("WWW-Authenticate")?.hasSuffix(#"scope="repository:team/app:pull""#) == true)
            let push = try await client.request(.post, "/v2/team/app/blobs/uploads/")
            #expect(push.header("WWW-Authenticate")?.contains(#"scope="repository:team/app:pull,push""#) == true)
            let catalog = try await client.request(.get, "/v2/_catalog")
            #expect(catalog.header("WWW-Authenticate")?.contains(#"scope="registry:catalog:*""#) == true)
            // Basic credentials straight on /v2 work too (Kubernetes pull secrets).
            #expect(try await client.request(.get, "/v2/", headers: Secure.basic("admin", Secure.adminPassword)).status == .ok)
            #expect(try await client.request(.get, "/v2/", headers: Secure.basic("admin", "wrong")).status == .unauthorized)
            #expect(try await client.request(.get, "/v2/", headers: [.authorization: "Digest abc"]).status == .unauthorized)
        }
    }

    @Test("tokens grant the intersection of what is asked and what is allowed; partial grants are not errors")
    func tokenGrants() async throws {
        try await Secure.withServer { client, server in
            let admin = try await Secure.administrator(server)
            _ = try await server.access!.createNamespace(by: admin, name: "team", isPublic: false, source: nil)
            _ = try await server.access!.createNamespace(by: admin, name: "pub", isPublic: true, source: nil)
            _ = try await server.access!.createUser(by: admin, name: "dave", password: "dave-password-12", email: nil, isAdmin: false, source: nil)
            try await server.access!.setMember("dave", of: "team", role: .reader, by: admin, source: nil)
            let token = try await Secure.token(
                client, Secure.basic("dave", "dave-password-12"),
                scopes: ["repository:team/app:pull,push", "repository:other/app:pull", "repository:pub/x:pull,push,delete", "registry:catalog:*"])
            let claims = try Secure.claims(token)
            let access = claims["access"] as! [[String: Any]]
            let granted = Dictionary(uniqueKeysWithValues: access.map { ("\($0["type"]!):\($0["name"]!)", $0["actions"] as! [String]) })
            #expect(granted["repository:team/app"] == ["pull"])
            #expect(granted["repository:other/app"] == nil)
            #expect(granted["repository:pub/x"] == ["pull"])
            #expect(granted["registry:catalog"] == ["*"])
            #expect(claims["iss"] as? String == "wharf")
            #expect(claims["sub"] as? String == "dave")
            #expect((claims["aud"] as? String ?? (claims["aud"] as? [String])?.first) == "wharf")
            #expect(claims["exp"] is Int)
            let header = try JSONSerialization.jsonObject(with: Data(base64URL: String(token.split(separator: ".")[0]))!) as! [String: Any]
            #expect(header["alg"] as? String == "ES256")
            #expect((header["kid"] as? String)?.isEmpty == false)
            // Anonymous tokens carry only public pulls.
            let anonymous = try await Secure.token(client, [:], scopes: ["repository:pub/x:pull,push", "repository:team/app:pull"])
            let anonymousAccess = try Secure.claims(anonymous)["access"] as! [[String: Any]]
            #expect(anonymousAccess.count == 1)
            #expect(anonymousAccess.first?["name"] as? String == "pub/x")
            #expect(try await client.request(.get, "/auth/token?service=someone-else", headers: Secure.basic("dave", "dave-password-12")).status == .badRequest)
            #expect(try await client.request(.get, "/auth/token?service=wharf", headers: Secure.basic("dave", "nope")).status == .unauthorized)
        }
    }

    @Test("bearer tokens are checked for signature, algorithm, issuer, audience, time and scope")
    func tokenAttacks() async throws {
        try await Secure.withServer { client, server in
            let adminAuth = Secure.basic("admin", Secure.adminPassword)
            try await client.pushBlob("{}", to: "team/a", auth: adminAuth)
            try await client.pushBlob("{}", to: "team/b", auth: adminAuth)
            let blob = Digest.of(Array("{}".utf8))
            let token = try await Secure.token(client, adminAuth, scopes: ["repository:team/a:pull"])
            #expect(try await client.request(.head, "/v2/team/a/blobs/\(blob)", headers: Secure.bearer(token)).status == .ok)

            // A token for repository A used on repository B: 401 with insufficient_scope, as
            // Distribution and Docker Hub answer (clients fetch a new token only on 401).
            let other = try await client.request(.head, "/v2/team/b/blobs/\(blob)", headers: Secure.bearer(token))
            #expect(other.status == .unauthorized)
            #expect(other.header("WWW-Authenticate")?.contains(#"error="insufficient_scope""#) == true)
            // More than was granted: push with a pull token.
            let push = try await client.request(.post, "/v2/team/a/blobs/uploads/", headers: Secure.bearer(token))
            #expect(push.status == .unauthorized)
            #expect(push.errorCode == "UNAUTHORIZED")
            #expect(push.header("WWW-Authenticate")?.contains(#"scope="repository:team/a:pull,push""#) == true)

            // Tampered signature, tampered claims, alg none, garbage.
            var parts = token.split(separator: ".").map(String.init)
            var signature = Array(parts[2])
            signature[5] = signature[5] == "A" ? "B" : "A"
            let tampered = [parts[0], parts[1], String(signature)].joined(separator: ".")
            var claims = try Secure.claims(token)
            claims["access"] = [["type": "repository", "name": "team/b", "actions": ["pull", "push", "delete"]]]
            let forgedClaims = [parts[0], Data(try JSONSerialization.data(withJSONObject: claims)).base64URL, parts[2]].joined(separator: ".")
            let header = try JSONSerialization.jsonObject(with: Data(base64URL: parts[0])!) as! [String: Any]
            var noneHeader = header
            noneHeader["alg"] = "none"
            parts[0] = Data(try JSONSerialization.data(withJSONObject: noneHeader)).base64URL
            let algNone = [parts[0], Data(try JSONSerialization.data(withJSONObject: claims)).base64URL, ""].joined(separator: ".")
            for (name, bad) in [("tampered signature", tampered), ("tampered claims", forgedClaims), ("alg none", algNone), ("garbage", "not.a.jwt")] {
                let response = try await client.request(.head, "/v2/team/b/blobs/\(blob)", headers: Secure.bearer(bad))
                #expect(response.status == .unauthorized, "\(name) must be refused")
                #expect(response.header("WWW-Authenticate")?.contains("invalid_token") == true, "\(name)")
            }

            // Correctly signed with the server's own key, but wrong audience, wrong issuer, expired, not yet valid.
            let key = try #require(try await server.access!.store.signingKeys().first { $0.retiredAt == nil })
            let keys = JWTKeyCollection()
            await keys.add(ecdsa: try ES256PrivateKey(pem: key.privateKeyPEM), kid: JWKIdentifier(string: key.kid))
            func forge(audience: String = "wharf", issuer: String = "wharf", expires: TimeInterval = 300, notBefore: TimeInterval = 0) async throws -> String {
                let now = Date()
                let claims = TokenService.Claims(
                    iss: .init(value: issuer), sub: .init(value: "admin"), aud: .init(value: [audience]),
                    exp: .init(value: now.addingTimeInterval(expires)), nbf: .init(value: now.addingTimeInterval(notBefore)),
                    iat: .init(value: now), jti: .init(value: UUID().uuidString),
                    access: [AccessScope(type: "repository", name: "team/b", actions: ["pull"])], kind: .user, uid: 1, adm: true
                )
                return try await keys.sign(claims, kid: JWKIdentifier(string: key.kid))
            }
            let genuine = try await forge()
            #expect(try await client.request(.head, "/v2/team/b/blobs/\(blob)", headers: Secure.bearer(genuine)).status == .ok)
            for (name, bad) in [
                ("wrong audience", try await forge(audience: "another-registry")),
                ("wrong issuer", try await forge(issuer: "evil")),
                ("expired beyond the leeway", try await forge(expires: -120)),
                ("not yet valid beyond the leeway", try await forge(notBefore: 120)),
            ] {
                #expect(
                    try await client.request(.head, "/v2/team/b/blobs/\(blob)", headers: Secure.bearer(bad)).status == .unauthorized, "\(name) must be refused")
            }
            // Within the 60 s leeway: accepted.
            #expect(try await client.request(.head, "/v2/team/b/blobs/\(blob)", headers: Secure.bearer(try await forge(expires: -30))).status == .ok)
        }
    }

    @Test("OAuth2: password grant with a refresh token, refresh_token grant, errors as invalid_grant")
    func oauth() async throws {
        try await Secure.withServer { client, _ in
            let form: HTTPFields = [.contentType: "application/x-www-form-urlencoded"]
            let login = try await client.request(
                .post, "/auth/token", headers: form,
                body: ByteBuffer(
                    string:
                        "grant_type=password&username=admin&password=\(Secure.adminPassword)&service=wharf&client_id=test&access_type=offline&scope=repository%3Ateam%2Fapp%3Apull"
                ))
            #expect(login.status == .ok)
            struct Body: Decodable { let access_token: String; let refresh_token: String?; let scope: String; let expires_in: Int }
            let body = try JSONDecoder().decode(Body.self, from: Data(login.body.readableBytesView))
            #expect(body.scope == "repository:team/app:pull")
            let refresh = try #require(body.refresh_token)
            let renewed = try await client.request(
                .post, "/auth/token", headers: form,
                body: ByteBuffer(
                    string:
                        "grant_type=refresh_token&refresh_token=\(refresh)&service=wharf&client_id=test&scope=repository%3Ateam%2Fapp%3Apull%2Cpush"))
            let renewedBody = try JSONDecoder().decode(Body.self, from: Data(renewed.body.readableBytesView))
            #expect(renewedBody.scope == "repository:team/app:pull,push")
            #expect(renewedBody.refresh_token == refresh)
            for bad in [
                "grant_type=refresh_token&refresh_token=nope&service=wharf", "grant_type=password&username=admin&password=wrong&service=wharf",
                "grant_type=client_credentials",
            ] {
                let response = try await client.request(.post, "/auth/token", headers: form, body: ByteBuffer(string: bad))
                #expect(response.status == .badRequest, "\(bad)")
                #expect(response.text.contains("\"error\""))
            }
        }
    }

    @Test("robots: secret shown once, scoped, expiry and disabling refuse them; access tokens stand in for passwords")
    func robotsAndAccessTokens() async throws {
        try await Secure.withServer { client, server in
            let adminAuth = Secure.basic("admin", Secure.adminPassword)
            let json: HTTPFields = adminAuth.merging(["Content-Type": "application/json"])
            let created = try await client.request(
                .post, "/api/v1/robots", headers: json,
                body: ByteBuffer(
                    string:
                        #"{"name":"deployer","permissions":[{"scope":"repository","name":"team/app","actions":["pull"]}]}"#))
            #expect(created.status == .created, "\(created.text)")
            let robot = try JSONDecoder().decode(API.Robot.self, from: Data(created.body.readableBytesView))
            #expect(robot.name == "robot$deployer")
            let secret = try #require(robot.secret)
            #expect(try await client.request(.get, "/api/v1/robots/robot$deployer", headers: adminAuth).text.contains("secret") == false)
            try await client.pushBlob("{}", to: "team/app", auth: adminAuth)
            try await client.pushBlob("{}", to: "team/web", auth: adminAuth)
            let blob = Digest.of(Array("{}".utf8))
            let robotAuth = Secure.basic("robot$deployer", secret)
            #expect(try await client.request(.head, "/v2/team/app/blobs/\(blob)", headers: robotAuth).status == .ok)
            #expect(try await client.request(.head, "/v2/team/web/blobs/\(blob)", headers: robotAuth).status == .forbidden)
            #expect(try await client.request(.post, "/v2/team/app/blobs/uploads/", headers: robotAuth).status == .forbidden)
            // Robots cannot manage anything.
            #expect(try await client.request(.get, "/api/v1/users", headers: robotAuth).status == .forbidden)
            // Rotation invalidates the old secret.
            let rotated = try await client.request(.post, "/api/v1/robots/robot$deployer/secret", headers: adminAuth)
            let newSecret = try #require(try JSONDecoder().decode(API.Robot.self, from: Data(rotated.body.readableBytesView)).secret)
            #expect(try await client.request(.head, "/v2/team/app/blobs/\(blob)", headers: robotAuth).status == .unauthorized)
            #expect(try await client.request(.head, "/v2/team/app/blobs/\(blob)", headers: Secure.basic("robot$deployer", newSecret)).status == .ok)
            // Expired and disabled robots are refused with 401.
            _ = try await client.request(
                .patch, "/api/v1/robots/robot$deployer", headers: json, body: ByteBuffer(string: #"{"expiresAt":"2020-01-01T00:00:00Z"}"#))
            #expect(try await client.request(.head, "/v2/team/app/blobs/\(blob)", headers: Secure.basic("robot$deployer", newSecret)).status == .unauthorized)
            _ = try await client.request(
                .patch, "/api/v1/robots/robot$deployer", headers: json, body: ByteBuffer(string: #"{"expiresAt":"2099-01-01T00:00:00Z","disabled":true}"#))
            #expect(try await client.request(.head, "/v2/team/app/blobs/\(blob)", headers: Secure.basic("robot$deployer", newSecret)).status == .unauthorized)

            // Personal access tokens.
            let token = try await client.request(.post, "/api/v1/users/admin/tokens", headers: json, body: ByteBuffer(string: #"{"name":"laptop"}"#))
            let pat = try #require(try JSONDecoder().decode(API.AccessToken.self, from: Data(token.body.readableBytesView)).token)
            #expect(pat.hasPrefix("wharf_pat_"))
            #expect(try await client.request(.get, "/v2/", headers: Secure.basic("admin", pat)).status == .ok)
            #expect(try await client.request(.get, "/v2/", headers: Secure.basic("someone-else", pat)).status == .unauthorized)
            #expect(try await client.request(.delete, "/api/v1/users/admin/tokens/laptop", headers: adminAuth).status == .noContent)
            #expect(try await client.request(.get, "/v2/", headers: Secure.basic("admin", pat)).status == .unauthorized)
            _ = server
        }
    }

    @Test("users: create, disable, password change; no anonymous management; the last administrator stays")
    func users() async throws {
        try await Secure.withServer { client, _ in
            let adminAuth = Secure.basic("admin", Secure.adminPassword)
            let json: HTTPFields = adminAuth.merging(["Content-Type": "application/json"])
            #expect(try await client.request(.get, "/api/v1/users").status == .unauthorized)
            #expect(
                try await client.request(.post, "/api/v1/users", headers: json, body: ByteBuffer(string: #"{"name":"frank","password":"short"}"#)).status
                    == .badRequest)
            #expect(
                try await client.request(
                    .post, "/api/v1/users", headers: json, body: ByteBuffer(string: #"{"name":"Frank!","password":"long-enough-password"}"#)
                ).status == .badRequest)
            #expect(
                try await client.request(.post, "/api/v1/users", headers: json, body: ByteBuffer(string: #"{"name":"frank","password":"frank-password-1"}"#))
                    .status == .created)
            #expect(
                try await client.request(.post, "/api/v1/users", headers: json, body: ByteBuffer(string: #"{"name":"frank","password":"frank-password-1"}"#))
                    .status == .conflict)
            let frank = Secure.basic("frank", "frank-password-1")
            #expect(try await client.request(.get, "/api/v1/users", headers: frank).status == .forbidden)
            #expect(try await client.request(.get, "/api/v1/users/frank", headers: frank).status == .ok)
            #expect(try await client.request(.get, "/api/v1/users/admin", headers: frank).status == .forbidden)
            // Own password change needs the current password.
            var frankJSON = frank.merging(["Content-Type": "application/json"])
            #expect(
                try await client.request(
                    .put, "/api/v1/users/frank/password", headers: frankJSON,
                    body: ByteBuffer(string: #"{"password":"frank-password-2","currentPassword":"wrong"}"#)
                ).status == .forbidden)
            #expect(
                try await client.request(
                    .put, "/api/v1/users/frank/password", headers: frankJSON,
                    body: ByteBuffer(string: #"{"password":"frank-password-2","currentPassword":"frank-password-1"}"#)
                ).status == .noContent)
            #expect(try await client.request(.get, "/v2/", headers: frank).status == .unauthorized)
            frankJSON = Secure.basic("frank", "frank-password-2")
            #expect(try await client.request(.get, "/v2/", headers: frankJSON).status == .ok)
            // Disabling takes effect at once (the credential cache is cleared).
            #expect(try await client.request(.patch, "/api/v1/users/frank", headers: json, body: ByteBuffer(string: #"{"disabled":true}"#)).status == .ok)
            #expect(try await client.request(.get, "/v2/", headers: frankJSON).status == .unauthorized)
            let lastAdmin = try await client.request(.delete, "/api/v1/users/admin", headers: adminAuth)
            #expect(lastAdmin.status == .conflict)
            #expect(try await client.request(.get, "/api/v1/users/nobody", headers: adminAuth).status == .notFound)
        }
    }

    @Test("users imported with a bcrypt hash from htpasswd keep their password; bad hashes and ambiguous bodies are refused")
    func importedUsers() async throws {
        try await Secure.withServer { client, _ in
            let json: HTTPFields = Secure.basic("admin", Secure.adminPassword).merging(["Content-Type": "application/json"])
            func create(_ body: String) async throws -> (HTTPResponse.Status, String) {
                let response = try await client.request(.post, "/api/v1/users", headers: json, body: ByteBuffer(string: body))
                return (response.status, response.text)
            }
            // Made by `htpasswd -nbB` (cost 5, $2y$) and `htpasswd -nbB -C 10`.
            let cost5 = "$2y$05$MqCRWxhqXYNBZ8Hkzqypku9bOqU31ONjmpPGxGicEyqVXkuiAA/LG"
            let cost10 = "$2y$10$awRcwBgWM7v/Z1akjl74HuY5Uox0CiRAI3jjarB1M..iNNFMyXNgu"
            #expect(try await create(#"{"name":"dora","passwordHash":"\#(cost5)"}"#).0 == .created)
            #expect(try await create(#"{"name":"ella","passwordHash":"\#(cost10)","admin":true}"#).0 == .created)
            #expect(try await client.request(.get, "/v2/", headers: Secure.basic("dora", "correct-horse-battery")).status == .ok)
            #expect(try await client.request(.get, "/v2/", headers: Secure.basic("dora", "wrong-horse-battery")).status == .unauthorized)
            #expect(try await client.request(.get, "/api/v1/users", headers: Secure.basic("ella", "correct-horse-battery")).status == .ok)
            // The hash is never handed back.
            #expect(!(try await client.request(.get, "/api/v1/users/dora", headers: json).text.contains("$2y$")))

            for bad in [
                "$1$salt$hash", "{SHA}W6ph5Mm5Pz8GgiULbPgzG37mj9g=", String(cost5.dropLast()), cost5.replacingOccurrences(of: "$05$", with: "$03$"),
                cost5.replacingOccurrences(of: "$2y$", with: "$2x$"), String(cost5.dropLast()) + "!",
            ] {
                let (status, text) = try await create(#"{"name":"fred","passwordHash":"\#(bad)"}"#)
                #expect(status == .badRequest, "\(bad)")
                #expect(text.contains("bcrypt"), "\(text)")
            }
            #expect(try await create(#"{"name":"fred","password":"long-enough-password","passwordHash":"\#(cost5)"}"#).0 == .badRequest)
            #expect(try await create(#"{"name":"fred"}"#).0 == .badRequest)
            #expect(try await create(#"{"name":"dora","passwordHash":"\#(cost5)"}"#).0 == .conflict)
            // Only administrators import.
            let dora = Secure.basic("dora", "correct-horse-battery").merging(["Content-Type": "application/json"])
            #expect(
                try await client.request(.post, "/api/v1/users", headers: dora, body: ByteBuffer(string: #"{"name":"gus","passwordHash":"\#(cost5)"}"#)).status
                    == .forbidden)
        }
    }

    @Test("login throttling: repeated failures back off with 429 and Retry-After, then the real user gets in")
    func throttling() async throws {
        // A 30 s lock for the checks made while locked (a loaded machine only makes them come
        // sooner inside it), a 1 s lock for the expiry (a loaded machine only makes it later): no
        // outcome depends on how fast the machine is. The doubling arithmetic has unit tests.
        try await Secure.withServer(customize: {
            $0.loginFirstDelaySeconds = 30; $0.loginMaximumDelaySeconds = 30
        }) { client, _ in
            var statuses: [HTTPResponse.Status] = []
            var retryAfter: String?
            for _ in 0..<6 {
                let response = try await client.request(.get, "/v2/", headers: Secure.basic("admin", "guess"))
                statuses.append(response.status)
                if response.status == .tooManyRequests {
                    retryAfter = response.header("Retry-After")
                    #expect(response.errorCode == "TOOMANYREQUESTS")
                }
            }
            #expect(Array(statuses.prefix(3)) == [.unauthorized, .unauthorized, .unauthorized])
            #expect(statuses.contains(.tooManyRequests))
            #expect((1...30).contains(Int(retryAfter ?? "") ?? 0))
            // While locked, even the right password waits: that is what stops guessing.
            #expect(try await client.request(.get, "/v2/", headers: Secure.basic("admin", Secure.adminPassword)).status == .tooManyRequests)
        }
        try await Secure.withServer(customize: {
            $0.loginFirstDelaySeconds = 1; $0.loginMaximumDelaySeconds = 1
        }) { client, _ in
            for _ in 0..<6 { _ = try await client.request(.get, "/v2/", headers: Secure.basic("admin", "guess")) }
            // The lock expires; the real password then works and clears the count.
            try await Task.sleep(for: .seconds(1.5))
            #expect(try await client.request(.get, "/v2/", headers: Secure.basic("admin", Secure.adminPassword)).status == .ok)
            #expect(try await client.request(.get, "/v2/", headers: Secure.basic("admin", "guess")).status == .unauthorized)
        }
    }

    @Test("the audit log records logins, pushes, pulls (aggregated), deletes, denials and changes; queryable and exportable")
    func audit() async throws {
        try await Secure.withServer { client, server in
            let adminAuth = Secure.basic("admin", Secure.adminPassword)
            let json: HTTPFields = adminAuth.merging(["Content-Type": "application/json"])
            _ = try await client.request(.post, "/api/v1/users", headers: json, body: ByteBuffer(string: #"{"name":"gina","password":"gina-password-1"}"#))
            let digest = try await client.pushBlob("{}", to: "team/app", auth: adminAuth)
            let manifest =
                #"{"schemaVersion":2,"mediaType":"application/vnd.oci.image.manifest.v1+json","config":{"mediaType":"a/b","digest":"\#(digest)","size":2},"layers":[]}"#
            #expect(
                try await client.request(
                    .put, "/v2/team/app/manifests/v1", headers: adminAuth.merging(["Content-Type": MediaType.ociManifest]), body: ByteBuffer(string: manifest)
                ).status == .created)
            for _ in 0..<3 { _ = try await client.request(.get, "/v2/team/app/manifests/v1", headers: adminAuth) }
            _ = try await client.request(.get, "/v2/team/app/manifests/v1", headers: Secure.basic("gina", "gina-password-1"))
            _ = try await client.request(.get, "/v2/", headers: Secure.basic("gina", "wrong-password"))
            _ = try await client.request(.delete, "/v2/team/app/manifests/v1", headers: adminAuth)

            let all = try await client.request(.get, "/api/v1/audit?limit=1000", headers: adminAuth)
            let events = try JSONDecoder().decode([API.Event].self, from: Data(all.body.readableBytesView))
            func find(_ action: String, _ result: String = "success") -> API.Event? { events.first { $0.action == action && $0.result == result } }
            #expect(find("user.create")?.target == "gina")
            #expect(find("push")?.repository == "team/app")
            #expect(find("push")?.detail?.contains(digest.description) == false)  // the manifest's digest, not the config's
            // Aggregated per flush: three pulls are one event, or two when a flush fell between
            // them (a slow run); the counts always add up.
            let pulls = events.filter { $0.action == "pull" && $0.result == "success" && $0.actor == "admin" && $0.repository == "team/app" }
            #expect(pulls.reduce(0) { $0 + $1.count } == 3)
            #expect(pulls.count < 3, "pulls are aggregated, not one event each")
            #expect(find("pull", "denied")?.actor == "gina")
            #expect(find("login", "failure")?.target == "gina")
            #expect(find("delete")?.target == "v1")
            #expect(events.allSatisfy { $0.at != nil })
            #expect(events.contains { $0.source == "127.0.0.1" })

            let filtered = try await client.request(.get, "/api/v1/audit?action=pull&actor=admin", headers: adminAuth)
            #expect(
                try JSONDecoder().decode([API.Event].self, from: Data(filtered.body.readableBytesView)).allSatisfy {
                    $0.action == "pull" && $0.actor == "admin"
                })
            let export = try await client.request(.get, "/api/v1/audit/export?namespace=team", headers: adminAuth)
            #expect(export.header("Content-Type") == "application/x-ndjson")
            let lines = export.text.split(separator: "\n")
            #expect(lines.count >= 3)
            for line in lines { _ = try JSONDecoder().decode(API.Event.self, from: Data(line.utf8)) }
            // Non-administrators may not read the whole log.
            #expect(try await client.request(.get, "/api/v1/audit", headers: Secure.basic("gina", "gina-password-1")).status == .forbidden)
            _ = server
        }
    }

    @Test("signing keys persist across restarts and rotate without invalidating live tokens")
    func keys() async throws {
        let data = try Harness.temporaryDirectory()
        defer { try? FileManager.default.removeItem(at: data) }
        let adminAuth = Secure.basic("admin", Secure.adminPassword)
        let token = try await Secure.withServer(data: data) { client, _ in
            try await client.pushBlob("{}", to: "team/app", auth: adminAuth)
            return try await Secure.token(client, adminAuth, scopes: ["repository:team/app:pull"])
        }
        let blob = Digest.of(Array("{}".utf8))
        try await Secure.withServer(data: data) { client, server in
            // Issued before the restart, still valid after it.
            #expect(try await client.request(.head, "/v2/team/app/blobs/\(blob)", headers: Secure.bearer(token)).status == .ok)
            let oldKid = server.access!.tokens.activeKeyID
            let rotated = try await client.request(.post, "/api/v1/keys/rotate", headers: adminAuth)
            #expect(rotated.status == .ok)
            #expect(server.access!.tokens.activeKeyID != oldKid)
            #expect(try await client.request(.head, "/v2/team/app/blobs/\(blob)", headers: Secure.bearer(token)).status == .ok)
            let fresh = try await Secure.token(client, adminAuth, scopes: ["repository:team/app:pull"])
            let kid = try JSONSerialization.jsonObject(with: Data(base64URL: String(fresh.split(separator: ".")[0]))!) as! [String: Any]
            #expect(kid["kid"] as? String == server.access!.tokens.activeKeyID)
            #expect(try await client.request(.head, "/v2/team/app/blobs/\(blob)", headers: Secure.bearer(fresh)).status == .ok)
        }
    }

    @Test("the first start creates admin with a random password in a 0600 file; later starts keep it")
    func bootstrap() async throws {
        let data = try Harness.temporaryDirectory()
        defer { try? FileManager.default.removeItem(at: data) }
        let password = try await Harness.withServer(data: data, customize: { $0.authEnabled = true }) { client, server in
            let generated = try #require(server.generatedAdministratorPassword)
            #expect(generated.count >= 20)
            let path = data.appendingPathComponent("admin-password").path
            let attributes = try FileManager.default.attributesOfItem(atPath: path)
            #expect((attributes[.posixPermissions] as? Int) == 0o600)
            #expect(try String(contentsOfFile: path, encoding: .utf8) == generated + "\n")
            #expect(try await client.request(.get, "/v2/", headers: Secure.basic("admin", generated)).status == .ok)
            return generated
        }
        try await Harness.withServer(data: data, customize: { $0.authEnabled = true }) { client, server in
            #expect(server.generatedAdministratorPassword == nil)
            let status = try await client.request(.get, "/v2/", headers: Secure.basic("admin", password)).status
            #expect(status == .ok)
        }
    }

    @Test("the OpenAPI document describes every management route")
    func openAPI() async throws {
        try await Secure.withServer { client, server in
            let response = try await client.request(.get, "/api/v1/openapi.json")
            #expect(response.status == .ok)
            let document = try JSONSerialization.jsonObject(with: Data(response.body.readableBytesView)) as! [String: Any]
            #expect(document["openapi"] as? String == "3.1.0")
            let paths = document["paths"] as! [String: [String: Any]]
            let routes = ManagementAPI(
                authentication: RequestAuthentication(access: server.access!, configuredRealm: nil),
                storage: StorageManagement(
                    registry: server.registry, lifecycle: server.lifecycle, collector: server.collector, scans: server.scans,
                    advisories: server.advisories,
                    settingsChanges: RepositorySettingsChanges(metadata: server.metadata, audit: server.access?.audit),
                    scanPolicies: NamespaceScanPolicies(gate: server.scans.pullGate, vex: server.scans.vex, audit: server.access?.audit),
                    tagRuleChanges: NamespaceTagRuleChanges(book: server.registry.tagRules, audit: server.access?.audit),
                    signatures: server.signatures, signaturePolicies: NamespaceSignaturePolicies(gate: server.signatures, audit: server.access?.audit),
                    webhooks: WebhookChanges(metadata: server.metadata, sealer: server.access!.store.sealer, audit: server.access?.audit),
                    reports: StorageReports(metadata: server.metadata, prices: .init()), leases: server.leases, storageKind: "filesystem",
                    encryptionKeys: EncryptionKeyChanges(registry: server.registry, audit: server.access?.audit),
                    replication: ReplicationOverview(registry: server.registry, replicator: server.replicator, audit: server.access?.audit))
            ).routes
            for route in routes {
                #expect(paths[route.path]?[route.method.rawValue.lowercased()] != nil, "\(route.method) \(route.path) is undocumented")
            }
            #expect(paths.values.map(\.count).reduce(0, +) == routes.count)
        }
    }
}

extension Data {
    init?(base64URL: String) {
        var base64 = base64URL.replacingOccurrences(of: "-", with: "+").replacingOccurrences(of: "_", with: "/")
        base64 += String(repeating: "=", count: (4 - base64.count % 4) % 4)
        self.init(base64Encoded: base64)
    }

    var base64URL: String {
        base64EncodedString().replacingOccurrences(of: "+", with: "-").replacingOccurrences(of: "/", with: "_").replacingOccurrences(of: "=", with: "")
    }
}
