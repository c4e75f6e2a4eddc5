import BlobStore
import Logging
import Metadata
import Monitoring
import OCI
import Registry
import ServiceLifecycle
import Synchronization

#if canImport(FoundationEssentials)
import FoundationEssentials
#else
import Foundation
#endif

public struct GarbageCollectionSettings: Sendable {
    /// Nothing younger than this is collected: fresh uploads, links and manifests are safe.
    public var grace: Duration = .seconds(3600)
    /// Pause between continuous collection passes.
    public var interval: Duration = .seconds(60)
    /// Rows handled per batch (per transaction).
    public var batchSize = 500
    /// Also delete manifests without tags that no index references (off by default: some
    /// workflows pull by digest only).
    public var deleteUntaggedManifests = false
    /// Delete referrers whose subject is gone.
    public var deleteOrphanReferrers = true
    /// Upload sessions idle this long are abandoned.
    public var uploadTimeout: Duration = .seconds(24 * 3600)
    /// How often continuous collection also walks storage for files no row records.
    public var orphanScanInterval: Duration = .seconds(6 * 3600)
    /// After each batch the collector rests for this fraction of the time the batch took, so that
    /// serving keeps most of the CPU while a large collection runs (0: as fast as possible).
    public var restRatio = 1.5
    /// This node's name in a cluster, written into every report.
    public var node: String?

    public init() {}
}

/// What a collection did (or, in a dry run, would do).
public struct GarbageCollectionReport: Sendable, Codable, Equatable {
    public var trigger: String
    public var dryRun: Bool
    public var startedAt: Int64
    public var finishedAt: Int64?
    public var phase: String
    public var deletedUploads = 0
    public var deletedManifests = 0
    public var removedLinks = 0
    public var deletedBlobs = 0
    /// Encrypted copies whose domain no longer holds the blob (counted in `reclaimedBytes` too).
    public var deletedEncryptedCopies = 0
    /// Plain files of blobs that only encrypted repositories hold (counted in `reclaimedBytes` too).
    public var deletedPlainCopies = 0
    public var reclaimedBytes: Int64 = 0
    /// Scan results of manifests no repository holds any more.
    public var deletedScans = 0
    public var orphanFiles = 0
    public var orphanBytes: Int64 = 0
    /// In a dry run: what would go (capped), for people to review.
    public var candidates: [String] = []
    public var errors: [String] = []
    /// The node that ran it (its lease holder name), when several nodes share the database.
    public var node: String?
}

/// Online garbage collection: runs while the registry serves, in small batches, and never needs
/// a read-only mode. Order matters and each pass does one step of each:
/// 1. abandoned upload sessions (and upload files no session owns);
/// 2. untagged, unreferenced manifests (when enabled) and referrers whose subject is gone;
/// 3. repository links to blobs no manifest in that repository references;
/// 4. blobs no repository links to: the row is deleted and the file moved to the trash in one
///    transaction under the blob's lock, then the trash is emptied; likewise an encryption
///    domain's copy of a blob once no repository of that domain links it;
/// 5. (every few hours, and in full collections) files that no row records.
/// Everything honours the grace window, and every deletion re-checks its condition.
public final class GarbageCollector: Service, Sendable {
    public let settings: GarbageCollectionSettings
    private let registry: Registry
    private var metadata: MetadataStore { registry.metadata }
    private var blobs: any BlobStore { registry.blobs }
    private let logger: Logger
    private let onlyWhenLeader: @Sendable () async -> Bool
    private let current = Mutex<GarbageCollectionReport?>(nil)
    private let running = Mutex(false)
    private let lastOrphanScan = Mutex<ContinuousClock.Instant?>(nil)
    /// Where the walk over blobs only encrypted repositories hold continues (digest order, wraps around).
    private let plainCopyCursor = Mutex("")

    public init(
        registry: Registry, settings: GarbageCollectionSettings, logger: Logger,
        onlyWhenLeader: @escaping @Sendable () async -> Bool = { true }
    ) {
        self.registry = registry
        self.settings = settings
        self.logger = logger
        self.onlyWhenLeader = onlyWhenLeader
    }

    /// The collection in progress, if any.
    public var progress: GarbageCollectionReport? { current.withLock { $0 } }

    /// Puts the trash in order after a crash: blobs whose rows survived go back, the rest go.
    /// Removes upload sessions whose file is gone: a crash between publishing a session's blob
    /// and committing left the row, and such a session can never be completed. (The file is
    /// created before the row, so a row without a file is never one still being started.)
    @discardableResult
    public func removeSessionsWithoutFiles() async throws -> Int {
        var removed = 0
        for session in try await metadata.uploads(notUpdatedSince: Int64.max, limit: 100_000)
        where try await blobs.uploadSize(session.id) == nil {
            try await metadata.deleteUpload(session.id)
            removed += 1
        }
        if removed > 0 { logger.notice("removed upload sessions whose bytes a crash left behind", metadata: ["sessions": "\(removed)"]) }
        return removed
    }

