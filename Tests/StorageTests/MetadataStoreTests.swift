import NIOCore
import OCI
import SQLKit
import Testing

@testable import Metadata

@Suite("Metadata store on SQLite and PostgreSQL")
struct MetadataStoreTests {
    let repository = RepositoryName("team/app")!

    func blob(_ content: String) -> BlobRecord {
        BlobRecord(digest: Digest.of(Array(content.utf8)), size: Int64(content.utf8.count))
    }

    func manifest(
        _ content: String, blobs: [BlobRecord] = [], children: [Digest] = [], subject: Digest? = nil,
        artifactType: String? = nil, annotations: String? = nil, tags: [String] = [], sparse: Bool = false
    ) -> NewManifest {
        NewManifest(
            repository: repository, digest: Digest.of(Array(content.utf8)), mediaType: MediaType.ociManifest,
            content: ByteBuffer(string: content), artifactType: artifactType, subject: subject, annotationsJSON: annotations,
            blobs: blobs.map { Descriptor(mediaType: "application/octet-stream", digest: $0.digest, size: $0.size) },
            children: children, allowMissingChildren: sparse, tags: tags.map { Tag($0)! }
        )
    }

    @Test("migrations are idempotent", arguments: Engine.available)
    func migrationsRerun(_ engine: Engine) async throws {
        try await TestDatabases.withStore(engine) { store in
            let applied = try await store.migrate(logger: TestDatabases.logger)
            #expect(applied.isEmpty)
        }
    }

    @Test("blobs are visible only in repositories they are linked to; mount and unlink", arguments: Engine.available)
    func blobVisibility(_ engine: Engine) async throws {
        try await TestDatabases.withStore(engine) { store in
            let layer = blob("layer")
            #expect(try await store.blob(layer.digest, in: repository) == nil)
            try await store.linkBlob(layer, to: repository)
            #expect(try await store.blob(layer.digest, in: repository) == layer)
            let other = RepositoryName("other/app")!
            #expect(try await store.blob(layer.digest, in: other) == nil)
            #expect(try await store.committedBlob(layer.digest) == layer)
            // Mount needs the source to hold it.
            #expect(try await store.mountBlob(layer.digest, from: RepositoryName("nowhere")!, to: other) == nil)
            #expect(try await store.mountBlob(layer.digest, from: repository, to: other) == layer)
            #expect(try await store.blob(layer.digest, in: other) == layer)
            // Linking twice is harmless.
            try await store.linkBlob(layer, to: repository)
            #expect(try await store.unlinkBlob(layer.digest, from: repository))
            #expect(try await !store.unlinkBlob(layer.digest, from: repository))
            #expect(try await store.blob(layer.digest, in: repository) == nil)
            #expect(try await store.blob(layer.digest, in: other) == layer)
        }
    }

