import BlobStore
import Hummingbird
import Logging
import Metadata
import NIOCore
import NIOPosix
import Registry
import ServiceLifecycle

/// A running Wharf: its stores, its use-cases and the HTTP application in front of them.
public final class WharfServer: Sendable {
    public let configuration: WharfConfiguration
    public let metadata: MetadataStore
    public let blobStore: FileSystemBlobStore
    public let registry: Registry
    private let ioThreadPool: NIOThreadPool
    private let logger: Logger

    /// Opens (and migrates) the database and prepares the blob store. Nothing listens yet.
    public static func open(configuration: WharfConfiguration, logger: Logger) async throws -> WharfServer {
        try configuration.validate()
        // Blob I/O gets its own threads: disk latency must not stall database work, and more
        // threads than cores is right for blocking file I/O.
        let ioThreadPool = NIOThreadPool(numberOfThreads: max(4, System.coreCount * 2))
        ioThreadPool.start()
        let blobStore = FileSystemBlobStore(root: configuration.resolvedStoragePath, threadPool: ioThreadPool)
        let metadata: MetadataStore
        do {
            try await blobStore.prepare()
            metadata = try await MetadataStore.open(url: configuration.resolvedDatabaseURL, logger: logger)
        } catch {
            try? await ioThreadPool.shutdownGracefully()
            throw error
        }
        let registry = Registry(metadata: metadata, blobs: blobStore, configuration: configuration.registryConfiguration, logger: logger)
        return WharfServer(configuration: configuration, metadata: metadata, blobStore: blobStore, registry: registry, ioThreadPool: ioThreadPool, logger: logger)
    }

    private init(configuration: WharfConfiguration, metadata: MetadataStore, blobStore: FileSystemBlobStore, registry: Registry, ioThreadPool: NIOThreadPool, logger: Logger) {
        self.configuration = configuration
        self.metadata = metadata
        self.blobStore = blobStore
        self.registry = registry
        self.ioThreadPool = ioThreadPool
        self.logger = logger
    }

    /// The HTTP routes: the Distribution API under `/v2`.
    public func makeRouter() -> Router<WharfRequestContext> {
        let router = Router(context: WharfRequestContext.self)
        let api = DistributionAPI(registry: registry, maximumPageSize: configuration.maximumPageSize)
        for method in [HTTPRequest.Method.get, .head, .post, .put, .patch, .delete] {
            router.on("/v2", method: method) { request, context in await api.respond(to: request, context: context) }
            router.on("/v2/**", method: method) { request, context in await api.respond(to: request, context: context) }
        }
        return router
    }

    /// The Hummingbird application, with background services (pull-time recording) attached.
    public func makeApplication(onServerRunning: @escaping @Sendable (any Channel) async -> Void = { _ in }) throws -> some ApplicationProtocol {
        let (host, port) = try configuration.listenAddress()
        let logger = self.logger
        return Application(
            router: makeRouter(),
            configuration: .init(address: .hostname(host, port: port), serverName: "Wharf"),
            services: [registry.pulls],
            onServerRunning: { channel in
                logger.info("Wharf is listening", metadata: ["address": "\(channel.localAddress?.description ?? "?")"])
                await onServerRunning(channel)
            },
            logger: logger
        )
    }

    /// Serves until SIGTERM or SIGINT, then finishes in-flight requests, flushes and closes.
    public func run() async throws {
        let application = try makeApplication()
        do {
            try await application.runService(gracefulShutdownSignals: [.sigterm, .sigint])
        } catch {
            await close()
            throw error
        }
        await close()
    }

    /// Releases the database and I/O threads. Call once, after serving stopped.
    public func close() async {
        await registry.pulls.flush()
        await metadata.close()
        try? await ioThreadPool.shutdownGracefully()
        logger.info("Wharf stopped")
    }
}
