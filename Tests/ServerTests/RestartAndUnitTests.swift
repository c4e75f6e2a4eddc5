import Foundation
import HTTPTypes
import HummingbirdTesting
import Metadata
import NIOCore
import OCI
import Testing

@testable import Registry
@testable import Server

@Suite("Restarts and persistence")
struct RestartTests {
    @Test("a chunked upload survives a server restart and completes afterwards")
    func resumeAfterRestart() async throws {
        let data = try Harness.temporaryDirectory()
        defer { try? FileManager.default.removeItem(at: data) }
        let part1 = String(repeating: "a", count: 100_000), part2 = String(repeating: "b", count: 50_000)
        let location = try await Harness.withServer(data: data) { client, _ in
            let location = try #require(try await client.request(.post, "/v2/team/app/blobs/uploads/").header("Location"))
            let patch = try await client.request(.patch, location, headers: [.contentRange: "0-\(part1.utf8.count - 1)"], body: ByteBuffer(string: part1))
            #expect(patch.status == .accepted)
            return location
        }
        try await Harness.withServer(data: data) { client, _ in
            let status = try await client.request(.get, location)
            #expect(status.status == .noContent)
            #expect(status.header("Range") == "0-\(part1.utf8.count - 1)")
            let patch = try await client.request(
                .patch, location, headers: [.contentRange: "\(part1.utf8.count)-\(part1.utf8.count + part2.utf8.count - 1)"], body: ByteBuffer(string: part2))
            #expect(patch.status == .accepted)
            let digest = Digest.of(Array((part1 + part2).utf8))
            #expect(try await client.request(.put, "\(location)?digest=\(digest)").status == .created)
            #expect(try await client.request(.get, "/v2/team/app/blobs/\(digest)").text == part1 + part2)
        }
    }

    @Test("after a power loss an upload resumes from what its record and its bytes both hold")
    func resumeAfterLostWrites() async throws {
        // Sizes and bytes are both fsynced before a PATCH is acknowledged, but a disk that lies (or an
        // operator restoring an old backup) can still leave them out of step. Both cases are made on disk here.
        let data = try Harness.temporaryDirectory()
        defer { try? FileManager.default.removeItem(at: data) }
        let a = String(repeating: "a", count: 100_000), b = String(repeating: "b", count: 50_000), c = String(repeating: "c", count: 30_000)
        let (location, id, uploadFile) = try await Harness.withServer(data: data) { client, server in
            let location = try #require(try await client.request(.post, "/v2/team/app/blobs/uploads/").header("Location"))
            for (start, part) in [(0, a), (a.utf8.count, b)] {
                let patch = try await client.request(
                    .patch, location, headers: [.contentRange: "\(start)-\(start + part.utf8.count - 1)"], body: ByteBuffer(string: part))
                #expect(patch.status == .accepted)
            }
            let id = String(location.split(separator: "/").last!)
            return (location, id, "\(server.configuration.resolvedStoragePath)/uploads/\(id)")
        }

        // The last size commit was lost: the record says 100,000 bytes, the file holds 150,000.
        try await Harness.withServer(data: data) { _, server in
            try await server.metadata.updateUpload(id, size: Int64(a.utf8.count))
        }
        try await Harness.withServer(data: data) { client, _ in
            let status = try await client.request(.get, location)
            #expect(status.header("Range") == "0-\(a.utf8.count - 1)")
            let patch = try await client.request(
                .patch, location, headers: [.contentRange: "\(a.utf8.count)-\(a.utf8.count + c.utf8.count - 1)"], body: ByteBuffer(string: c))
            #expect(patch.status == .accepted)
            #expect(patch.header("Range") == "0-\(a.utf8.count + c.utf8.count - 1)")
        }

        // Now the bytes were lost instead: the record says 130,000, the file holds 60,000.
        let handle = try #require(FileHandle(forWritingAtPath: uploadFile))
        try handle.truncate(atOffset: 60_000)
        try handle.close()
        try await Harness.withServer(data: data) { client, _ in
            let late = try await client.request(.patch, location, headers: [.contentRange: "130000-130009"], body: ByteBuffer(string: "0123456789"))
            #expect(late.status.code == 416)
            #expect(late.header("Range") == "0-59999")
            #expect(try await client.request(.get, location).header("Range") == "0-59999")
            let rest = String(repeating: "a", count: 40_000) + c
            let patch = try await client.request(
                .patch, location, headers: [.contentRange: "60000-\(60_000 + rest.utf8.count - 1)"], body: ByteBuffer(string: rest))
            #expect(patch.status == .accepted)
            let digest = Digest.of(Array((a + c).utf8))
            #expect(try await client.request(.put, "\(location)?digest=\(digest)").status == .created)
            #expect(try await client.request(.get, "/v2/team/app/blobs/\(digest)").text == a + c)
        }
    }

