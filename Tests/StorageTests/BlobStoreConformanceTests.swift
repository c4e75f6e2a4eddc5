import AWSSigning
import AsyncHTTPClient
import BlobStore
import Foundation
import Logging
import NIOCore
import OCI
import Testing

@testable import S3BlobStore

/// The blob stores every conformance test runs on: the filesystem always, S3 when the test script
/// started an S3 server (`scripts/s3.sh`: moto with signature checking). Under `CI=true` a missing
/// S3 server is a failure, not a skip.
enum StoreKind: String, CaseIterable, CustomTestStringConvertible, Sendable {
    case filesystem
    case s3

    var testDescription: String { rawValue }

    static var available: [StoreKind] {
        let environment = ProcessInfo.processInfo.environment
        if environment["WHARF_TEST_S3_ENDPOINT"] != nil || environment["CI"] == "true" { return [.filesystem, .s3] }
        return [.filesystem]
    }
}

enum TestBlobStores {
    static let logger: Logger = {
        var logger = Logger(label: "test")
        logger.logLevel = .warning
        return logger
    }()

    static func s3Settings(prefix: String, secret: String? = nil) throws -> S3Settings {
        let environment = ProcessInfo.processInfo.environment
        guard let endpoint = environment["WHARF_TEST_S3_ENDPOINT"], let key = environment["WHARF_TEST_S3_ACCESS_KEY"],
            let storedSecret = environment["WHARF_TEST_S3_SECRET_KEY"], let bucket = environment["WHARF_TEST_S3_BUCKET"]
        else {
            throw TestSetupError("CI=true but WHARF_TEST_S3_ENDPOINT is not set: the test script must start the S3 server (scripts/s3.sh)")
        }
        return S3Settings(
            bucket: bucket, endpoint: endpoint, pathStyle: true, prefix: prefix,
            credentials: AWSCredentials(accessKeyID: key, secretAccessKey: secret ?? storedSecret), partSize: S3Settings.minimumPartSize,
            maximumAttempts: 2)
    }

    /// A fresh, empty store of `kind`: a new folder, or a new key prefix in the test bucket.
    static func withStore<T>(_ kind: StoreKind, _ body: (any BlobStore) async throws -> T) async throws -> T {
        switch kind {
        case .filesystem:
            let root = FileManager.default.temporaryDirectory.appendingPathComponent("wharf-conformance-\(UUID().uuidString)")
            defer { try? FileManager.default.removeItem(at: root) }
            let store = FileSystemBlobStore(root: root.path)
            try await store.prepare()
            return try await body(store)
        case .s3:
            let http = HTTPClient(eventLoopGroupProvider: .singleton)
            do {
                let store = try S3BlobStore(settings: try s3Settings(prefix: "conformance-\(UUID().uuidString)"), http: http, logger: logger)
                try await store.prepare()
                let result = try await body(store)
                try await http.shutdown()
                return result
            } catch {
                try? await http.shutdown()
                throw error
            }
        }
    }
}

/// What every `BlobStore` must do (as Distribution's storage driver suite holds each driver to one
/// contract): the filesystem store and the S3 store run the same tests.
@Suite("Blob store conformance", .serialized)
struct BlobStoreConformanceTests {
    static func bytes(_ count: Int, seed: UInt8 = 1) -> ByteBuffer {
        // A 64 KiB pattern, each copy stamped with its index: no two parts of a blob are equal.
        var pattern = [UInt8](repeating: 0, count: 1 << 16)
        var value = seed
        for index in pattern.indices {
            value = value &* 31 &+ UInt8(truncatingIfNeeded: index >> 7)
            pattern[index] = value
        }
        var buffer = ByteBuffer()
        buffer.reserveCapacity(count)
        var copy: UInt32 = 0
        while buffer.readableBytes < count {
            pattern.withUnsafeMutableBytes { $0.storeBytes(of: copy, as: UInt32.self) }
            buffer.writeBytes(pattern.prefix(count - buffer.readableBytes))
            copy += 1
        }
        return buffer
    }

