import AWSSigning
import Access
import Encryption
import Lifecycle
import Logging
import OCI
import Registry
import Replication
import S3BlobStore
import Yams

#if canImport(Glibc)
import Glibc
#endif
#if canImport(FoundationEssentials)
import FoundationEssentials
#else
import Foundation
#endif

/// Everything `wharf serve` can be told. Sources, weakest first: built-in defaults, the YAML file
/// (`--config`), `WHARF_*` environment variables, command-line flags. The defaults alone run a
/// single-node registry on 127.0.0.1:5000 with SQLite and filesystem storage under `./wharf-data`.
public struct WharfConfiguration: Sendable, Equatable {
    /// `HOST:PORT` to listen on.
    public var listen = "127.0.0.1:5000"
    /// Folder for everything Wharf stores on its own (database, blobs, uploads, keys).
    public var dataDirectory = "./wharf-data"
    /// `sqlite:PATH` or `postgres://user:password@host:port/database`. Nil: `sqlite:<data>/wharf.db`.
    public var databaseURL: String?
    /// Root of the filesystem blob store. Nil: the data folder.
    public var storagePath: String?
    /// Pushes are refused (507) while the storage's filesystem has less free space than this.
    public var storageMinimumFreeMiB = 256
    /// Space held in `<storage>/reserved-space` and released when the disk is nearly full, so
    /// deletes and garbage collection can always run.
    public var storageReserveMiB = 64
    /// Blobs in an S3 bucket instead of the filesystem (`storage.s3`); see `loadS3Settings`.
    public var s3: S3StorageConfiguration?
    /// Encryption at rest of repositories created without their own `encryptionConfiguration`
    /// (`encryption.defaultType`, `encryption.defaultKmsKey`): nil stores them plain.
    public var encryptionDefaultType: String?
    public var encryptionDefaultKMSKey: String?
    /// AWS KMS or a compatible service for KMS keys (`encryption.kms`); nil: the built-in key service.
    public var kms: KMSConfiguration?
    /// Accept image indexes that name child manifests the repository does not hold.
    public var allowSparseIndexes = false
    public var manifestCacheMiB = 64
    /// Seconds a cached tag or manifest may be served unchecked; 0 means until this node changes it.
    /// Set it (for example to 2) when several nodes share one PostgreSQL database.
    public var cacheTTLSeconds = 0
    public var pullRecordIntervalSeconds = 10
    /// Largest page of tags or repositories in one response. A tag list asked for without `n`
    /// comes in pages of this size: Distribution 2.8 answers every tag at once, and scripts that
    /// read only the first response should see whole lists of this size too.
    public var maximumPageSize = 50_000
    /// A connection whose request stops arriving, or that stays idle between requests, this long is closed.
    public var idleTimeoutSeconds = 60
    /// Connections one source address may hold open at once; further ones are closed at accept.
    public var maximumConnectionsPerSource = 512
    /// PEM files to serve HTTPS with (TLS 1.2 and 1.3); both or neither. Reloaded on SIGHUP.
    public var tlsCertificateFile: String?
    public var tlsKeyFile: String?
    /// Addresses of reverse proxies whose `X-Forwarded-*` headers are believed; from anyone else
    /// those headers are removed.
    public var trustedProxies: [String] = []
    /// Advertised as OCI-Chunk-Min-Length; 0 for none.
    public var chunkMinimumLength = 0
    /// Upload sessions one identity may hold open at once.
    public var maximumUploadsPerIdentity = 256
    public var logLevel: Logger.Level = .info
    /// `text` (swift-log's lines) or `json` (one object per line, `JSONLogHandler`).
    public var logFormat: LogFormat = .text

    public enum LogFormat: String, Sendable, Equatable, Decodable {
        case text, json
    }

    /// Prices the storage report's cost estimate uses: per GB-month (2^30 bytes) stored, and its currency.
    public var costStoragePerGBMonth = 0.10
    public var costEgressPerGB = 0.09
    public var costCurrency = "USD"

    /// Alerts (webhook `alert` events): a namespace using this share of its quota, the blob volume
    /// with less than this percentage free, a vulnerability database older than this.
    public var alertQuotaShare = 0.9
    public var alertDiskFreePercent = 10.0
    public var alertScanDatabaseMaxAgeHours = 48

    /// Webhook deliveries: attempts before one is given up, the first retry's wait (doubling after
    /// that, up to an hour), how long a receiver has to answer, and the registry address bodies name.
    public var webhookMaximumAttempts = 12
    public var webhookFirstRetrySeconds = 1
    public var webhookTimeoutSeconds = 10
    public var webhookRegistryAddress: String?

    /// Replication: this registry's region (ECR rules naming it and this registry's id are the
    /// source itself), the registries images are copied to, and how copies are retried.
    public var replicationRegion: String?
    public var replicationDestinations: [ReplicationDestinationConfiguration] = []
    public var replicationMaximumAttempts = 20
    public var replicationFirstRetrySeconds = 1
    public var replicationChunkSizeMiB = 8
    /// How often source and destinations are compared and differences repaired; 0: only when asked.
    public var replicationReconcileIntervalSeconds = 3600

    /// Prometheus metrics at `/metrics`, `/healthz` and `/readyz` probes.
    public var metricsEnabled = true
    /// `HOST:PORT` of a separate listener for `/metrics` (and the probes), served without
    /// credentials; nil serves `/metrics` on the main listener to the metrics token or an administrator.
    public var metricsListen: String?
    /// A file (mode 0600 or 0400) holding the bearer token `/metrics` accepts on the main listener.
    public var metricsTokenFile: String?
    /// The token itself, from `WHARF_METRICS_TOKEN` (takes precedence over the file). Never from YAML.
    public var metricsToken: String?
    /// How often storage figures (blobs, bytes per namespace, open uploads, scan queue) are read
    /// from the database for the gauges; scrapes never query.
    public var metricsSampleIntervalSeconds = 30

    /// Authentication and authorization. On by default; turning it off leaves the registry open to
    /// anyone who can reach it (meant for benchmarks and throw-away test setups).
    public var authEnabled = true
    /// `WWW-Authenticate` realm (the token endpoint's absolute URL). Nil: derived from each request's Host.
    public var authRealm: String?
    /// `service` in challenges and `aud` of tokens.
    public var authService = "wharf"
    /// `iss` of tokens.
    public var authIssuer = "wharf"
    public var tokenLifetimeSeconds = 300
    public var namespaceCreation: NamespaceCreationPolicy = .administrators
    /// The first administrator's password (`WHARF_ADMIN_PASSWORD`); nil generates one.
    public var adminPassword: String?
    /// Failed sign-ins allowed for one account before each further attempt must wait.
    public var loginFailuresBeforeDelay = 5
    /// The first wait; it doubles with each further failure, up to the maximum.
    public var loginFirstDelaySeconds = 2
    public var loginMaximumDelaySeconds = 300
    /// bcrypt cost of stored passwords (each step doubles the work; 12 takes about 250 ms).
    public var passwordCost = 12