    public func recoverTrash() async throws {
        for digest in try await blobs.trashedBlobs() {
            // A plain blob's row, or an encrypted copy's (the trash holds both kinds under their keys).
            var recorded = try await metadata.blobRecorded(digest)
            if !recorded { recorded = !(try await metadata.recordedObjectKeys(among: [digest]).isEmpty) }
            if recorded {
                logger.warning("restoring a blob left in the trash by an interrupted collection", metadata: ["digest": "\(digest)"])
                try await blobs.restore(digest)
            } else {
                try await blobs.emptyTrash(digest)
            }
        }
    }

    public enum CollectionError: Error, CustomStringConvertible {
        case alreadyRunning
        public var description: String { "a garbage collection is already running" }
    }

    /// A complete collection: passes until nothing is left (bounded), with an orphan-file scan.
    /// A dry run reports what the first pass would remove and changes nothing.
    public func collect(dryRun: Bool = false, trigger: String = "manual", grace: Duration? = nil) async throws -> GarbageCollectionReport {
        guard
            running.withLock({ running in
                if running { return false }
                running = true
                return true
            })
        else { throw CollectionError.alreadyRunning }
        defer { running.withLock { $0 = false } }
        if !dryRun {
            registry.space?.releaseReserveIfLow()  // a full disk must not stop the collection that frees it
            try await removeSessionsWithoutFiles()
        }
        defer { registry.space?.holdReserve() }
        let started = ContinuousClock.now
        do {
            var report = GarbageCollectionReport(trigger: trigger, dryRun: dryRun, startedAt: Timestamp.nowMillis(), phase: "starting")
            report.node = settings.node
            let cutoff = ClientNumber.millis(Timestamp.nowMillis(), minusSeconds: (grace ?? settings.grace).components.seconds)
            // A grace window given for this run also shortens how long an idle upload session is kept
            // (`gc --grace-seconds 0` once left a failed session's file for its full 24 hours).
            let uploadCutoff = grace.map { _ in
                max(cutoff, ClientNumber.millis(Timestamp.nowMillis(), minusSeconds: settings.uploadTimeout.components.seconds))
            }
            for _ in 0..<1000 {
                let before = report
                let started = ContinuousClock.now
                try await pass(&report, cutoff: cutoff, uploadCutoff: uploadCutoff, dryRun: dryRun)
                if dryRun || report == before { break }
                try await rest(after: ContinuousClock.now - started)
            }
            try await scanOrphanFiles(&report, cutoff: cutoff, dryRun: dryRun)
            let finished = try await finish(report)
            registry.metrics.recordGarbageCollection(
                failed: false, dryRun: dryRun, deletedBlobs: finished.deletedBlobs + finished.orphanFiles,
                deletedManifests: finished.deletedManifests, deletedUploads: finished.deletedUploads,
                reclaimedBytes: finished.reclaimedBytes + finished.orphanBytes, duration: ContinuousClock.now - started)
            return finished
        } catch {
            registry.metrics.recordGarbageCollection(
                failed: true, dryRun: dryRun, deletedBlobs: 0, deletedManifests: 0, deletedUploads: 0, reclaimedBytes: 0,
                duration: ContinuousClock.now - started)
            throw error
        }
    }

    private func finish(_ report: GarbageCollectionReport) async throws -> GarbageCollectionReport {
        var report = report
        report.finishedAt = Timestamp.nowMillis()
        report.phase = "done"
        current.withLock { $0 = nil }
        let encoder = JSONEncoder()
        encoder.outputFormatting = [.sortedKeys]
        let didSomething =
            report.deletedBlobs + report.deletedEncryptedCopies + report.deletedPlainCopies + report.deletedManifests + report.deletedUploads
            + report.removedLinks + report.orphanFiles > 0
        guard report.trigger != "continuous" || didSomething else { return report }
        var stored = report
        stored.candidates = Array(stored.candidates.prefix(1000))
        try await metadata.recordGCRun(
            startedAt: report.startedAt, finishedAt: report.finishedAt!, trigger: report.trigger, dryRun: report.dryRun,
            report: String(decoding: try encoder.encode(stored), as: UTF8.self))
        if report.deletedBlobs + report.deletedEncryptedCopies + report.deletedPlainCopies + report.deletedManifests + report.deletedUploads
            + report.orphanFiles > 0 || report.dryRun
        {
            logger.info(
                "garbage collection finished",
                metadata: [
                    "trigger": "\(report.trigger)", "dryRun": "\(report.dryRun)", "blobs": "\(report.deletedBlobs)",
                    "bytes": "\(report.reclaimedBytes + report.orphanBytes)", "manifests": "\(report.deletedManifests)", "uploads": "\(report.deletedUploads)",
                ])
        }
        return report
    }