    static func read(_ store: any BlobStore, _ digest: Digest, range: ClosedRange<Int64>? = nil) async throws -> ByteBuffer? {
        guard let reader = try await store.open(digest) else { return nil }
        var collected = ByteBuffer()
        try await reader.stream(range: range) { chunk in
            var chunk = chunk
            collected.writeBuffer(&chunk)
        }
        return collected
    }

    static func readUpload(_ store: any BlobStore, _ id: String) async throws -> ByteBuffer {
        var collected = ByteBuffer()
        try await store.readUpload(id) { chunk in
            var chunk = chunk
            collected.writeBuffer(&chunk)
        }
        return collected
    }

    /// Writes `content` in `pieces` of the given size through one writer.
    static func append(_ store: any BlobStore, _ id: String, at offset: Int64, _ content: ByteBuffer, pieces: Int) async throws {
        let writer = try await store.appendToUpload(id, at: offset)
        var remaining = content
        while remaining.readableBytes > 0 {
            try await writer.write(remaining.readSlice(length: min(pieces, remaining.readableBytes))!)
        }
        try await writer.close()
    }

    @Test("small content: put, size, open, whole and ranged reads, listing, delete", arguments: StoreKind.available)
    func putAndRead(kind: StoreKind) async throws {
        try await TestBlobStores.withStore(kind) { store in
            let content = ByteBuffer(string: "{\"architecture\":\"amd64\"}")
            let digest = Digest.of(content)
            #expect(try await store.size(of: digest) == nil)
            #expect(try await store.open(digest) == nil)
            try await store.put(content, as: digest)
            #expect(try await store.size(of: digest) == Int64(content.readableBytes))
            #expect(try await Self.read(store, digest) == content)
            #expect(try await Self.read(store, digest, range: 1...14) == content.getSlice(at: 1, length: 14))
            let reader = try #require(try await store.open(digest))
            await #expect(throws: (any Error).self) { try await reader.stream(range: 0...Int64(content.readableBytes)) { _ in } }
            var listed: [Digest] = []
            for try await blob in store.allBlobs() { listed.append(blob) }
            #expect(listed == [digest])
            #expect(try await store.blobModified(digest) != nil)
            try await store.delete(digest)
            #expect(try await store.size(of: digest) == nil)
        }
    }

    @Test("a chunked upload across several parts reads back whole and publishes byte-identical", arguments: StoreKind.available)
    func chunkedUploadAcrossParts(kind: StoreKind) async throws {
        try await TestBlobStores.withStore(kind) { store in
            // 12 MiB + 7 bytes in three PATCHes of uneven sizes, written in 1 MiB - 1 pieces:
            // crosses S3's 5 MiB part boundaries inside a request and between requests.
            let content = Self.bytes(12 << 20 + 7)
            let digest = Digest.of(content)
            try await store.createUpload("chunked", resumable: true)
            #expect(try await store.uploadSize("chunked") == 0)
            let cuts = [0, 3 << 20 + 1, 9 << 20, content.readableBytes]
            for index in 0..<3 {
                let piece = content.getSlice(at: cuts[index], length: cuts[index + 1] - cuts[index])!
                try await Self.append(store, "chunked", at: Int64(cuts[index]), piece, pieces: (1 << 20) - 1)
                #expect(try await store.uploadSize("chunked") == Int64(cuts[index + 1]))
            }
            #expect(try await Self.readUpload(store, "chunked") == content)
            #expect(try await store.uploadModified("chunked") != nil)
            #expect(try await store.allUploads() == ["chunked"])
            #expect(try await store.size(of: digest) == nil)
            try await store.commitUpload("chunked", as: digest)
            #expect(try await store.uploadSize("chunked") == nil)
            #expect(try await store.allUploads().isEmpty)
            #expect(try await store.size(of: digest) == Int64(content.readableBytes))
            let stored = try #require(try await Self.read(store, digest))
            #expect(Digest.of(stored) == digest)
            let tail = try #require(try await Self.read(store, digest, range: Int64(content.readableBytes - 100)...Int64(content.readableBytes - 1)))
            #expect(tail == content.getSlice(at: content.readableBytes - 100, length: 100))
            let middle = try #require(try await Self.read(store, digest, range: Int64(1 << 20 - 3)...Int64(9 << 20 + 5)))
            #expect(middle == content.getSlice(at: 1 << 20 - 3, length: 8 << 20 + 9))
        }
    }