    /// Online garbage collection (continuous, in small batches).
    public var gcEnabled = true
    /// Nothing younger than this is collected.
    public var gcGraceSeconds = 3600
    public var gcIntervalSeconds = 60
    public var gcDeleteUntaggedManifests = false
    public var gcDeleteOrphanReferrers = true
    /// Upload sessions idle this long are abandoned and removed.
    public var gcUploadTimeoutSeconds = 86_400
    /// Rest after each collection batch, as a fraction of the batch's time (0 = flat out).
    public var gcRestRatio = 1.5
    /// Scheduled evaluation of lifecycle policies.
    public var lifecycleEnabled = true
    public var lifecycleIntervalSeconds = 3600
    /// Background image scanning (scan on push, on demand).
    public var scannerEnabled = true
    /// The vulnerability database `wharf advisories import` writes; default DATA/advisories/osv.sqlite.
    public var scannerDatabase: String?
    public var scannerWorkers = 1
    public var scannerSecrets = true
    /// Store each scanned image's SBOMs (CycloneDX and SPDX) as OCI referrers of the image.
    public var scannerAttachSBOMs = true
    /// Advisory sources fetched on a schedule (osv.dev all.zip files, secdb, OSV JSON); empty: none.
    public var scannerUpdateURLs: [String] = []
    public var scannerUpdateIntervalSeconds = 86_400
    /// Requested rescans of an image scanned this recently against the same database are refused (0: never).
    public var scannerRescanIntervalSeconds = 60
    /// `repository:tag` of a vulnerability database artifact in this registry, installed when it moves.
    public var scannerDatabaseArtifact: String?
    /// `repository:tag` to publish the database to after each update from `scannerUpdateURLs`.
    public var scannerPublishDatabase: String?
    /// The 12-digit registry id of ECR ARNs and responses (`ecr.registryId`); nil generates one
    /// at first start and keeps it in the database.
    public var ecrRegistryID: String?
    /// The master key that seals secrets in the database (`secrets.masterKeyFile`): a file holding
    /// base64 of 32 random bytes, mode 0600. Nil: `<data>/master.key`, created at first start.
    /// Every node sharing one database needs the same key.
    public var masterKeyFile: String?
    /// The master key itself, from `WHARF_MASTER_KEY` (takes precedence over the file). Never from YAML.
    public var masterKey: String?

    public init() {}

    public var resolvedMasterKeyFile: String { masterKeyFile ?? "\(dataDirectory)/master.key" }

    public var garbageCollectionSettings: GarbageCollectionSettings {
        var settings = GarbageCollectionSettings()
        settings.grace = .seconds(gcGraceSeconds)
        settings.interval = .seconds(max(1, gcIntervalSeconds))
        settings.deleteUntaggedManifests = gcDeleteUntaggedManifests
        settings.deleteOrphanReferrers = gcDeleteOrphanReferrers
        settings.uploadTimeout = .seconds(gcUploadTimeoutSeconds)
        settings.restRatio = gcRestRatio
        return settings
    }

    public var resolvedScannerDatabase: String { scannerDatabase ?? "\(dataDirectory)/advisories/osv.sqlite" }

    public var accessConfiguration: AccessConfiguration {
        var configuration = AccessConfiguration()
        configuration.namespaceCreation = namespaceCreation
        configuration.token.issuer = authIssuer
        configuration.token.service = authService
        configuration.token.lifetime = .seconds(tokenLifetimeSeconds)
        configuration.throttle.accountThreshold = loginFailuresBeforeDelay
        configuration.throttle.sourceThreshold = max(loginFailuresBeforeDelay * 4, loginFailuresBeforeDelay)
        configuration.throttle.firstDelay = .seconds(loginFirstDelaySeconds)
        configuration.throttle.maximumDelay = .seconds(max(loginFirstDelaySeconds, loginMaximumDelaySeconds))
        configuration.registryID = ecrRegistryID
        configuration.passwordCost = UInt8(passwordCost)
        return configuration
    }

    public var resolvedDatabaseURL: String { databaseURL ?? "sqlite:\(dataDirectory)/wharf.db" }
    public var resolvedStoragePath: String { storagePath ?? dataDirectory }

    public var registryConfiguration: RegistryConfiguration {
        var configuration = RegistryConfiguration()
        configuration.allowSparseIndexes = allowSparseIndexes
        configuration.manifestCacheBytes = manifestCacheMiB * 1024 * 1024
        configuration.cacheTimeToLive = cacheTTLSeconds > 0 ? .seconds(cacheTTLSeconds) : nil
        configuration.pullRecordInterval = .seconds(max(1, pullRecordIntervalSeconds))
        configuration.chunkMinimumLength = chunkMinimumLength > 0 ? chunkMinimumLength : nil
        configuration.maximumUploadsPerIdentity = maximumUploadsPerIdentity
        // A HEAD refreshes a link at least twice per grace window, so the collector never takes
        // a blob a client was just told exists.
        configuration.linkRefreshInterval = .seconds(max(0, min(300, gcGraceSeconds / 2)))
        return configuration
    }

    /// The host and port of `listen`; accepts `host:port`, `[ipv6]:port` and `:port`.
    public func listenAddress() throws -> (host: String, port: Int) {
        var value = Substring(listen)
        var host: Substring
        if value.hasPrefix("[") {
            guard let close = value.firstIndex(of: "]") else { throw ConfigurationError.invalid("listen", listen) }
            host = value[value.index(after: value.startIndex)..<close]
            value = value[value.index(after: close)...]
        } else {
            guard let colon = value.lastIndex(of: ":") else { throw ConfigurationError.invalid("listen", listen) }
            host = value[..<colon]
            value = value[colon...]
        }
        guard value.hasPrefix(":"), let port = Int(value.dropFirst()), (0...65535).contains(port) else {
            throw ConfigurationError.invalid("listen", listen)
        }
        if host.isEmpty { host = "127.0.0.1" }
        return (String(host), port)
    }

    // MARK: Layers

    /// The YAML file's shape. Every key is optional; unknown keys are refused so typos surface.
    struct File: Decodable {
        var listen: String?
        var data: String?
        var database: Database?
        var storage: Storage?
        var encryption: EncryptionSection?
        var registry: RegistrySection?
        var log: Log?
        var auth: Auth?
        var gc: GC?
        var lifecycle: LifecycleSection?
        var ecr: ECRSection?
        var secrets: SecretsSection?
        var server: ServerSection?
        var tls: TLSSection?
        var scanner: ScannerSection?
        var metrics: MetricsSection?
        var webhooks: WebhooksSection?
        var replication: ReplicationSection?
        var cost: CostSection?
        var alerts: AlertsSection?

