import BlobStore
import Foundation
import Logging
import Metadata
import Monitoring
import NIOCore
import OCI
import Registry
import Scanner
import ServiceLifecycle

/// What a stored scan says: the image's packages, vulnerabilities and secrets. Multi-platform
/// indexes hold one entry per platform.
public struct StoredScanResult: Codable, Sendable {
    public struct Platform: Codable, Sendable {
        public var platform: String?
        public var manifestDigest: String
        public var inventory: ImageInventory
        public var findings: [Finding]
    }

    public var platforms: [Platform]
    public var databaseImportedAt: String?
    /// The database import the findings come from; a new one re-matches the stored packages.
    public var databaseVersion: String?
    public var scannedAt: String
    /// When the findings were last matched again against a newer database (packages unchanged).
    public var rematchedAt: String?

    public var findings: [Finding] { platforms.flatMap(\.findings) }
    public var secrets: [SecretFinding] { platforms.flatMap(\.inventory.secrets) }

    /// Counts per severity, as ECR's `findingSeverityCounts`: findings a VEX statement suppresses
    /// do not count.
    public var severityCounts: [String: Int] {
        Dictionary(grouping: findings.filter { !$0.isSuppressed }, by: { $0.severity.rawValue }).mapValues(\.count)
    }

    /// Findings shown as suppressed by VEX.
    public var suppressedCount: Int { findings.count { $0.isSuppressed } }
}

public struct ScanSettings: Sendable {
    /// The vulnerability database (`wharf advisories import` writes it).
    public var databasePath: String
    /// Scans running at once.
    public var workers = 1
    /// Look for secrets as well as vulnerable packages.
    public var detectSecrets = true
    /// Store each scanned image's SBOMs beside it as OCI referrers.
    public var attachSBOMs = true
    /// How often the database file is checked for replacement (then stored results are re-matched).
    public var databasePollInterval: Duration = .seconds(5)
    /// A requested rescan of an image scanned this recently against the current database is
    /// refused (it would find the same); zero allows every rescan. ECR allows one a day.
    public var rescanInterval: Duration = .seconds(60)

    public init(databasePath: String) { self.databasePath = databasePath }
}

/// Runs scans in the background: jobs are rows of `image_scans`, so they survive restarts; a
/// bounded number of workers take them oldest first. Layers are read from storage in 4 MiB
/// ranges, never whole.
public final class ImageScanService: Service, Sendable {
    let registry: Registry
    public let settings: ScanSettings
    let logger: Logger
    /// Namespaces' pull policies, judged on the results this service stores.
    public let pullGate: PullGate
    /// VEX documents of namespaces and images, applied when findings are read.
    public let vex: VEXStore
    private let wakeUp: AsyncStream<Void>.Continuation
    private let wakeUps: AsyncStream<Void>

    public init(registry: Registry, settings: ScanSettings, logger: Logger) {
        self.registry = registry
        self.settings = settings
        self.logger = logger
        self.vex = VEXStore(registry: registry)
        self.pullGate = PullGate(metadata: registry.metadata, vex: vex)
        (wakeUps, wakeUp) = AsyncStream.makeStream(of: Void.self, bufferingPolicy: .bufferingNewest(1))
    }