    private func rest(after work: Duration) async throws {
        guard settings.restRatio > 0 else { return }
        try await Task.sleep(for: work * settings.restRatio)
    }

    private func update(_ report: GarbageCollectionReport, phase: String) {
        var report = report
        report.phase = phase
        current.withLock { $0 = report }
    }

    /// One step of every phase, at most `batchSize` items each.
    /// `uploadCutoff`: sessions idle since before it are abandoned; by default `uploadTimeout` ago.
    private func pass(_ report: inout GarbageCollectionReport, cutoff: Int64, uploadCutoff: Int64? = nil, dryRun: Bool) async throws {
        let batch = settings.batchSize
        func note(_ text: String) { if report.candidates.count < 10_000 { report.candidates.append(text) } }

        update(report, phase: "uploads")
        let idleCutoff = uploadCutoff ?? ClientNumber.millis(Timestamp.nowMillis(), minusSeconds: settings.uploadTimeout.components.seconds)
        for upload in try await metadata.uploads(notUpdatedSince: idleCutoff, limit: batch) {
            note("upload \(upload.id) (\(upload.repository))")
            if !dryRun {
                try await metadata.deleteUpload(upload.id)
                try await blobs.deleteUpload(upload.id)
            }
            report.deletedUploads += 1
        }

        update(report, phase: "manifests")
        var manifests: [MetadataStore.ManifestLocation] = []
        if settings.deleteUntaggedManifests { manifests += try await metadata.untaggedManifests(before: cutoff, limit: batch) }
        if settings.deleteOrphanReferrers { manifests += try await metadata.orphanReferrers(before: cutoff, limit: batch) }
        for manifest in manifests {
            guard let repository = RepositoryName(manifest.repository) else { continue }
            note("manifest \(manifest.repository)@\(manifest.digest)")
            if dryRun {
                report.deletedManifests += 1
            } else {
                report.deletedManifests += try await registry.expire(manifest.digest, in: repository).count
            }
        }

        if !dryRun {
            // A scan belongs to a digest, which several repositories may share: it goes with the last one.
            report.deletedScans += try await metadata.deleteOrphanScans(limit: batch)
        }

        update(report, phase: "links")
        let links = try await metadata.unneededLinks(before: cutoff, limit: batch)
        for link in links { note("link \(link.repository) → \(link.digest)") }
        report.removedLinks += dryRun ? links.count : try await metadata.deleteUnneededLinks(links, before: cutoff)

        update(report, phase: "blobs")
        let unlinked = try await metadata.unlinkedBlobs(before: cutoff, limit: batch)
        if dryRun {
            for blob in unlinked { note("blob \(blob.digest) (\(blob.size) bytes)") }
            report.deletedBlobs += unlinked.count
            report.reclaimedBytes += unlinked.reduce(0) { $0 + $1.size }
        } else {
            let blobs = self.blobs
            let deleted = try await metadata.deleteUnlinkedBlobs(unlinked, before: cutoff) { digests in
                try await blobs.trash(digests)
            }
            do {
                try await blobs.emptyTrash(deleted.map(\.digest))
            } catch {
                report.errors.append("emptying the trash: \(error) (recovered at the next start)")
            }
            report.deletedBlobs += deleted.count
            report.reclaimedBytes += deleted.reduce(0) { $0 + $1.size }
        }

        update(report, phase: "encrypted copies")
        let unneededCopies = try await metadata.unneededEncryptedBlobs(before: cutoff, limit: batch)
        if dryRun {
            for copy in unneededCopies { note("encrypted copy \(copy.digest) in \(copy.domain)") }
            report.deletedEncryptedCopies += unneededCopies.count
        } else if !unneededCopies.isEmpty {
            let blobs = self.blobs
            var sizes: [Digest: Int64] = [:]
            for copy in unneededCopies { sizes[copy.objectKey] = try await blobs.size(of: copy.objectKey) ?? 0 }
            let deleted = try await metadata.deleteUnneededEncryptedBlobs(unneededCopies, before: cutoff) { keys in
                try await blobs.trash(keys)
            }
            do {
                try await blobs.emptyTrash(deleted.map(\.objectKey))
            } catch {
                report.errors.append("emptying the trash: \(error) (recovered at the next start)")
            }
            report.deletedEncryptedCopies += deleted.count
            report.reclaimedBytes += deleted.reduce(0) { $0 + (sizes[$1.objectKey] ?? 0) }
        }

        // Plain files of blobs only encrypted repositories still hold: a plain repository pushed the
        // layer, then let go of it. Kept, it would be plaintext of encrypted content, and a leak.
        update(report, phase: "plain copies")
        let after = plainCopyCursor.withLock { $0 }
        let heldEncrypted = try await metadata.blobsHeldOnlyEncrypted(before: cutoff, after: after, limit: batch)
        plainCopyCursor.withLock { $0 = heldEncrypted.count < batch ? "" : heldEncrypted.last?.description ?? "" }
        for digest in heldEncrypted {
            guard let size = try await blobs.size(of: digest) else { continue }
            note("plain copy \(digest) (\(size) bytes)")
            report.deletedPlainCopies += 1
            report.reclaimedBytes += size
            guard !dryRun else { continue }
            let blobs = self.blobs
            try await metadata.whileNoPlainRepositoryHolds(digest) {
                if try await blobs.trash(digest) { try await blobs.emptyTrash(digest) }
            }
        }
    }