        struct AlertsSection: Decodable {
            var quotaShare: Double?
            var diskFreePercent: Double?
            var scanDatabaseMaxAgeHours: Int?
        }

        struct CostSection: Decodable {
            var storagePerGBMonth: Double?
            var egressPerGB: Double?
            var currency: String?
        }

        struct ReplicationSection: Decodable {
            var region: String?
            var destinations: [ReplicationDestinationConfiguration]?
            var maximumAttempts: Int?
            var firstRetrySeconds: Int?
            var chunkSizeMiB: Int?
            var reconcileIntervalSeconds: Int?
        }
        struct WebhooksSection: Decodable {
            var maximumAttempts: Int?
            var firstRetrySeconds: Int?
            var timeoutSeconds: Int?
            var registryAddress: String?
        }

        struct MetricsSection: Decodable {
            var enabled: Bool?
            var listen: String?
            var tokenFile: String?
            var sampleIntervalSeconds: Int?
        }

        struct ScannerSection: Decodable {
            var enabled: Bool?
            var database: String?
            var workers: Int?
            var secrets: Bool?
            var attachSBOMs: Bool?
            var updateURLs: [String]?
            var updateIntervalSeconds: Int?
            var databaseArtifact: String?
            var rescanIntervalSeconds: Int?
            var publishDatabase: String?
        }

        struct GC: Decodable {
            var enabled: Bool?
            var graceSeconds: Int?
            var intervalSeconds: Int?
            var deleteUntaggedManifests: Bool?
            var deleteOrphanReferrers: Bool?
            var uploadTimeoutSeconds: Int?
            var restRatio: Double?
        }

        struct LifecycleSection: Decodable {
            var enabled: Bool?
            var intervalSeconds: Int?
        }

        struct Auth: Decodable {
            var enabled: Bool?
            var realm: String?
            var service: String?
            var issuer: String?
            var tokenLifetimeSeconds: Int?
            var namespaceCreation: NamespaceCreationPolicy?
            var loginFailuresBeforeDelay: Int?
            var loginFirstDelaySeconds: Int?
            var loginMaximumDelaySeconds: Int?
            var passwordCost: Int?
        }

        struct ECRSection: Decodable { var registryId: String? }
        struct EncryptionSection: Decodable {
            var defaultType: String?
            var defaultKmsKey: String?
            var kms: KMS?
            struct KMS: Decodable {
                var endpoint: String?
                var accessKeyId: String?
                var secretAccessKeyFile: String?
                var dataKeyCacheSeconds: Int?
            }
        }
        struct SecretsSection: Decodable { var masterKeyFile: String? }
        struct TLSSection: Decodable {
            var certificateFile: String?
            var keyFile: String?
        }
        struct Database: Decodable { var url: String? }
        struct Storage: Decodable {
            var filesystem: Filesystem?
            var minimumFreeMiB: Int?
            var reserveMiB: Int?
            var s3: S3?
            struct Filesystem: Decodable { var path: String? }
            struct S3: Decodable {
                var bucket: String?
                var region: String?
                var endpoint: String?
                var pathStyle: Bool?
                var prefix: String?
                var storageClass: String?
                var accessKeyId: String?
                var secretAccessKeyFile: String?
                var partSizeMiB: Int?
                var redirect: Bool?
                var redirectExpirySeconds: Int?
                var maximumAttempts: Int?
            }
        }
        struct RegistrySection: Decodable {
            var allowSparseIndexes: Bool?
            var manifestCacheMiB: Int?
            var cacheTTLSeconds: Int?
            var pullRecordIntervalSeconds: Int?
            var maximumPageSize: Int?
            var chunkMinimumLength: Int?
            var maximumUploadsPerIdentity: Int?
        }
        struct Log: Decodable {
            var level: String?
            var format: String?
        }
        struct ServerSection: Decodable {
            var idleTimeoutSeconds: Int?
            var maximumConnectionsPerSource: Int?
            var trustedProxies: [String]?
        }
    }

