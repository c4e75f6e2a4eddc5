import Foundation
import HTTPTypes
import Hummingbird
import HummingbirdTesting
import Logging
import NIOCore
import OCI
import Server
import Testing

/// Runs a real Wharf (SQLite + filesystem in a temporary folder) on a free loopback port and hands
/// the test an HTTP client connected to it.
enum Harness {
    static let logger: Logger = {
        var logger = Logger(label: "wharf-test")
        logger.logLevel = ProcessInfo.processInfo.environment["WHARF_TEST_LOG"].flatMap(Logger.Level.init(rawValue:)) ?? .warning
        return logger
    }()

    static func temporaryDirectory() throws -> URL {
        let directory = FileManager.default.temporaryDirectory.appendingPathComponent("wharf-server-test-\(UUID().uuidString)")
        try FileManager.default.createDirectory(at: directory, withIntermediateDirectories: true)
        return directory
    }

    static func configuration(data: URL, customize: (inout WharfConfiguration) -> Void = { _ in }) -> WharfConfiguration {
        var configuration = WharfConfiguration()
        configuration.listen = "127.0.0.1:0"
        configuration.dataDirectory = data.path
        // Suites about the Distribution API itself run without authentication; AccessTests turn it on.
        configuration.authEnabled = false
        customize(&configuration)
        return configuration
    }

    /// One server for the duration of `body`, on a fresh data folder unless `data` is given.
    static func withServer<T: Sendable>(
        data: URL? = nil,
        customize: (inout WharfConfiguration) -> Void = { _ in },
        _ body: @Sendable (any TestClientProtocol, WharfServer) async throws -> T
    ) async throws -> T {
        let directory = try data ?? temporaryDirectory()
        defer { if data == nil { try? FileManager.default.removeItem(at: directory) } }
        let server = try await WharfServer.open(configuration: configuration(data: directory, customize: customize), logger: logger)
        do {
            let result = try await server.makeApplication().test(.live) { client in try await body(client, server) }
            await server.close()
            return result
        } catch {
            await server.close()
            throw error
        }
    }
}

/// Shorthands for talking to the registry in tests.
extension TestClientProtocol {
    func request(_ method: HTTPRequest.Method, _ uri: String, headers: HTTPFields = [:], body: ByteBuffer? = nil) async throws -> TestResponse {
        try await execute(uri: uri, method: method, headers: headers, body: body)
    }

    /// Pushes a blob monolithically and checks it was created.
    @discardableResult
    func pushBlob(_ content: String, to repository: String, sourceLocation: SourceLocation = #_sourceLocation) async throws -> Digest {
        try await pushBlob(Array(content.utf8), to: repository, sourceLocation: sourceLocation)
    }

    @discardableResult
    func pushBlob(
        _ bytes: [UInt8], to repository: String, algorithm: DigestAlgorithm = .sha256, sourceLocation: SourceLocation = #_sourceLocation
    ) async throws -> Digest {
        let digest = Digest.of(bytes, algorithm: algorithm)
        let response = try await request(.post, "/v2/\(repository)/blobs/uploads/?digest=\(digest)", body: ByteBuffer(bytes: bytes))
        #expect(response.status == .created, "blob push: \(String(buffer: response.body))", sourceLocation: sourceLocation)
        return digest
    }

    /// Pushes a 3-byte config blob and returns, unpushed, a manifest of it without layers (for tests
    /// that PUT the manifest themselves: by digest, with ?tag=…).
    func configOnlyManifest(in repository: String, sourceLocation: SourceLocation = #_sourceLocation) async throws -> (manifest: String, digest: Digest) {
        let config = try await pushBlob("cfg", to: repository, sourceLocation: sourceLocation)
        let manifest =
            #"{"schemaVersion":2,"mediaType":"application/vnd.oci.image.manifest.v1+json","config":{"mediaType":"a/b","digest":"\#(config)","size":3},"layers":[]}"#
        return (manifest, Digest.of(Array(manifest.utf8)))
    }

    /// Pushes an image manifest whose config and single layer are the given strings.
    @discardableResult
    func pushImage(
        to repository: String, reference: String, config: String = #"{"architecture":"amd64","os":"linux"}"#, layer: String,
        mediaType: String = MediaType.ociManifest, extraFields: String = "", sourceLocation: SourceLocation = #_sourceLocation
    ) async throws -> (digest: Digest, bytes: [UInt8]) {
        let configDigest = try await pushBlob(config, to: repository, sourceLocation: sourceLocation)
        let layerDigest = try await pushBlob(layer, to: repository, sourceLocation: sourceLocation)
        let configType = mediaType == MediaType.dockerManifest ? "application/vnd.docker.container.image.v1+json" : "application/vnd.oci.image.config.v1+json"
        let layerType =
            mediaType == MediaType.dockerManifest ? "application/vnd.docker.image.rootfs.diff.tar.gzip" : "application/vnd.oci.image.layer.v1.tar+gzip"
        let json = """
            {"schemaVersion":2,"mediaType":"\(mediaType)",
             "config":{"mediaType":"\(configType)","digest":"\(configDigest)","size":\(config.utf8.count)},
             "layers":[{"mediaType":"\(layerType)","digest":"\(layerDigest)","size":\(layer.utf8.count)}]\(extraFields)}
            """
        let bytes = Array(json.utf8)
        let response = try await request(.put, "/v2/\(repository)/manifests/\(reference)", headers: [.contentType: mediaType], body: ByteBuffer(bytes: bytes))
        #expect(response.status == .created, "manifest push: \(String(buffer: response.body))", sourceLocation: sourceLocation)
        return (Digest.of(bytes), bytes)
    }
}

extension TestResponse {
    /// The first error code of an OCI error body.
    var errorCode: String? {
        struct Body: Decodable {
            struct Entry: Decodable { let code: String; let message: String? }
            let errors: [Entry]
        }
        return (try? JSONDecoder().decode(Body.self, from: Data(body.readableBytesView)))?.errors.first?.code
    }

    var text: String { String(buffer: body) }

    func header(_ name: String) -> String? { headers[HTTPField.Name(name)!] }
}
