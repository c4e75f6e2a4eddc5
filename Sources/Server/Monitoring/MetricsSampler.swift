import BlobStore
import Logging
import Metadata
import Monitoring
import ServiceLifecycle

#if canImport(FoundationEssentials)
import FoundationEssentials
#else
import Foundation
#endif

/// Reads the figures that live in the database and on the disk (blobs, bytes per namespace, open
/// uploads, the scan queue, free space, the vulnerability database's age) on a schedule and sets
/// the gauges, so a scrape never queries anything: its cost does not grow with the registry. It also
/// keeps each day's storage figures for the storage report's growth, so it runs with metrics off too.
final class MetricsSampler: Service, Sendable {
    let metrics: WharfMetrics
    let metadata: MetadataStore
    let space: StorageSpace
    let advisoryDatabasePath: String
    let interval: Duration
    let logger: Logger

    init(metrics: WharfMetrics, metadata: MetadataStore, space: StorageSpace, advisoryDatabasePath: String, interval: Duration, logger: Logger) {
        self.metrics = metrics
        self.metadata = metadata
        self.space = space
        self.advisoryDatabasePath = advisoryDatabasePath
        self.interval = interval
        self.logger = logger
    }

    func run() async throws {
        while !Task.isShuttingDownGracefully, !Task.isCancelled {
            await sample()
            try? await cancelWhenGracefulShutdown { try await Task.sleep(for: self.interval) }
        }
    }

    /// One sampling. A failure is logged and leaves the previous figures in place.
    func sample() async {
        let started = ContinuousClock.now
        do {
            let totals = try await metadata.storageTotals()
            metrics.setStorageCounts(
                blobs: totals.blobs, blobBytes: totals.blobBytes, repositories: totals.repositories, manifests: totals.manifests,
                uploadSessions: totals.uploadSessions, scanQueue: totals.scanQueue)
            metrics.setNamespaceUsage(totals.namespaces.mapValues { ($0.logicalBytes, $0.physicalBytes) })
            // The day's figures for the storage report's growth (the latest sampling of a day wins).
            try await metadata.recordSnapshot(day: MetadataStore.day(Timestamp.nowMillis()), totals: totals)
        } catch {
            logger.warning("could not read storage figures for metrics", metadata: ["error": "\(error)"])
        }
        if let free = space.freeBytes(), let total = space.volumeBytes() { metrics.setDisk(freeBytes: free, totalBytes: total) }
        let modified = (try? FileManager.default.attributesOfItem(atPath: advisoryDatabasePath)[.modificationDate]) as? Date
        metrics.setAdvisoryDatabaseAge(seconds: modified.map { max(0, Date().timeIntervalSince($0)) })
        metrics.setSampleDuration(ContinuousClock.now - started)
    }
}
