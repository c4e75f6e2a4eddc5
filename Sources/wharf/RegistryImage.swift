import AsyncHTTPClient
import Foundation
import NIOCore
import NIOHTTP1
import OCI
import Scanner

/// An image in a registry, read over the Distribution API for `wharf scan docker://HOST/REPO[:TAG|@DIGEST]`:
/// the manifest (a platform of an index), the config, and each layer streamed as it is scanned,
/// its digest checked at the end. Authentication: anonymous, Basic, or a bearer token from the
/// registry's token service (the `WWW-Authenticate` challenge), with `--creds USER:PASSWORD`.
struct RegistryImage {
    struct Failure: Error, CustomStringConvertible {
        let description: String
        init(_ description: String) { self.description = description }
    }

    let base: String
    let repository: String
    /// The digest of the image manifest `resolve` chose (a VEX statement may name the image by it).
    private(set) var manifestDigest: String?
    let reference: String
    let credentials: (user: String, password: String)?
    private(set) var authorization: String?

    static func isRegistry(_ image: String) -> Bool { image.hasPrefix("docker://") }

    /// Parses `docker://[HOST[:PORT]/]REPOSITORY[:TAG|@DIGEST]` as Docker does (no host: Docker Hub).
    /// Loopback hosts are spoken to in plain HTTP, as Docker does; others in HTTPS unless `plainHTTP`.
    init(_ image: String, credentials: String?, plainHTTP: Bool) throws {
        guard let parsed = ImageReference(image.dropFirst("docker://".count)) else {
            throw Failure("\(image): expected docker://[HOST/]REPOSITORY[:TAG|@DIGEST]")
        }
        base = (plainHTTP || parsed.isLoopback ? "http://" : "https://") + parsed.host
        repository = parsed.repository
        reference = parsed.reference
        if let credentials {
            guard let colon = credentials.firstIndex(of: ":") else { throw Failure("--creds: expected USER:PASSWORD") }
            self.credentials = (String(credentials[..<colon]), String(credentials[credentials.index(after: colon)...]))
        } else {
            self.credentials = nil
        }
    }

    static let manifestTypes = [
        "application/vnd.oci.image.index.v1+json", "application/vnd.docker.distribution.manifest.list.v2+json",
        "application/vnd.oci.image.manifest.v1+json", "application/vnd.docker.distribution.manifest.v2+json",
    ].joined(separator: ", ")

    /// The config and the layers (digest, media type) of the image for `platform`.
    mutating func resolve(platform: String) async throws -> (config: [UInt8], layers: [(digest: String, mediaType: String)]) {
        var bytes = try await get("/manifests/\(reference)", accept: Self.manifestTypes, limit: 4 << 20)
        var manifest = try json(bytes)
        if let manifests = manifest["manifests"] as? [[String: Any]] {
            let wanted = platform.split(separator: "/").map(String.init)
            guard
                let child = manifests.first(where: { entry in
                    let p = entry["platform"] as? [String: Any]
                    let have = [p?["os"] as? String, p?["architecture"] as? String, p?["variant"] as? String].compactMap { $0 }
                    return Array(have.prefix(wanted.count)) == wanted
                }), let digest = child["digest"] as? String
            else {
                throw Failure("\(repository):\(reference) has no \(platform) image")
            }
            bytes = try await get("/manifests/\(digest)", accept: Self.manifestTypes, limit: 4 << 20)
            manifest = try json(bytes)
        }
        manifestDigest = Digest.of(bytes).description
        guard let config = manifest["config"] as? [String: Any], let configDigest = config["digest"] as? String,
            let layers = manifest["layers"] as? [[String: Any]]
        else {
            throw Failure("\(repository):\(reference) is not an image manifest")
        }
        let configBytes = try await get("/blobs/\(configDigest)", accept: "*/*", limit: 16 << 20)
        return (
            configBytes,
            layers.compactMap { layer in
                guard let digest = layer["digest"] as? String, let mediaType = layer["mediaType"] as? String,
                    !mediaType.contains("nondistributable"), !mediaType.contains("foreign")
                else { return nil }
                return (digest, mediaType)
            }
        )
    }

    /// A layer as chunks straight from the registry (no copy on disk), requested when first read.
    func layer(_ digest: String) -> RegistryLayerChunks { RegistryLayerChunks(image: self, expected: digest) }

