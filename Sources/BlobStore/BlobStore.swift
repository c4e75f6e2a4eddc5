import NIOCore
import OCI

/// Content-addressed storage for blob bytes, shared by every repository, plus the scratch space
/// of in-progress uploads. It knows nothing about repositories or visibility: the metadata
/// database decides what a repository may see; this stores bytes.
///
/// Contract: a committed blob is durable and complete before `commitUpload` returns, and never
/// partially visible. Upload ids are opaque strings chosen by the caller (UUIDs).
public protocol BlobStore: Sendable {
    /// The size of a committed blob, or nil when the store does not hold it.
    func size(of digest: Digest) async throws -> Int64?

    /// Opens a committed blob for reading, or returns nil when the store does not hold it.
    /// Opening first lets a server answer 404 before it has sent any headers.
    func open(_ digest: Digest) async throws -> (any BlobReader)?

    /// Stores small content directly (for example the empty JSON config) without an upload session.
    func put(_ bytes: ByteBuffer, as digest: Digest) async throws

    /// Removes a committed blob's bytes. Only the garbage collector calls this.
    func delete(_ digest: Digest) async throws

    /// Every committed blob, for consistency checks and orphan collection.
    func allBlobs() -> AsyncThrowingStream<Digest, any Error>

    // MARK: Uploads

    /// Starts an empty upload. A `resumable` one (an upload session a client will continue) is
    /// durable before this returns; a one-request upload need not be, the collector removes leftovers.
    func createUpload(_ id: String, resumable: Bool) async throws
    /// Bytes received so far, or nil when the upload does not exist.
    func uploadSize(_ id: String) async throws -> Int64?
    /// Opens the upload for appending at `offset`; anything beyond `offset` (bytes from an
    /// interrupted request the client was never told about) is discarded.
    func appendToUpload(_ id: String, at offset: Int64) async throws -> any UploadWriter
    /// Streams the bytes of an upload (used to rebuild hash state after a restart).
    func readUpload(_ id: String, consume: (ByteBuffer) async throws -> Void) async throws
    /// Makes the upload's bytes durable (fsync). Slow for big blobs, so callers do it before
    /// taking any lock, then `publishUpload` inside. Callers that see the blob is already stored
    /// may skip it: a duplicate's bytes are never published.
    func prepareUpload(_ id: String) async throws
    /// Makes the upload the committed blob `digest`, atomically, first making it durable unless
    /// `prepared`. If the blob already exists (the same content was pushed before), the upload is
    /// discarded instead, without waiting for its file to be deleted.
    func publishUpload(_ id: String, as digest: Digest, prepared: Bool) async throws
    /// Discards an upload. Missing uploads are not an error.
    func deleteUpload(_ id: String) async throws
    /// Ids of all uploads in the store, for cleaning up abandoned ones.
    func allUploads() async throws -> [String]
    /// When an upload was last written (Unix ms), or nil if it does not exist.
    func uploadModified(_ id: String) async throws -> Int64?
    /// When a committed blob's file was last changed (Unix ms), or nil if absent.
    func blobModified(_ digest: Digest) async throws -> Int64?

    // MARK: Trash
    // The garbage collector moves a blob to the trash inside the transaction that deletes its row,
    // and empties the trash after the commit. After a crash, blobs whose rows survived are restored.

    /// Moves a committed blob to the trash. False when it was not there.
    func trash(_ digest: Digest) async throws -> Bool
    /// Moves a trashed blob back, unless the blob exists again (then the trashed copy is dropped).
    func restore(_ digest: Digest) async throws
    func emptyTrash(_ digest: Digest) async throws
    func trashedBlobs() async throws -> [Digest]
    /// Many at once (the collector works in batches): moves each to the trash; if one fails, those
    /// already moved are put back before the error is thrown.
    func trash(_ digests: [Digest]) async throws
    func emptyTrash(_ digests: [Digest]) async throws
}

extension BlobStore {
    public func trash(_ digests: [Digest]) async throws {
        var moved: [Digest] = []
        do {
            for digest in digests where try await trash(digest) { moved.append(digest) }
        } catch {
            for digest in moved { try? await restore(digest) }
            throw error
        }
    }

    public func emptyTrash(_ digests: [Digest]) async throws {
        for digest in digests { try await emptyTrash(digest) }
    }

    /// Durable, then published: for callers that need no lock in between.
    public func commitUpload(_ id: String, as digest: Digest) async throws {
        try await prepareUpload(id)
        try await publishUpload(id, as: digest, prepared: true)
    }
}

/// An open committed blob. Its bytes never change; a reader keeps working even if the blob is
/// deleted while it is open.
public protocol BlobReader: Sendable {
    var size: Int64 { get }
    /// Streams `range` (inclusive; nil means the whole blob) to `consume` in chunks, then closes the reader.
    /// A range reaching outside the blob throws `BlobStoreError.invalidRange` before any byte is read.
    func stream(range: ClosedRange<Int64>?, consume: (ByteBuffer) async throws -> Void) async throws
    /// Closes a reader that will not be streamed.
    func close() async throws
    /// A URL the client may fetch these bytes from directly (a presigned URL of an object store),
    /// or nil when they are served through Wharf.
    var redirectURL: String? { get }
}

extension BlobReader {
    public var redirectURL: String? { nil }
}

/// Sequential writer for one upload. Not shared between tasks.
public protocol UploadWriter: Sendable {
    func write(_ buffer: ByteBuffer) async throws
    /// Flushes buffered bytes; the upload's size then reflects everything written.
    func close() async throws
}

public enum BlobStoreError: Error, Sendable, CustomStringConvertible {
    case notFound(String)
    case uploadNotFound(String)
    case invalidRange
    case systemCall(String, path: String, errno: Int32)

    public var description: String {
        switch self {
        case .systemCall(let call, let path, let errno): "\(call) failed for \(path): errno \(errno)"
        case .notFound(let what): "blob \(what) not found in storage"
        case .uploadNotFound(let id): "upload \(id) not found in storage"
        case .invalidRange: "requested range is outside the blob"
        }
    }
}
