import Access
import Foundation
import HTTPTypes
import HummingbirdTesting
import Metadata
import NIOCore
import OCI
import Testing

@testable import Server

#if canImport(Glibc)
import Glibc
#endif

/// Issue 23's defects, each reproduced as a request against a real server. Before the fixes each
/// of the crash cases killed the process (SIGILL on Int64 overflow); here the server must answer
/// with the protocol's error and keep serving.
@Suite("Hostile input: no request crashes Wharf")
struct HostileNumberTests {
    static let hugeRanges = ["0-9223372036854775807", "9223372036854775807-9223372036854775807", "0-99999999999999999999", "5-2", "-1-3"]

    @Test("a Content-Range past every real blob size gets 400 on PATCH and PUT, and the upload still works")
    func contentRange() async throws {
        try await Harness.withServer { client, _ in
            let start = try await client.request(.post, "/v2/hostile/app/blobs/uploads/")
            #expect(start.status == .accepted)
            let location = try #require(start.header("Location"))
            for range in Self.hugeRanges {
                let patch = try await client.request(.patch, location, headers: [.contentRange: range], body: ByteBuffer(string: "abc"))
                #expect(patch.status == .badRequest, "PATCH \(range): \(patch.status)")
                #expect(patch.errorCode == "BLOB_UPLOAD_INVALID")
                let digest = Digest.of(Array("abc".utf8))
                let put = try await client.request(.put, "\(location)?digest=\(digest)", headers: [.contentRange: range], body: ByteBuffer(string: "abc"))
                #expect(put.status == .badRequest, "PUT \(range): \(put.status)")
            }
            // The session is intact: a correct chunk and close still make the blob.
            let patch = try await client.request(.patch, location, headers: [.contentRange: "0-2"], body: ByteBuffer(string: "abc"))
            #expect(patch.status == .accepted)
            let digest = Digest.of(Array("abc".utf8))
            #expect(try await client.request(.put, "\(location)?digest=\(digest)").status == .created)
            #expect(try await client.request(.get, "/v2/hostile/app/blobs/\(digest)").text == "abc")
        }
    }

    @Test("Range, Content-Length and n beyond any real value are refused or ignored, never trapped on")
    func otherHeaders() async throws {
        try await Harness.withServer { client, _ in
            let digest = try await client.pushBlob("0123456789", to: "hostile/app")
            for header in ["bytes=0-9223372036854775807", "bytes=-9223372036854775807", "bytes=9223372036854775806-", "bytes=99999999999999999999-"] {
                let response = try await client.request(.get, "/v2/hostile/app/blobs/\(digest)", headers: [HTTPField.Name("Range")!: header])
                #expect([.ok, .partialContent, .rangeNotSatisfiable].contains(response.status), "\(header): \(response.status)")
            }
            #expect(try await client.request(.get, "/v2/hostile/app/tags/list?n=99999999999999999999").status == .badRequest)
            #expect(try await client.request(.get, "/v2/hostile/app/tags/list?n=9223372036854775807").status == .ok)
            #expect(try await client.request(.get, "/v2/").status == .ok)
        }
    }

    @Test("garbage collection with a grace period past any clock gets 400")
    func gcGrace() async throws {
        try await Secure.withServer { client, _ in
            let admin = Secure.basic("admin", Secure.adminPassword)
            for grace in ["9223372036854775807", "99999999999999999999", "-1", "1e9"] {
                let response = try await client.request(.post, "/api/v1/gc?dryRun=true&graceSeconds=\(grace)", headers: admin)
                #expect(response.status == .badRequest, "\(grace): \(response.status) \(response.text)")
            }
            #expect(try await client.request(.post, "/api/v1/gc?dryRun=true&graceSeconds=3600", headers: admin).status == .ok)
        }
    }

    @Test("a lifecycle policy whose day count overflows is refused; one stored before the bound is reported, never evaluated into a crash")
    func lifecycleDays() async throws {
        try await Secure.withServer { client, server in
            let admin = Secure.basic("admin", Secure.adminPassword)
            let json = admin.merging(["Content-Type": "application/json"])
            try await client.pushBlob("x", to: "hostile/app", auth: admin)
            let huge =
                #"{"rules":[{"rulePriority":1,"selection":{"tagStatus":"any","countType":"sinceImagePushed","countUnit":"days","countNumber":1000000000000000},"action":{"type":"expire"}}]}"#
            let body = try JSONEncoder().encode(["policy": huge])
            let put = try await client.request(.put, "/api/v1/repositories/hostile/app/lifecycle-policy", headers: json, body: ByteBuffer(bytes: Array(body)))
            #expect(put.status == .badRequest)
            #expect(put.text.contains("no larger than 2147483647"))
            let preview = try await client.request(
                .post, "/api/v1/repositories/hostile/app/lifecycle-policy/preview", headers: json, body: ByteBuffer(bytes: Array(body)))
            #expect(preview.status == .badRequest)

            // As if an earlier version had stored it: the preview reports it, the scheduled run skips it.
            let repository = try #require(RepositoryName("hostile/app"))
            _ = try await server.metadata.updateSettings(of: repository) { $0.lifecyclePolicy = huge }
            let stored = try await client.request(.post, "/api/v1/repositories/hostile/app/lifecycle-policy/preview", headers: admin)
            #expect(stored.status == .badRequest)
            #expect(stored.text.contains("put a corrected policy"))
            #expect(try await client.request(.post, "/api/v1/lifecycle/run", headers: admin).status == .ok)
            _ = try await server.lifecycle.applyAll()
            #expect(try await client.request(.get, "/v2/", headers: admin).status == .ok)
        }
    }
}

