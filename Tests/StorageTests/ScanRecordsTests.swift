import Metadata
import NIOCore
import OCI
import Testing

/// The scan queue and stored results, on both engines: the SQL here (upserts with conditions,
/// `DELETE … RETURNING`, paging by digest) is what differs most between SQLite and PostgreSQL.
@Suite("Scan records on SQLite and PostgreSQL")
struct ScanRecordsTests {
    let repository = RepositoryName("team/app")!
    let other = RepositoryName("team/other")!

    func manifest(_ content: String) -> NewManifest {
        NewManifest(
            repository: repository, digest: Digest.of(Array(content.utf8)), mediaType: MediaType.ociManifest,
            content: ByteBuffer(string: content), artifactType: nil, subject: nil, annotationsJSON: nil,
            blobs: [], children: [], allowMissingChildren: false, tags: [])
    }

    @Test("queue, claim, finish; re-queue rules; results paged and updated; orphans removed", arguments: Engine.available)
    func lifecycle(_ engine: Engine) async throws {
        try await TestDatabases.withStore(engine) { store in
            let image = manifest("image")
            _ = try await store.putManifest(image)
            try await store.enqueueScan(image.digest, in: repository)
            try await store.enqueueScan(image.digest, in: repository)  // already waiting: one job
            let claimed = try #require(try await store.claimNextScan())
            #expect(claimed.digest == image.digest.description && claimed.status == .inProgress)
            #expect(try await store.claimNextScan() == nil)
            try await store.finishScan(claimed.digest, status: .complete, description: "0 findings", result: #"{"v":1}"#)
            #expect(try await store.scanRecord(image.digest)?.status == .complete)

            // A push of the same image keeps the completed result in its repository; elsewhere, or on request, it is queued.
            try await store.enqueueScan(image.digest, in: repository, keepCompleted: true)
            #expect(try await store.scanRecord(image.digest)?.status == .complete)
            try await store.enqueueScan(image.digest, in: other, keepCompleted: true)
            #expect(try await store.scanRecord(image.digest)?.status == .pending)
            let again = try #require(try await store.claimNextScan())
            try await store.finishScan(again.digest, status: .complete, description: "1 finding", result: #"{"v":2}"#)

            // Platform results stored directly; paging in digest order; updates only touch completed rows.
            let platforms = (0..<5).map { Digest.of(Array("platform \($0)".utf8)).description }
            for digest in platforms {
                try await store.storeScanResult(digest, repository: repository, status: .complete, description: "p", result: #"{"p":1}"#)
            }
            var seen: [String] = [], after: String?
            while true {
                let page = try await store.completedScans(after: after, limit: 2)
                guard let last = page.last else { break }
                seen += page.map(\.digest)
                after = last.digest
            }
            #expect(seen == (platforms + [image.digest.description]).sorted())
            try await store.updateScanResult(platforms[0], description: "rematched", result: #"{"p":2}"#, databaseVersion: "db-2")
            #expect(try await store.scanRecord(try Digest(parsing: platforms[0]))?.result == #"{"p":2}"#)
            // A new database finds what was matched against another one (or an unknown one) without reading the rest.
            try await store.storeScanResult(platforms[1], repository: repository, status: .complete, description: "p", result: "{}", databaseVersion: "db-2")
            let stale = try await store.completedScans(after: nil, limit: 100, notMatchedWith: "db-2").map(\.digest)
            #expect(Set(stale) == Set(platforms[2...] + [image.digest.description]))

            // Garbage collection: results of manifests no repository holds go; the held image's stays.
            #expect(try await store.deleteOrphanScans(limit: 3) == 3)
            #expect(try await store.deleteOrphanScans(limit: 10) == 2)
            #expect(try await store.deleteOrphanScans(limit: 10) == 0)
            #expect(try await store.scanRecord(image.digest)?.result == #"{"v":2}"#)
        }
    }
}
