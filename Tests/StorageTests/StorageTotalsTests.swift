import NIOCore
import OCI
import Synchronization
import Testing

@testable import Metadata

/// The figures behind `/metrics`' storage gauges (issue 19), on both engines: physical bytes count a
/// blob once per namespace, logical bytes count it once per manifest that references it.
@Suite("Storage totals on SQLite and PostgreSQL")
struct StorageTotalsTests {
    func manifest(_ content: String, in repository: String, blobs: [BlobRecord], tags: [String] = []) -> NewManifest {
        NewManifest(
            repository: RepositoryName(repository)!, digest: Digest.of(Array(content.utf8)), mediaType: MediaType.ociManifest,
            content: ByteBuffer(string: content), artifactType: nil, subject: nil, annotationsJSON: nil,
            blobs: blobs.map { Descriptor(mediaType: "application/octet-stream", digest: $0.digest, size: $0.size) },
            children: [], allowMissingChildren: false, tags: tags.map { Tag($0)! })
    }

    @Test("blobs, bytes, repositories, manifests, uploads and per-namespace bytes", arguments: Engine.available)
    func totals(_ engine: Engine) async throws {
        try await TestDatabases.withStore(engine) { store in
            #expect(try await store.storageTotals() == MetadataStore.StorageTotals())
            let shared = BlobRecord(digest: Digest.of(Array("shared layer".utf8)), size: 1000)
            let own = BlobRecord(digest: Digest.of(Array("own layer".utf8)), size: 300)
            let other = BlobRecord(digest: Digest.of(Array("other team".utf8)), size: 50)
            for (blob, repository) in [(shared, "team/a"), (shared, "team/b"), (own, "team/b"), (shared, "ops/x"), (other, "ops/x")] {
                try await store.linkBlob(blob, to: RepositoryName(repository)!)
            }
            let first = "first manifest", second = "second manifest", third = "ops manifest!"
            _ = try await store.putManifest(manifest(first, in: "team/a", blobs: [shared], tags: ["v1"]))
            _ = try await store.putManifest(manifest(second, in: "team/b", blobs: [shared, own]))
            _ = try await store.putManifest(manifest(third, in: "ops/x", blobs: [shared, other]))
            try await store.createUpload(UploadRecord(id: "u1", repository: "team/a", size: 0, algorithm: .sha256, createdAt: 1, updatedAt: 1))

            let totals = try await store.storageTotals()
            #expect(totals.blobs == 3)
            #expect(totals.blobBytes == 1350)
            #expect(totals.repositories == 3)
            #expect(totals.manifests == 3)
            #expect(totals.uploadSessions == 1)
            #expect(totals.scanQueue == 0)
            // team: the shared layer once plus its own layer; ops: the shared layer again plus its own.
            #expect(totals.namespaces["team"]?.physicalBytes == 1300)
            #expect(totals.namespaces["ops"]?.physicalBytes == 1050)
            // Logical: every manifest's blobs and its own bytes.
            #expect(totals.namespaces["team"]?.logicalBytes == Int64(1000 + first.utf8.count + 1000 + 300 + second.utf8.count))
            #expect(totals.namespaces["ops"]?.logicalBytes == Int64(1000 + 50 + third.utf8.count))
            try await store.ping()
        }
    }
}

@Suite("Pull time update exclusions on SQLite and PostgreSQL")
struct PullTimeExclusionTests {
    @Test("added once, bounded by the limit in the same transaction, removed once", arguments: Engine.available)
    func exclusions(_ engine: Engine) async throws {
        try await TestDatabases.withStore(engine) { store in
            let scanner = "arn:aws:iam::123456789012:role/robot/scanner"
            #expect(try await store.addPullTimeExclusion(scanner, limit: 2, now: 5) == .added(.init(principalARN: scanner, createdAt: 5)))
            #expect(try await store.addPullTimeExclusion(scanner, limit: 2) == .alreadyExists)
            let second = try await store.addPullTimeExclusion("arn:aws:iam::123456789012:user/b", limit: 2)
            #expect(second != .limitReached)
            #expect(try await store.addPullTimeExclusion("arn:aws:iam::123456789012:user/c", limit: 2) == .limitReached)
            #expect(
                try await store.pullTimeExclusions().map(\.principalARN) == [
                    "arn:aws:iam::123456789012:role/robot/scanner", "arn:aws:iam::123456789012:user/b",
                ])
            #expect(try await store.removePullTimeExclusion(scanner))
            let again = try await store.removePullTimeExclusion(scanner)
            #expect(!again)
            #expect(try await store.pullTimeExclusions().count == 1)
        }
    }
}