@Suite("Crash leftovers")
struct CrashLeftoverTests {
    @Test("a session whose bytes are gone (a crash between publishing the blob and committing) is never reported with a Range, and its row is removed")
    func sessionWithoutBytes() async throws {
        try await Harness.withServer { client, server in
            let start = try await client.request(.post, "/v2/crash/app/blobs/uploads/")
            let location = try #require(start.header("Location"))
            let id = String(location.split(separator: "/").last!)
            #expect(try await client.request(.patch, location, headers: [.contentRange: "0-2"], body: ByteBuffer(string: "abc")).status == .accepted)
            // As a crash leaves it: the upload file moved away, the session row still there.
            try await server.blobStore.deleteUpload(id)
            #expect(try await server.metadata.upload(id) != nil)
            let status = try await client.request(.get, location)
            #expect(status.status == .notFound)
            #expect(status.errorCode == "BLOB_UPLOAD_UNKNOWN")
            #expect(try await server.metadata.upload(id) == nil, "the stale session row is removed")
            // A closing PUT of such a session says the same and leaves nothing behind either.
            let second = try #require(try await client.request(.post, "/v2/crash/app/blobs/uploads/").header("Location"))
            let secondID = String(second.split(separator: "/").last!)
            #expect(try await client.request(.patch, second, headers: [.contentRange: "0-2"], body: ByteBuffer(string: "abc")).status == .accepted)
            try await server.blobStore.deleteUpload(secondID)
            let put = try await client.request(.put, "\(second)?digest=\(Digest.of(Array("abc".utf8)))")
            #expect(put.errorCode == "BLOB_UPLOAD_UNKNOWN")
            #expect(try await server.metadata.upload(secondID) == nil)
        }
    }
}