    /// Applies a YAML document on top of `self`.
    public mutating func apply(yaml: String, source: String) throws {
        let file: File
        do {
            if let node = try Yams.compose(yaml: yaml) { try Self.checkKnownKeys(node, path: "", source: source) }
            file = try YAMLDecoder().decode(File.self, from: yaml)
        } catch let error as ConfigurationError {
            throw error
        } catch {
            throw ConfigurationError.unreadable(source, "\(error)")
        }
        if let value = file.listen { listen = value }
        if let value = file.data { dataDirectory = value }
        if let value = file.database?.url { databaseURL = value }
        if let value = file.storage?.filesystem?.path { storagePath = value }
        if let value = file.storage?.minimumFreeMiB { storageMinimumFreeMiB = value }
        if let value = file.storage?.reserveMiB { storageReserveMiB = value }
        if let s3 = file.storage?.s3 {
            var settings = self.s3 ?? S3StorageConfiguration()
            if let value = s3.bucket { settings.bucket = value }
            if let value = s3.region { settings.region = value }
            if let value = s3.endpoint { settings.endpoint = value }
            if let value = s3.pathStyle { settings.pathStyle = value }
            if let value = s3.prefix { settings.prefix = value }
            if let value = s3.storageClass { settings.storageClass = value }
            if let value = s3.accessKeyId { settings.accessKeyID = value }
            if let value = s3.secretAccessKeyFile { settings.secretAccessKeyFile = value }
            if let value = s3.partSizeMiB { settings.partSizeMiB = value }
            if let value = s3.redirect { settings.redirect = value }
            if let value = s3.redirectExpirySeconds { settings.redirectExpirySeconds = value }
            if let value = s3.maximumAttempts { settings.maximumAttempts = value }
            self.s3 = settings
        }
        if let encryption = file.encryption {
            if let value = encryption.defaultType { encryptionDefaultType = value }
            if let value = encryption.defaultKmsKey { encryptionDefaultKMSKey = value }
            if let kms = encryption.kms {
                var settings = self.kms ?? KMSConfiguration()
                if let value = kms.endpoint { settings.endpoint = value }
                if let value = kms.accessKeyId { settings.accessKeyID = value }
                if let value = kms.secretAccessKeyFile { settings.secretAccessKeyFile = value }
                if let value = kms.dataKeyCacheSeconds { settings.dataKeyCacheSeconds = value }
                self.kms = settings
            }
        }
        if let registry = file.registry {
            if let value = registry.allowSparseIndexes { allowSparseIndexes = value }
            if let value = registry.manifestCacheMiB { manifestCacheMiB = value }
            if let value = registry.cacheTTLSeconds { cacheTTLSeconds = value }
            if let value = registry.pullRecordIntervalSeconds { pullRecordIntervalSeconds = value }
            if let value = registry.maximumPageSize { maximumPageSize = value }
            if let value = registry.chunkMinimumLength { chunkMinimumLength = value }
            if let value = registry.maximumUploadsPerIdentity { maximumUploadsPerIdentity = value }
        }
        if let value = file.log?.level { logLevel = try Self.parseLogLevel(value, source: "\(source): log.level") }
        if let value = file.log?.format { logFormat = try Self.parseLogFormat(value, source: "\(source): log.format") }
        if let gc = file.gc {
            if let value = gc.enabled { gcEnabled = value }
            if let value = gc.graceSeconds { gcGraceSeconds = value }
            if let value = gc.intervalSeconds { gcIntervalSeconds = value }
            if let value = gc.deleteUntaggedManifests { gcDeleteUntaggedManifests = value }
            if let value = gc.deleteOrphanReferrers { gcDeleteOrphanReferrers = value }
            if let value = gc.uploadTimeoutSeconds { gcUploadTimeoutSeconds = value }
            if let value = gc.restRatio { gcRestRatio = value }
        }
        if let lifecycle = file.lifecycle {
            if let value = lifecycle.enabled { lifecycleEnabled = value }
            if let value = lifecycle.intervalSeconds { lifecycleIntervalSeconds = value }
        }
        if let value = file.ecr?.registryId { ecrRegistryID = value }
        if let value = file.secrets?.masterKeyFile { masterKeyFile = value }
        if let value = file.server?.idleTimeoutSeconds { idleTimeoutSeconds = value }
        if let value = file.tls?.certificateFile { tlsCertificateFile = value }
        if let value = file.tls?.keyFile { tlsKeyFile = value }
        if let value = file.server?.maximumConnectionsPerSource { maximumConnectionsPerSource = value }
        if let value = file.server?.trustedProxies { trustedProxies = value }
        if let scanner = file.scanner {
            if let value = scanner.enabled { scannerEnabled = value }
            if let value = scanner.database { scannerDatabase = value }
            if let value = scanner.workers { scannerWorkers = value }
            if let value = scanner.secrets { scannerSecrets = value }
            if let value = scanner.attachSBOMs { scannerAttachSBOMs = value }
            if let value = scanner.updateURLs { scannerUpdateURLs = value }
            if let value = scanner.updateIntervalSeconds { scannerUpdateIntervalSeconds = value }
            if let value = scanner.databaseArtifact { scannerDatabaseArtifact = value }
            if let value = scanner.rescanIntervalSeconds { scannerRescanIntervalSeconds = value }
            if let value = scanner.publishDatabase { scannerPublishDatabase = value }
        }
        if let alerts = file.alerts {
            if let value = alerts.quotaShare { alertQuotaShare = value }
            if let value = alerts.diskFreePercent { alertDiskFreePercent = value }
            if let value = alerts.scanDatabaseMaxAgeHours { alertScanDatabaseMaxAgeHours = value }
        }
        if let cost = file.cost {
            if let value = cost.storagePerGBMonth { costStoragePerGBMonth = value }
            if let value = cost.egressPerGB { costEgressPerGB = value }
            if let value = cost.currency { costCurrency = value }
        }
        if let webhooks = file.webhooks {
            if let value = webhooks.maximumAttempts { webhookMaximumAttempts = value }
            if let value = webhooks.firstRetrySeconds { webhookFirstRetrySeconds = value }
            if let value = webhooks.timeoutSeconds { webhookTimeoutSeconds = value }
            if let value = webhooks.registryAddress { webhookRegistryAddress = value }
        }
        if let replication = file.replication {
            if let value = replication.region { replicationRegion = value }
            if let value = replication.destinations { replicationDestinations = value }
            if let value = replication.maximumAttempts { replicationMaximumAttempts = value }
            if let value = replication.firstRetrySeconds { replicationFirstRetrySeconds = value }
            if let value = replication.chunkSizeMiB { replicationChunkSizeMiB = value }
            if let value = replication.reconcileIntervalSeconds { replicationReconcileIntervalSeconds = value }
        }
        if let metrics = file.metrics {
            if let value = metrics.enabled { metricsEnabled = value }
            if let value = metrics.listen { metricsListen = value }
            if let value = metrics.tokenFile { metricsTokenFile = value }
            if let value = metrics.sampleIntervalSeconds { metricsSampleIntervalSeconds = value }
        }
        if let auth = file.auth {
            if let value = auth.enabled { authEnabled = value }
            if let value = auth.realm { authRealm = value }
            if let value = auth.service { authService = value }
            if let value = auth.issuer { authIssuer = value }
            if let value = auth.tokenLifetimeSeconds { tokenLifetimeSeconds = value }
            if let value = auth.namespaceCreation { namespaceCreation = value }
            if let value = auth.loginFailuresBeforeDelay { loginFailuresBeforeDelay = value }
            if let value = auth.loginFirstDelaySeconds { loginFirstDelaySeconds = value }
            if let value = auth.loginMaximumDelaySeconds { loginMaximumDelaySeconds = value }
            if let value = auth.passwordCost { passwordCost = value }
        }
        try validate()
    }