    /// Queues a scan of a manifest (by digest) in a repository. Unless `force`, a rescan of an image
    /// scanned less than `rescanInterval` ago against the database in place now is refused with
    /// `RescanRefused` (the result would be the same; a new database re-matches on its own).
    public func enqueue(_ digest: Digest, in repository: RepositoryName, force: Bool = false) async throws {
        // Only for the same repository: a scan in another one also stores the SBOMs there.
        if !force, settings.rescanInterval > .zero, let record = try await registry.metadata.scanRecord(digest), record.status == .complete,
            record.repository == repository.value, let completedAt = record.completedAt
        {
            let age = Duration.milliseconds(Timestamp.nowMillis() - completedAt)
            let stored = record.result.flatMap { try? JSONDecoder().decode(StoredScanResult.self, from: Data($0.utf8)) }
            if age < settings.rescanInterval, let stored, try await currentDatabaseVersion() == stored.databaseVersion {
                let wait = Int((settings.rescanInterval - age).components.seconds) + 1
                throw RescanRefused(
                    retryAfterSeconds: wait,
                    message:
                        "\(digest) was scanned \(age.components.seconds) s ago against the current vulnerability database; a rescan would find the same. Try again in \(wait) s (or force it)"
                )
            }
        }
        // A scan that failed (a layer bomb, a corrupt layer) fails again: without this, anyone who
        // may push could re-queue the same expensive failure in a loop.
        if !force, settings.rescanInterval > .zero, let record = try await registry.metadata.scanRecord(digest), record.status == .failed,
            let completedAt = record.completedAt
        {
            let age = Duration.milliseconds(Timestamp.nowMillis() - completedAt)
            if age < settings.rescanInterval {
                let wait = Int((settings.rescanInterval - age).components.seconds) + 1
                throw RescanRefused(
                    retryAfterSeconds: wait,
                    message:
                        "the scan of \(digest) failed \(age.components.seconds) s ago (\(record.description ?? "no reason recorded")); it would fail the same way. Try again in \(wait) s (or force it)"
                )
            }
        }
        try await registry.metadata.enqueueScan(digest, in: repository)
        wakeUp.yield()
    }

    private func currentDatabaseVersion() async throws -> String? {
        guard let database = try? await AdvisoryDatabase.open(settings.databasePath) else { return nil }
        let version = try? await database.version()
        try? await database.close()
        return version
    }

    public func run() async throws {
        try await registry.metadata.requeueInterruptedScans()
        let wakeUp = self.wakeUp
        // Scans queued by another node (or missed signals) are found within seconds.
        let ticker = Task {
            while !Task.isCancelled {
                try? await Task.sleep(for: .seconds(5))
                wakeUp.yield()
            }
        }
        defer { ticker.cancel() }
        // A new database (an import, an update, a mirrored artifact) re-matches every stored result.
        let watcher = Task {
            var seen: String?
            while !Task.isCancelled {
                let identity = AdvisoryDatabase.fileIdentity(settings.databasePath)
                if let identity, identity != seen {
                    seen = identity
                    await rematchStoredResults()
                }
                try? await Task.sleep(for: settings.databasePollInterval)
            }
        }
        defer { watcher.cancel() }
        wakeUp.yield()
        await withGracefulShutdownHandler {
            for await _ in wakeUps {
                await withDiscardingTaskGroup { group in
                    for _ in 0..<max(1, settings.workers) { group.addTask { await self.drain() } }
                }
            }
        } onGracefulShutdown: {
            wakeUp.finish()
        }
    }

    /// Takes jobs until none waits.
    private func drain() async {
        while !Task.isCancelled, !Task.isShuttingDownGracefully {
            do {
                guard let job = try await registry.metadata.claimNextScan() else { return }
                await scan(job)
            } catch {
                logger.error("scan queue unavailable", metadata: ["error": "\(error)"])
                return
            }
        }
    }