    @Test("appending at an earlier offset discards the bytes no client was told about", arguments: StoreKind.available)
    func appendTruncates(kind: StoreKind) async throws {
        try await TestBlobStores.withStore(kind) { store in
            let first = Self.bytes(7 << 20, seed: 3)
            try await store.createUpload("cut", resumable: true)
            try await Self.append(store, "cut", at: 0, first, pieces: 1 << 20)
            // A request that died after 3 MiB were acknowledged: the next PATCH starts there.
            let acknowledged = 3 << 20 + 5
            let second = Self.bytes(4 << 20, seed: 9)
            try await Self.append(store, "cut", at: Int64(acknowledged), second, pieces: 300_000)
            var expected = first.getSlice(at: 0, length: acknowledged)!
            var copy = second
            expected.writeBuffer(&copy)
            #expect(try await store.uploadSize("cut") == Int64(expected.readableBytes))
            #expect(try await Self.readUpload(store, "cut") == expected)
            let digest = Digest.of(expected)
            try await store.commitUpload("cut", as: digest)
            #expect(try await Self.read(store, digest) == expected)
        }
    }

    @Test("an empty upload publishes the empty blob; an unknown upload is reported", arguments: StoreKind.available)
    func emptyAndUnknownUploads(kind: StoreKind) async throws {
        try await TestBlobStores.withStore(kind) { store in
            try await store.createUpload("empty", resumable: true)
            try await Self.append(store, "empty", at: 0, ByteBuffer(), pieces: 1)
            let digest = Digest.ofEmpty(.sha256)
            try await store.commitUpload("empty", as: digest)
            #expect(try await store.size(of: digest) == 0)
            #expect(try await Self.read(store, digest) == ByteBuffer())
            await #expect {
                _ = try await store.appendToUpload("missing", at: 0)
            } throws: { error in
                if case BlobStoreError.uploadNotFound = error { return true }
                return false
            }
            #expect(try await store.uploadSize("missing") == nil)
            try await store.deleteUpload("missing")  // not an error
        }
    }

    @Test("publishing content the store already holds keeps the first copy and drops the upload", arguments: StoreKind.available)
    func duplicatePublish(kind: StoreKind) async throws {
        try await TestBlobStores.withStore(kind) { store in
            let content = ByteBuffer(string: "same layer, pushed twice")
            let digest = Digest.of(content)
            for id in ["one", "two"] {
                try await store.createUpload(id, resumable: true)
                try await Self.append(store, id, at: 0, content, pieces: 5)
                try await store.publishUpload(id, as: digest, prepared: false)
            }
            #expect(try await Self.read(store, digest) == content)
            // The duplicate's bytes may be removed after publishing returns (the contract allows it).
            let deadline = ContinuousClock.now + .seconds(5)
            while try await !store.allUploads().isEmpty, ContinuousClock.now < deadline { try await Task.sleep(for: .milliseconds(10)) }
            #expect(try await store.allUploads().isEmpty)
        }
    }

    @Test("deleting an upload removes every byte of it", arguments: StoreKind.available)
    func deleteUpload(kind: StoreKind) async throws {
        try await TestBlobStores.withStore(kind) { store in
            try await store.createUpload("gone", resumable: true)
            try await Self.append(store, "gone", at: 0, Self.bytes(6 << 20), pieces: 1 << 20)
            try await store.createUpload("kept", resumable: false)
            #expect(Set(try await store.allUploads()) == ["gone", "kept"])
            try await store.deleteUpload("gone")
            #expect(try await store.uploadSize("gone") == nil)
            #expect(try await store.allUploads() == ["kept"])
        }
    }

    @Test("trash, restore and empty: a trashed blob is invisible, a restored one is back, an emptied one is gone", arguments: StoreKind.available)
    func trash(kind: StoreKind) async throws {
        try await TestBlobStores.withStore(kind) { store in
            let contents = (0..<3).map { ByteBuffer(string: "blob \($0)") }
            let digests = contents.map { Digest.of($0) }
            for (content, digest) in zip(contents, digests) { try await store.put(content, as: digest) }
            #expect(try await store.trash(digests[0]))
            #expect(try await store.trash(Digest.of(ByteBuffer(string: "never stored"))) == false)
            try await store.trash([digests[1], digests[2]])
            #expect(try await store.size(of: digests[0]) == nil)
            #expect(Set(try await store.trashedBlobs()) == Set(digests))
            try await store.restore(digests[0])
            #expect(try await Self.read(store, digests[0]) == contents[0])
            // A blob pushed again while its old copy sat in the trash: the new copy stays.
            try await store.put(contents[1], as: digests[1])
            try await store.restore(digests[1])
            #expect(try await Self.read(store, digests[1]) == contents[1])
            try await store.emptyTrash([digests[2]])
            #expect(try await store.trashedBlobs().isEmpty)
            #expect(try await store.size(of: digests[2]) == nil)
        }
    }
}

