import Foundation
import Metadata

/// The storage and cost report: what is stored, what deduplication saves, what garbage collection
/// and an "expire untagged" rule would free, what has not been pulled for a while, and what it all
/// costs at the configured price, with the recommendations that follow. Every figure comes from
/// the metadata database (one consistent read per part), never from walking storage.
public struct StorageReports: Sendable {
    /// Price per GB-month (GB = 2^30 bytes, as AWS bills) of stored bytes.
    public struct Prices: Sendable, Codable, Equatable {
        public var storagePerGBMonth: Double
        /// Per GB of blob bytes served to clients.
        public var egressPerGB: Double
        public var currency: String
        public init(storagePerGBMonth: Double = 0.10, egressPerGB: Double = 0.09, currency: String = "USD") {
            self.storagePerGBMonth = storagePerGBMonth
            self.egressPerGB = egressPerGB
            self.currency = currency
        }
    }

    let metadata: MetadataStore
    let prices: Prices

    public init(metadata: MetadataStore, prices: Prices) {
        self.metadata = metadata
        self.prices = prices
    }

    public struct Report: Sendable, Codable, Equatable {
        public struct Totals: Sendable, Codable, Equatable {
            public var blobs: Int64
            /// Unique blob bytes: what the disk holds.
            public var physicalBytes: Int64
            /// What every image adds up to, a shared layer counted once per image.
            public var logicalBytes: Int64
            public var deduplicationSavedBytes: Int64
            /// Blobs no image references: garbage collection frees them after its grace window.
            public var unreferencedBlobs: Int64
            public var unreferencedBytes: Int64
            public var monthlyCost: Double
            /// Blob bytes served to clients in the last 30 days, and what that cost.
            public var egressBytes30d: Int64
            public var egressCost30d: Double
        }
        public struct Day: Sendable, Codable, Equatable {
            public var day: String
            public var logicalBytes: Int64
            public var physicalBytes: Int64
        }
        public struct Namespace: Sendable, Codable, Equatable {
            public var namespace: String
            public var repositories: Int
            public var images: Int64
            public var logicalBytes: Int64
            /// Its distinct blobs (a blob shared with another namespace counts in both).
            public var physicalBytes: Int64
            public var monthlyCost: Double
            /// Its figures per day over the last 30 days.
            public var growth: [Day]
        }
        public struct Repository: Sendable, Codable, Equatable {
            public var repository: String
            public var images: Int64
            public var untaggedImages: Int64
            public var logicalBytes: Int64
            public var physicalBytes: Int64
            public var staleImages: Int64
            public var staleLogicalBytes: Int64
            public var untaggedReclaimableBytes: Int64
            public var lastPushedAt: String?
            public var lastPulledAt: String?
            public var monthlyCost: Double
            public var egressBytes30d: Int64
        }
        public struct Image: Sendable, Codable, Equatable {
            public var repository: String
            public var digest: String
            public var tags: [String]
            public var bytes: Int64
        }
        public struct Layer: Sendable, Codable, Equatable {
            public var digest: String
            public var bytes: Int64
            public var repositories: Int64
        }
        public struct Recommendation: Sendable, Codable, Equatable {
            public var repository: String?
            public var message: String
            public var savesBytes: Int64
            public var savesPerMonth: Double
        }
        public var generatedAt: String
        public var staleDays: Int
        public var prices: Prices
        public var registry: Totals
        public var namespaces: [Namespace]
        public var repositories: [Repository]
        /// The registry's figures per day over the last 30 days (recorded by the sampler).
        public var growth: [Day]
        public var largestImages: [Image]
        public var largestLayers: [Layer]
        public var recommendations: [Recommendation]
    }

