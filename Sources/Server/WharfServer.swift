import Access
import BlobStore
import ECR
import Encryption
import Events
import Foundation
import Hummingbird
import HummingbirdCore
import HummingbirdTLS
import Lifecycle
import Logging
import Metadata
import Monitoring
import NIOCore
import NIOPosix
import OCI
import Registry
import Replication
import Scanning
import ServiceLifecycle
import Signatures
import UseCases

/// A running Wharf: its stores, its use-cases and the HTTP application in front of them.
public final class WharfServer: Sendable {
    public let configuration: WharfConfiguration
    public let metadata: MetadataStore
    public let blobStore: any BlobStore
    private let storage: BlobStorage
    /// Who runs scheduled background work in a cluster (one node at a time).
    let leases: ClusterLeases
    public let registry: Registry
    public let collector: GarbageCollector
    public let scans: ImageScanService
    /// Namespaces' signature policies (signed-only pulls).
    public let signatures: SignatureGate
    public let advisories: AdvisoryUpdater
    public let lifecycle: LifecycleService
    /// Nil when authentication is turned off.
    public let access: AccessControl?
    /// What this Wharf counts; exported at `/metrics` unless `metrics.enabled` is false.
    public let metrics: WharfMetrics
    /// The token `/metrics` accepts (`metrics.tokenFile` or `WHARF_METRICS_TOKEN`).
    let metricsToken: String?
    /// Seals and opens secrets kept in the database (webhook secrets here; Access has its own).
    let sealer: SecretSealer
    /// The administrator password generated at this start (first start only), to show once.
    public let generatedAdministratorPassword: String?
    /// The certificate and key when Wharf serves HTTPS itself (`tls.certificateFile`, `tls.keyFile`).
    let tls: TLSCertificates?
    /// Copies pushed images to the replication destinations.
    public let replicator: Replicator
    private let ioThreadPool: NIOThreadPool
    private let logger: Logger
    let space: StorageSpace