    /// Scans now and stores the result; failures are stored as FAILED with the reason.
    func scan(_ job: ImageScanRecord) async {
        let started = ContinuousClock.now
        do {
            guard let digest = try? Digest(parsing: job.digest), let repository = RepositoryName(job.repository) else {
                throw ScanFailure("the job names an invalid digest or repository")
            }
            let result = try await scan(digest, in: repository)
            let encoder = JSONEncoder()
            encoder.outputFormatting = [.sortedKeys]
            let text = String(decoding: try encoder.encode(result), as: UTF8.self)
            let counts = result.severityCounts
            // SBOMs first: a client that waits for COMPLETE finds them attached.
            if settings.attachSBOMs {
                for platform in result.platforms {
                    do {
                        try await SBOMReferrers(registry: registry).attach(platform, in: repository)
                    } catch {
                        logger.warning("could not attach the SBOMs", metadata: ["digest": "\(platform.manifestDigest)", "error": "\(error)"])
                    }
                }
            }
            try await registry.metadata.finishScan(
                job.digest, status: .complete,
                description: Self.describe(result), result: text, databaseVersion: result.databaseVersion,
                event: RegistryEvent(
                    kind: .scan, repository: job.repository, digest: job.digest, actor: nil, occurredAt: Timestamp.nowMillis(),
                    detail: ScanDetail(status: "COMPLETE", findings: counts).json))
            if result.platforms.count > 1 || result.platforms.first?.manifestDigest != job.digest {
                // An index: each platform's manifest gets its own result, which its pulls are judged on.
                for platform in result.platforms {
                    var single = result
                    single.platforms = [platform]
                    try await registry.metadata.storeScanResult(
                        platform.manifestDigest, repository: repository, status: .complete,
                        description: Self.describe(single),
                        result: String(decoding: try encoder.encode(single), as: UTF8.self),
                        databaseVersion: single.databaseVersion)
                }
            }
            logger.info(
                "image scanned",
                metadata: [
                    "repository": "\(job.repository)", "digest": "\(job.digest)", "findings": "\(result.findings.count)",
                    "critical": "\(counts["CRITICAL"] ?? 0)", "seconds": "\(ContinuousClock.now - started)",
                ])
            registry.metrics.recordScan(failed: false, duration: ContinuousClock.now - started, findingsBySeverity: counts)
        } catch {
            registry.metrics.recordScan(failed: true, duration: ContinuousClock.now - started)
            logger.warning("image scan failed", metadata: ["digest": "\(job.digest)", "error": "\(error)"])
            try? await registry.metadata.finishScan(
                job.digest, status: .failed, description: "\(error)", result: nil,
                event: RegistryEvent(
                    kind: .scan, repository: job.repository, digest: job.digest, actor: nil, occurredAt: Timestamp.nowMillis(),
                    detail: ScanDetail(status: "FAILED", findings: [:], reason: "\(error)").json))
        }
    }

    /// Matches the packages of every completed scan made with another database against the
    /// current one. Layers are not read again: the stored inventory is what changed hands.
    /// Returns how many results changed.
    @discardableResult
    public func rematchStoredResults() async -> Int {
        let database: AdvisoryDatabase
        do { database = try await AdvisoryDatabase.open(settings.databasePath) } catch { return 0 }
        defer { Task { try? await database.close() } }
        let started = ContinuousClock.now
        var updated = 0, after: String?
        do {
            let summary = try await database.summary()
            let encoder = JSONEncoder()
            encoder.outputFormatting = [.sortedKeys]
            while !Task.isCancelled {
                let page = try await registry.metadata.completedScans(after: after, limit: 100, notMatchedWith: summary.version)
                guard let last = page.last else { break }
                after = last.digest
                for (digest, text) in page {
                    guard var result = try? JSONDecoder().decode(StoredScanResult.self, from: Data(text.utf8)) else { continue }
                    for index in result.platforms.indices {
                        result.platforms[index].findings = try await VulnerabilityMatcher.match(result.platforms[index].inventory, database: database)
                    }
                    result.databaseImportedAt = summary.importedAt
                    result.databaseVersion = summary.version
                    result.rematchedAt = ISO8601DateFormatter().string(from: Date())
                    try await registry.metadata.updateScanResult(
                        digest, description: Self.describe(result),
                        result: String(decoding: try encoder.encode(result), as: UTF8.self),
                        databaseVersion: summary.version)
                    updated += 1
                }
            }
        } catch {
            logger.error("re-matching stored scan results failed", metadata: ["error": "\(error)"])
        }
        if updated > 0 {
            pullGate.forgetScans()
            logger.info(
                "scan results matched against the new vulnerability database",
                metadata: ["results": "\(updated)", "seconds": "\(ContinuousClock.now - started)"])
        }
        return updated
    }

    static func describe(_ result: StoredScanResult) -> String {
        "\(result.findings.count) findings, \(result.secrets.count) secrets"
    }

    /// Scans a manifest: an image directly, an index platform by platform.
    public func scan(_ digest: Digest, in repository: RepositoryName) async throws -> StoredScanResult {
        let database = try await AdvisoryDatabase.open(settings.databasePath)
        do {
            let result = try await scan(digest, in: repository, database: database)
            try? await database.close()
            return result
        } catch {
            try? await database.close()
            throw error
        }
    }