@Suite("Quotas count uploads in progress; sessions are bounded per identity")
struct UploadQuotaTests {
    @Test("bytes in open sessions count against the namespace quota; a GC with a grace window of 0 removes idle sessions")
    func inFlightBytes() async throws {
        try await Secure.withServer { client, _ in
            let admin = Secure.basic("admin", Secure.adminPassword)
            try await client.pushBlob("seed", to: "quota/app", auth: admin)
            let quota = try await client.request(
                .put, "/api/v1/namespaces/quota/quota", headers: CredentialBoundaryTests.json(admin),
                body: ByteBuffer(string: #"{"quotaBytes":1048576}"#))
            #expect(quota.status == .ok, "\(quota.text)")
            let chunk = ByteBuffer(bytes: [UInt8](repeating: 7, count: 600_000))
            var sessions: [String] = []
            for _ in 0..<3 {
                sessions.append(try #require(try await client.request(.post, "/v2/quota/app/blobs/uploads/", headers: admin).header("Location")))
            }
            let first = try await client.request(.patch, sessions[0], headers: admin.merging(["Content-Range": "0-599999"]), body: chunk)
            #expect(first.status == .accepted)
            // 600,000 bytes are in flight: another 600,000 would pass the 1 MiB quota.
            let second = try await client.request(.patch, sessions[1], headers: admin.merging(["Content-Range": "0-599999"]), body: chunk)
            #expect(second.status == .forbidden)
            #expect(second.errorCode == "DENIED")
            #expect(second.text.contains("uploads in progress"))
            // Monolithic pushes meet the same bound, counting what is stored too.
            let bytes = [UInt8](repeating: 9, count: 500_000)
            let mono = try await client.request(
                .post, "/v2/quota/app/blobs/uploads/?digest=\(Digest.of(bytes))", headers: admin, body: ByteBuffer(bytes: bytes))
            #expect(mono.status == .forbidden)
            #expect(mono.text.contains("uploads in progress"), "refused while streaming, not after: \(mono.text)")
            // Cancelling the first session frees its share.
            #expect(try await client.request(.delete, sessions[0], headers: admin).status == .noContent)
            #expect(try await client.request(.patch, sessions[1], headers: admin.merging(["Content-Range": "0-599999"]), body: chunk).status == .accepted)
            // An explicit grace window of 0 also collects idle sessions, with their files.
            #expect(try await client.request(.post, "/api/v1/gc?graceSeconds=0", headers: admin).status == .ok)
            #expect(try await client.request(.get, sessions[1], headers: admin).status == .notFound)
        }
    }

    @Test("one identity may hold a bounded number of open upload sessions")
    func sessionsPerIdentity() async throws {
        try await Secure.withServer(customize: { $0.maximumUploadsPerIdentity = 3 }) { client, _ in
            let admin = Secure.basic("admin", Secure.adminPassword)
            var locations: [String] = []
            for _ in 0..<3 {
                let response = try await client.request(.post, "/v2/team/app/blobs/uploads/", headers: admin)
                #expect(response.status == .accepted)
                locations.append(try #require(response.header("Location")))
            }
            let refused = try await client.request(.post, "/v2/team/app/blobs/uploads/", headers: admin)
            #expect(refused.status == .tooManyRequests)
            #expect(refused.errorCode == "TOOMANYREQUESTS")
            #expect(try await client.request(.delete, locations[0], headers: admin).status == .noContent)
            #expect(try await client.request(.post, "/v2/team/app/blobs/uploads/", headers: admin).status == .accepted)
        }
    }
}

@Suite("Grants belong to a namespace, not to its name")
struct NamespaceIdentityTests {
    @Test("deleting a namespace removes robot permissions and the pull policy; a namespace created again under the name inherits neither")
    func recreatedNamespace() async throws {
        try await Secure.withServer { client, _ in
            let admin = CredentialBoundaryTests.json(Secure.basic("admin", Secure.adminPassword))
            #expect(try await client.request(.post, "/api/v1/namespaces", headers: admin, body: ByteBuffer(string: #"{"name":"gamma"}"#)).status == .created)
            let robot = try await client.request(
                .post, "/api/v1/robots", headers: admin,
                body: ByteBuffer(
                    string:
                        #"{"name":"gamma-ci","permissions":[{"scope":"namespace","name":"gamma","actions":["pull","push"]},{"scope":"repository","name":"gamma/app","actions":["delete"]}]}"#
                ))
            #expect(robot.status == .created)
            struct Secret: Decodable { let name: String; let secret: String }
            let credentials = try JSONDecoder().decode(Secret.self, from: Data(robot.body.readableBytesView))
            let robotAuth = Secure.basic(credentials.name, credentials.secret)
            #expect(try await client.request(.post, "/v2/gamma/app/blobs/uploads/", headers: robotAuth).status == .accepted)
            let policy = try await client.request(
                .put, "/api/v1/namespaces/gamma/pull-policy", headers: admin, body: ByteBuffer(string: #"{"severity":"HIGH"}"#))
            #expect(policy.status == .ok, "\(policy.text)")

            #expect(try await client.request(.delete, "/api/v1/namespaces/gamma", headers: admin).status == .noContent)
            #expect(try await client.request(.post, "/api/v1/namespaces", headers: admin, body: ByteBuffer(string: #"{"name":"gamma"}"#)).status == .created)
            let refused = try await client.request(.post, "/v2/gamma/app/blobs/uploads/", headers: robotAuth)
            #expect(refused.status == .forbidden, "the robot's old grant must not reach the new gamma")
            let shown = try await client.request(.get, "/api/v1/robots/\(credentials.name)", headers: admin)
            #expect(shown.text.contains(#""permissions":[]"#), "\(shown.text)")
            #expect(try await client.request(.get, "/api/v1/namespaces/gamma/pull-policy", headers: admin).status == .notFound)
        }
    }

    @Test("a token issued before its namespace existed does not grant the namespace someone else then created")
    func tokenBeforeNamespace() async throws {
        try await Secure.withServer(customize: { $0.namespaceCreation = .users }) { client, _ in
            try await CredentialBoundaryTests.createUser(client, "xavier")
            try await CredentialBoundaryTests.createUser(client, "yolanda")
            let early = try await Secure.token(client, Secure.basic("xavier", "xavier-password-1"), scopes: ["repository:newteam/app:pull,push,delete"])
            let claims = try Secure.claims(early)
            #expect((claims["nsid"] as? [String: Any])?["newteam"] as? Int == 0)
            // Yolanda creates newteam and fills it.
            let yolanda = Secure.basic("yolanda", "yolanda-password-1")
            let digest = try await client.pushBlob("yolanda's layer", to: "newteam/app", auth: yolanda)
            for (method, path) in [
                (HTTPRequest.Method.head, "/v2/newteam/app/blobs/\(digest)"), (.post, "/v2/newteam/app/blobs/uploads/"),
                (.delete, "/v2/newteam/app/blobs/\(digest)"),
            ] {
                let response = try await client.request(method, path, headers: Secure.bearer(early))
                #expect(response.status == .unauthorized, "\(method) \(path) with the early token: \(response.status)")
            }
            // A token Xavier gets now is refused too: he is not a member of Yolanda's namespace.
            let now = try await client.request(
                .get, "/auth/token?service=wharf&scope=repository:newteam/app:pull", headers: Secure.basic("xavier", "xavier-password-1"))
            #expect(!now.text.contains("newteam/app:pull"))
        }
    }
}

@Suite("No existence oracle for namespaces")
struct NamespaceOracleTests {
    @Test("an outsider gets the same 404 for a private namespace that exists and for one that does not; a member gets 403")
    func sameAnswer() async throws {
        try await Secure.withServer { client, _ in
            let admin = CredentialBoundaryTests.json(Secure.basic("admin", Secure.adminPassword))
            #expect(try await client.request(.post, "/api/v1/namespaces", headers: admin, body: ByteBuffer(string: #"{"name":"hidden"}"#)).status == .created)
            try await CredentialBoundaryTests.createUser(client, "olga")
            try await CredentialBoundaryTests.createUser(client, "mia")
            #expect(
                try await client.request(.put, "/api/v1/namespaces/hidden/members/mia", headers: admin, body: ByteBuffer(string: #"{"role":"reader"}"#)).status
                    == .noContent)
            let outsider = CredentialBoundaryTests.json(Secure.basic("olga", "olga-password-1"))
            var answers: [String] = []
            for namespace in ["hidden", "absent"] {
                for (method, path, body) in [
                    (HTTPRequest.Method.put, "/members/mia", #"{"role":"admin"}"#), (.delete, "/members/mia", ""),
                    (.put, "/pull-policy", #"{"severity":"HIGH"}"#), (.delete, "", ""),
                ] {
                    let response = try await client.request(method, "/api/v1/namespaces/\(namespace)\(path)", headers: outsider, body: ByteBuffer(string: body))
                    #expect(response.status == .notFound, "\(method) \(namespace)\(path): \(response.status)")
                    struct Body: Decodable { struct Error: Decodable { let code: String; let message: String }; let error: Error }
                    let body = try JSONDecoder().decode(Body.self, from: Data(response.body.readableBytesView))
                    answers.append(body.error.code + " " + body.error.message.replacing(namespace, with: "NAME"))
                }
            }
            #expect(Array(answers.prefix(4)) == Array(answers.suffix(4)), "the answers differ: \(answers)")
            // A member who is not an admin knows the namespace exists: 403.
            let member = CredentialBoundaryTests.json(Secure.basic("mia", "mia-password-1"))
            #expect(try await client.request(.delete, "/api/v1/namespaces/hidden", headers: member).status == .forbidden)
        }
    }
}

@Suite("Hostile input: credentials cannot outlive or exceed their grant")
struct CredentialBoundaryTests {
    static func json(_ auth: HTTPFields) -> HTTPFields { auth.merging(["Content-Type": "application/json"]) }

    static func createUser(_ client: any TestClientProtocol, _ name: String, admin isAdmin: Bool = false) async throws {
        let body = #"{"name":"\#(name)","password":"\#(name)-password-1","admin":\#(isAdmin)}"#
        let response = try await client.request(
            .post, "/api/v1/users", headers: json(Secure.basic("admin", Secure.adminPassword)), body: ByteBuffer(string: body))
        #expect(response.status == .created, "\(response.text)")
    }

    static func accessToken(
        _ client: any TestClientProtocol, for user: String, _ auth: HTTPFields, name: String, expiresAt: String? = nil
    ) async throws -> TestResponse {
        let body = expiresAt.map { #"{"name":"\#(name)","expiresAt":"\#($0)"}"# } ?? #"{"name":"\#(name)"}"#
        return try await client.request(.post, "/api/v1/users/\(user)/tokens", headers: json(auth), body: ByteBuffer(string: body))
    }

    static func tokenValue(_ response: TestResponse) throws -> String {
        struct Body: Decodable { let token: String }
        return try JSONDecoder().decode(Body.self, from: Data(response.body.readableBytesView)).token
    }

    @Test("a demoted, disabled or deleted administrator loses management rights with the next request, whatever credential it kept")
    func demotedAdministrator() async throws {
        try await Secure.withServer { client, _ in
            let admin = Secure.basic("admin", Secure.adminPassword)
            try await Self.createUser(client, "mallory", admin: true)
            let password = Secure.basic("mallory", "mallory-password-1")
            let pat = try Self.tokenValue(try await Self.accessToken(client, for: "mallory", password, name: "kept"))
            let patAuth = Secure.basic("mallory", pat)
            #expect(try await client.request(.get, "/api/v1/users", headers: patAuth).status == .ok)

            // Demoted: the cached credential no longer carries the administrator flag.
            let demote = try await client.request(.patch, "/api/v1/users/mallory", headers: Self.json(admin), body: ByteBuffer(string: #"{"admin":false}"#))
            #expect(demote.status == .ok)
            #expect(try await client.request(.get, "/api/v1/users", headers: patAuth).status == .forbidden)
            let promote = try await client.request(.patch, "/api/v1/users/mallory", headers: Self.json(patAuth), body: ByteBuffer(string: #"{"admin":true}"#))
            #expect(promote.status == .forbidden)

            // Deleted, and a new account of the same name created: the old credential is not the new user.
            #expect(try await client.request(.delete, "/api/v1/users/mallory", headers: admin).status == .noContent)
            try await Self.createUser(client, "mallory")
            #expect(try await client.request(.get, "/api/v1/me", headers: patAuth).status == .unauthorized)
            #expect(try await Self.accessToken(client, for: "mallory", patAuth, name: "again").status == .unauthorized)
        }
    }

    @Test("bearer tokens and registry logins are refused by the management API, even an administrator's")
    func narrowCredentials() async throws {
        try await Secure.withServer { client, _ in
            let admin = Secure.basic("admin", Secure.adminPassword)
            let empty = try await Secure.token(client, admin, scopes: [])
            let broad = try await Secure.token(client, admin, scopes: ["repository:team/app:*", "registry:catalog:*"])
            for token in [empty, broad] {
                #expect(try await client.request(.get, "/api/v1/me", headers: Secure.bearer(token)).status == .unauthorized)
                let mint = try await Self.accessToken(client, for: "admin", Secure.bearer(token), name: "from-bearer")
                #expect(mint.status == .unauthorized)
                let key = try await client.request(
                    .post, "/api/v1/users/admin/access-keys", headers: Self.json(Secure.bearer(token)), body: ByteBuffer(string: "{}"))
                #expect(key.status == .unauthorized)
            }
        }
    }

    @Test("an expiring access token mints nothing that outlives it; it may mint shorter-lived tokens")
    func expiringAccessToken() async throws {
        try await Secure.withServer { client, _ in
            try await Self.createUser(client, "erin")
            let password = Secure.basic("erin", "erin-password-1")
            let created = try await Self.accessToken(client, for: "erin", password, name: "short", expiresAt: "2099-01-01T00:00:00Z")
            #expect(created.status == .created)
            let short = Secure.basic("erin", try Self.tokenValue(created))
            #expect(try await Self.accessToken(client, for: "erin", short, name: "forever").status == .forbidden)
            #expect(try await Self.accessToken(client, for: "erin", short, name: "later", expiresAt: "2100-01-01T00:00:00Z").status == .forbidden)
            #expect(try await Self.accessToken(client, for: "erin", short, name: "sooner", expiresAt: "2098-01-01T00:00:00Z").status == .created)
            let key = try await client.request(.post, "/api/v1/users/erin/access-keys", headers: Self.json(short), body: ByteBuffer(string: "{}"))
            #expect(key.status == .forbidden)
            #expect(
                try await client.request(.post, "/api/v1/users/erin/access-keys", headers: Self.json(password), body: ByteBuffer(string: "{}"))
                    .status == .created)
        }
    }

    @Test("deleting an access token revokes the refresh tokens minted with it")
    func refreshTokensFollowTheirAccessToken() async throws {
        try await Secure.withServer { client, _ in
            try await Self.createUser(client, "fay")
            let password = Secure.basic("fay", "fay-password-1")
            let pat = try Self.tokenValue(try await Self.accessToken(client, for: "fay", password, name: "ci"))
            func refreshToken(username: String, password: String) async throws -> String {
                let form = "grant_type=password&service=wharf&client_id=test&access_type=offline&username=\(username)&password=\(password)"
                let response = try await client.request(
                    .post, "/auth/token", headers: [.contentType: "application/x-www-form-urlencoded"], body: ByteBuffer(string: form))
                #expect(response.status == .ok, "\(response.text)")
                struct Body: Decodable { let refresh_token: String? }
                return try #require(try JSONDecoder().decode(Body.self, from: Data(response.body.readableBytesView)).refresh_token)
            }
            func refresh(_ token: String) async throws -> HTTPResponse.Status {
                let form = "grant_type=refresh_token&service=wharf&client_id=test&refresh_token=\(token)"
                return try await client.request(
                    .post, "/auth/token", headers: [.contentType: "application/x-www-form-urlencoded"], body: ByteBuffer(string: form)
                ).status
            }
            let fromPAT = try await refreshToken(username: "fay", password: pat)
            let fromPassword = try await refreshToken(username: "fay", password: "fay-password-1")
            #expect(try await refresh(fromPAT) == .ok)
            #expect(try await client.request(.delete, "/api/v1/users/fay/tokens/ci", headers: password).status == .noContent)
            #expect(try await refresh(fromPAT) == .badRequest, "the refresh token minted with the deleted access token must be gone")
            #expect(try await refresh(fromPassword) == .ok, "one minted with the password is not affected")
        }
    }

    @Test("an unknown username costs a password check like a wrong password does")
    func usernameTiming() async throws {
        try await Secure.withServer { client, server in
            let authenticator = try #require(server.access).authenticator
            let before = authenticator.passwordChecks
            #expect(try await client.request(.get, "/v2/", headers: Secure.basic("admin", "wrong-password")).status == .unauthorized)
            let afterKnown = authenticator.passwordChecks
            #expect(try await client.request(.get, "/v2/", headers: Secure.basic("nobody-by-this-name", "wrong-password")).status == .unauthorized)
            let afterUnknown = authenticator.passwordChecks
            #expect(afterKnown - before == 1)
            #expect(afterUnknown - afterKnown == 1)
        }
    }
}

@Suite("Login throttling keys on account and source")
struct LoginThrottleTests {
    static func throttle() -> LoginThrottle {
        var policy = LoginThrottle.Policy()
        policy.accountThreshold = 3
        policy.sourceThreshold = 6
        return LoginThrottle(policy: policy)
    }

    @Test("an attacker's failures slow the attacker's address, not the account's owner elsewhere")
    func victimNotLockedOut() {
        let throttle = Self.throttle()
        let now = ContinuousClock.now
        for _ in 0..<10 { throttle.recordFailure(account: "admin", source: "203.0.113.9", now: now) }
        #expect(throttle.retryAfter(account: "admin", source: "203.0.113.9", now: now) != nil)
        #expect(throttle.retryAfter(account: "admin", source: "198.51.100.7", now: now) == nil)
        #expect(throttle.retryAfter(account: "ADMIN", source: "203.0.113.9", now: now) != nil, "names are case-insensitive")
    }

    @Test("a spraying address waits for new accounts, but colleagues who signed in from it keep working")
    func sharedAddress() {
        let throttle = Self.throttle()
        let now = ContinuousClock.now
        let nat = "192.0.2.1"
        throttle.recordSuccess(account: "colleague", source: nat, now: now)
        for index in 0..<6 { throttle.recordFailure(account: "victim\(index)", source: nat, now: now) }
        #expect(throttle.retryAfter(account: "someone-new", source: nat, now: now) != nil)
        #expect(throttle.retryAfter(account: "colleague", source: nat, now: now) == nil)
        #expect(throttle.retryAfter(account: "someone-new", source: "192.0.2.2", now: now) == nil)
    }

    @Test("waits expire and double up to the cap")
    func expiry() {
        let throttle = Self.throttle()
        let now = ContinuousClock.now
        for _ in 0..<3 { throttle.recordFailure(account: "a", source: "s", now: now) }
        let first = throttle.retryAfter(account: "a", source: "s", now: now)
        #expect(first == 2)
        throttle.recordFailure(account: "a", source: "s", now: now)
        #expect(throttle.retryAfter(account: "a", source: "s", now: now) == 4)
        #expect(throttle.retryAfter(account: "a", source: "s", now: now + .seconds(5)) == nil)
    }
}

@Suite("Data at rest: only Wharf's user reads it, and the database alone reveals no secret")
struct DataAtRestTests {
    @Test("a world-readable data folder and database are repaired at start-up; new files are private")
    func permissions() async throws {
        let directory = try Harness.temporaryDirectory()
        defer { try? FileManager.default.removeItem(at: directory) }
        try await Secure.withServer(data: directory) { client, _ in
            try await client.pushBlob("private layer", to: "team/app", auth: Secure.basic("admin", Secure.adminPassword))
        }
        // As an earlier version left them.
        chmod(directory.path, 0o755)
        chmod(directory.appendingPathComponent("wharf.db").path, 0o644)
        chmod(directory.appendingPathComponent("master.key").path, 0o644)
        try await Secure.withServer(data: directory) { client, _ in
            try await client.pushBlob("another layer", to: "team/app", auth: Secure.basic("admin", Secure.adminPassword))
        }
        func mode(_ path: String) throws -> Int {
            (try FileManager.default.attributesOfItem(atPath: path)[.posixPermissions] as? Int ?? -1) & 0o777
        }
        #expect(try mode(directory.path) == 0o700)
        #expect(try mode(directory.appendingPathComponent("wharf.db").path) == 0o600)
        #expect(try mode(directory.appendingPathComponent("master.key").path) == 0o600)
        let blob = Digest.of(Array("another layer".utf8))
        let blobPath = directory.appendingPathComponent("blobs/sha256/\(blob.encoded.prefix(2))/\(blob.encoded)").path
        #expect(try mode(blobPath) & 0o077 == 0, "blob files are private")
    }

    @Test("signing keys and access-key secrets are sealed; another master key is refused with a clear message")
    func sealedSecrets() async throws {
        let directory = try Harness.temporaryDirectory()
        defer { try? FileManager.default.removeItem(at: directory) }
        let secret: String = try await Secure.withServer(data: directory) { client, server in
            let admin = CredentialBoundaryTests.json(Secure.basic("admin", Secure.adminPassword))
            let response = try await client.request(.post, "/api/v1/users/admin/access-keys", headers: admin, body: ByteBuffer(string: "{}"))
            struct Body: Decodable { let secretAccessKey: String }
            let secret = try JSONDecoder().decode(Body.self, from: Data(response.body.readableBytesView)).secretAccessKey
            try await server.metadata.database.read { sql in
                for row in try await sql.raw("SELECT private_key_pem FROM signing_keys").all() {
                    #expect(try row.decode(column: "private_key_pem", as: String.self).hasPrefix(SecretSealer.prefix))
                }
                for row in try await sql.raw("SELECT secret FROM access_keys").all() {
                    let stored = try row.decode(column: "secret", as: String.self)
                    #expect(stored.hasPrefix(SecretSealer.prefix) && !stored.contains(secret))
                }
            }
            return secret
        }
        // No trace of the secrets in the database files, WAL included.
        for name in ["wharf.db", "wharf.db-wal"] {
            guard let bytes = FileManager.default.contents(atPath: directory.appendingPathComponent(name).path) else { continue }
            #expect(bytes.range(of: Data(secret.utf8)) == nil, "\(name) holds the access key's secret")
            #expect(bytes.range(of: Data("BEGIN PRIVATE KEY".utf8)) == nil, "\(name) holds a PEM private key")
        }
        // A secret an earlier version stored in the clear is sealed at the next start and still works.
        try await Secure.withServer(data: directory) { _, server in
            try await server.metadata.database.transaction { sql in
                try await sql.raw("UPDATE access_keys SET secret = \(bind: secret)").run()
            }
        }
        try await Secure.withServer(data: directory) { _, server in
            try await server.metadata.database.read { sql in
                let stored = try await sql.raw("SELECT key_id, secret FROM access_keys").first()!
                #expect(try stored.decode(column: "secret", as: String.self).hasPrefix(SecretSealer.prefix))
                let keyID = try stored.decode(column: "key_id", as: String.self)
                #expect(try await server.access!.store.activeAccessKey(keyID)?.secret == secret)
            }
        }
        // The database with another key: refused at start, naming the cause.
        do {
            _ = try await WharfServer.open(
                configuration: Harness.configuration(data: directory) { configuration in
                    configuration.authEnabled = true
                    configuration.masterKey = SecretSealer.newKeyText()
                }, logger: Harness.logger)
            Issue.record("a server with another master key started")
        } catch {
            #expect("\(error)".contains("another master key"))
        }
    }
}

@Suite("Hostile input: connections are bounded per source and stalled ones closed")
struct ConnectionLimitTests {
    /// A raw TCP connection to the server, for requests no HTTP client would send.
    final class RawConnection {
        let fd: Int32

        init(port: Int) throws {
            fd = socket(AF_INET, Int32(SOCK_STREAM.rawValue), 0)
            var address = sockaddr_in()
            address.sin_family = sa_family_t(AF_INET)
            address.sin_port = in_port_t(UInt16(port).bigEndian)
            address.sin_addr.s_addr = inet_addr("127.0.0.1")
            let connected = withUnsafePointer(to: &address) {
                $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { connect(fd, $0, socklen_t(MemoryLayout<sockaddr_in>.size)) }
            }
            guard connected == 0 else { close(fd); throw POSIXError(.ECONNREFUSED) }
            var timeout = timeval(tv_sec: 0, tv_usec: 200_000)
            setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &timeout, socklen_t(MemoryLayout<timeval>.size))
        }

        deinit { close(fd) }

        func send(_ text: String) {
            _ = text.withCString { Glibc.send(fd, $0, strlen($0), Int32(MSG_NOSIGNAL)) }
        }

        /// What the server sent within `seconds`.
        func response(within seconds: Double, atLeast minimum: Int = 13) -> String {
            let deadline = Date().addingTimeInterval(seconds)
            var buffer = [UInt8](repeating: 0, count: 4096)
            var received: [UInt8] = []
            while Date() < deadline {
                let count = recv(fd, &buffer, buffer.count, 0)
                if count > 0 { received += buffer[0..<count]; if received.count >= minimum { break } }
                if count == 0 { break }
            }
            return String(decoding: received, as: UTF8.self)
        }

        /// Whether the server closed the connection (a read returns end of file or a reset) within `seconds`.
        func closedByServer(within seconds: Double) -> Bool {
            let deadline = Date().addingTimeInterval(seconds)
            var buffer = [UInt8](repeating: 0, count: 4096)
            while Date() < deadline {
                let count = recv(fd, &buffer, buffer.count, 0)
                if count == 0 { return true }
                if count < 0 && errno != EAGAIN && errno != EWOULDBLOCK { return true }
            }
            return false
        }
    }

    @Test("one address cannot hold more than its share of connections, and half-sent requests are closed by the idle timeout")
    func perSourceLimitAndIdleTimeout() async throws {
        try await Harness.withServer(customize: { configuration in
            configuration.maximumConnectionsPerSource = 4
            configuration.idleTimeoutSeconds = 1
        }) { client, _ in
            let port = try #require(client.port)
            // Unfinished headers, as a slow-loris attacker sends them.
            let connections = try (0..<8).map { _ in try RawConnection(port: port) }
            for connection in connections { connection.send("GET /v2/ HTTP/1.1\r\nHost: x\r\nX-Slow: ") }
            let closedAtOnce = connections.filter { $0.closedByServer(within: 0.3) }.count
            #expect(closedAtOnce >= 4, "at most 4 connections from one address stay open; \(closedAtOnce) of 8 were closed at once")
            // The idle timeout closes the rest: their headers never finished.
            let closedLater = connections.filter { $0.closedByServer(within: 3) }.count
            #expect(closedLater == 8)
            // A complete request on a fresh connection is served. (The test client's own
            // connection sat idle past the timeout too, so this one is raw as well.)
            let fresh = try RawConnection(port: port)
            fresh.send("GET /v2/ HTTP/1.1\r\nHost: x\r\n\r\n")
            #expect(fresh.response(within: 3).hasPrefix("HTTP/1.1 200"))
        }
    }
}

@Suite("Hostile input: malformed requests and forwarded headers")
struct MalformedRequestTests {
    @Test("oversized headers, too many headers and raw non-ASCII paths get the error JSON, not an empty 400")
    func parserErrors() async throws {
        try await Harness.withServer { client, _ in
            let port = try #require(client.port)
            let cases: [(String, String)] = [
                ("GET /v2/ HTTP/1.1\r\nHost: x\r\nX-Big: \(String(repeating: "a", count: 1_000_000))\r\n\r\n", "HTTP/1.1 431"),
                ("GET /v2/ HTTP/1.1\r\nHost: x\r\n" + (0..<10_000).map { "X-H\($0): v\r\n" }.joined() + "\r\n", "HTTP/1.1 431"),
                ("GET /v2/caf\u{e9}/tags/list HTTP/1.1\r\nHost: x\r\n\r\n", "HTTP/1.1 400"),
            ]
            for (request, status) in cases {
                let connection = try ConnectionLimitTests.RawConnection(port: port)
                connection.send(request)
                let response = connection.response(within: 3, atLeast: 200)
                #expect(response.hasPrefix(status), "\(response.prefix(80))")
                #expect(response.contains(#"{"errors":[{"code":"UNSUPPORTED""#), "\(response)")
            }
        }
    }

    @Test("X-Forwarded-Host chooses the challenge's realm only when it comes from a configured proxy")
    func forwardedHost() async throws {
        try await Secure.withServer { client, _ in
            let response = try await client.request(.get, "/v2/", headers: [HTTPField.Name("X-Forwarded-Host")!: "evil.example"])
            #expect(response.status == .unauthorized)
            #expect(response.header("WWW-Authenticate")?.contains("evil.example") == false)
        }
        try await Secure.withServer(customize: { $0.trustedProxies = ["127.0.0.1"] }) { client, _ in
            let response = try await client.request(.get, "/v2/", headers: [HTTPField.Name("X-Forwarded-Host")!: "registry.example"])
            #expect(response.header("WWW-Authenticate")?.contains(#"realm="http://registry.example/auth/token""#) == true)
        }
    }
}

@Suite("Pull times count served pulls only")
struct PullRecordingTests {
    @Test("a manifest GET refused by the Accept check is not recorded as a pull; a served one is")
    func refusedPullsDoNotCount() async throws {
        try await Harness.withServer { client, server in
            let (digest, _) = try await client.pushImage(to: "pulls/app", reference: "v1", layer: "layer")
            let repository = try #require(RepositoryName("pulls/app"))
            func lastPulled() async throws -> Int64? {
                await server.registry.pulls.flush()
                return try await server.metadata.lifecycleCandidates(in: repository).first { $0.digest == digest }?.lastPulledAt
            }
            let refused = try await client.request(.get, "/v2/pulls/app/manifests/v1", headers: [.accept: MediaType.dockerManifestList])
            #expect(refused.status == .notFound)
            #expect(try await lastPulled() == nil, "a pull answered 404 must not count")
            #expect(try await client.request(.head, "/v2/pulls/app/manifests/v1").status == .ok)
            #expect(try await lastPulled() == nil, "a HEAD is no pull")
            #expect(try await client.request(.get, "/v2/pulls/app/manifests/v1", headers: [.accept: MediaType.ociManifest]).status == .ok)
            #expect(try await lastPulled() != nil)
        }
    }
}