    /// Opens (and migrates) the database and prepares the blob store. Nothing listens yet.
    public static func open(configuration: WharfConfiguration, logger: Logger) async throws -> WharfServer {
        try configuration.validate()
        // A certificate that does not load stops the start with the reason, before anything else.
        let tls = try configuration.tlsCertificateFile.map { certificate in
            try TLSCertificates(certificateFile: certificate, keyFile: configuration.tlsKeyFile ?? "", logger: logger)
        }
        // Blob I/O gets its own threads: disk latency must not stall database work, and more
        // threads than cores is right for blocking file I/O.
        let metricsToken = try configuration.loadMetricsToken()
        let replicationDestinations = try configuration.loadReplicationDestinations()
        let ioThreadPool = NIOThreadPool(numberOfThreads: max(4, System.coreCount * 2))
        ioThreadPool.start()
        let storage: BlobStorage
        let metadata: MetadataStore
        let sealer: SecretSealer
        do {
            // Everything on disk is for Wharf's user alone: folders 0700, files 0600.
            DataAtRest.restrictNewFiles()
            try DataAtRest.secure(
                folder: configuration.dataDirectory,
                files: ["wharf.db", "wharf.db-wal", "wharf.db-shm", "admin-password", "master.key", "blobs", "uploads", "trash", "advisories"],
                logger: logger)
            if configuration.resolvedStoragePath != configuration.dataDirectory {
                try DataAtRest.secure(folder: configuration.resolvedStoragePath, files: ["blobs", "uploads", "trash"], logger: logger)
            }
            storage = try await BlobStorage.open(
                configuration: configuration, environment: ProcessInfo.processInfo.environment, threadPool: ioThreadPool, logger: logger)
            do {
                metadata = try await MetadataStore.open(url: configuration.resolvedDatabaseURL, logger: logger)
            } catch {
                await storage.close()
                throw error
            }
            do {
                let (loaded, source) = try DataAtRest.sealer(configuration: configuration, logger: logger)
                try await DataAtRest.checkKey(loaded, source: source, metadata: metadata)
                sealer = loaded
            } catch {
                await metadata.close()
                await storage.close()
                throw error
            }
        } catch {
            try? await ioThreadPool.shutdownGracefully()
            throw error
        }
        var access: AccessControl?
        var generatedPassword: String?
        if configuration.authEnabled {
            let control = AccessControl(database: metadata.database, sealer: sealer, configuration: configuration.accessConfiguration, logger: logger)
            do {
                generatedPassword = try await control.start(dataDirectory: configuration.dataDirectory, administratorPassword: configuration.adminPassword)
            } catch {
                await metadata.close()
                await storage.close()
                try? await ioThreadPool.shutdownGracefully()
                throw error
            }
            access = control
        } else {
            logger.warning("authentication is OFF: anyone who can reach this server may push, pull and delete")
        }
        let space = StorageSpace(
            root: configuration.resolvedStoragePath, minimumFreeBytes: Int64(configuration.storageMinimumFreeMiB) << 20,
            reserveBytes: Int64(configuration.storageReserveMiB) << 20, logger: logger)
        space.holdReserve()
        let metrics = WharfMetrics()
        let blobStore = storage.store
        let encryption: BlobEncryption
        do {
            encryption = try EncryptionSetup.make(configuration: configuration, metadata: metadata, sealer: sealer, logger: logger)
        } catch {
            await metadata.close()
            await storage.close()
            try? await ioThreadPool.shutdownGracefully()
            throw error
        }
        let registry = Registry(
            metadata: metadata, blobs: blobStore, configuration: configuration.registryConfiguration, logger: logger, space: space, metrics: metrics,
            encryption: encryption)
        // Scheduled background work runs on one node at a time: the holder of its lease renews it at
        // every pass, and another node takes over within three intervals (at least 30 s) of its
        // death, or at once after a graceful stop (which releases the leases).
        let leases = ClusterLeases(database: metadata.database, holder: ClusterLeases.newHolder())
        if let freed = try? await leases.reclaimFromDeadProcesses(), !freed.isEmpty {
            logger.info("took back the scheduled work of a stopped process of this host", metadata: ["leases": "\(freed.joined(separator: ", "))"])
        }
        let leader = { @Sendable (name: String, interval: Duration) async -> Bool in
            let duration = max(30_000, interval.components.seconds * 3_000)
            do {
                return try await leases.acquire(name, durationMillis: duration)
            } catch {
                logger.warning("could not take or renew a lease; skipping this pass", metadata: ["lease": "\(name)", "error": "\(error)"])
                return false
            }
        }
        var gcSettings = configuration.garbageCollectionSettings
        if configuration.gcEnabled, configuration.gcGraceSeconds < 600 {
            // A layer uploaded before its manifest is linked but referenced by nothing until the
            // manifest arrives: a slow client's push can lose it to a collection in between.
            logger.warning(
                "gc.graceSeconds is short: blobs uploaded less than this before their manifest may be collected first; keep it at ten minutes or more",
                metadata: ["graceSeconds": "\(configuration.gcGraceSeconds)"])
        }
        gcSettings.node = leases.holder
        let gcInterval = gcSettings.interval
        let collector = GarbageCollector(
            registry: registry, settings: gcSettings, logger: logger,
            onlyWhenLeader: { await leader("garbage-collection", gcInterval) })
        // An interrupted collection may have left blobs in the trash: put them back before serving.
        try await collector.recoverTrash()
        try await collector.removeSessionsWithoutFiles()
        let audit = access?.audit
        let lifecycleInterval = Duration.seconds(configuration.lifecycleIntervalSeconds)
        let lifecycle = LifecycleService(
            registry: registry, interval: lifecycleInterval, logger: logger,
            onExpire: { expiry in
                audit?.record(
                    AuditEvent(
                        actor: nil, action: "lifecycle.expire", namespace: RepositoryName(expiry.repository).map { String($0.namespace) },
                        repository: expiry.repository, target: expiry.digest,
                        detail: AccessControlJSON.object([
                            "rule": String(expiry.rulePriority), "description": expiry.ruleDescription ?? "",
                            "tags": expiry.tags.joined(separator: " "), "alsoDeleted": expiry.alsoDeleted.joined(separator: " "),
                        ])))
            },
            onlyWhenLeader: { await leader("lifecycle", lifecycleInterval) })
        var scanSettings = ScanSettings(databasePath: configuration.resolvedScannerDatabase)
        scanSettings.workers = configuration.scannerWorkers
        scanSettings.detectSecrets = configuration.scannerSecrets
        scanSettings.attachSBOMs = configuration.scannerAttachSBOMs
        scanSettings.rescanInterval = .seconds(configuration.scannerRescanIntervalSeconds)
        let scans = ImageScanService(registry: registry, settings: scanSettings, logger: logger)
        var updateSettings = AdvisoryUpdater.Settings(databasePath: configuration.resolvedScannerDatabase)
        updateSettings.urls = configuration.scannerUpdateURLs
        updateSettings.interval = .seconds(configuration.scannerUpdateIntervalSeconds)
        updateSettings.artifact = configuration.scannerDatabaseArtifact
        updateSettings.publish = configuration.scannerPublishDatabase
        let advisories = AdvisoryUpdater(settings: updateSettings, registry: registry, logger: logger)
        var replicationSettings = Replicator.Settings()
        replicationSettings.maximumAttempts = configuration.replicationMaximumAttempts
        replicationSettings.firstBackoff = .seconds(configuration.replicationFirstRetrySeconds)
        replicationSettings.chunkSize = configuration.replicationChunkSizeMiB << 20
        replicationSettings.reconcileInterval =
            configuration.replicationReconcileIntervalSeconds > 0 ? .seconds(configuration.replicationReconcileIntervalSeconds) : nil
        let replicator = Replicator(
            registry: registry,
            directory: ReplicationDirectory(
                destinations: replicationDestinations, ownRegion: configuration.replicationRegion,
                ownRegistryID: access?.authorizer.policies.registryID ?? configuration.ecrRegistryID ?? "000000000000"),
            settings: replicationSettings, logger: logger,
            onOutcome: { outcome in
                metrics.recordReplication(succeeded: outcome.succeeded, gaveUp: outcome.gaveUp, bytes: outcome.bytes)
                // Every copy and every failure is on record; retries that will be tried again are only logged.
                guard outcome.succeeded || outcome.gaveUp else { return }
                audit?.record(
                    AuditEvent(
                        actor: nil, action: outcome.succeeded ? "replication.copy" : "replication.failed",
                        namespace: RepositoryName(outcome.task.repository).map { String($0.namespace) }, repository: outcome.task.repository,
                        target: outcome.task.digest, result: outcome.succeeded ? .success : .failure,
                        detail: AccessControlJSON.object([
                            "destination": outcome.task.destination, "tag": outcome.task.tag ?? "", "bytes": String(outcome.bytes),
                            "attempts": String(outcome.task.attempts + 1), "error": outcome.error ?? "",
                        ])))
            },
            onlyWhenLeader: { await leader("replication", .seconds(10)) })
        return WharfServer(
            configuration: configuration, metadata: metadata, blobStore: blobStore, storage: storage, leases: leases, registry: registry, collector: collector,
            lifecycle: lifecycle, scans: scans, advisories: advisories, access: access, generatedAdministratorPassword: generatedPassword, tls: tls,
            space: space, metrics: metrics, metricsToken: metricsToken, sealer: sealer, replicator: replicator, ioThreadPool: ioThreadPool,
            logger: logger)
    }