    /// Files no row records: uploads without a session and blobs without a row, older than the cutoff.
    private func scanOrphanFiles(_ report: inout GarbageCollectionReport, cutoff: Int64, dryRun: Bool) async throws {
        update(report, phase: "orphan files")
        lastOrphanScan.withLock { $0 = .now }
        for id in try await blobs.allUploads() {
            guard try await metadata.upload(id) == nil, let modified = try await blobs.uploadModified(id), modified < cutoff else { continue }
            if report.candidates.count < 10_000 { report.candidates.append("upload file \(id)") }
            if !dryRun { try await blobs.deleteUpload(id) }
            report.orphanFiles += 1
        }
        var pending: [Digest] = []
        func check(_ digests: [Digest], _ report: inout GarbageCollectionReport) async throws {
            let recorded = try await metadata.recordedBlobs(among: digests).union(try await metadata.recordedObjectKeys(among: digests))
            for digest in digests where !recorded.contains(digest) {
                guard let modified = try await blobs.blobModified(digest), modified < cutoff else { continue }
                if let reader = try await blobs.open(digest) {
                    report.orphanBytes += reader.size
                    try await reader.close()
                }
                if report.candidates.count < 10_000 { report.candidates.append("orphan blob file \(digest)") }
                report.orphanFiles += 1
                // Deleted under the digest's lock by a transaction that finds no row, so an upload of
                // the same content cannot be publishing it at this moment.
                if !dryRun {
                    let blobs = self.blobs
                    try await metadata.whileBlobUnrecorded(digest) { try await blobs.delete(digest) }
                }
            }
        }
        for try await digest in blobs.allBlobs() {
            pending.append(digest)
            if pending.count >= 500 {
                try await check(pending, &report)
                pending.removeAll()
            }
        }
        try await check(pending, &report)
    }

    public func run() async throws {
        try? await recoverTrash()
        while !Task.isShuttingDownGracefully && !Task.isCancelled {
            try? await cancelWhenGracefulShutdown { try await Task.sleep(for: self.settings.interval) }
            guard !Task.isShuttingDownGracefully, await onlyWhenLeader() else { continue }
            await continuousPass()
        }
    }

    /// The background pass: one step of each phase, and the orphan scan when it is due.
    public func continuousPass() async {
        guard
            running.withLock({ running in
                if running { return false }
                running = true
                return true
            })
        else { return }
        defer { running.withLock { $0 = false } }
        registry.space?.releaseReserveIfLow()
        defer { registry.space?.holdReserve() }
        var report = GarbageCollectionReport(trigger: "continuous", dryRun: false, startedAt: Timestamp.nowMillis(), phase: "starting")
        report.node = settings.node
        let cutoff = ClientNumber.millis(Timestamp.nowMillis(), minusSeconds: settings.grace.components.seconds)
        do {
            try await pass(&report, cutoff: cutoff, dryRun: false)
            let due = lastOrphanScan.withLock { last in last.map { ContinuousClock.now - $0 > settings.orphanScanInterval } ?? true }
            if due { try await scanOrphanFiles(&report, cutoff: cutoff, dryRun: false) }
            _ = try await finish(report)
        } catch {
            current.withLock { $0 = nil }
            logger.error("garbage collection pass failed", metadata: ["error": "\(error)"])
        }
    }
}
