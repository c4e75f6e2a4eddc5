import BlobStore
import Logging
import Metadata
import Monitoring
import ServiceLifecycle
import Synchronization

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
    /// When conditions become alerts (webhook `alert` events).
    struct AlertThresholds: Sendable {
        /// A namespace using this share of its quota or more.
        var quotaShare = 0.9
        /// The blob volume with less than this percentage free.
        var diskFreePercent = 10.0
        /// An installed vulnerability database not replaced for this long.
        var scanDatabaseMaxAge: Duration = .seconds(48 * 3600)
    }

    let metrics: WharfMetrics
    let metadata: MetadataStore
    let space: StorageSpace
    let advisoryDatabasePath: String
    let interval: Duration
    let logger: Logger
    let thresholds: AlertThresholds
    /// Alerts firing now, by key, with the detail they fired with (to say what resolved).
    private let firing = Mutex<[String: AlertDetail]?>(nil)

    /// An alert event's `detail`.
    struct AlertDetail: Codable, Sendable, Equatable {
        var alert: String
        var state: String?
        var namespace: String?
        var usedBytes: Int64?
        var quotaBytes: Int64?
        var share: Double?
        var freeBytes: Int64?
        var volumeBytes: Int64?
        var ageSeconds: Int64?
        var maximumAgeSeconds: Int64?
    }

    init(
        metrics: WharfMetrics, metadata: MetadataStore, space: StorageSpace, advisoryDatabasePath: String, interval: Duration,
        thresholds: AlertThresholds = AlertThresholds(), logger: Logger
    ) {
        self.thresholds = thresholds
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
            try await checkAlerts(totals)
            let now = Timestamp.nowMillis()
            metrics.setReplicationQueues(
                try await metadata.replicationQueues().map { queue in
                    (queue.destination, queue.pending, queue.failed, queue.oldestPendingCreatedAt.map { Double(max(0, now - $0)) / 1000 } ?? 0)
                })
        } catch {
            logger.warning("could not read storage figures for metrics", metadata: ["error": "\(error)"])
        }
        if let free = space.freeBytes(), let total = space.volumeBytes() { metrics.setDisk(freeBytes: free, totalBytes: total) }
        metrics.setAdvisoryDatabaseAge(seconds: advisoryDatabaseAge())
        metrics.setSampleDuration(ContinuousClock.now - started)
    }

    private func advisoryDatabaseAge() -> Double? {
        let modified = (try? FileManager.default.attributesOfItem(atPath: advisoryDatabasePath)[.modificationDate]) as? Date
        return modified.map { max(0, Date().timeIntervalSince($0)) }
    }

    /// Compares the conditions with the last sampling and writes an `alert` event for each that
    /// started (`firing`) or ended (`resolved`). Kept in memory: after a restart a condition that
    /// still holds fires once more.
    func checkAlerts(_ totals: MetadataStore.StorageTotals) async throws {
        var now: [String: AlertDetail] = [:]
        for (namespace, quota) in try await metadata.namespaceQuotas() where quota > 0 {
            let used = totals.namespaces[namespace]?.physicalBytes ?? 0
            let share = Double(used) / Double(quota)
            if share >= thresholds.quotaShare {
                now["quota:\(namespace)"] = AlertDetail(alert: "quota", namespace: namespace, usedBytes: used, quotaBytes: quota, share: share)
            }
        }
        if let free = space.freeBytes(), let total = space.volumeBytes(), total > 0, Double(free) * 100 / Double(total) < thresholds.diskFreePercent {
            now["disk"] = AlertDetail(alert: "disk", freeBytes: free, volumeBytes: total)
        }
        let limit = Double(thresholds.scanDatabaseMaxAge.components.seconds)
        if let age = advisoryDatabaseAge(), age > limit {
            now["scan-database"] = AlertDetail(alert: "scan-database", ageSeconds: Int64(age), maximumAgeSeconds: Int64(limit))
        }
        let before = firing.withLock { previous -> [String: AlertDetail] in
            defer { previous = now }
            return previous ?? [:]
        }
        let stamp = Timestamp.nowMillis()
        for (key, detail) in now where before[key] == nil { try await alert(key, detail, state: "firing", at: stamp) }
        for (key, detail) in before where now[key] == nil { try await alert(key, detail, state: "resolved", at: stamp) }
    }

    private func alert(_ key: String, _ detail: AlertDetail, state: String, at time: Int64) async throws {
        var detail = detail
        detail.state = state
        let encoder = JSONEncoder()
        encoder.outputFormatting = [.sortedKeys]
        let json = (try? encoder.encode(detail)).map { String(decoding: $0, as: UTF8.self) }
        let namespace = key.hasPrefix("quota:") ? String(key.dropFirst(6)) : ""
        try await metadata.appendEvent(RegistryEvent(kind: .alert, repository: namespace, digest: nil, actor: nil, occurredAt: time, detail: json))
        logger.notice("alert \(state)", metadata: ["alert": "\(key)", "detail": "\(json ?? "")"])
    }
}