    private init(
        configuration: WharfConfiguration, metadata: MetadataStore, blobStore: any BlobStore, storage: BlobStorage, leases: ClusterLeases,
        registry: Registry,
        collector: GarbageCollector, lifecycle: LifecycleService, scans: ImageScanService, advisories: AdvisoryUpdater,
        access: AccessControl?, generatedAdministratorPassword: String?, tls: TLSCertificates?, space: StorageSpace, metrics: WharfMetrics,
        metricsToken: String?, sealer: SecretSealer, replicator: Replicator, ioThreadPool: NIOThreadPool, logger: Logger
    ) {
        self.replicator = replicator
        self.sealer = sealer
        self.tls = tls
        self.space = space
        self.metrics = metrics
        self.metricsToken = metricsToken
        self.configuration = configuration
        self.metadata = metadata
        self.blobStore = blobStore
        self.storage = storage
        self.leases = leases
        self.registry = registry
        self.signatures = SignatureGate(registry: registry)
        self.collector = collector
        self.lifecycle = lifecycle
        self.scans = scans
        self.advisories = advisories
        self.access = access
        self.generatedAdministratorPassword = generatedAdministratorPassword
        self.ioThreadPool = ioThreadPool
        self.logger = logger
    }

    /// The HTTP routes: the Distribution API under `/v2` and the token endpoint.
    public func makeRouter() -> Router<WharfRequestContext> {
        let router = Router(context: WharfRequestContext.self)
        // First, so every route (and the 404 of no route) is counted and gets a request id.
        router.add(middleware: RequestObservation(metrics: configuration.metricsEnabled ? metrics : nil))
        let scheme = tls == nil ? "http" : "https"
        let authentication = access.map {
            RequestAuthentication(access: $0, configuredRealm: configuration.authRealm, scheme: scheme, metrics: configuration.metricsEnabled ? metrics : nil)
        }
        // Metrics on this listener need the token or an administrator; on a separate listener
        // (`metrics.listen`) they are served there instead, to whoever reaches it.
        let metricsAccess: OperationsEndpoints.MetricsAccess? =
            !configuration.metricsEnabled || configuration.metricsListen != nil
            ? nil : authentication.map { .tokenOrAdministrator(token: metricsToken, authentication: $0) } ?? .open
        operations.register(on: router, metricsAccess: metricsAccess)
        let api = DistributionAPI(
            registry: registry, authentication: authentication, maximumPageSize: configuration.maximumPageSize,
            pullGate: scans.pullGate, signatureGate: signatures)
        for method in [HTTPRequest.Method.get, .head, .post, .put, .patch, .delete] {
            router.on("/v2", method: method) { request, context in await api.respond(to: request, context: context) }
            router.on("/v2/**", method: method) { request, context in await api.respond(to: request, context: context) }
        }
        if let authentication {
            let tokens = TokenEndpoint(authentication: authentication)
            router.get("/auth/token") { request, context in await tokens.get(request, context: context) }
            router.post("/auth/token") { request, context in await tokens.post(request, context: context) }
            ManagementAPI(
                authentication: authentication,
                storage: StorageManagement(
                    registry: registry, lifecycle: lifecycle, collector: collector, scans: scans, advisories: advisories,
                    settingsChanges: RepositorySettingsChanges(metadata: metadata, audit: authentication.access.audit),
                    scanPolicies: NamespaceScanPolicies(gate: scans.pullGate, vex: scans.vex, audit: authentication.access.audit),
                    tagRuleChanges: NamespaceTagRuleChanges(book: registry.tagRules, audit: authentication.access.audit),
                    signatures: signatures, signaturePolicies: NamespaceSignaturePolicies(gate: signatures, audit: authentication.access.audit),
                    webhooks: WebhookChanges(metadata: metadata, sealer: authentication.access.store.sealer, audit: authentication.access.audit),
                    reports: StorageReports(
                        metadata: metadata,
                        prices: .init(
                            storagePerGBMonth: configuration.costStoragePerGBMonth, egressPerGB: configuration.costEgressPerGB,
                            currency: configuration.costCurrency)),
                    leases: leases, storageKind: storage.kind,
                    encryptionKeys: EncryptionKeyChanges(registry: registry, audit: authentication.access.audit),
                    replication: ReplicationOverview(registry: registry, replicator: replicator, audit: authentication.access.audit))
            ).register(on: router)
            // The ECR control plane shares the listener: `aws ecr --endpoint-url http://<this server>`.
            let ecr = ECREndpoint(
                service: ECRService(
                    registry: registry, access: authentication.access, lifecycle: lifecycle,
                    scans: configuration.scannerEnabled ? scans : nil, pullGate: scans.pullGate, signatureGate: signatures,
                    replication: replicator.directory, logger: logger), registry: registry, scheme: scheme)
            router.post("/") { request, context in await ecr.respond(to: request, context: context) }
            router.get("\(LayerDownloadSigner.pathPrefix):token") { request, context in
                await ecr.download(request, token: context.parameters.get("token") ?? "")
            }
            router.head("\(LayerDownloadSigner.pathPrefix):token") { request, context in
                await ecr.download(request, token: context.parameters.get("token") ?? "")
            }
        } else {
            router.post("/") { _, _ in
                ECREndpoint.awsError(
                    400, "UnrecognizedClientException", "the ECR API needs authentication, which is turned off on this server (auth.enabled: false)")
            }
        }
        return router
    }