@Suite("Event outbox and webhook deliveries on SQLite and PostgreSQL")
struct EventOutboxTests {
    @Test("events are written with the change, fanned out once, and delivered in order per repository", arguments: Engine.available)
    func outbox(_ engine: Engine) async throws {
        try await TestDatabases.withStore(engine) { store in
            let repository = RepositoryName("team/app")!
            let config = BlobRecord(digest: Digest.of(Array("config".utf8)), size: 6)
            try await store.linkBlob(config, to: repository)
            func manifest(_ text: String, tag: String) -> NewManifest {
                var manifest = NewManifest(
                    repository: repository, digest: Digest.of(Array(text.utf8)), mediaType: MediaType.ociManifest,
                    content: ByteBuffer(string: text), artifactType: nil, subject: nil, annotationsJSON: nil,
                    blobs: [Descriptor(mediaType: "application/octet-stream", digest: config.digest, size: 6)], children: [],
                    allowMissingChildren: false, tags: [Tag(tag)!])
                manifest.actor = "alice"
                return manifest
            }
            _ = try await store.putManifest(manifest("one", tag: "v1"))
            _ = try await store.putManifest(manifest("two", tag: "v1"))  // moves v1: a push and a tag move
            _ = try await store.deleteTag(Tag("v1")!, in: repository, actor: "bob")
            // A refused change writes no event.
            await #expect(throws: MetadataError.self) {
                var missing = manifest("three", tag: "v3")
                missing.blobs = [Descriptor(mediaType: "x", digest: Digest.of(Array("absent".utf8)), size: 1)]
                _ = try await store.putManifest(missing)
            }
            let hook = try await store.createWebhook(namespace: "team", url: "http://h/x", sealedSecret: "s", format: "distribution", events: ["push"])
            let seen = Mutex<[RegistryEvent]>([])
            let taken = try await store.fanOutEvents(limit: 100) { event in
                seen.withLock { $0.append(event) }
                return [.init(webhookID: hook.id, body: "\(event.kind.rawValue) \(event.tag ?? "")")]
            }
            #expect(taken == 4)
            let events = seen.withLock { $0 }
            #expect(events.map(\.kind) == [.push, .push, .tagMove, .delete])
            #expect(events.map(\.actor) == ["alice", "alice", "alice", "bob"] && events.allSatisfy { $0.namespace == "team" })
            #expect(try await store.fanOutEvents(limit: 100) { _ in [] } == 0)  // taken once only

            // One due delivery per webhook and repository at a time, oldest first.
            var due = try await store.dueDeliveries(now: Timestamp.nowMillis(), limit: 10)
            #expect(due.map(\.body) == ["push v1"])
            try await store.recordDeliveryAttempt(due[0].id, delivered: false, status: 500, error: "the receiver answered 500", retryAt: 0)
            due = try await store.dueDeliveries(now: Timestamp.nowMillis(), limit: 10)
            #expect(due.map(\.body) == ["push v1"] && due[0].attempts == 1 && due[0].lastStatus == 500)
            try await store.recordDeliveryAttempt(due[0].id, delivered: true, status: 204, error: nil, retryAt: nil)
            let delivered = due[0].id
            due = try await store.dueDeliveries(now: Timestamp.nowMillis(), limit: 10)
            #expect(due.map(\.body) == ["push v1"] && due[0].id != delivered)  // the second push's delivery, next in line
            let log = try await store.deliveries(of: hook.id, limit: 10)
            #expect(log.count == 4 && log.last?.status == .delivered)
            #expect(try await store.redeliver(log.last!.id, of: hook.id))
            #expect(try await store.deleteWebhook(hook.id))
            #expect(try await store.deliveries(of: hook.id, limit: 10).isEmpty)
        }
    }
}

@Test("RFC 3339 timestamps from Unix milliseconds, against Python's datetime")
func rfc3339Timestamps() {
    let expected: [(Int64, String)] = [
        (0, "1970-01-01T00:00:00.000Z"), (951_782_400_000, "2000-02-29T00:00:00.000Z"), (1_796_600_000_123, "2026-12-06T23:33:20.123Z"),
        (-1, "1969-12-31T23:59:59.999Z"), (4_102_444_799_999, "2099-12-31T23:59:59.999Z"), (1_709_164_800_500, "2024-02-29T00:00:00.500Z"),
    ]
    for (millis, text) in expected { #expect(Timestamp.rfc3339(millis: millis) == text, "\(millis)") }
}

@Suite("Storage history and egress on SQLite and PostgreSQL")
struct StorageHistoryTests {
    @Test("egress adds up per day and repository; a day's snapshot keeps its latest figures", arguments: Engine.available)
    func history(_ engine: Engine) async throws {
        try await TestDatabases.withStore(engine) { store in
            try await store.addEgress(["team/a": 100, "team/b": 5], day: "2026-12-01")
            try await store.addEgress(["team/a": 50], day: "2026-12-01")
            try await store.addEgress(["team/a": 7], day: "2026-12-02")
            #expect(try await store.egress(since: "2026-12-01") == ["team/a": 157, "team/b": 5])
            #expect(try await store.egress(since: "2026-12-02") == ["team/a": 7])
            var totals = MetadataStore.StorageTotals()
            totals.blobBytes = 10
            totals.namespaces = ["team": .init(logicalBytes: 30, physicalBytes: 10)]
            try await store.recordSnapshot(day: "2026-12-01", totals: totals)
            totals.blobBytes = 12
            totals.namespaces = ["team": .init(logicalBytes: 40, physicalBytes: 12)]
            try await store.recordSnapshot(day: "2026-12-01", totals: totals)
            try await store.recordSnapshot(day: "2026-12-02", totals: totals)
            let days = try await store.registrySnapshots(since: "2026-11-01")
            #expect(days.map(\.day) == ["2026-12-01", "2026-12-02"] && days[0].physicalBytes == 12 && days[0].logicalBytes == 40)
            let team = try await store.snapshots(since: "2026-12-02")["team"]
            #expect(team?.count == 1 && team?.first?.day == "2026-12-02" && team?.first?.physicalBytes == 12)
            #expect(MetadataStore.day(1_796_600_000_123) == "2026-12-06")
        }
    }
}