    private func scan(_ digest: Digest, in repository: RepositoryName, database: AdvisoryDatabase) async throws -> StoredScanResult {
        let summary = try? await database.summary()
        let served = try await registry.manifest(.digest(digest), in: repository, recordPull: false)
        let manifest = try ManifestParser.parse(Array(served.content.readableBytesView), contentType: served.mediaType)
        var platforms: [StoredScanResult.Platform] = []
        if manifest.kind == .index {
            for child in manifest.manifests where child.platform?.os != "unknown" {
                let childServed = try await registry.manifest(.digest(child.digest), in: repository, recordPull: false)
                let childManifest = try ManifestParser.parse(Array(childServed.content.readableBytesView), contentType: childServed.mediaType)
                guard childManifest.kind == .image else { continue }
                let platform = child.platform.map { [$0.os, $0.architecture, $0.variant].compactMap { $0 }.joined(separator: "/") }
                platforms.append(try await scanImage(childManifest, digest: child.digest, platform: platform, in: repository, database: database))
            }
        } else {
            platforms.append(try await scanImage(manifest, digest: digest, platform: nil, in: repository, database: database))
        }
        return StoredScanResult(
            platforms: platforms, databaseImportedAt: summary?.importedAt, databaseVersion: summary?.version,
            scannedAt: ISO8601DateFormatter().string(from: Date()))
    }

    private func scanImage(
        _ manifest: ParsedManifest, digest: Digest, platform: String?, in repository: RepositoryName,
        database: AdvisoryDatabase
    ) async throws -> StoredScanResult.Platform {
        var config: [UInt8]?
        if let descriptor = manifest.config, descriptor.size <= 16 << 20 {
            var chunks = StoredBlobChunks(registry: registry, digest: descriptor.digest, repository: repository, size: descriptor.size)
            var bytes: [UInt8] = []
            while let chunk = try await chunks.nextChunk() { bytes += chunk.readableBytesView }
            config = bytes
        }
        let descriptors = manifest.layers.filter { !MediaType.isNonDistributable($0.mediaType) }
        let layers = descriptors.map { StoredBlobChunks(registry: registry, digest: $0.digest, repository: repository, size: $0.size) }
        var inventory = try await Inventory.of(layers: layers, config: config, detectSecrets: settings.detectSecrets)
        inventory.layerDigests = descriptors.map(\.digest.description)
        let findings = try await VulnerabilityMatcher.match(inventory, database: database)
        return .init(platform: platform, manifestDigest: digest.description, inventory: inventory, findings: findings)
    }
}

/// A rescan asked for too soon after the last one.
public struct RescanRefused: Error, CustomStringConvertible {
    public let retryAfterSeconds: Int
    public let message: String
    public var description: String { message }
}

struct ScanFailure: Error, CustomStringConvertible {
    let description: String
    init(_ description: String) { self.description = description }
}

/// A stored blob read in 4 MiB ranges: each range is its own read, so memory stays bounded and
/// nothing is held open between chunks.
struct StoredBlobChunks: ChunkSource {
    let registry: Registry
    let digest: Digest
    let repository: RepositoryName
    let size: Int64
    var offset: Int64 = 0
    static let chunkSize: Int64 = 4 << 20

    init(registry: Registry, digest: Digest, repository: RepositoryName, size: Int64) {
        self.registry = registry
        self.digest = digest
        self.repository = repository
        self.size = size
    }

    mutating func nextChunk() async throws -> ByteBuffer? {
        guard offset < size else { return nil }
        let end = min(size, offset + Self.chunkSize) - 1
        let reader = try await registry.openBlob(digest, in: repository)
        var collected = ByteBuffer()
        try await reader.stream(range: offset...end) { chunk in
            var chunk = chunk
            collected.writeBuffer(&chunk)
        }
        guard collected.readableBytes > 0 else { throw ScanFailure("blob \(digest) ended early") }
        offset += Int64(collected.readableBytes)
        return collected
    }
}