    /// The Hummingbird application, with background services (pull-time recording) attached.
    public func makeApplication(onServerRunning: @escaping @Sendable (any Channel) async -> Void = { _ in }) throws -> some ApplicationProtocol {
        let (host, port) = try configuration.listenAddress()
        let logger = self.logger
        let connections = ConnectionLimiter(maximumPerSource: configuration.maximumConnectionsPerSource, logger: logger)
        ConnectionLimiter.raiseOpenFileLimit(logger: logger)
        let trustedProxies = Set(configuration.trustedProxies)
        let metrics = configuration.metricsEnabled ? self.metrics : nil
        let http1 = HTTPServerBuilder.http1(
            configuration: .init(
                additionalChannelHandlers: [
                    connections.handler(), MalformedRequestHandler(), ForwardedHeaderFilter(trustedProxies: trustedProxies),
                    ExpectContinueHandler(metrics: metrics), HTTP10ConnectionClose(),
                ],
                // Closes a connection whose request headers or body stop arriving, and a kept-alive one left idle.
                idleTimeout: .seconds(Int64(configuration.idleTimeoutSeconds))
            ))
        if let tls { tls.reloadOnHangUp() }
        return Application(
            router: makeRouter(),
            server: try tls.map { try HTTPServerBuilder.tls(http1, tlsConfiguration: $0.configuration()) } ?? http1,
            configuration: .init(address: .hostname(host, port: port), serverName: "Wharf"),
            services: backgroundServices,
            onServerRunning: { channel in
                logger.info("Wharf is listening", metadata: ["address": "\(channel.localAddress?.description ?? "?")"])
                await onServerRunning(channel)
            },
            logger: logger
        )
    }

