import AsyncHTTPClient
import Foundation
import NIOCore
import OCI
import Synchronization

/// How Wharf signs in to another registry.
public enum RemoteCredentials: Sendable, Equatable {
    case none
    /// A user or robot and its password: sent as Basic, or traded for bearer tokens when the
    /// registry challenges with `Bearer` (Docker token auth: Wharf, Harbor, Docker Hub…).
    case basic(username: String, password: String)
    /// A fixed bearer token.
    case bearer(String)
}

/// A failure talking to another registry, with what it answered.
public struct RemoteRegistryError: Error, CustomStringConvertible, Sendable {
    public var status: Int?
    public var message: String
    public var description: String { status.map { "\(message) (HTTP \($0))" } ?? message }

    init(_ message: String, status: Int? = nil) {
        self.message = message
        self.status = status
    }
}

/// The Distribution API of another registry, as a client: what replication needs (blob and
/// manifest existence, uploads in one piece or in resumable chunks, cross-repository mounts,
/// manifest pushes, tag resolution). Authentication follows the registry's challenge: Basic, or
/// Docker token auth with tokens cached per scope until shortly before they expire.
public final class RemoteRegistry: Sendable {
    public let baseURL: String
    let credentials: RemoteCredentials
    let http: HTTPClient
    /// What the registry asked for last, and the tokens it issued, by scope.
    private let auth = Mutex<AuthState>(AuthState())
    /// Whether a single `POST ?digest=` with the body stores a blob here (OCI's monolithic upload,
    /// which registries may decline): 0 not known yet, 1 yes, -1 no.
    private let monolithicUploads = Atomic<Int>(0)

    struct AuthState {
        var challenge: AuthChallenge?
        var tokens: [String: (token: String, expiresAt: ContinuousClock.Instant)] = [:]
    }

    struct Response {
        var status: Int
        /// Names lowercased; the first value of each.
        var headers: [String: String]
        var body: ByteBuffer

        func header(_ name: String) -> String? { headers[name.lowercased()] }
    }

    /// `baseURL`: scheme, host and port (`https://registry.example:5000`), no path.
    public init(baseURL: String, credentials: RemoteCredentials, http: HTTPClient) {
        self.baseURL = baseURL.hasSuffix("/") ? String(baseURL.dropLast()) : baseURL
        self.credentials = credentials
        self.http = http
    }

    // MARK: Blobs

    public func blobExists(_ digest: Digest, in repository: String) async throws -> Bool {
        let response = try await send("HEAD", "/v2/\(repository)/blobs/\(digest)", scopes: [Self.scope(repository, push: true)])
        switch response.status {
        case 200: return true
        case 404: return false
        default: throw unexpected(response, "HEAD blob \(digest) in \(repository)")
        }
    }

    /// Where an upload continues, or nil when the blob was mounted from `source` instead.
    public func startUpload(in repository: String, mounting digest: Digest? = nil, from source: String? = nil) async throws -> String? {
        var path = "/v2/\(repository)/blobs/uploads/"
        var scopes = [Self.scope(repository, push: true)]
        if let digest, let source {
            path += "?mount=\(digest)&from=\(source)"
            scopes.append(Self.scope(source, push: false))
        }
        let response = try await send("POST", path, scopes: scopes)
        if response.status == 201, digest != nil { return nil }
        guard response.status == 202, let location = response.header("Location") else {
            throw unexpected(response, "start an upload in \(repository)")
        }
        return location
    }

    /// Stores a small blob in as few requests as the registry allows: one POST with the digest and
    /// the bytes where monolithic uploads work, else POST then PUT (learned at the first blob).
    public func uploadWhole(_ bytes: ByteBuffer, digest: Digest, in repository: String) async throws {
        if monolithicUploads.load(ordering: .relaxed) >= 0 {
            let response = try await send(
                "POST", "/v2/\(repository)/blobs/uploads/?digest=\(digest)", headers: [("Content-Type", "application/octet-stream")], body: bytes,
                scopes: [Self.scope(repository, push: true)])
            if response.status == 201 {
                monolithicUploads.store(1, ordering: .relaxed)
                return
            }
            guard response.status == 202, let location = response.header("Location") else {
                throw unexpected(response, "upload \(digest) to \(repository)")
            }
            // The registry opened an ordinary upload instead: the bytes go with the closing PUT.
            monolithicUploads.store(-1, ordering: .relaxed)
            try await finishUpload(location, digest: digest, lastBytes: bytes, in: repository)
            return
        }
        guard let location = try await startUpload(in: repository) else { return }
        try await finishUpload(location, digest: digest, lastBytes: bytes, in: repository)
    }