    @Test("a manifest is stored only when its blobs are present with the declared sizes", arguments: Engine.available)
    func manifestReferences(_ engine: Engine) async throws {
        try await TestDatabases.withStore(engine) { store in
            let layer = blob("layer")
            await #expect(throws: MetadataError.missingBlob(layer.digest)) {
                try await store.putManifest(manifest("m1", blobs: [layer], tags: ["v1"]))
            }
            // The failed push left nothing behind, not even the repository it would have created.
            #expect(try await !store.repositoryExists(repository))
            #expect(try await store.resolveTag(Tag("v1")!, in: repository) == nil)
            try await store.linkBlob(layer, to: repository)
            let wrongSize = BlobRecord(digest: layer.digest, size: 999)
            await #expect(throws: MetadataError.sizeMismatch(layer.digest, declared: 999, actual: layer.size)) {
                try await store.putManifest(manifest("m1", blobs: [wrongSize]))
            }
            let changes = try await store.putManifest(manifest("m1", blobs: [layer], tags: ["v1"]))
            #expect(changes == [TagChange(tag: "v1", previous: nil, current: Digest.of(Array("m1".utf8)))])
            let record = try #require(try await store.manifest(tagged: Tag("v1")!, in: repository))
            #expect(String(buffer: record.content) == "m1")
            #expect(record.mediaType == MediaType.ociManifest)
            // Pushing the same manifest and tag again changes nothing.
            #expect(try await store.putManifest(manifest("m1", blobs: [layer], tags: ["v1"])).isEmpty)
        }
    }

    @Test("index children must exist unless the index may be sparse", arguments: Engine.available)
    func indexChildren(_ engine: Engine) async throws {
        try await TestDatabases.withStore(engine) { store in
            let child = Digest.of(Array("child".utf8))
            await #expect(throws: MetadataError.missingManifest(child)) {
                try await store.putManifest(manifest("index", children: [child]))
            }
            _ = try await store.putManifest(manifest("index", children: [child], sparse: true))
            #expect(try await store.manifest(Digest.of(Array("index".utf8)), in: repository) != nil)
            _ = try await store.putManifest(manifest("child"))
            _ = try await store.putManifest(manifest("index2", children: [child]))
        }
    }

    @Test("tags move atomically and keep a history; deleting a manifest removes its tags", arguments: Engine.available)
    func tagsAndHistory(_ engine: Engine) async throws {
        try await TestDatabases.withStore(engine) { store in
            let one = Digest.of(Array("one".utf8)), two = Digest.of(Array("two".utf8))
            _ = try await store.putManifest(manifest("one", tags: ["latest", "stable"]))
            _ = try await store.putManifest(manifest("two", tags: ["latest"]))
            #expect(try await store.resolveTag(Tag("latest")!, in: repository) == two)
            #expect(try await store.resolveTag(Tag("stable")!, in: repository) == one)
            let history = try await store.tagHistory(Tag("latest")!, in: repository)
            #expect(history.map(\.current) == [two, one])
            #expect(history.first?.previous == one)

            #expect(try await store.deleteTag(Tag("latest")!, in: repository) == two)
            #expect(try await store.deleteTag(Tag("latest")!, in: repository) == nil)
            #expect(try await store.manifest(two, in: repository) != nil)  // only the tag went

            #expect(try await store.deleteManifest(one, in: repository) == ["stable"])
            #expect(try await store.deleteManifest(one, in: repository) == nil)
            #expect(try await store.resolveTag(Tag("stable")!, in: repository) == nil)
            #expect(try await store.tagHistory(Tag("stable")!, in: repository).first?.current == nil)
        }
    }

    @Test("tag lists and the catalog page in ASCII order", arguments: Engine.available)
    func pagination(_ engine: Engine) async throws {
        try await TestDatabases.withStore(engine) { store in
            let tags = ["v1.10", "v1.9", "Latest", "latest", "a-b", "ab", "a_b", "A", "0"]
            _ = try await store.putManifest(manifest("m", tags: tags))
            let ascii = tags.sorted()  // Swift compares strings of ASCII by code point, like Go's sort.Strings
            #expect(try await store.listTags(in: repository, after: nil, limit: 100) == ascii)
            #expect(try await store.listTags(in: repository, after: nil, limit: 3) == Array(ascii.prefix(3)))
            #expect(try await store.listTags(in: repository, after: ascii[2], limit: 3) == Array(ascii[3..<6]))
            #expect(try await store.listTags(in: RepositoryName("missing")!, after: nil, limit: 3) == nil)
            #expect(try await store.listTags(in: repository, after: ascii[7], limit: 3) == [ascii[8]])
            #expect(try await store.listTags(in: repository, after: ascii[8], limit: 3) == [])

            for name in ["b/x", "a-b/x", "a/x", "a.b/x", "a_b/x"] {
                try await store.linkBlob(blob(name), to: RepositoryName(name)!)
            }
            #expect(try await store.listTags(in: RepositoryName("a/x")!, after: nil, limit: 10) == [])  // a repository without tags
            let names = ["a-b/x", "a.b/x", "a/x", "a_b/x", "b/x", "team/app"]
            #expect(try await store.listRepositories(after: nil, limit: 100) == names)
            #expect(try await store.listRepositories(after: "a.b/x", limit: 2) == ["a/x", "a_b/x"])
        }
    }

    @Test("aggregated name lists split on commas and come out in byte order, mended when the database's order is not")
    func splitNames() {
        #expect(MetadataStore.splitNames("a-b/x,a/x,b") == ["a-b/x", "a/x", "b"])
        #expect(MetadataStore.splitNames("only") == ["only"])
        #expect(MetadataStore.splitNames("b,a,B,_x,0") == ["0", "B", "_x", "a", "b"])
        #expect(MetadataStore.splitNames("latest,Latest") == ["Latest", "latest"])  // a case-insensitive collation's order
    }

    @Test("referrers: by subject, filtered by artifact type, before the subject exists", arguments: Engine.available)
    func referrers(_ engine: Engine) async throws {
        try await TestDatabases.withStore(engine) { store in
            let subject = Digest.of(Array("subject".utf8))
            _ = try await store.putManifest(manifest("sig", subject: subject, artifactType: "application/vnd.dev.cosign", annotations: #"{"k":"v"}"#))
            _ = try await store.putManifest(manifest("sbom", subject: subject, artifactType: "application/spdx+json"))
            _ = try await store.putManifest(manifest("unrelated"))
            let all = try await store.referrers(of: subject, in: repository, artifactType: nil)
            #expect(Set(all.map(\.digest)) == [Digest.of(Array("sig".utf8)), Digest.of(Array("sbom".utf8))])
            let filtered = try await store.referrers(of: subject, in: repository, artifactType: "application/spdx+json")
            #expect(filtered.map(\.digest) == [Digest.of(Array("sbom".utf8))])
            #expect(all.first { $0.digest == Digest.of(Array("sig".utf8)) }?.annotationsJSON == #"{"k":"v"}"#)
            #expect(try await store.referrers(of: subject, in: RepositoryName("elsewhere")!, artifactType: nil).isEmpty)
        }
    }

    @Test("upload sessions and pull times", arguments: Engine.available)
    func uploadsAndPulls(_ engine: Engine) async throws {
        try await TestDatabases.withStore(engine) { store in
            let upload = UploadRecord(id: "u1", repository: repository.value, size: 0, algorithm: .sha512, createdAt: 1, updatedAt: 1)
            try await store.createUpload(upload)
            try await store.updateUpload("u1", size: 42)
            let loaded = try #require(try await store.upload("u1"))
            #expect(loaded.size == 42)
            #expect(loaded.algorithm == .sha512)
            #expect(try await store.uploads(notUpdatedSince: Timestamp.nowMillis() + 1000, limit: 10).map(\.id) == ["u1"])
            #expect(try await store.deleteUpload("u1"))
            #expect(try await !store.deleteUpload("u1"))
            #expect(try await store.upload("u1") == nil)

            _ = try await store.putManifest(manifest("pulled"))
            let digest = Digest.of(Array("pulled".utf8))
            try await store.recordPulls([(repository: repository.value, digest: digest, at: 5000), (repository: repository.value, digest: digest, at: 4000)])
            #expect(try await store.manifest(digest, in: repository)?.lastPulledAt == 5000)
        }
    }

    @Test("every commit is durable: SQLite runs synchronous=FULL, PostgreSQL synchronous_commit on", arguments: Engine.available)
    func commitsAreDurable(_ engine: Engine) async throws {
        try await TestDatabases.withStore(engine) { store in
            let database = store.database
            let setting: @Sendable (any SQLDatabase) async throws -> String = { sql in
                switch database.dialect {
                case .sqlite:
                    let row = try await sql.raw("PRAGMA synchronous").first()
                    return try "\(row?.decode(column: "synchronous", as: Int.self) ?? -1)"
                case .postgres:
                    let row = try await sql.raw("SHOW synchronous_commit").first()
                    return try row?.decode(column: "synchronous_commit", as: String.self) ?? "?"
                }
            }
            #expect(try await database.transaction { try await setting($0) } == (database.dialect == .sqlite ? "2" : "on"))
            // An upload's size (once committed with relaxed durability) is an ordinary commit now.
            try await store.createUpload(UploadRecord(id: "sized", repository: "team/app", size: 0, algorithm: .sha256, createdAt: 1, updatedAt: 1))
            try await store.updateUpload("sized", size: 42)
            #expect(try await store.upload("sized")?.size == 42)
        }
    }

    @Test("concurrent writers do not lose updates", arguments: Engine.available)
    func concurrentWrites(_ engine: Engine) async throws {
        try await TestDatabases.withStore(engine) { store in
            try await withThrowingTaskGroup(of: Void.self) { group in
                for i in 0..<40 {
                    group.addTask {
                        let b = BlobRecord(digest: Digest.of(Array("blob\(i)".utf8)), size: Int64(i))
                        try await store.linkBlob(b, to: RepositoryName("concurrent/r\(i % 5)")!)
                        _ = try await store.putManifest(
                            NewManifest(
                                repository: RepositoryName("concurrent/r\(i % 5)")!, digest: Digest.of(Array("m\(i)".utf8)),
                                mediaType: MediaType.ociManifest, content: ByteBuffer(string: "m\(i)"), artifactType: nil, subject: nil,
                                annotationsJSON: nil, blobs: [Descriptor(mediaType: "x", digest: b.digest, size: b.size)], children: [],
                                allowMissingChildren: false, tags: [Tag("t\(i)")!, Tag("shared")!]
                            ))
                    }
                }
                try await group.waitForAll()
            }
            for r in 0..<5 {
                let tags = try #require(try await store.listTags(in: RepositoryName("concurrent/r\(r)")!, after: nil, limit: 100))
                #expect(tags.count == 9)  // 8 own tags + "shared"
            }
        }
    }
}