    /// Every key the file may contain, as dotted paths.
    static let knownKeys: Set<String> = [
        "listen", "data", "database", "database.url", "storage", "storage.filesystem", "storage.filesystem.path", "storage.minimumFreeMiB",
        "storage.reserveMiB", "storage.s3", "storage.s3.bucket", "storage.s3.region", "storage.s3.endpoint", "storage.s3.pathStyle",
        "storage.s3.prefix", "storage.s3.storageClass", "storage.s3.accessKeyId", "storage.s3.secretAccessKeyFile", "storage.s3.partSizeMiB",
        "storage.s3.redirect", "storage.s3.redirectExpirySeconds", "storage.s3.maximumAttempts",
        "encryption", "encryption.defaultType", "encryption.defaultKmsKey", "encryption.kms", "encryption.kms.endpoint",
        "encryption.kms.accessKeyId", "encryption.kms.secretAccessKeyFile", "encryption.kms.dataKeyCacheSeconds",
        "registry", "registry.allowSparseIndexes", "registry.manifestCacheMiB", "registry.cacheTTLSeconds",
        "registry.pullRecordIntervalSeconds", "registry.maximumPageSize", "registry.chunkMinimumLength", "registry.maximumUploadsPerIdentity",
        "log", "log.level", "log.format",
        "auth", "auth.enabled", "auth.realm", "auth.service", "auth.issuer", "auth.tokenLifetimeSeconds", "auth.namespaceCreation",
        "auth.loginFailuresBeforeDelay", "auth.loginFirstDelaySeconds", "auth.loginMaximumDelaySeconds", "auth.passwordCost",
        "gc", "gc.enabled", "gc.graceSeconds", "gc.intervalSeconds", "gc.deleteUntaggedManifests", "gc.deleteOrphanReferrers", "gc.uploadTimeoutSeconds",
        "gc.restRatio",
        "lifecycle", "lifecycle.enabled", "lifecycle.intervalSeconds",
        "ecr", "ecr.registryId", "secrets", "secrets.masterKeyFile", "server", "server.idleTimeoutSeconds", "server.maximumConnectionsPerSource",
        "server.trustedProxies", "tls", "tls.certificateFile", "tls.keyFile",
        "scanner", "scanner.enabled", "scanner.database", "scanner.workers", "scanner.secrets", "scanner.attachSBOMs",
        "scanner.updateURLs", "scanner.updateIntervalSeconds", "scanner.databaseArtifact", "scanner.rescanIntervalSeconds", "scanner.publishDatabase",
        "alerts", "alerts.quotaShare", "alerts.diskFreePercent", "alerts.scanDatabaseMaxAgeHours",
        "cost", "cost.storagePerGBMonth", "cost.egressPerGB", "cost.currency",
        "replication", "replication.region", "replication.destinations", "replication.destinations.name", "replication.destinations.region",
        "replication.destinations.registryId", "replication.destinations.url", "replication.destinations.username",
        "replication.destinations.passwordFile", "replication.destinations.tokenFile", "replication.destinations.concurrency",
        "replication.maximumAttempts", "replication.firstRetrySeconds", "replication.chunkSizeMiB", "replication.reconcileIntervalSeconds",
        "webhooks", "webhooks.maximumAttempts", "webhooks.firstRetrySeconds", "webhooks.timeoutSeconds", "webhooks.registryAddress",
        "metrics", "metrics.enabled", "metrics.listen", "metrics.tokenFile", "metrics.sampleIntervalSeconds",
    ]

    private static func checkKnownKeys(_ node: Node, path: String, source: String) throws {
        guard case .mapping(let mapping) = node else { return }
        for (key, value) in mapping {
            let name = key.string ?? "\(key)"
            let full = path.isEmpty ? name : "\(path).\(name)"
            guard knownKeys.contains(full) else {
                throw ConfigurationError.unreadable(source, "unknown key '\(full)'; known keys: \(knownKeys.sorted().joined(separator: ", "))")
            }
            if case .sequence(let items) = value {
                for item in items { try checkKnownKeys(item, path: full, source: source) }
            } else {
                try checkKnownKeys(value, path: full, source: source)
            }
        }
    }

    /// Applies `WHARF_*` variables on top of `self`.
    public mutating func apply(environment: [String: String]) throws {
        if let value = environment["WHARF_LISTEN"] { listen = value }
        if let value = environment["WHARF_DATA"] { dataDirectory = value }
        if let value = environment["WHARF_DATABASE_URL"] { databaseURL = value }
        if let value = environment["WHARF_STORAGE_PATH"] { storagePath = value }
        if let bucket = environment["WHARF_S3_BUCKET"], !bucket.isEmpty {
            var settings = s3 ?? S3StorageConfiguration()
            settings.bucket = bucket
            if let value = environment["WHARF_S3_ENDPOINT"], !value.isEmpty { settings.endpoint = value }
            if let value = environment["WHARF_S3_REGION"], !value.isEmpty { settings.region = value }
            if let value = environment["WHARF_S3_PREFIX"] { settings.prefix = value }
            if let value = environment["WHARF_S3_PATH_STYLE"] { settings.pathStyle = ["1", "true", "yes"].contains(value.lowercased()) }
            if let value = environment["WHARF_S3_REDIRECT"] { settings.redirect = ["1", "true", "yes"].contains(value.lowercased()) }
            s3 = settings
        }
        if let value = environment["WHARF_ENCRYPTION_DEFAULT_TYPE"] { encryptionDefaultType = value.isEmpty ? nil : value }
        if let value = environment["WHARF_ENCRYPTION_DEFAULT_KMS_KEY"] { encryptionDefaultKMSKey = value.isEmpty ? nil : value }
        if let value = environment["WHARF_REGION"], !value.isEmpty { replicationRegion = value }
        if let value = environment["WHARF_KMS_ENDPOINT"], !value.isEmpty {
            var settings = kms ?? KMSConfiguration()
            settings.endpoint = value
            kms = settings
        }
        if let value = environment["WHARF_LOG_LEVEL"] { logLevel = try Self.parseLogLevel(value, source: "WHARF_LOG_LEVEL") }
        if let value = environment["WHARF_LOG_FORMAT"] { logFormat = try Self.parseLogFormat(value, source: "WHARF_LOG_FORMAT") }
        if let value = environment["WHARF_ALLOW_SPARSE_INDEXES"] { allowSparseIndexes = ["1", "true", "yes"].contains(value.lowercased()) }
        if let value = environment["WHARF_AUTH_ENABLED"] { authEnabled = !["0", "false", "no", "off"].contains(value.lowercased()) }
        if let value = environment["WHARF_AUTH_REALM"] { authRealm = value }
        if let value = environment["WHARF_ADMIN_PASSWORD"], !value.isEmpty { adminPassword = value }
        if let value = environment["WHARF_ECR_REGISTRY_ID"], !value.isEmpty { ecrRegistryID = value }
        if let value = environment["WHARF_MASTER_KEY"], !value.isEmpty { masterKey = value }
        if let value = environment["WHARF_MASTER_KEY_FILE"], !value.isEmpty { masterKeyFile = value }
        if let value = environment["WHARF_METRICS_TOKEN"], !value.isEmpty { metricsToken = value }
        if let value = environment["WHARF_METRICS_LISTEN"], !value.isEmpty { metricsListen = value }
        if let value = environment["WHARF_METRICS_ENABLED"] { metricsEnabled = !["0", "false", "no", "off"].contains(value.lowercased()) }
        if let value = environment["WHARF_TLS_CERTIFICATE"], !value.isEmpty { tlsCertificateFile = value }
        if let value = environment["WHARF_TLS_KEY"], !value.isEmpty { tlsKeyFile = value }
        if let value = environment["WHARF_GC_GRACE_SECONDS"] {
            guard let seconds = ClientNumber.parse(value, in: 0...Int(ClientNumber.maximumSeconds)) else {
                throw ConfigurationError.invalid("WHARF_GC_GRACE_SECONDS", value)
            }
            gcGraceSeconds = seconds
        }
        try validate()
    }