    /// How many bytes the upload at `location` holds (its `Range`), or nil when the registry no longer knows it.
    public func uploadOffset(_ location: String, in repository: String) async throws -> Int64? {
        let response = try await send("GET", location, scopes: [Self.scope(repository, push: true)])
        if response.status == 404 { return nil }
        guard response.status == 204 || response.status == 200 else { throw unexpected(response, "read the state of an upload in \(repository)") }
        return Self.uploadedBytes(range: response.header("Range"))
    }

    /// The bytes an upload holds from its `Range` header (`0-<last>`); 0 for none, `0-0` on an
    /// empty upload from some registries, `0--1`, or anything that does not parse.
    static func uploadedBytes(range: String?) -> Int64 {
        guard let range else { return 0 }
        let parts = range.split(separator: "-", maxSplits: 1, omittingEmptySubsequences: false)
        guard parts.count == 2, parts[0] == "0", let last = ClientNumber.parse(parts[1], in: Int64(0)...ClientNumber.maximumByteOffset) else { return 0 }
        return last + 1
    }

    /// Sends one chunk at `offset`; returns where the upload continues.
    public func appendChunk(_ bytes: ByteBuffer, at offset: Int64, to location: String, in repository: String) async throws -> String {
        let last = offset + Int64(bytes.readableBytes) - 1
        let response = try await send(
            "PATCH", location,
            headers: [("Content-Type", "application/octet-stream"), ("Content-Range", "\(offset)-\(last)")], body: bytes,
            scopes: [Self.scope(repository, push: true)])
        guard response.status == 202 else { throw unexpected(response, "send bytes \(offset)-\(last) of an upload in \(repository)") }
        return response.header("Location") ?? location
    }

    /// Closes the upload with its digest (and the last bytes, if any): the registry checks the digest.
    public func finishUpload(_ location: String, digest: Digest, lastBytes: ByteBuffer?, in repository: String) async throws {
        let separator = location.contains("?") ? "&" : "?"
        var headers: [(String, String)] = [("Content-Type", "application/octet-stream")]
        if lastBytes == nil { headers.append(("Content-Length", "0")) }
        let response = try await send(
            "PUT", "\(location)\(separator)digest=\(digest)", headers: headers, body: lastBytes ?? ByteBuffer(),
            scopes: [Self.scope(repository, push: true)])
        guard response.status == 201 else { throw unexpected(response, "finish the upload of \(digest) in \(repository)") }
    }

    // MARK: Manifests

    /// The digest a tag or digest resolves to, or nil when the registry does not have it.
    public func manifestDigest(_ reference: String, in repository: String, accepting mediaTypes: [String]) async throws -> Digest? {
        let response = try await send(
            "HEAD", "/v2/\(repository)/manifests/\(reference)", headers: [("Accept", mediaTypes.joined(separator: ", "))],
            scopes: [Self.scope(repository, push: true)])
        switch response.status {
        case 200:
            if let header = response.header("Docker-Content-Digest"), let digest = Digest(header) { return digest }
            return Digest(reference)
        case 404: return nil
        default: throw unexpected(response, "HEAD manifest \(reference) in \(repository)")
        }
    }

    public func putManifest(_ bytes: ByteBuffer, mediaType: String, as reference: String, in repository: String) async throws {
        let response = try await send(
            "PUT", "/v2/\(repository)/manifests/\(reference)", headers: [("Content-Type", mediaType)], body: bytes,
            scopes: [Self.scope(repository, push: true)])
        guard response.status == 201 else { throw unexpected(response, "push manifest \(reference) to \(repository)") }
    }

    /// Deletes a manifest (by digest) or only a tag. One the registry does not have counts as deleted.
    public func deleteManifest(_ reference: String, in repository: String) async throws {
        let response = try await send("DELETE", "/v2/\(repository)/manifests/\(reference)", scopes: [Self.scope(repository, deleting: true)])
        guard [200, 202, 204, 404].contains(response.status) else { throw unexpected(response, "delete \(reference) in \(repository)") }
    }

    // MARK: Requests and authentication

    static func scope(_ repository: String, push: Bool) -> String { "repository:\(repository):\(push ? "pull,push" : "pull")" }
    static func scope(_ repository: String, deleting: Bool) -> String { "repository:\(repository):pull,push,delete" }

    func unexpected(_ response: Response, _ what: String) -> RemoteRegistryError {
        let text = String(buffer: response.body).prefix(300)
        return RemoteRegistryError("\(baseURL) refused to \(what): \(text.isEmpty ? "no reason given" : String(text))", status: response.status)
    }