    @Test("manifests, tags and pull times persist across restarts")
    func persistence() async throws {
        let data = try Harness.temporaryDirectory()
        defer { try? FileManager.default.removeItem(at: data) }
        let digest = try await Harness.withServer(data: data) { client, _ in
            let (digest, _) = try await client.pushImage(to: "team/app", reference: "v1", layer: "persisted")
            _ = try await client.request(.get, "/v2/team/app/manifests/v1")
            return digest
        }
        try await Harness.withServer(data: data) { client, server in
            #expect(try await client.request(.get, "/v2/team/app/manifests/v1").header("Docker-Content-Digest") == digest.description)
            // The pull recorded before the first server stopped was flushed on shutdown.
            let record = try await server.metadata.manifest(digest, in: RepositoryName("team/app")!)
            #expect(record?.lastPulledAt != nil)
        }
    }
}

@Suite("HTTP helpers")
struct HTTPHelperTests {
    @Test("routes are found from the end of the path")
    func routes() {
        #expect(DistributionRoute.parse(path: "/v2/") == .base)
        #expect(DistributionRoute.parse(path: "/v2") == .base)
        #expect(DistributionRoute.parse(path: "/v2/_catalog") == .catalog)
        #expect(DistributionRoute.parse(path: "/v2/a/b/tags/list") == .tags(name: "a/b"))
        #expect(DistributionRoute.parse(path: "/v2/a/manifests/b/manifests/latest") == .manifest(name: "a/manifests/b", reference: "latest"))
        #expect(DistributionRoute.parse(path: "/v2/a/blobs/uploads/") == .uploads(name: "a"))
        #expect(DistributionRoute.parse(path: "/v2/a/blobs/uploads") == .uploads(name: "a"))
        #expect(DistributionRoute.parse(path: "/v2/a/blobs/uploads/123") == .upload(name: "a", id: "123"))
        #expect(DistributionRoute.parse(path: "/v2/a/blobs/sha256:x") == .blob(name: "a", digest: "sha256:x"))
        #expect(DistributionRoute.parse(path: "/v2/x/y/referrers/sha256:x") == .referrers(name: "x/y", digest: "sha256:x"))
        #expect(DistributionRoute.parse(path: "/v2/a") == nil)
        #expect(DistributionRoute.parse(path: "/v3/a/tags/list") == nil)
        #expect(DistributionRoute.parse(path: "/v2/manifests/x") == nil)
    }

    @Test("Range headers resolve per RFC 9110")
    func ranges() {
        #expect(ByteRanges.resolve(nil, size: 10) == .whole)
        #expect(ByteRanges.resolve("bytes=0-0", size: 10) == .partial(0...0))
        #expect(ByteRanges.resolve("bytes=5-", size: 10) == .partial(5...9))
        #expect(ByteRanges.resolve("bytes=-4", size: 10) == .partial(6...9))
        #expect(ByteRanges.resolve("bytes=-40", size: 10) == .partial(0...9))
        #expect(ByteRanges.resolve("bytes=3-100", size: 10) == .partial(3...9))
        #expect(ByteRanges.resolve("bytes=10-", size: 10) == .unsatisfiable)
        #expect(ByteRanges.resolve("bytes=-0", size: 10) == .unsatisfiable)
        #expect(ByteRanges.resolve("bytes=0-", size: 0) == .unsatisfiable)
        #expect(ByteRanges.resolve("bytes=5-3", size: 10) == .whole)
        #expect(ByteRanges.resolve("bytes=a-b", size: 10) == .whole)
        #expect(ByteRanges.parseChunkRange("0-99") == ClientByteRange(first: 0, last: 99))
        #expect(ByteRanges.parseChunkRange("bytes 100-199/*") == ClientByteRange(first: 100, last: 199))
        #expect(ByteRanges.parseChunkRange("bytes=5-9") == ClientByteRange(first: 5, last: 9))
        #expect(ByteRanges.parseChunkRange("0-9223372036854775807") == nil)
        #expect(ByteRanges.parseChunkRange("0-1125899906842624") == ClientByteRange(first: 0, last: 1 << 50))
        #expect(ByteRanges.parseChunkRange("9-5") == nil)
        #expect(ByteRanges.parseChunkRange("x") == nil)
        #expect(ByteRanges.uploadRange(size: 0) == "0-0")
        #expect(ByteRanges.uploadRange(size: 10) == "0-9")
    }

