import AsyncHTTPClient
import BlobStore
import Logging
import NIOCore
import NIOPosix
import OCI

/// Blobs in an S3 bucket (AWS or any S3-compatible server), for several stateless nodes.
///
/// Layout under the configured prefix:
/// - `blobs/<alg>/<xx>/<hex>`: committed blobs, published by a server-side copy, so a blob is
///   either absent or complete (S3 makes an object visible only when its PUT or copy finishes);
/// - `uploads/<id>/<offset>`: an upload as consecutive objects named by their first byte's offset
///   (20 digits, so key order is offset order). Every object but the last holds at least 5 MiB, which
///   lets publishing copy them as the parts of one multipart upload without Wharf reading a byte.
///   Any node can continue an upload (the state is the listing), and a PATCH acknowledged by S3 is
///   durable;
/// - `trash/<alg>-<hex>`: blobs the garbage collector took out, until its transaction commits.
public struct S3BlobStore: BlobStore {
    let client: S3Client
    let settings: S3Settings
    private let prefix: String
    private let logger: Logger

    /// `http` is the caller's client (Wharf's own, shut down by its owner).
    public init(settings: S3Settings, http: HTTPClient, logger: Logger) throws {
        self.client = try S3Client(settings: settings, http: http, logger: logger)
        self.settings = settings
        self.prefix = settings.prefix.isEmpty || settings.prefix.hasSuffix("/") ? settings.prefix : settings.prefix + "/"
        self.logger = logger
    }

    /// Checks the bucket answers and these credentials may write, read and delete in it.
    public func prepare() async throws {
        let probe = prefix + "probe/" + UUIDString.make()
        try await client.putObject(probe, body: ByteBuffer(string: "wharf"))
        guard try await client.getObjectBytes(probe) == ByteBuffer(string: "wharf") else {
            throw S3Error(operation: "probe", key: probe, status: 0, code: "Mismatch", message: "the bucket returned other bytes than were written")
        }
        try await client.deleteObject(probe)
    }

    func blobKey(_ digest: Digest) -> String { "\(prefix)blobs/\(digest.algorithm.rawValue)/\(digest.encoded.prefix(2))/\(digest.encoded)" }
    private func trashKey(_ digest: Digest) -> String { "\(prefix)trash/\(digest.algorithm.rawValue)-\(digest.encoded)" }
    private func uploadFolder(_ id: String) -> String { "\(prefix)uploads/\(id)/" }
    func segmentKey(_ id: String, _ offset: Int64) -> String {
        let digits = String(offset)
        return uploadFolder(id) + String(repeating: "0", count: max(0, 20 - digits.count)) + digits
    }

    // MARK: Blobs

    public func size(of digest: Digest) async throws -> Int64? { try await client.headObject(blobKey(digest))?.size }

    public func open(_ digest: Digest) async throws -> (any BlobReader)? {
        guard let object = try await client.headObject(blobKey(digest)) else { return nil }
        return S3BlobReader(client: client, key: object.key, size: object.size, redirect: settings.redirect)
    }

    public func put(_ bytes: ByteBuffer, as digest: Digest) async throws {
        try await client.putObject(blobKey(digest), body: bytes, storageClass: settings.storageClass)
    }

    public func delete(_ digest: Digest) async throws { try await client.deleteObject(blobKey(digest)) }

    public func allBlobs() -> AsyncThrowingStream<Digest, any Error> {
        let client = self.client
        let folder = prefix + "blobs/"
        return AsyncThrowingStream { continuation in
            let task = Task {
                do {
                    try await client.listPages(prefix: folder, delimiter: nil) { objects, _ in
                        for object in objects {
                            // blobs/<alg>/<xx>/<hex>: anything else in the folder is not ours and is skipped.
                            let parts = object.key.dropFirst(folder.count).split(separator: "/")
                            if parts.count == 3, let digest = Digest("\(parts[0]):\(parts[2])"), parts[1] == digest.encoded.prefix(2) {
                                continuation.yield(digest)
                            }
                        }
                    }
                    continuation.finish()
                } catch {
                    continuation.finish(throwing: error)
                }
            }
            continuation.onTermination = { _ in task.cancel() }
        }
    }

    public func blobModified(_ digest: Digest) async throws -> Int64? { try await client.headObject(blobKey(digest))?.lastModified }

    // MARK: Uploads

    /// The upload's objects in offset order, or nil when it has none (it does not exist).
    func segments(_ id: String) async throws -> [Segment]? {
        let folder = uploadFolder(id)
        let objects = try await client.list(prefix: folder)
        let segments = objects.compactMap { object in
            Int64(object.key.dropFirst(folder.count)).map { Segment(key: object.key, offset: $0, size: object.size, modified: object.lastModified) }
        }
        return segments.isEmpty ? nil : segments.sorted { $0.offset < $1.offset }
    }

    struct Segment: Sendable {
        var key: String
        var offset: Int64
        var size: Int64
        var modified: Int64
        var end: Int64 { offset + size }
    }

