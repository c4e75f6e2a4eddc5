import BlobStore
import Foundation
import Logging
import Metadata
import NIOCore
import OCI
import Registry
import Testing

/// Several nodes over one PostgreSQL database, each with its own connection pool and caches, as
/// separate `wharf serve` processes have: caches hear each other's writes, scheduled work has one
/// holder, scan jobs are claimed once.
@Suite("Several nodes over one database", .serialized)
struct ClusterTests {
    /// A fresh PostgreSQL database, opened `nodes` times (one pool per node); nil without
    /// PostgreSQL outside CI.
    static func withPostgres<T>(nodes: Int, _ body: ([MetadataStore]) async throws -> T) async throws -> T? {
        let environment = ProcessInfo.processInfo.environment
        guard let adminURL = environment["WHARF_TEST_POSTGRES_URL"] else {
            if environment["CI"] == "true" { Issue.record("CI=true but WHARF_TEST_POSTGRES_URL is not set: the test script must start PostgreSQL") }
            return nil
        }
        let name = "wharf_cluster_\(UUID().uuidString.replacingOccurrences(of: "-", with: "").lowercased().prefix(16))"
        let admin = try await Database.open(url: adminURL, logger: Fixture.logger)
        _ = try await admin.read { try await $0.raw("CREATE DATABASE \(unsafeRaw: name)").run() }
        let url = String(adminURL[..<adminURL.lastIndex(of: "/")!]) + "/" + name
        var stores: [MetadataStore] = []
        for _ in 0..<nodes { stores.append(try await MetadataStore.open(url: url, logger: Fixture.logger)) }
        let result: Result<T, any Error>
        do { result = .success(try await body(stores)) } catch { result = .failure(error) }
        for store in stores { await store.close() }
        _ = try? await admin.read { try await $0.raw("DROP DATABASE \(unsafeRaw: name) WITH (FORCE)").run() }
        await admin.close()
        return try result.get()
    }