    @Test("Accept negotiation")
    func accept() {
        #expect(DistributionAPI.accepts([], mediaType: MediaType.ociIndex))
        #expect(DistributionAPI.accepts(["\(MediaType.ociManifest), \(MediaType.ociIndex)"], mediaType: MediaType.ociIndex))
        #expect(DistributionAPI.accepts([MediaType.ociManifest, MediaType.ociIndex], mediaType: MediaType.ociIndex))
        #expect(!DistributionAPI.accepts([MediaType.dockerManifest], mediaType: MediaType.ociIndex))
        #expect(DistributionAPI.accepts(["application/vnd.oci.image.index.v1+json;q=0.9"], mediaType: MediaType.ociIndex))
    }

    @Test("configuration: YAML, then environment, with validation and unknown keys refused")
    func configuration() throws {
        var configuration = WharfConfiguration()
        try configuration.apply(
            yaml: """
                listen: 0.0.0.0:6000
                data: /var/lib/wharf
                database:
                  url: postgres://u:p@db:5432/wharf
                registry:
                  allowSparseIndexes: true
                  manifestCacheMiB: 8
                log:
                  level: debug
                """, source: "test.yml")
        #expect(configuration.listen == "0.0.0.0:6000")
        #expect(configuration.resolvedDatabaseURL == "postgres://u:p@db:5432/wharf")
        #expect(configuration.allowSparseIndexes)
        #expect(configuration.logLevel == .debug)
        #expect(configuration.resolvedStoragePath == "/var/lib/wharf")
        try configuration.apply(environment: ["WHARF_LISTEN": "127.0.0.1:7000", "WHARF_DATA": "/data"])
        #expect(try configuration.listenAddress() == ("127.0.0.1", 7000))
        #expect(configuration.resolvedStoragePath == "/data")
        #expect(throws: ConfigurationError.self) { try configuration.apply(yaml: "registry:\n  allowSparseIndex: true\n", source: "typo.yml") }
        #expect(throws: ConfigurationError.self) { try configuration.apply(environment: ["WHARF_LISTEN": "nonsense"]) }
        var defaults = WharfConfiguration()
        #expect(defaults.resolvedDatabaseURL == "sqlite:./wharf-data/wharf.db")
        defaults.listen = "[::1]:5001"
        #expect(try defaults.listenAddress() == ("::1", 5001))
    }
}

@Suite("Encoded tag lists")
struct EncodedTagListTests {
    func text(_ page: TagPage) -> String { String(buffer: page.elements) }

    @Test("pages are slices of the encoded list, with the right last tag and continuation")
    func pages() {
        let list = EncodedTagList(sorted: ["a", "b", "c", "d", "e"])
        #expect(String(buffer: list.json) == #""a","b","c","d","e""#)
        let first = list.page(after: nil, limit: 2)
        #expect(text(first) == #""a","b""#)
        #expect(first.count == 2 && first.last == "b" && first.hasMore)
        let middle = list.page(after: "b", limit: 2)
        #expect(text(middle) == #""c","d""#)
        #expect(middle.hasMore)
        let end = list.page(after: "d", limit: 2)
        #expect(text(end) == #""e""#)
        #expect(end.last == "e" && !end.hasMore)
        #expect(text(list.page(after: nil, limit: 10)) == #""a","b","c","d","e""#)
        // A `last` that is not a tag starts after where it would sort; past the end is empty.
        #expect(text(list.page(after: "bb", limit: 1)) == #""c""#)
        let past = list.page(after: "z", limit: 3)
        #expect(past.count == 0 && text(past).isEmpty && past.last == nil && !past.hasMore)
        let zero = list.page(after: nil, limit: 0)
        #expect(zero.count == 0 && zero.hasMore)
        #expect(EncodedTagList(sorted: []).page(after: nil, limit: 5).count == 0)
    }

    @Test("characters JSON must escape are escaped")
    func escapes() {
        let list = EncodedTagList(sorted: ["a\"b", "c\\d", "e\u{1}"])
        #expect(String(buffer: list.json) == #""a\"b","c\\d","e\u0001""#)
    }
}
