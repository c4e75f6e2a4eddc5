import AsyncHTTPClient
import BlobStore
import Logging
import NIOPosix
import S3BlobStore

/// The blob store the configuration names: the filesystem under the storage path (the default), or
/// an S3 bucket (`storage.s3`). Opening checks the store works (for S3: a probe object written,
/// read back and deleted with the configured credentials), so a wrong bucket or key stops the start
/// with S3's own reason instead of failing the first push.
public struct BlobStorage: Sendable {
    public let store: any BlobStore
    /// Wharf's HTTP client for S3, shut down by `close`.
    private let http: HTTPClient?
    public var kind: String { http == nil ? "filesystem" : "s3" }

    public static func open(
        configuration: WharfConfiguration, environment: [String: String], threadPool: NIOThreadPool = .singleton, logger: Logger
    ) async throws -> BlobStorage {
        guard let settings = try configuration.loadS3Settings(environment: environment) else {
            let store = FileSystemBlobStore(root: configuration.resolvedStoragePath, threadPool: threadPool)
            try await store.prepare()
            return BlobStorage(store: store, http: nil)
        }
        var clientConfiguration = HTTPClient.Configuration()
        clientConfiguration.redirectConfiguration = .disallow
        clientConfiguration.timeout = .init(connect: .seconds(10), read: .seconds(60))
        // Many pushes and pulls at once each hold a connection while they stream.
        clientConfiguration.connectionPool = .init(idleTimeout: .seconds(60), concurrentHTTP1ConnectionsPerHostSoftLimit: 64)
        let http = HTTPClient(eventLoopGroupProvider: .singleton, configuration: clientConfiguration)
        do {
            let store = try S3BlobStore(settings: settings, http: http, logger: logger)
            try await store.prepare()
            logger.info(
                "blobs are stored in S3",
                metadata: ["bucket": "\(settings.bucket)", "prefix": "\(settings.prefix)", "endpoint": "\(settings.endpoint ?? "AWS")"])
            return BlobStorage(store: store, http: http)
        } catch {
            try? await http.shutdown()
            throw error
        }
    }

    public func close() async {
        try? await http?.shutdown()
    }
}