    static func image(_ marker: String) -> (config: ByteBuffer, manifest: ByteBuffer) {
        let config = ByteBuffer(string: #"{"architecture":"amd64","os":"linux","marker":"\#(marker)"}"#)
        let manifest = """
            {"schemaVersion":2,"mediaType":"\(MediaType.ociManifest)","config":{"mediaType":"application/vnd.oci.image.config.v1+json",\
            "digest":"\(Digest.of(config))","size":\(config.readableBytes)},"layers":[]}
            """
        return (config, ByteBuffer(string: manifest))
    }

    static func push(_ registry: Registry, _ repository: RepositoryName, tag: String, marker: String) async throws -> Digest {
        let (config, manifest) = image(marker)
        _ = try await registry.pushBlob([config].async, in: repository, digest: Digest.of(config), length: Int64(config.readableBytes))
        return try await registry.putManifest(manifest, contentType: MediaType.ociManifest, in: repository, reference: .tag(Tag(tag)!)).digest
    }

    @Test("a tag moved on one node is served fresh by another at once, with no cache lifetime to wait out")
    func cacheCoherence() async throws {
        let directory = FileManager.default.temporaryDirectory.appendingPathComponent("wharf-cluster-\(UUID().uuidString)")
        defer { try? FileManager.default.removeItem(at: directory) }
        _ = try await Self.withPostgres(nodes: 2) { stores in
            let blobs = FileSystemBlobStore(root: directory.path)
            try await blobs.prepare()
            var configuration = RegistryConfiguration()
            configuration.cacheTimeToLive = nil  // entries never expire: only a notification can refresh them
            let first = Registry(metadata: stores[0], blobs: blobs, configuration: configuration, logger: Fixture.logger)
            let second = Registry(metadata: stores[1], blobs: blobs, configuration: configuration, logger: Fixture.logger)
            let listener = Task { try await CacheChangeListener(registry: second).run() }
            defer { listener.cancel() }
            let repository = RepositoryName("team/app")!
            let old = try await Self.push(first, repository, tag: "latest", marker: "old")
            #expect(try await second.manifest(.tag(Tag("latest")!), in: repository, recordPull: false).digest == old)
            // Wait until the listener is connected: a change it hears shows on the other node.
            let probeRepository = RepositoryName("team/probe")!
            var probe = 0
            var heard = false
            let start = ContinuousClock.now
            while !heard, ContinuousClock.now - start < .seconds(20) {
                probe += 1
                let digest = try await Self.push(first, probeRepository, tag: "p", marker: "probe \(probe)")
                if probe > 1 {
                    try await Task.sleep(for: .milliseconds(100))
                    heard = try await second.manifest(.tag(Tag("p")!), in: probeRepository, recordPull: false).digest == digest
                } else {
                    _ = try await second.manifest(.tag(Tag("p")!), in: probeRepository, recordPull: false)
                }
            }
            #expect(heard, "the second node never heard the first one's tag moves")
            // Now the real check: the cached `latest` on the second node follows the move within a second.
            let new = try await Self.push(first, repository, tag: "latest", marker: "new")
            var served = old
            let moved = ContinuousClock.now
            while served != new, ContinuousClock.now - moved < .seconds(5) {
                served = try await second.manifest(.tag(Tag("latest")!), in: repository, recordPull: false).digest
                if served != new { try await Task.sleep(for: .milliseconds(20)) }
            }
            #expect(served == new)
            #expect(ContinuousClock.now - moved < .seconds(2))
            // A deletion reaches the other node the same way.
            try await first.deleteManifest(.tag(Tag("latest")!), in: repository)
            let deleted = ContinuousClock.now
            var gone = false
            while !gone, ContinuousClock.now - deleted < .seconds(5) {
                do {
                    _ = try await second.manifest(.tag(Tag("latest")!), in: repository, recordPull: false)
                    try await Task.sleep(for: .milliseconds(20))
                } catch {
                    gone = true
                }
            }
            #expect(gone)
        }
    }

    @Test("a lease has one holder: renewed by it, refused to others, taken over when it expires, free once released")
    func leases() async throws {
        let run = { (stores: [MetadataStore]) async throws in
            let a = ClusterLeases(database: stores[0].database, holder: "node-a")
            let b = ClusterLeases(database: stores[stores.count - 1].database, holder: "node-b")
            let now: Int64 = 1_000_000
            #expect(try await a.acquire("gc", durationMillis: 60_000, now: now))
            #expect(try await b.acquire("gc", durationMillis: 60_000, now: now + 1) == false)
            #expect(try await a.acquire("gc", durationMillis: 60_000, now: now + 30_000))  // renewal: now held until now + 90 s
            #expect(try await b.acquire("gc", durationMillis: 60_000, now: now + 80_000) == false)
            #expect(try await b.acquire("lifecycle", durationMillis: 60_000, now: now))  // another name is independent
            #expect(try await b.acquire("gc", durationMillis: 60_000, now: now + 90_001))  // a's lease ran out
            #expect(try await a.acquire("gc", durationMillis: 60_000, now: now + 90_002) == false)
            try await b.release("gc")
            #expect(try await a.acquire("gc", durationMillis: 60_000, now: now + 90_003))
        }
        let directory = FileManager.default.temporaryDirectory.appendingPathComponent("wharf-leases-\(UUID().uuidString)")
        try FileManager.default.createDirectory(at: directory, withIntermediateDirectories: true)
        defer { try? FileManager.default.removeItem(at: directory) }
        let sqlite = try await MetadataStore.open(url: "sqlite:\(directory.path)/wharf.db", logger: Fixture.logger)
        do { try await run([sqlite]) } catch {
            await sqlite.close()
            throw error
        }
        await sqlite.close()
        _ = try await Self.withPostgres(nodes: 2) { try await run($0) }
    }

    @Test("scan jobs claimed by several nodes at once: each job once")
    func scanClaims() async throws {
        _ = try await Self.withPostgres(nodes: 3) { stores in
            let repository = RepositoryName("team/scanned")!
            let digests = (0..<40).map { Digest.of(ByteBuffer(string: "image \($0)")) }
            for digest in digests { try await stores[0].enqueueScan(digest, in: repository) }
            let claimed = try await withThrowingTaskGroup(of: [String].self) { group in
                for store in stores {
                    for _ in 0..<3 {
                        group.addTask {
                            var mine: [String] = []
                            while let job = try await store.claimNextScan() { mine.append(job.digest) }
                            return mine
                        }
                    }
                }
                var all: [String] = []
                for try await mine in group { all += mine }
                return all
            }
            #expect(claimed.count == digests.count)
            #expect(Set(claimed) == Set(digests.map(\.description)))
        }
    }
}