    public func validate() throws {
        _ = try listenAddress()
        _ = try defaultEncryptionDomain()
        if let metricsListen {
            var other = self
            other.listen = metricsListen
            guard (try? other.listenAddress()) != nil else { throw ConfigurationError.invalid("metrics.listen (HOST:PORT)", metricsListen) }
            guard metricsListen != listen else { throw ConfigurationError.invalid("metrics.listen (must differ from listen)", metricsListen) }
        }
        guard alertQuotaShare > 0, alertQuotaShare <= 1, (0...100).contains(alertDiskFreePercent), (1...87_600).contains(alertScanDatabaseMaxAgeHours)
        else {
            throw ConfigurationError.invalid(
                "alerts.quotaShare (above 0, at most 1) / diskFreePercent (0 to 100) / scanDatabaseMaxAgeHours (1 to 87600)",
                "\(alertQuotaShare) / \(alertDiskFreePercent) / \(alertScanDatabaseMaxAgeHours)")
        }
        guard costStoragePerGBMonth.isFinite, (0...1_000_000).contains(costStoragePerGBMonth), costEgressPerGB.isFinite,
            (0...1_000_000).contains(costEgressPerGB), (1...8).contains(costCurrency.count)
        else {
            throw ConfigurationError.invalid(
                "cost.storagePerGBMonth (0 to 1000000) / cost.currency (1 to 8 characters)", "\(costStoragePerGBMonth) / \(costCurrency)")
        }
        guard (1...100).contains(webhookMaximumAttempts), (1...3600).contains(webhookFirstRetrySeconds), (1...300).contains(webhookTimeoutSeconds)
        else {
            throw ConfigurationError.invalid(
                "webhooks.maximumAttempts (1 to 100) / firstRetrySeconds (1 to 3600) / timeoutSeconds (1 to 300)",
                "\(webhookMaximumAttempts) / \(webhookFirstRetrySeconds) / \(webhookTimeoutSeconds)")
        }
        try validateReplication()
        guard (1...3600).contains(metricsSampleIntervalSeconds) else {
            throw ConfigurationError.invalid("metrics.sampleIntervalSeconds (1 to 3600)", "\(metricsSampleIntervalSeconds)")
        }
        if let metricsToken, metricsToken.utf8.count < 16 {
            throw ConfigurationError.invalid("WHARF_METRICS_TOKEN (at least 16 characters)", "(\(metricsToken.utf8.count) characters)")
        }
        guard manifestCacheMiB >= 0 else { throw ConfigurationError.invalid("registry.manifestCacheMiB", "\(manifestCacheMiB)") }
        guard cacheTTLSeconds >= 0 else { throw ConfigurationError.invalid("registry.cacheTTLSeconds", "\(cacheTTLSeconds)") }
        guard maximumPageSize >= 1 else { throw ConfigurationError.invalid("registry.maximumPageSize", "\(maximumPageSize)") }
        guard !dataDirectory.isEmpty else { throw ConfigurationError.invalid("data", "(empty)") }
        guard (1...64).contains(scannerWorkers) else { throw ConfigurationError.invalid("scanner.workers (1 to 64)", "\(scannerWorkers)") }
        guard scannerRescanIntervalSeconds >= 0 else {
            throw ConfigurationError.invalid("scanner.rescanIntervalSeconds (0 or more)", "\(scannerRescanIntervalSeconds)")
        }
        guard scannerUpdateIntervalSeconds >= 1 else {
            throw ConfigurationError.invalid("scanner.updateIntervalSeconds (at least 1)", "\(scannerUpdateIntervalSeconds)")
        }
        for url in scannerUpdateURLs where !(url.hasPrefix("https://") || url.hasPrefix("http://")) {
            throw ConfigurationError.invalid("scanner.updateURLs (http or https URLs)", url)
        }
        for (key, value) in [("scanner.databaseArtifact", scannerDatabaseArtifact), ("scanner.publishDatabase", scannerPublishDatabase)] {
            guard let value else { continue }
            let parts = value.split(separator: ":", maxSplits: 1, omittingEmptySubsequences: false)
            guard parts.count == 2, RepositoryName(String(parts[0])) != nil, Tag(String(parts[1])) != nil else {
                throw ConfigurationError.invalid("\(key) (repository:tag)", value)
            }
        }
        if let published = scannerPublishDatabase {
            guard !scannerUpdateURLs.isEmpty else {
                throw ConfigurationError.invalid("scanner.publishDatabase (needs scanner.updateURLs: it publishes what they bring)", published)
            }
            guard published != scannerDatabaseArtifact else {
                throw ConfigurationError.invalid("scanner.publishDatabase (must differ from scanner.databaseArtifact)", published)
            }
        }
        guard (0...100).contains(gcRestRatio) else { throw ConfigurationError.invalid("gc.restRatio (0 to 100)", "\(gcRestRatio)") }
        guard gcGraceSeconds >= 0, gcIntervalSeconds >= 1, gcUploadTimeoutSeconds >= 60, lifecycleIntervalSeconds >= 1 else {
            throw ConfigurationError.invalid(
                "gc.* / lifecycle.* (non-negative grace, positive intervals, upload timeout of at least 60 s)", "\(gcGraceSeconds)")
        }
        // Durations become milliseconds and are subtracted from the clock: bound them so that cannot overflow.
        let durations: [(String, Int)] = [
            ("gc.graceSeconds", gcGraceSeconds), ("gc.intervalSeconds", gcIntervalSeconds), ("gc.uploadTimeoutSeconds", gcUploadTimeoutSeconds),
            ("lifecycle.intervalSeconds", lifecycleIntervalSeconds), ("registry.cacheTTLSeconds", cacheTTLSeconds),
            ("scanner.rescanIntervalSeconds", scannerRescanIntervalSeconds), ("scanner.updateIntervalSeconds", scannerUpdateIntervalSeconds),
            ("auth.loginFirstDelaySeconds", loginFirstDelaySeconds), ("auth.loginMaximumDelaySeconds", loginMaximumDelaySeconds),
        ]
        for (key, seconds) in durations where Int64(seconds) > ClientNumber.maximumSeconds {
            throw ConfigurationError.invalid("\(key) (at most \(ClientNumber.maximumSeconds) seconds)", "\(seconds)")
        }
        guard (0...(1 << 30)).contains(storageMinimumFreeMiB), (0...(1 << 20)).contains(storageReserveMiB) else {
            throw ConfigurationError.invalid("storage.minimumFreeMiB / storage.reserveMiB (0 or more MiB)", "\(storageMinimumFreeMiB) / \(storageReserveMiB)")
        }
        guard (tlsCertificateFile == nil) == (tlsKeyFile == nil) else {
            throw ConfigurationError.invalid(
                "tls.certificateFile and tls.keyFile (give both, or neither)", "\(tlsCertificateFile ?? "none") / \(tlsKeyFile ?? "none")")
        }
        guard (4...31).contains(passwordCost) else { throw ConfigurationError.invalid("auth.passwordCost (bcrypt cost, 4 to 31)", "\(passwordCost)") }
        guard (1...1_000_000).contains(maximumUploadsPerIdentity) else {
            throw ConfigurationError.invalid("registry.maximumUploadsPerIdentity (1 to 1000000)", "\(maximumUploadsPerIdentity)")
        }
        guard (1...3600).contains(idleTimeoutSeconds) else {
            throw ConfigurationError.invalid("server.idleTimeoutSeconds (1 to 3600)", "\(idleTimeoutSeconds)")
        }
        guard (1...1_000_000).contains(maximumConnectionsPerSource) else {
            throw ConfigurationError.invalid("server.maximumConnectionsPerSource (1 to 1000000)", "\(maximumConnectionsPerSource)")
        }
        guard loginFailuresBeforeDelay >= 1, loginFirstDelaySeconds >= 1 else {
            throw ConfigurationError.invalid(
                "auth.loginFailuresBeforeDelay / auth.loginFirstDelaySeconds (at least 1)", "\(loginFailuresBeforeDelay) / \(loginFirstDelaySeconds)")
        }
        if let id = ecrRegistryID, id.count != 12 || !id.utf8.allSatisfy({ $0 >= 48 && $0 <= 57 }) {
            throw ConfigurationError.invalid("ecr.registryId (12 digits, like an AWS account id)", id)
        }
        guard (60...86_400).contains(tokenLifetimeSeconds) else {
            throw ConfigurationError.invalid("auth.tokenLifetimeSeconds (60 to 86400)", "\(tokenLifetimeSeconds)")
        }
    }