    public func createUpload(_ id: String, resumable: Bool) async throws {
        // An empty first object makes the upload exist for every node.
        try await client.putObject(segmentKey(id, 0), body: ByteBuffer())
    }

    public func uploadSize(_ id: String) async throws -> Int64? {
        guard let segments = try await segments(id) else { return nil }
        return Self.contiguousEnd(segments)
    }

    /// Where the bytes stop being contiguous from 0: a gap (a lost object) ends the usable upload.
    static func contiguousEnd(_ segments: [Segment]) -> Int64 {
        var end: Int64 = 0
        for segment in segments {
            guard segment.offset <= end else { break }
            end = max(end, segment.end)
        }
        return end
    }

    public func appendToUpload(_ id: String, at offset: Int64) async throws -> any UploadWriter {
        guard let segments = try await segments(id) else { throw BlobStoreError.uploadNotFound(id) }
        guard offset >= 0, offset <= Self.contiguousEnd(segments) else { throw BlobStoreError.invalidRange }
        // Objects past `offset` hold bytes no client was told about: drop them first, so the
        // listing never shows more than what the next object will continue.
        try await client.deleteObjects(segments.filter { $0.offset >= offset && !($0.offset == 0 && offset == 0) }.map(\.key))
        // The object holding the last kept byte is rewritten together with the new bytes when it
        // is cut short or smaller than S3's minimum part: every object but the last stays >= 5 MiB.
        var start = offset
        var carried = ByteBuffer()
        if let tail = segments.last(where: { $0.offset < offset }), tail.end > offset || offset - tail.offset < Int64(S3Settings.minimumPartSize) {
            carried = try await client.getObjectBytes(tail.key, range: tail.offset < offset ? 0...(offset - tail.offset - 1) : nil)
            start = tail.offset
            for later in segments where later.offset > tail.offset && later.offset < offset {
                // Cannot happen with objects written here (they never overlap); a listing is not trusted blindly.
                throw S3Error(operation: "append", key: later.key, status: 0, code: "Overlap", message: "upload objects overlap")
            }
        }
        return S3UploadWriter(store: self, id: id, start: start, carried: carried)
    }

    public func readUpload(_ id: String, consume: (ByteBuffer) async throws -> Void) async throws {
        guard let segments = try await segments(id) else { throw BlobStoreError.uploadNotFound(id) }
        let end = Self.contiguousEnd(segments)
        for segment in segments where segment.offset < end && segment.size > 0 {
            try await client.getObject(segment.key, range: nil, consume: consume)
        }
    }

    /// S3 acknowledged every object when its PUT returned: nothing more to make durable.
    public func prepareUpload(_ id: String) async throws {}

    public func publishUpload(_ id: String, as digest: Digest, prepared: Bool) async throws {
        let destination = blobKey(digest)
        if try await client.headObject(destination) != nil {
            // The same content was pushed before: this copy is not needed.
            try await deleteUpload(id)
            return
        }
        guard let segments = try await segments(id) else { throw BlobStoreError.uploadNotFound(id) }
        let parts = segments.filter { $0.size > 0 }
        if parts.count <= 1 {
            try await client.copyObject(from: parts.first?.key ?? segments[0].key, to: destination, storageClass: settings.storageClass)
        } else {
            guard parts.count <= 10_000 else {
                throw S3Error(
                    operation: "publish", key: destination, status: 0, code: "TooManyParts",
                    message: "the upload has \(parts.count) parts, S3 allows 10,000: raise storage.s3.partSizeMiB")
            }
            try await multipartCopy(to: destination, parts: parts.map { ($0.key, nil) })
        }
        try await client.deleteObjects(segments.map(\.key))
    }

    /// Assembles `destination` from objects (or ranges of them) server-side: no byte passes through Wharf.
    private func multipartCopy(to destination: String, parts: [(key: String, range: ClosedRange<Int64>?)], storageClass: String? = nil) async throws {
        let uploadID = try await client.createMultipartUpload(destination, storageClass: storageClass ?? settings.storageClass)
        do {
            var etags: [String] = []
            for (index, part) in parts.enumerated() {
                etags.append(try await client.uploadPartCopy(destination, uploadID: uploadID, number: index + 1, source: part.key, range: part.range))
            }
            try await client.completeMultipartUpload(destination, uploadID: uploadID, etags: etags)
        } catch {
            try? await client.abortMultipartUpload(destination, uploadID: uploadID)
            throw error
        }
    }

    /// A server-side copy of any size: one CopyObject up to 5 GiB (S3's limit for it), ranged part copies beyond.
    private func copy(_ source: String, to destination: String, size: Int64) async throws {
        let singleCopyLimit: Int64 = 5 << 30
        guard size > singleCopyLimit else {
            try await client.copyObject(from: source, to: destination, storageClass: settings.storageClass)
            return
        }
        let partSize: Int64 = 1 << 30
        let ranges = stride(from: Int64(0), to: size, by: Int(partSize)).map { start in (key: source, range: Optional(start...min(size, start + partSize) - 1))
        }
        try await multipartCopy(to: destination, parts: ranges)
    }

