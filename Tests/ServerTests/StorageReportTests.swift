import Foundation
import HTTPTypes
import Metadata
import NIOCore
import OCI
import Testing
import UseCases

/// The storage report's time-dependent parts (issue 19), which the end-to-end test cannot wait for.
@Suite("Storage report")
struct StorageReportTests {
    @Test("images neither pushed nor pulled within staleDays are stale, and cost follows the price")
    func staleImages() async throws {
        try await Harness.withServer { client, server in
            let (manifest, _) = try await client.configOnlyManifest(in: "old/app")
            let put = try await client.request(
                .put, "/v2/old/app/manifests/v1", headers: [.contentType: MediaType.ociManifest], body: ByteBuffer(string: manifest))
            #expect(put.status == .created)
            let reports = StorageReports(metadata: server.metadata, prices: .init(storagePerGBMonth: 2.0, currency: "EUR"))
            let now = Timestamp.nowMillis()
            let fresh = try await reports.report(staleDays: 30, now: now)
            #expect(fresh.repositories.first?.staleImages == 0)
            let later = try await reports.report(staleDays: 30, now: now + 31 * 86_400_000)
            let repository = try #require(later.repositories.first { $0.repository == "old/app" })
            #expect(repository.staleImages == 1 && repository.staleLogicalBytes == repository.logicalBytes)
            #expect(later.recommendations.contains { $0.message.hasPrefix("old/app: 1 of 1 images neither pushed nor pulled in 30 days") })
            #expect(abs(later.registry.monthlyCost - Double(later.registry.physicalBytes) / Double(1 << 30) * 2.0) < 1e-12)
            #expect(later.prices.currency == "EUR")
            #expect(StorageReports.csv(later).hasPrefix("repository,images,untagged_images"))
            // Growth: the day's snapshot shows in the registry's series and the namespace's own.
            try await server.metadata.recordSnapshot(day: MetadataStore.day(now), totals: try await server.metadata.storageTotals())
            let grown = try await reports.report(staleDays: 30, now: now)
            let namespace = try #require(grown.namespaces.first { $0.namespace == "old" })
            #expect(namespace.growth.last?.day == MetadataStore.day(now) && namespace.growth.last?.physicalBytes == namespace.physicalBytes)
            #expect(grown.growth.last?.physicalBytes == grown.registry.physicalBytes)
        }
    }
}