    /// The metrics token: `WHARF_METRICS_TOKEN`, else the first line of `metrics.tokenFile`, which
    /// must be readable by Wharf's user alone (a token others can read is no secret).
    /// The S3 settings with their credentials: `storage.s3.accessKeyId` with the secret from
    /// `secretAccessKeyFile` (refused unless only its owner can read it), else the standard AWS
    /// variables. Nil when blobs are on the filesystem.
    public func loadS3Settings(environment: [String: String]) throws -> S3Settings? {
        guard let s3 else { return nil }
        let credentials: AWSCredentials
        if let keyID = s3.accessKeyID {
            guard let path = s3.secretAccessKeyFile else {
                throw ConfigurationError.invalid("storage.s3.secretAccessKeyFile (needed with storage.s3.accessKeyId)", "missing")
            }
            let secret = try Self.readSecretFile(path, setting: "storage.s3.secretAccessKeyFile", minimumLength: 1)
            credentials = AWSCredentials(accessKeyID: keyID, secretAccessKey: secret)
        } else if let fromEnvironment = AWSCredentials.fromEnvironment(environment) {
            credentials = fromEnvironment
        } else {
            throw ConfigurationError.invalid(
                "storage.s3 credentials (storage.s3.accessKeyId with secretAccessKeyFile, or AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY)", "none given")
        }
        let settings = S3Settings(
            bucket: s3.bucket, region: s3.region, endpoint: s3.endpoint, pathStyle: s3.pathStyle, prefix: s3.prefix, storageClass: s3.storageClass,
            credentials: credentials, partSize: (1...1024).contains(s3.partSizeMiB) ? s3.partSizeMiB << 20 : 0, redirect: s3.redirect,
            redirectExpirySeconds: s3.redirectExpirySeconds, maximumAttempts: s3.maximumAttempts)
        let problems = settings.problems()
        guard problems.isEmpty else { throw ConfigurationError.invalid("storage.s3", problems.joined(separator: "; ")) }
        return settings
    }

    /// The registry's default encryption domain, checked: `AES256`, or `KMS`/`KMS_DSSE` with a key ARN.
    public func defaultEncryptionDomain() throws -> EncryptionDomain? {
        guard let type = encryptionDefaultType else {
            if let key = encryptionDefaultKMSKey {
                throw ConfigurationError.invalid("encryption.defaultKmsKey (needs encryption.defaultType KMS or KMS_DSSE)", key)
            }
            return nil
        }
        guard let kind = EncryptionDomain.Kind(rawValue: type) else {
            throw ConfigurationError.invalid("encryption.defaultType (AES256, KMS or KMS_DSSE)", type)
        }
        if kind == .aes256 {
            if let key = encryptionDefaultKMSKey { throw ConfigurationError.invalid("encryption.defaultKmsKey (only with KMS or KMS_DSSE)", key) }
            return EncryptionDomain(kind: .aes256)
        }
        guard let key = encryptionDefaultKMSKey, KMSKeyARN(key) != nil else {
            throw ConfigurationError.invalid(
                "encryption.defaultKmsKey (a KMS key ARN, arn:aws:kms:REGION:ACCOUNT:key/ID)", encryptionDefaultKMSKey ?? "missing")
        }
        return EncryptionDomain(kind: kind, kmsKey: key)
    }

    /// The KMS API settings, or nil when the built-in key service answers for KMS keys.
    public func loadKMSSettings(environment: [String: String]) throws -> KMSSettings? {
        guard let kms, kms.endpoint != nil || kms.accessKeyID != nil else { return nil }
        let credentials: AWSCredentials
        if let keyID = kms.accessKeyID {
            guard let path = kms.secretAccessKeyFile else {
                throw ConfigurationError.invalid("encryption.kms.secretAccessKeyFile (needed with encryption.kms.accessKeyId)", "missing")
            }
            credentials = AWSCredentials(
                accessKeyID: keyID, secretAccessKey: try Self.readSecretFile(path, setting: "encryption.kms.secretAccessKeyFile", minimumLength: 1))
        } else if let fromEnvironment = AWSCredentials.fromEnvironment(environment) {
            credentials = fromEnvironment
        } else {
            throw ConfigurationError.invalid(
                "encryption.kms credentials (encryption.kms.accessKeyId with secretAccessKeyFile, or AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY)",
                "none given")
        }
        guard (0...3600).contains(kms.dataKeyCacheSeconds) else {
            throw ConfigurationError.invalid("encryption.kms.dataKeyCacheSeconds (0 to 3600)", String(kms.dataKeyCacheSeconds))
        }
        return KMSSettings(endpoint: kms.endpoint, credentials: credentials, dataKeyCacheLifetime: .seconds(kms.dataKeyCacheSeconds))
    }

