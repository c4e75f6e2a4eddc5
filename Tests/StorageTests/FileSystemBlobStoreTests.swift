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
            try await store.createUpload("u1", resumable: true)
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

    @Test("pieces smaller and larger than the write buffer land in order while the previous write is in flight")
    func overlappedWritesKeepOrder() async throws {
        let root = FileManager.default.temporaryDirectory.appendingPathComponent("wharf-blobs-\(UUID().uuidString)")
        defer { try? FileManager.default.removeItem(at: root) }
        // 1 MiB buffers and 20 MiB of content: several writes overlap the caller, and the 8 MiB
        // writeback points and the tail written back on close are all crossed.
        let store = FileSystemBlobStore(root: root.path, writeBufferSize: 1 << 20)
        try await store.prepare()
        var generator = SystemRandomNumberGenerator()
        // Byte i is pattern[i % period]; the period is no multiple of the buffer, so a write landing
        // at the wrong offset changes the digest.
        let period = 1_000_003
        let pattern = (0..<(period + (3 << 20))).map { UInt8(truncatingIfNeeded: $0 &* 31 &+ ($0 >> 13)) }
        var content: [UInt8] = []
        content.reserveCapacity(20 << 20)
        try await store.createUpload("big", resumable: false)
        var writer = try await store.appendToUpload("big", at: 0)
        var written = 0
        while written < 20 << 20 {
            // Pieces from 1 byte to 3 MiB, so some fill the buffer and some bypass it.
            let length = min(Int.random(in: 1...(3 << 20), using: &generator), (20 << 20) - written)
            let piece = Array(pattern[(written % period)..<(written % period + length)])
            content += piece
            try await writer.write(ByteBuffer(bytes: piece))
            written += length
            if written > 12 << 20, written - length <= 12 << 20 {
                // Resume in a second request, as a chunked upload does.
                try await writer.close()
                #expect(try await store.uploadSize("big") == Int64(written))
                writer = try await store.appendToUpload("big", at: Int64(written))
            }
        }
        try await writer.close()
        #expect(try await store.uploadSize("big") == Int64(content.count))
        let digest = Digest.of(content)
        try await store.commitUpload("big", as: digest)
        guard let reader = try await store.open(digest) else {
            Issue.record("the committed blob cannot be opened")
            return
        }
        var hasher = DigestHasher(.sha256)
        try await reader.stream(range: nil) { hasher.update($0) }
        #expect(hasher.finalize() == digest)
    }

    @Test("appending at an earlier offset discards bytes past it (an interrupted request)")
    func truncateOnResume() async throws {
        try await withStore { store, _ in
            try await store.createUpload("u", resumable: true)
            var writer = try await store.appendToUpload("u", at: 0)
            try await writer.write(ByteBuffer(string: "hello, garbage"))
            try await writer.close()
            writer = try await store.appendToUpload("u", at: 5)
            try await writer.write(ByteBuffer(string: " world"))
            try await writer.close()
            var content = ByteBuffer()
            try await store.readUpload("u") {
                var chunk = $0; content.writeBuffer(&chunk)
            }
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
                        try await store.createUpload("same-\(i)", resumable: false)
                        let writer = try await store.appendToUpload("same-\(i)", at: 0)
                        try await writer.write(ByteBuffer(string: content))
                        try await writer.close()
                        try await store.commitUpload("same-\(i)", as: digest)
                    }
                }
                try await group.waitForAll()
            }
            #expect(try await readAll(store, digest) == content)
            #expect(try await uploadsDrain(store))
        }
    }

    /// Duplicates are deleted in the background: waits up to 5 s for the uploads folder to empty.
    func uploadsDrain(_ store: FileSystemBlobStore) async throws -> Bool {
        for _ in 0..<500 {
            if try await store.allUploads().isEmpty { return true }
            try await Task.sleep(for: .milliseconds(10))
        }
        return false
    }

    @Test("publishing without a prepared upload: a new blob is made durable and published, a duplicate is dropped and the stored file kept")
    func publishUnprepared() async throws {
        try await withStore { store, root in
            let content = String(repeating: "layer bytes ", count: 500)
            let digest = Digest.of(Array(content.utf8))
            for id in ["first", "again"] {
                try await store.createUpload(id, resumable: false)
                let writer = try await store.appendToUpload(id, at: 0)
                try await writer.write(ByteBuffer(string: content))
                try await writer.close()
            }
            try await store.publishUpload("first", as: digest, prepared: false)
            #expect(try await readAll(store, digest) == content)
            let blobFile = root.appendingPathComponent("blobs/sha256/\(digest.encoded.prefix(2))/\(digest.encoded)").path
            let stored = try FileManager.default.attributesOfItem(atPath: blobFile)[.systemFileNumber] as? Int
            #expect(stored != nil)

            try await store.publishUpload("again", as: digest, prepared: false)
            #expect(try FileManager.default.attributesOfItem(atPath: blobFile)[.systemFileNumber] as? Int == stored)
            #expect(try await readAll(store, digest) == content)
            #expect(try await uploadsDrain(store))
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