    var operations: OperationsEndpoints {
        OperationsEndpoints(metrics: configuration.metricsEnabled ? metrics : nil, metadata: metadata, blobs: blobStore, space: space)
    }

    /// The separate listener of `metrics.listen`: `/metrics`, `/healthz` and `/readyz` only, for a
    /// network only monitoring reaches (Prometheus, probes), with no credentials.
    func makeMetricsApplication() throws -> (some ApplicationProtocol)? {
        guard configuration.metricsEnabled, let listen = configuration.metricsListen else { return nil as Application<RouterResponder<WharfRequestContext>>? }
        var address = configuration
        address.listen = listen
        let (host, port) = try address.listenAddress()
        let router = Router(context: WharfRequestContext.self)
        router.add(middleware: RequestObservation(metrics: metrics))
        operations.register(on: router, metricsAccess: .open)
        let logger = self.logger
        return Application(
            router: router, configuration: .init(address: .hostname(host, port: port), serverName: "Wharf"),
            onServerRunning: { channel in
                logger.info("Wharf metrics are served", metadata: ["address": "\(channel.localAddress?.description ?? "?")"])
            }, logger: logger)
    }

    private var backgroundServices: [any Service] {
        var services: [any Service] = [registry.pulls]
        // Several nodes over one PostgreSQL: hear the others' tag moves and deletions at once.
        if metadata.database.isShared { services.append(CacheChangeListener(registry: registry)) }
        // Always runs: with authentication off no webhook can be created, but the outbox still
        // fills with every push and must be drained.
        var settings = WebhookDispatcher.Settings()
        settings.maximumAttempts = configuration.webhookMaximumAttempts
        settings.firstBackoff = .seconds(configuration.webhookFirstRetrySeconds)
        settings.timeout = .seconds(configuration.webhookTimeoutSeconds)
        settings.registryAddress = configuration.webhookRegistryAddress ?? configuration.listen
        let leases = self.leases
        let timeout = settings.timeout
        let replicator = self.replicator
        services.append(
            WebhookDispatcher(
                metadata: metadata, sealer: sealer, settings: settings, metrics: metrics, logger: logger,
                replication: .init(planner: { try await replicator.planner() }, queued: { replicator.nudge() }),
                onlyWhenLeader: {
                    // Longer than the slowest batch of deliveries, so the lease never lapses mid-batch.
                    (try? await leases.acquire("webhooks", durationMillis: max(60_000, timeout.components.seconds * 8_000))) ?? false
                }))
        services.append(
            MetricsSampler(
                metrics: metrics, metadata: metadata, space: space, advisoryDatabasePath: configuration.resolvedScannerDatabase,
                interval: .seconds(configuration.metricsSampleIntervalSeconds),
                thresholds: .init(
                    quotaShare: configuration.alertQuotaShare, diskFreePercent: configuration.alertDiskFreePercent,
                    scanDatabaseMaxAge: .seconds(configuration.alertScanDatabaseMaxAgeHours * 3600)),
                logger: logger))
        services.append(replicator)
        if let access { services.append(access.audit) }
        if configuration.gcEnabled { services.append(collector) }
        if configuration.lifecycleEnabled { services.append(lifecycle) }
        if configuration.scannerEnabled { services.append(scans) }
        if configuration.scannerEnabled, advisories.isConfigured { services.append(advisories) }
        return services
    }

    /// Serves until SIGTERM or SIGINT, then finishes in-flight requests, flushes and closes.
    public func run() async throws {
        let application = try makeApplication()
        do {
            if let metricsApplication = try makeMetricsApplication() {
                let group = ServiceGroup(
                    configuration: .init(
                        services: [.init(service: application), .init(service: metricsApplication)], gracefulShutdownSignals: [.sigterm, .sigint],
                        logger: logger))
                try await group.run()
            } else {
                try await application.runService(gracefulShutdownSignals: [.sigterm, .sigint])
            }
        } catch {
            await close()
            throw error
        }
        await close()
    }

    /// Releases the database and I/O threads. Call once, after serving stopped.
    public func close() async {
        await registry.pulls.flush()
        await access?.audit.flush()
        // Another node takes the scheduled work over now, not when the leases expire.
        for lease in ["garbage-collection", "lifecycle", "webhooks", "replication"] { try? await leases.release(lease) }
        await metadata.close()
        await storage.close()
        try? await ioThreadPool.shutdownGracefully()
        logger.info("Wharf stopped")
    }
}