    /// One request; on a 401 it answers the challenge and tries once more.
    func send(
        _ method: String, _ pathOrURL: String, headers: [(String, String)] = [], body: ByteBuffer? = nil, scopes: [String],
        maximumBody: Int = ManifestParser.maximumSize
    ) async throws -> Response {
        let url = resolve(pathOrURL)
        // A `Location` elsewhere (a storage front end) gets the bytes but never the credentials.
        let sameOrigin = url.hasPrefix(baseURL + "/")
        var authorization = sameOrigin ? try await authorizationHeader(scopes: scopes, refresh: false) : nil
        for attempt in 0..<2 {
            var request = HTTPClientRequest(url: url)
            request.method = .init(rawValue: method)
            request.headers.add(name: "User-Agent", value: "Wharf-Replication/1")
            for (name, value) in headers { request.headers.add(name: name, value: value) }
            if let authorization { request.headers.add(name: "Authorization", value: authorization) }
            if let body { request.body = .bytes(body) }
            let response = try await http.execute(request, timeout: .seconds(300))
            let collected = method == "HEAD" ? ByteBuffer() : try await response.body.collect(upTo: maximumBody)
            if response.status.code == 401, attempt == 0, sameOrigin, let header = response.headers.first(name: "WWW-Authenticate"),
                let challenge = AuthChallenge.parse(header)
            {
                auth.withLock {
                    $0.challenge = challenge
                    $0.tokens = [:]
                }
                authorization = try await authorizationHeader(scopes: scopes, refresh: true)
                if authorization != nil { continue }
            }
            var headers: [String: String] = [:]
            for (name, value) in response.headers where headers[name.lowercased()] == nil { headers[name.lowercased()] = value }
            return Response(status: Int(response.status.code), headers: headers, body: collected)
        }
        throw RemoteRegistryError("\(baseURL) kept refusing the credentials", status: 401)
    }

    /// The `Authorization` value for these scopes under the last challenge.
    func authorizationHeader(scopes: [String], refresh: Bool) async throws -> String? {
        if case .bearer(let token) = credentials { return "Bearer \(token)" }
        let (challenge, cached) = auth.withLock { state in
            (state.challenge, state.tokens[scopes.joined(separator: " ")].flatMap { $0.expiresAt > .now ? $0.token : nil })
        }
        guard let challenge else { return nil }
        switch challenge.scheme {
        case "basic":
            guard case .basic(let username, let password) = credentials else { return nil }
            return "Basic " + Data("\(username):\(password)".utf8).base64EncodedString()
        case "bearer":
            if let cached, !refresh { return "Bearer \(cached)" }
            return "Bearer " + (try await fetchToken(challenge, scopes: scopes))
        default:
            throw RemoteRegistryError("\(baseURL) asks for \(challenge.scheme) authentication, which Wharf does not speak")
        }
    }

    /// Docker token auth: GET the realm with the service and scopes, signed in with the credentials.
    func fetchToken(_ challenge: AuthChallenge, scopes: [String]) async throws -> String {
        guard let realm = challenge.realm, realm.hasPrefix("http://") || realm.hasPrefix("https://") else {
            throw RemoteRegistryError("\(baseURL) sent a bearer challenge without a usable realm")
        }
        var query: [String] = []
        if let service = challenge.service { query.append("service=\(Self.percentEncoded(service))") }
        query += scopes.map { "scope=\(Self.percentEncoded($0))" }
        var request = HTTPClientRequest(url: realm + (realm.contains("?") ? "&" : "?") + query.joined(separator: "&"))
        request.headers.add(name: "User-Agent", value: "Wharf-Replication/1")
        if case .basic(let username, let password) = credentials {
            request.headers.add(name: "Authorization", value: "Basic " + Data("\(username):\(password)".utf8).base64EncodedString())
        }
        let response = try await http.execute(request, timeout: .seconds(30))
        let body = try await response.body.collect(upTo: 1 << 20)
        guard response.status == .ok else {
            throw RemoteRegistryError("the token service \(realm) refused: \(String(buffer: body).prefix(200))", status: Int(response.status.code))
        }
        struct TokenResponse: Decodable {
            var token: String?
            var access_token: String?
            var expires_in: Int?
        }
        guard let decoded = try? JSONDecoder().decode(TokenResponse.self, from: Data(buffer: body)),
            let token = decoded.token ?? decoded.access_token, !token.isEmpty
        else { throw RemoteRegistryError("the token service \(realm) answered without a token") }
        // Renewed ten seconds early; a registry that names no lifetime gets the spec's default of 60 s.
        let lifetime = max(10, min(decoded.expires_in ?? 60, 86_400)) - 10
        auth.withLock { $0.tokens[scopes.joined(separator: " ")] = (token, .now + .seconds(lifetime)) }
        return token
    }

    /// A `Location` may be absolute or relative to the registry.
    func resolve(_ pathOrURL: String) -> String {
        if pathOrURL.hasPrefix("http://") || pathOrURL.hasPrefix("https://") { return pathOrURL }
        return baseURL + (pathOrURL.hasPrefix("/") ? pathOrURL : "/" + pathOrURL)
    }

    static func percentEncoded(_ text: String) -> String {
        var allowed = CharacterSet.alphanumerics
        allowed.insert(charactersIn: "-._~")
        return text.addingPercentEncoding(withAllowedCharacters: allowed) ?? text
    }
}