    public func deleteUpload(_ id: String) async throws {
        let keys = try await client.list(prefix: uploadFolder(id)).map(\.key)
        try await client.deleteObjects(keys)
    }

    public func allUploads() async throws -> [String] {
        let folder = prefix + "uploads/"
        return try await client.listFolders(prefix: folder).map { String($0.dropFirst(folder.count).dropLast()) }.filter { !$0.isEmpty }
    }

    public func uploadModified(_ id: String) async throws -> Int64? {
        try await segments(id)?.map(\.modified).max()
    }

    // MARK: Trash (S3 has no rename: copy, then delete)

    // A marker instead of a move would be cheaper, but then a push of the same bytes racing the
    // collector would find the blob "present", skip its own copy, and lose it when the trash is emptied.
    public func trash(_ digest: Digest) async throws -> Bool {
        guard let blob = try await client.headObject(blobKey(digest)) else { return false }
        try await copy(blob.key, to: trashKey(digest), size: blob.size)
        try await client.deleteObject(blobKey(digest))
        return true
    }

    public func restore(_ digest: Digest) async throws {
        guard let trashed = try await client.headObject(trashKey(digest)) else { return }
        if try await client.headObject(blobKey(digest)) == nil {
            try await copy(trashed.key, to: blobKey(digest), size: trashed.size)
        }
        try await client.deleteObject(trashKey(digest))
    }

    public func emptyTrash(_ digest: Digest) async throws { try await client.deleteObject(trashKey(digest)) }

    public func emptyTrash(_ digests: [Digest]) async throws { try await client.deleteObjects(digests.map(trashKey)) }

    public func trashedBlobs() async throws -> [Digest] {
        let folder = prefix + "trash/"
        return try await client.list(prefix: folder).compactMap { object in
            let name = object.key.dropFirst(folder.count)
            guard let dash = name.firstIndex(of: "-") else { return nil }
            return Digest("\(name[..<dash]):\(name[name.index(after: dash)...])")
        }
    }
}

/// Reads a committed blob with ranged GETs.
struct S3BlobReader: BlobReader {
    let client: S3Client
    let key: String
    let size: Int64
    let redirect: Bool

    /// A presigned GET of the object (with `storage.s3.redirect`), valid for the configured time.
    var redirectURL: String? { redirect ? client.presignedGetURL(key) : nil }

    func stream(range: ClosedRange<Int64>?, consume: (ByteBuffer) async throws -> Void) async throws {
        if let range, range.lowerBound < 0 || range.upperBound >= size { throw BlobStoreError.invalidRange }
        guard size > 0 else { return }
        do {
            try await client.getObject(key, range: range, consume: consume)
        } catch let error as S3Error where error.status == 404 {
            throw BlobStoreError.notFound(key)
        }
    }

    func close() async throws {}
}

/// Buffers an upload's bytes into objects of `partSize` and PUTs each when full; `close` PUTs the
/// rest (S3 acknowledges each PUT durably). Memory: one part per writer.
final class S3UploadWriter: UploadWriter, @unchecked Sendable {
    // One task writes at a time (the protocol's contract), so plain stored state is safe.
    private let store: S3BlobStore
    private let id: String
    private var start: Int64
    private var buffer: ByteBuffer
    private var wroteAny = false
    /// A part could not be stored: nothing more is written, not even by `close` (which would put
    /// the bytes after the lost part at its offset). The next append starts over from the recorded size.
    private var failed = false

    init(store: S3BlobStore, id: String, start: Int64, carried: ByteBuffer) {
        self.store = store
        self.id = id
        self.start = start
        self.buffer = carried
    }

    func write(_ chunk: ByteBuffer) async throws {
        guard !failed else { throw S3Error(operation: "append", key: id, status: 0, code: "WriterFailed", message: "an earlier part failed") }
        var chunk = chunk
        buffer.writeBuffer(&chunk)
        let partSize = store.settings.partSize
        while buffer.readableBytes >= partSize {
            let part = buffer.getSlice(at: buffer.readerIndex, length: partSize)!
            do {
                try await store.client.putObject(store.segmentKey(id, start), body: part)
            } catch {
                failed = true
                throw error
            }
            buffer.moveReaderIndex(forwardBy: partSize)
            start += Int64(partSize)
            wroteAny = true
        }
        buffer.discardReadBytes()
    }

    func close() async throws {
        // An empty remainder is written only when nothing else was: the upload must keep an object.
        guard !failed, buffer.readableBytes > 0 || !wroteAny else { return }
        try await store.client.putObject(store.segmentKey(id, start), body: buffer)
        start += Int64(buffer.readableBytes)
        buffer.clear()
        wroteAny = true
    }
}

/// Random ids for the bucket probe.
enum UUIDString {
    static func make() -> String {
        (0..<16).map { _ in String(UInt8.random(in: 0...255), radix: 16) }.joined()
    }
}
