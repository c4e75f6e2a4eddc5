import BlobStore
import Foundation
import NIOCore
import OCI
import Testing

@Suite("Filesystem blob store")
struct FileSystemBlobStoreTests {
    func withStore<T>(_ body: (FileSystemBlobStore, URL) async throws -> T) async throws -> T {
        let root = FileManager.default.temporaryDirectory.appendingPathComponent("wharf-blobs-\(UUID().uuidString)")
        defer { try? FileManager.default.removeItem(at: root) }
        let store = FileSystemBlobStore(root: root.path, readChunkSize: 7, writeBufferSize: 16)
        try await store.prepare()
        return try await body(store, root)
    }

    func readAll(_ store: FileSystemBlobStore, _ digest: Digest, range: ClosedRange<Int64>? = nil) async throws -> String? {
        guard let reader = try await store.open(digest) else { return nil }
        var collected = ByteBuffer()
        try await reader.stream(range: range) { chunk in
            var chunk = chunk
            collected.writeBuffer(&chunk)
        }
        return String(buffer: collected)
    }

    @Test("an upload becomes a content-addressed blob only on commit")
    func uploadAndCommit() async throws {
        try await withStore { store, root in
            let content = "the quick brown fox jumps over the lazy dog"
            let digest = Digest.of(Array(content.utf8))
            try await store.createUpload("u1")
            let writer = try await store.appendToUpload("u1", at: 0)
            for piece in content.split(separator: " ", omittingEmptySubsequences: false).enumerated() {
                try await writer.write(ByteBuffer(string: (piece.offset == 0 ? "" : " ") + piece.element))
            }
            try await writer.close()
            #expect(try await store.uploadSize("u1") == Int64(content.utf8.count))
            #expect(try await store.open(digest) == nil)
            #expect(try await store.size(of: digest) == nil)
            try await store.commitUpload("u1", as: digest)
            #expect(try await store.uploadSize("u1") == nil)
            #expect(try await store.size(of: digest) == Int64(content.utf8.count))
            #expect(try await readAll(store, digest) == content)
            #expect(try await readAll(store, digest, range: 4...8) == "quick")
            let expectedPath = root.appendingPathComponent("blobs/sha256/\(digest.encoded.prefix(2))/\(digest.encoded)").path
            #expect(FileManager.default.fileExists(atPath: expectedPath))
            var listed: [Digest] = []
            for try await d in store.allBlobs() { listed.append(d) }
            #expect(listed == [digest])
        }
    }

    @Test("appending at an earlier offset discards bytes past it (an interrupted request)")
    func truncateOnResume() async throws {
        try await withStore { store, _ in
            try await store.createUpload("u")
            var writer = try await store.appendToUpload("u", at: 0)
            try await writer.write(ByteBuffer(string: "hello, garbage"))
            try await writer.close()
            writer = try await store.appendToUpload("u", at: 5)
            try await writer.write(ByteBuffer(string: " world"))
            try await writer.close()
            var content = ByteBuffer()
            try await store.readUpload("u") { var chunk = $0; content.writeBuffer(&chunk) }
            #expect(String(buffer: content) == "hello world")
        }
    }

    @Test("two uploads of the same content both commit")
    func concurrentSameDigest() async throws {
        try await withStore { store, _ in
            let content = String(repeating: "x", count: 1000)
            let digest = Digest.of(Array(content.utf8))
            try await withThrowingTaskGroup(of: Void.self) { group in
                for i in 0..<8 {
                    group.addTask {
                        try await store.createUpload("same-\(i)")
                        let writer = try await store.appendToUpload("same-\(i)", at: 0)
                        try await writer.write(ByteBuffer(string: content))
                        try await writer.close()
                        try await store.commitUpload("same-\(i)", as: digest)
                    }
                }
                try await group.waitForAll()
            }
            #expect(try await readAll(store, digest) == content)
            #expect(try await store.allUploads().isEmpty)
        }
    }

    @Test("missing uploads and blobs are reported, not crashed on")
    func missing() async throws {
        try await withStore { store, _ in
            await #expect(throws: BlobStoreError.self) { _ = try await store.appendToUpload("nope", at: 0) }
            await #expect(throws: BlobStoreError.self) { try await store.readUpload("nope") { _ in } }
            await #expect(throws: BlobStoreError.self) { try await store.commitUpload("nope", as: Digest.of([1])) }
            try await store.deleteUpload("nope")
            #expect(try await store.open(Digest.of([2])) == nil)
        }
    }

    @Test("put stores small content directly and is idempotent; delete removes bytes")
    func putAndDelete() async throws {
        try await withStore { store, _ in
            let digest = EmptyJSON.sha256
            try await store.put(ByteBuffer(bytes: EmptyJSON.bytes), as: digest)
            try await store.put(ByteBuffer(bytes: EmptyJSON.bytes), as: digest)
            #expect(try await readAll(store, digest) == "{}")
            try await store.delete(digest)
            #expect(try await store.size(of: digest) == nil)
            #expect(try await store.allUploads().isEmpty)
        }
    }
}