    /// The first line of a file only its owner may read.
    static func readSecretFile(_ path: String, setting: String, minimumLength: Int) throws -> String {
        var info = stat()
        guard stat(path, &info) == 0 else { throw ConfigurationError.unreadable(path, "\(setting) does not exist or cannot be read") }
        guard info.st_mode & 0o077 == 0 else {
            throw ConfigurationError.unreadable(
                path, "\(setting) is readable by other users (mode \(String(info.st_mode & 0o777, radix: 8))); run chmod 600 on it")
        }
        guard let data = FileManager.default.contents(atPath: path),
            let secret = String(data: data, encoding: .utf8)?.split(whereSeparator: \.isNewline).first.map(String.init), secret.utf8.count >= minimumLength
        else { throw ConfigurationError.unreadable(path, "\(setting) must hold at least \(minimumLength) characters on its first line") }
        return secret
    }

    func validateReplication() throws {
        guard (1...100).contains(replicationMaximumAttempts), (1...3600).contains(replicationFirstRetrySeconds),
            (1...512).contains(replicationChunkSizeMiB), (0...604_800).contains(replicationReconcileIntervalSeconds)
        else {
            throw ConfigurationError.invalid(
                "replication.maximumAttempts (1 to 100) / firstRetrySeconds (1 to 3600) / chunkSizeMiB (1 to 512) / reconcileIntervalSeconds (0 to 604800)",
                "\(replicationMaximumAttempts) / \(replicationFirstRetrySeconds) / \(replicationChunkSizeMiB) / \(replicationReconcileIntervalSeconds)")
        }
        if let region = replicationRegion, !ReplicationDestinationConfiguration.isRegion(region) {
            throw ConfigurationError.invalid("replication.region (2 to 25 of a-z, 0-9 and -)", region)
        }
        var names = Set<String>()
        for destination in replicationDestinations {
            let setting = "replication.destinations '\(destination.name)'"
            guard !destination.name.isEmpty, destination.name.count <= 64, !destination.name.contains(":"), names.insert(destination.name).inserted else {
                throw ConfigurationError.invalid("replication.destinations.name (unique, 1 to 64 characters, no ':')", destination.name)
            }
            guard destination.url.hasPrefix("http://") || destination.url.hasPrefix("https://"), URL(string: destination.url)?.host != nil else {
                throw ConfigurationError.invalid("\(setting): url (http:// or https://, host and port)", destination.url)
            }
            if let region = destination.region, !ReplicationDestinationConfiguration.isRegion(region) {
                throw ConfigurationError.invalid("\(setting): region (2 to 25 of a-z, 0-9 and -)", region)
            }
            if let id = destination.registryId, id.count != 12 || !id.allSatisfy(\.isASCII) || !id.allSatisfy(\.isNumber) {
                throw ConfigurationError.invalid("\(setting): registryId (12 digits)", id)
            }
            if destination.username != nil, destination.passwordFile == nil {
                throw ConfigurationError.invalid("\(setting): passwordFile (needed with username)", "missing")
            }
            if destination.tokenFile != nil, destination.username != nil {
                throw ConfigurationError.invalid("\(setting): username or tokenFile, not both", "both given")
            }
            if let concurrency = destination.concurrency, !(1...64).contains(concurrency) {
                throw ConfigurationError.invalid("\(setting): concurrency (1 to 64)", "\(concurrency)")
            }
        }
    }

    /// The destinations with their credentials read from their files (which must be private).
    public func loadReplicationDestinations() throws -> [ReplicationDestination] {
        try replicationDestinations.map { destination in
            let setting = "replication.destinations '\(destination.name)'"
            var credentials = RemoteCredentials.none
            if let username = destination.username, let file = destination.passwordFile {
                credentials = .basic(username: username, password: try Self.readSecretFile(file, setting: "\(setting) passwordFile", minimumLength: 1))
            } else if let file = destination.tokenFile {
                credentials = .bearer(try Self.readSecretFile(file, setting: "\(setting) tokenFile", minimumLength: 1))
            }
            return ReplicationDestination(
                name: destination.name, region: destination.region, registryID: destination.registryId, url: destination.url,
                credentials: credentials, concurrency: destination.concurrency ?? 4)
        }
    }

    public func loadMetricsToken() throws -> String? {
        if let metricsToken { return metricsToken }
        guard let path = metricsTokenFile else { return nil }
        return try Self.readSecretFile(path, setting: "metrics.tokenFile", minimumLength: 16)
    }

    public static func parseLogFormat(_ value: String, source: String) throws -> LogFormat {
        guard let format = LogFormat(rawValue: value.lowercased()) else { throw ConfigurationError.invalid("\(source) (text or json)", value) }
        return format
    }

    public static func parseLogLevel(_ value: String, source: String) throws -> Logger.Level {
        guard let level = Logger.Level(rawValue: value.lowercased()) else {
            throw ConfigurationError.invalid(source, value)
        }
        return level
    }
}

/// `storage.s3` as written (the secret itself is read only when the server opens the store).
public struct S3StorageConfiguration: Sendable, Equatable {
    public var bucket = ""
    public var region = "us-east-1"
    public var endpoint: String?
    public var pathStyle = false
    public var prefix = ""
    public var storageClass: String?
    public var accessKeyID: String?
    public var secretAccessKeyFile: String?
    public var partSizeMiB = 16
    public var redirect = false
    public var redirectExpirySeconds = 1200
    public var maximumAttempts = 5

    public init() {}
}

public struct KMSConfiguration: Sendable, Equatable {
    public var endpoint: String?
    public var accessKeyID: String?
    public var secretAccessKeyFile: String?
    public var dataKeyCacheSeconds = 60

    public init() {}
}

public enum ConfigurationError: Error, CustomStringConvertible {
    case invalid(String, String)
    case unreadable(String, String)

    public var description: String {
        switch self {
        case .invalid(let key, let value): "invalid value for \(key): '\(value)'"
        case .unreadable(let source, let reason): "cannot read configuration \(source): \(reason)"
        }
    }
}

/// One `replication.destinations` entry as written (secrets stay in their files until start).
public struct ReplicationDestinationConfiguration: Sendable, Equatable, Decodable {
    public var name: String
    public var region: String?
    public var registryId: String?
    public var url: String
    public var username: String?
    public var passwordFile: String?
    public var tokenFile: String?
    public var concurrency: Int?

    static func isRegion(_ text: String) -> Bool {
        (2...25).contains(text.count) && text.allSatisfy { $0.isASCII && ($0.isLowercase || $0.isNumber || $0 == "-") }
    }
}