    public func report(staleDays: Int, now: Int64 = Timestamp.nowMillis()) async throws -> Report {
        let cutoff = now - Int64(staleDays) * 86_400_000
        let totals = try await metadata.storageTotals()
        let repositories = try await metadata.repositoryStorage(staleBefore: cutoff)
        let unreferenced = try await metadata.unreferencedBlobBytes()
        let monthAgo = MetadataStore.day(now - 29 * 86_400_000)
        let egress = try await metadata.egress(since: monthAgo)
        let egressBytes = egress.values.reduce(0, +)
        let history = try await metadata.snapshots(since: monthAgo).mapValues { days in
            days.map { Report.Day(day: $0.day, logicalBytes: $0.logicalBytes, physicalBytes: $0.physicalBytes) }
        }
        let logical = totals.namespaces.values.reduce(0) { $0 + $1.logicalBytes }
        var byNamespace: [String: [MetadataStore.RepositoryStorage]] = [:]
        for repository in repositories { byNamespace[repository.namespace, default: []].append(repository) }
        let namespaces = totals.namespaces.keys.sorted().map { name in
            let usage = totals.namespaces[name]!
            return Report.Namespace(
                namespace: name, repositories: byNamespace[name]?.count ?? 0, images: byNamespace[name]?.reduce(0) { $0 + $1.images } ?? 0,
                logicalBytes: usage.logicalBytes, physicalBytes: usage.physicalBytes, monthlyCost: cost(usage.physicalBytes),
                growth: history[name] ?? [])
        }
        var recommendations: [Report.Recommendation] = []
        for repository in repositories where repository.untaggedReclaimableBytes > 0 {
            recommendations.append(
                Report.Recommendation(
                    repository: repository.repository,
                    message:
                        "\(repository.repository): \(repository.untaggedImages) untagged images; a lifecycle rule expiring untagged images would free "
                        + "\(Self.size(repository.untaggedReclaimableBytes)), \(money(cost(repository.untaggedReclaimableBytes)))/month",
                    savesBytes: repository.untaggedReclaimableBytes, savesPerMonth: cost(repository.untaggedReclaimableBytes)))
        }
        for repository in repositories where repository.staleImages > 0 {
            recommendations.append(
                Report.Recommendation(
                    repository: repository.repository,
                    message:
                        "\(repository.repository): \(repository.staleImages) of \(repository.images) images neither pushed nor pulled in \(staleDays) days "
                        + "(\(Self.size(repository.staleLogicalBytes)) as pulled); a sinceImagePulled rule would expire them",
                    savesBytes: 0, savesPerMonth: 0))
        }
        if unreferenced.bytes > 0 {
            recommendations.append(
                Report.Recommendation(
                    repository: nil,
                    message:
                        "\(unreferenced.blobs) blobs (\(Self.size(unreferenced.bytes))) belong to no image; garbage collection frees them "
                        + "after its grace window (\(money(cost(unreferenced.bytes)))/month)",
                    savesBytes: unreferenced.bytes, savesPerMonth: cost(unreferenced.bytes)))
        }
        recommendations.sort { ($0.savesBytes, $1.message) > ($1.savesBytes, $0.message) }
        return Report(
            generatedAt: Timestamp.rfc3339(millis: now), staleDays: staleDays, prices: prices,
            registry: Report.Totals(
                blobs: totals.blobs, physicalBytes: totals.blobBytes, logicalBytes: logical,
                deduplicationSavedBytes: max(0, logical - totals.blobBytes), unreferencedBlobs: unreferenced.blobs,
                unreferencedBytes: unreferenced.bytes, monthlyCost: cost(totals.blobBytes), egressBytes30d: egressBytes,
                egressCost30d: Double(egressBytes) / Double(1 << 30) * prices.egressPerGB),
            namespaces: namespaces,
            repositories: repositories.map { repository in
                Report.Repository(
                    repository: repository.repository, images: repository.images, untaggedImages: repository.untaggedImages,
                    logicalBytes: repository.logicalBytes, physicalBytes: repository.physicalBytes, staleImages: repository.staleImages,
                    staleLogicalBytes: repository.staleLogicalBytes, untaggedReclaimableBytes: repository.untaggedReclaimableBytes,
                    lastPushedAt: repository.lastPushedAt.map(Timestamp.rfc3339), lastPulledAt: repository.lastPulledAt.map(Timestamp.rfc3339),
                    monthlyCost: cost(repository.physicalBytes), egressBytes30d: egress[repository.repository] ?? 0)
            },
            growth: try await metadata.registrySnapshots(since: monthAgo).map {
                Report.Day(day: $0.day, logicalBytes: $0.logicalBytes, physicalBytes: $0.physicalBytes)
            },
            largestImages: try await metadata.largestImages(limit: 10).map {
                Report.Image(repository: $0.repository, digest: $0.digest, tags: $0.tags, bytes: $0.bytes)
            },
            largestLayers: try await metadata.largestLayers(limit: 10).map { Report.Layer(digest: $0.digest, bytes: $0.bytes, repositories: $0.repositories) },
            recommendations: recommendations)
    }

    /// One row per repository, for spreadsheets.
    public static func csv(_ report: Report) -> String {
        var lines = [
            "repository,images,untagged_images,logical_bytes,physical_bytes,stale_images,stale_logical_bytes,untagged_reclaimable_bytes,last_pushed_at,last_pulled_at,monthly_cost,egress_bytes_30d"
        ]
        for r in report.repositories {
            lines.append(
                [
                    r.repository, "\(r.images)", "\(r.untaggedImages)", "\(r.logicalBytes)", "\(r.physicalBytes)", "\(r.staleImages)",
                    "\(r.staleLogicalBytes)", "\(r.untaggedReclaimableBytes)", r.lastPushedAt ?? "", r.lastPulledAt ?? "",
                    String(format: "%.4f", r.monthlyCost), "\(r.egressBytes30d)",
                ].joined(separator: ","))
        }
        return lines.joined(separator: "\n") + "\n"
    }

    func cost(_ bytes: Int64) -> Double { Double(bytes) / Double(1 << 30) * prices.storagePerGBMonth }

    func money(_ amount: Double) -> String { String(format: "%.2f", amount) + " " + prices.currency }

    static func size(_ bytes: Int64) -> String {
        let units = ["B", "KiB", "MiB", "GiB", "TiB"]
        var value = Double(bytes)
        var unit = 0
        while value >= 1024, unit < units.count - 1 {
            value /= 1024
            unit += 1
        }
        return unit == 0 ? "\(bytes) B" : String(format: "%.1f", value) + " " + units[unit]
    }
}