@Suite("S3 blob store")
struct S3BlobStoreTests {
    var enabled: Bool { StoreKind.available.contains(.s3) }

    @Test("a wrong secret is refused by the server's signature check, and the start says why")
    func wrongSecretRefused() async throws {
        guard enabled else { return }
        let http = HTTPClient(eventLoopGroupProvider: .singleton)
        defer { _ = http.shutdown() }
        let store = try S3BlobStore(
            settings: try TestBlobStores.s3Settings(prefix: "wrong", secret: "not-the-secret"), http: http, logger: TestBlobStores.logger)
        await #expect {
            try await store.prepare()
        } throws: { error in
            "\(error)".contains("SignatureDoesNotMatch")
        }
    }

    @Test("blobs live at <prefix>/blobs/<alg>/<xx>/<hex>, uploads as part-sized objects, and nothing else is left")
    func layout() async throws {
        guard enabled else { return }
        let http = HTTPClient(eventLoopGroupProvider: .singleton)
        defer { _ = http.shutdown() }
        let prefix = "layout-\(UUID().uuidString)"
        let store = try S3BlobStore(settings: try TestBlobStores.s3Settings(prefix: prefix), http: http, logger: TestBlobStores.logger)
        let content = BlobStoreConformanceTests.bytes(11 << 20)
        try await store.createUpload("u", resumable: true)
        try await BlobStoreConformanceTests.append(store, "u", at: 0, content, pieces: 1 << 20)
        let parts = try await store.client.list(prefix: "\(prefix)/uploads/u/")
        #expect(parts.map(\.size) == [5 << 20, 5 << 20, 1 << 20])
        #expect(parts.map(\.key).last == "\(prefix)/uploads/u/00000000000010485760")
        let digest = Digest.of(content)
        try await store.commitUpload("u", as: digest)
        let all = try await store.client.list(prefix: "\(prefix)/")
        #expect(all.map(\.key) == ["\(prefix)/blobs/sha256/\(digest.encoded.prefix(2))/\(digest.encoded)"])
        #expect(all.first?.size == Int64(content.readableBytes))
    }

    @Test("settings that cannot work are refused with every reason")
    func settingsProblems() throws {
        let settings = S3Settings(
            bucket: "No_Such", endpoint: "ftp://x", prefix: "/a//b", credentials: AWSCredentials(accessKeyID: "a", secretAccessKey: "b"), partSize: 1 << 20)
        let problems = settings.problems()
        #expect(problems.count == 4)
        #expect(S3Endpoint("http://127.0.0.1:9000")?.hostHeader == "127.0.0.1:9000")
        #expect(S3Endpoint("https://s3.amazonaws.com:443")?.hostHeader == "s3.amazonaws.com")
        #expect(S3Endpoint("http://host:99999") == nil)
    }

    @Test("dates in S3's two formats parse to the same instant; malformed ones give nil")
    func dates() {
        #expect(ISODate.millis("2026-12-07T18:24:47.250Z") == 1_796_667_887_250)
        #expect(HTTPDate.millis("Mon, 07 Dec 2026 18:24:47 GMT") == 1_796_667_887_000)
        #expect(ISODate.millis("2026-13-07T18:24:47.000Z") == nil)
        #expect(HTTPDate.millis("Mon, 07 Foo 2026 18:24:47 GMT") == nil)
        #expect(SigV4Signer.timestamps(1_796_667_887) == ("20261207T182447Z", "20261207"))
    }
}