    private mutating func get(_ path: String, accept: String, limit: Int) async throws -> [UInt8] {
        var response = try await send(path, accept: accept)
        if response.status == .unauthorized {
            try await authenticate(challenge: response.headers.first(name: "WWW-Authenticate") ?? "")
            response = try await send(path, accept: accept)
            if response.status == .unauthorized {
                throw Failure(
                    credentials == nil
                        ? "\(base) requires authentication to pull \(repository): give --creds USER:PASSWORD"
                        : "\(base) refused the credentials for pulling \(repository)")
            }
        }
        let body = try await response.body.collect(upTo: limit)
        guard response.status == .ok else {
            let message = (try? JSONSerialization.jsonObject(with: Data(body.readableBytesView)) as? [String: Any])
                .flatMap { ($0["errors"] as? [[String: Any]])?.first?["message"] as? String }
            throw Failure("GET \(repository) \(path.split(separator: "/").last ?? ""): HTTP \(response.status.code)\(message.map { ": " + $0 } ?? "")")
        }
        return Array(body.readableBytesView)
    }

    func send(_ path: String, accept: String) async throws -> HTTPClientResponse {
        var request = HTTPClientRequest(url: "\(base)/v2/\(repository)\(path)")
        request.headers.add(name: "Accept", value: accept)
        if let authorization { request.headers.add(name: "Authorization", value: authorization) }
        do {
            return try await HTTPClient.shared.execute(request, timeout: .seconds(300))
        } catch {
            throw Failure("cannot reach \(base): \(error)")
        }
    }

    private func json(_ bytes: [UInt8]) throws -> [String: Any] {
        guard let object = try? JSONSerialization.jsonObject(with: Data(bytes)) as? [String: Any] else {
            throw Failure("\(repository):\(reference): the registry sent a manifest that is not JSON")
        }
        return object
    }

    /// Answers a `Basic` or `Bearer realm=…,service=…,scope=…` challenge.
    private mutating func authenticate(challenge: String) async throws {
        let basic = credentials.map { "Basic " + Data("\($0.user):\($0.password)".utf8).base64EncodedString() }
        if challenge.lowercased().hasPrefix("basic") {
            guard let basic else { throw Failure("\(base) asks for credentials: give --creds USER:PASSWORD") }
            authorization = basic
            return
        }
        guard challenge.lowercased().hasPrefix("bearer") else { throw Failure("\(base) answered 401 without a challenge Wharf understands") }
        var parameters: [String: String] = [:]
        let pattern = try NSRegularExpression(pattern: #"(\w+)="([^"]*)""#)
        for match in pattern.matches(in: challenge, range: NSRange(challenge.startIndex..., in: challenge)) {
            if let key = Range(match.range(at: 1), in: challenge), let value = Range(match.range(at: 2), in: challenge) {
                parameters[String(challenge[key])] = String(challenge[value])
            }
        }
        guard let realm = parameters["realm"], var components = URLComponents(string: realm) else { throw Failure("the bearer challenge has no realm") }
        components.queryItems = [
            URLQueryItem(name: "service", value: parameters["service"]),
            URLQueryItem(name: "scope", value: parameters["scope"] ?? "repository:\(repository):pull"),
        ]
        var request = HTTPClientRequest(url: components.string ?? realm)
        if let basic { request.headers.add(name: "Authorization", value: basic) }
        let response = try await HTTPClient.shared.execute(request, timeout: .seconds(60))
        let body = try await response.body.collect(upTo: 1 << 20)
        guard response.status == .ok, let object = try? JSONSerialization.jsonObject(with: Data(body.readableBytesView)) as? [String: Any],
            let token = (object["token"] ?? object["access_token"]) as? String
        else {
            throw Failure("the token service at \(realm) refused: HTTP \(response.status.code)\(credentials == nil ? " (give --creds USER:PASSWORD)" : "")")
        }
        authorization = "Bearer " + token
    }
}

/// A blob's body as chunks, hashed on the way: a layer that does not match its digest fails.
struct RegistryLayerChunks: ChunkSource {
    let image: RegistryImage
    let expected: String
    var body: HTTPClientResponse.Body.AsyncIterator?
    var hasher = DigestHasher()
    var finished = false

    init(image: RegistryImage, expected: String) {
        self.image = image
        self.expected = expected
    }

    mutating func nextChunk() async throws -> ByteBuffer? {
        guard !finished else { return nil }
        if body == nil {
            let response = try await image.send("/blobs/\(expected)", accept: "*/*")
            guard response.status == .ok else { throw RegistryImage.Failure("GET blob \(expected): HTTP \(response.status.code)") }
            body = response.body.makeAsyncIterator()
        }
        while let buffer = try await body!.next() {
            guard buffer.readableBytes > 0 else { continue }
            hasher.update(buffer)
            return buffer
        }
        finished = true
        let computed = hasher.finalize().description
        if expected.hasPrefix("sha256:"), computed != expected {
            throw RegistryImage.Failure("layer \(expected) arrived with digest \(computed)")
        }
        return nil
    }
}
