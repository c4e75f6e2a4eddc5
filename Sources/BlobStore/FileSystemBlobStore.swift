import CLinux
import DurableFiles
import NIOCore
import NIOPosix
import OCI
import _NIOFileSystem

#if canImport(Glibc)
import Glibc
#elseif canImport(Musl)
import Musl
#elseif canImport(Darwin)
import Darwin
#endif

/// Blob bytes on a local filesystem.
///
/// Layout: `<root>/blobs/<algorithm>/<first two hex>/<hex>` for committed blobs and
/// `<root>/uploads/<id>` for uploads in progress. Both live on one filesystem so a commit is a
/// `rename(2)`: a blob path either does not exist or holds the complete, fsynced content.
public struct FileSystemBlobStore: BlobStore {
    public let root: String
    private let fileSystem: FileSystem
    private let threadPool: NIOThreadPool
    /// Size of the chunks a download reads from disk. 256 KiB keeps memory low at full speed.
    private let readChunkSize: Int
    /// Uploads are written in batches of this size (fewer system calls and thread-pool hops).
    private let writeBufferSize: Int

    public init(root: String, threadPool: NIOThreadPool = .singleton, readChunkSize: Int = 256 * 1024, writeBufferSize: Int = 1024 * 1024) {
        self.root = root
        self.threadPool = threadPool
        self.fileSystem = FileSystem(threadPool: threadPool)
        self.readChunkSize = readChunkSize
        self.writeBufferSize = writeBufferSize
    }

    /// Creates the directory layout, durably (each new folder's parent is fsynced). Call once at start-up.
    public func prepare() async throws {
        let directories = [root, "\(root)/blobs", "\(root)/uploads", "\(root)/trash"]
        try await threadPool.runIfActive {
            for directory in directories { try DurableFiles.createDirectory(directory) }
        }
    }

    func blobPath(_ digest: Digest) -> String {
        let hex = digest.encoded
        return "\(root)/blobs/\(digest.algorithm.rawValue)/\(hex.prefix(2))/\(hex)"
    }

    func uploadPath(_ id: String) -> String { "\(root)/uploads/\(id)" }

    // MARK: Committed blobs

    public func size(of digest: Digest) async throws -> Int64? {
        try await fileSystem.info(forFileAt: FilePath(blobPath(digest)), infoAboutSymbolicLink: false).map { $0.size }
    }

    public func open(_ digest: Digest) async throws -> (any BlobReader)? {
        let handle: ReadFileHandle
        do {
            handle = try await fileSystem.openFile(forReadingAt: FilePath(blobPath(digest)), options: .init())
        } catch let error as FileSystemError where error.code == .notFound {
            return nil
        }
        do {
            let size = try await handle.info().size
            return FileBlobReader(handle: handle, size: size, chunkSize: readChunkSize)
        } catch {
            try? await handle.close()
            throw error
        }
    }

    public func put(_ bytes: ByteBuffer, as digest: Digest) async throws {
        if try await size(of: digest) != nil { return }
        let temporary = "temp-\(UInt64.random(in: 0...UInt64.max))"
        try await createUpload(temporary, resumable: false)
        let writer = try await appendToUpload(temporary, at: 0)
        do {
            try await writer.write(bytes)
            try await writer.close()
            try await commitUpload(temporary, as: digest)
        } catch {
            try? await deleteUpload(temporary)
            throw error
        }
    }

    public func delete(_ digest: Digest) async throws {
        try await fileSystem.removeItem(at: FilePath(blobPath(digest)), strategy: .platformDefault, recursively: false)
    }

    public func allBlobs() -> AsyncThrowingStream<Digest, any Error> {
        let root = self.root
        let fileSystem = self.fileSystem
        return AsyncThrowingStream { continuation in
            let task = Task {
                do {
                    for algorithm in DigestAlgorithm.allCases {
                        let algorithmDirectory = FilePath("\(root)/blobs/\(algorithm.rawValue)")
                        guard try await fileSystem.info(forFileAt: algorithmDirectory, infoAboutSymbolicLink: false) != nil else { continue }
                        let prefixes = try await Self.list(algorithmDirectory, fileSystem)
                        for prefix in prefixes.sorted() {
                            let names = try await Self.list(FilePath("\(root)/blobs/\(algorithm.rawValue)/\(prefix)"), fileSystem)
                            for name in names.sorted() {
                                if let digest = Digest("\(algorithm.rawValue):\(name)") { continuation.yield(digest) }
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

    private static func list(_ directory: FilePath, _ fileSystem: FileSystem) async throws -> [String] {
        try await fileSystem.withDirectoryHandle(atPath: directory) { handle in
            var names: [String] = []
            for try await entry in handle.listContents(recursive: false) { names.append(entry.name.string) }
            return names
        }
    }

    // MARK: Uploads

    public func createUpload(_ id: String, resumable: Bool) async throws {
        let handle = try await fileSystem.openFile(
            forWritingAt: FilePath(uploadPath(id)),
            options: .modifyFile(createIfNecessary: true)
        )
        try await handle.close()
        // A session a client was told about must still exist after a power cut, or its acknowledged
        // chunks are gone and the resume gets "upload unknown".
        if resumable { try await syncToDisk(path: "\(root)/uploads", directory: true) }
    }

    public func uploadSize(_ id: String) async throws -> Int64? {
        try await fileSystem.info(forFileAt: FilePath(uploadPath(id)), infoAboutSymbolicLink: false).map { $0.size }
    }

    public func appendToUpload(_ id: String, at offset: Int64) async throws -> any UploadWriter {
        let handle: WriteFileHandle
        do {
            handle = try await fileSystem.openFile(forWritingAt: FilePath(uploadPath(id)), options: .modifyFile(createIfNecessary: false))
        } catch let error as FileSystemError where error.code == .notFound {
            throw BlobStoreError.uploadNotFound(id)
        }
        do {
            let current = try await handle.info().size
            if current != offset { try await handle.resize(to: .bytes(offset)) }
        } catch {
            try? await handle.close()
            throw error
        }
        return FileUploadWriter(handle: handle, offset: offset, bufferSize: writeBufferSize)
    }

    public func readUpload(_ id: String, consume: (ByteBuffer) async throws -> Void) async throws {
        let handle: ReadFileHandle
        do {
            handle = try await fileSystem.openFile(forReadingAt: FilePath(uploadPath(id)), options: .init())
        } catch let error as FileSystemError where error.code == .notFound {
            throw BlobStoreError.uploadNotFound(id)
        }
        do {
            for try await chunk in handle.readChunks(in: 0..<Int64.max, chunkLength: .bytes(Int64(readChunkSize))) {
                try await consume(chunk)
            }
        } catch {
            try? await handle.close()
            throw error
        }
        try await handle.close()
    }

    public func prepareUpload(_ id: String) async throws {
        // Durability first: the bytes reach the disk before the name that publishes them.
        do {
            try await syncToDisk(path: uploadPath(id), directory: false)
        } catch let error as DurableFiles.Failure where error.errno == ENOENT {
            throw BlobStoreError.uploadNotFound(id)
        }
    }

    public func publishUpload(_ id: String, as digest: Digest, prepared: Bool) async throws {
        let source = uploadPath(id)
        let target = blobPath(digest)
        if !prepared {
            if try await size(of: digest) != nil {
                discardInBackground(id)
                return
            }
            try await prepareUpload(id)
        }
        let directory = String(target[..<target.lastIndex(of: "/")!])
        // The first blob of a prefix creates `blobs/<algorithm>/<xx>`; the folders that gain those
        // entries are fsynced too, or a power cut loses the folder and every blob in it.
        try await threadPool.runIfActive { try DurableFiles.createDirectory(directory) }
        do {
            try await fileSystem.moveItem(at: FilePath(source), to: FilePath(target))
        } catch let error as FileSystemError where error.code == .fileAlreadyExists {
            // Same digest, same bytes: another upload committed this blob first.
            discardInBackground(id)
            return
        } catch let error as FileSystemError where error.code == .notFound {
            throw BlobStoreError.uploadNotFound(id)
        }
        try await syncToDisk(path: directory, directory: true)
    }

    /// Deleting a file of freshly written pages takes about 0.3 s per GiB (the kernel frees every
    /// page, waiting for any still being written back): a duplicate push should not wait for it,
    /// nor hold the blob's lock meanwhile. If the process stops first, the garbage collector's
    /// orphan scan removes the file.
    private func discardInBackground(_ id: String) {
        let fileSystem = self.fileSystem
        let path = FilePath(uploadPath(id))
        Task(priority: .background) {
            _ = try? await fileSystem.removeItem(at: path, strategy: .platformDefault, recursively: false)
        }
    }

    public func uploadModified(_ id: String) async throws -> Int64? {
        try await fileSystem.info(forFileAt: FilePath(uploadPath(id)), infoAboutSymbolicLink: false).map(Self.millis)
    }

    public func blobModified(_ digest: Digest) async throws -> Int64? {
        try await fileSystem.info(forFileAt: FilePath(blobPath(digest)), infoAboutSymbolicLink: false).map(Self.millis)
    }

    private static func millis(_ info: FileInfo) -> Int64 {
        Int64(info.lastDataModificationTime.seconds) * 1000 + Int64(info.lastDataModificationTime.nanoseconds) / 1_000_000
    }

    // MARK: Trash

    private func trashPath(_ digest: Digest) -> String { "\(root)/trash/\(digest.algorithm.rawValue)-\(digest.encoded)" }

    public func trash(_ digest: Digest) async throws -> Bool {
        do {
            try? await fileSystem.removeItem(at: FilePath(trashPath(digest)), strategy: .platformDefault, recursively: false)
            try await fileSystem.moveItem(at: FilePath(blobPath(digest)), to: FilePath(trashPath(digest)))
            return true
        } catch let error as FileSystemError where error.code == .notFound {
            return false
        }
    }

    public func restore(_ digest: Digest) async throws {
        do {
            try await fileSystem.moveItem(at: FilePath(trashPath(digest)), to: FilePath(blobPath(digest)))
        } catch let error as FileSystemError where error.code == .fileAlreadyExists {
            try await emptyTrash(digest)
        } catch let error as FileSystemError where error.code == .notFound {
            return
        }
    }

    /// One trip to the I/O threads for the whole batch, plain `rename(2)`: per-file async file-system
    /// calls cost more than the renames themselves when thousands of blobs go.
    public func trash(_ digests: [Digest]) async throws {
        let paths = digests.map { (blobPath($0), trashPath($0)) }
        try await threadPool.runIfActive {
            var moved: [(String, String)] = []
            for (blob, trash) in paths {
                _ = unlink(trash)
                if rename(blob, trash) == 0 {
                    moved.append((blob, trash))
                } else if errno != ENOENT {
                    let code = errno
                    for (blob, trash) in moved { _ = rename(trash, blob) }
                    throw BlobStoreError.systemCall("rename to the trash", path: blob, errno: code)
                }
            }
        }
    }

    public func emptyTrash(_ digests: [Digest]) async throws {
        let paths = digests.map(trashPath)
        try await threadPool.runIfActive {
            for path in paths where unlink(path) != 0 && errno != ENOENT {
                throw BlobStoreError.systemCall("unlink", path: path, errno: errno)
            }
        }
    }

    public func emptyTrash(_ digest: Digest) async throws {
        try await fileSystem.removeItem(at: FilePath(trashPath(digest)), strategy: .platformDefault, recursively: false)
    }

    public func trashedBlobs() async throws -> [Digest] {
        try await Self.list(FilePath("\(root)/trash"), fileSystem).compactMap { name in
            guard let dash = name.firstIndex(of: "-") else { return nil }
            return Digest("\(name[..<dash]):\(name[name.index(after: dash)...])")
        }
    }

    public func deleteUpload(_ id: String) async throws {
        try await fileSystem.removeItem(at: FilePath(uploadPath(id)), strategy: .platformDefault, recursively: false)
    }

    public func allUploads() async throws -> [String] {
        try await Self.list(FilePath("\(root)/uploads"), fileSystem)
    }

    /// fsync(2) of a file or directory, on the I/O thread pool.
    private func syncToDisk(path: String, directory: Bool) async throws {
        try await threadPool.runIfActive {
            if directory { try DurableFiles.syncDirectory(path) } else { try DurableFiles.syncFile(path) }
        }
    }
}

struct FileBlobReader: BlobReader {
    let handle: ReadFileHandle
    let size: Int64
    let chunkSize: Int

    func stream(range: ClosedRange<Int64>?, consume: (ByteBuffer) async throws -> Void) async throws {
        if let range, range.lowerBound < 0 || range.upperBound >= size {
            try? await handle.close()
            throw BlobStoreError.invalidRange
        }
        let readRange = range.map { $0.lowerBound..<($0.upperBound + 1) } ?? 0..<size
        do {
            for try await chunk in handle.readChunks(in: readRange, chunkLength: .bytes(Int64(chunkSize))) {
                try await consume(chunk)
            }
        } catch {
            try? await handle.close()
            throw error
        }
        try await handle.close()
    }

    func close() async throws {
        try await handle.close()
    }
}

/// Batches incoming buffers into `bufferSize` writes at increasing offsets, one write in flight
/// while the next buffer fills: the caller hashes the next bytes on its own thread while the
/// thread pool copies the previous ones into the page cache, so a push runs at the slower of
/// hashing and writing instead of their sum. Memory: two buffers.
/// Used by one request at a time, which the upload session's lock guarantees.
final class FileUploadWriter: UploadWriter, @unchecked Sendable {
    private let handle: WriteFileHandle
    private var offset: Int64
    private var pending: ByteBuffer
    private let bufferSize: Int
    private var closed = false
    /// The write handed to the thread pool and not yet awaited.
    private var inFlight: Task<Void, any Error>?
    /// Where the bytes not yet handed to the kernel's writeback begin.
    private var writebackFrom: Int64
    /// Writeback is started every this many bytes, so that the fsync before the blob is published
    /// waits for the last few megabytes instead of the whole blob (a 1 GiB push otherwise pays its
    /// hashing and its disk write one after the other).
    static let writebackInterval: Int64 = 8 << 20

    init(handle: WriteFileHandle, offset: Int64, bufferSize: Int) {
        self.handle = handle
        self.offset = offset
        self.writebackFrom = offset
        self.bufferSize = bufferSize
        self.pending = ByteBufferAllocator().buffer(capacity: bufferSize)
    }

    func write(_ buffer: ByteBuffer) async throws {
        if pending.readableBytes == 0, buffer.readableBytes >= bufferSize {
            try await startWrite(buffer)
            return
        }
        var buffer = buffer
        pending.writeBuffer(&buffer)
        if pending.readableBytes >= bufferSize {
            try await startWrite(pending)
            // The write in flight owns the old storage; fill a fresh one instead of copying on write.
            pending = ByteBufferAllocator().buffer(capacity: bufferSize)
        }
    }

    /// Waits for the previous write, then starts this one without waiting for it.
    private func startWrite(_ buffer: ByteBuffer) async throws {
        try await inFlight?.value
        inFlight = nil
        let start = offset
        offset += Int64(buffer.readableBytes)
        var writeback: (start: Int64, length: Int64)?
        if offset - writebackFrom >= Self.writebackInterval {
            writeback = (writebackFrom, offset - writebackFrom)
            writebackFrom = offset
        }
        let handle = self.handle
        inFlight = Task {
            try await Self.write(buffer, to: handle, at: start, thenWriteBack: writeback)
        }
    }

    private static func write(
        _ buffer: ByteBuffer, to handle: WriteFileHandle, at offset: Int64,
        thenWriteBack writeback: (start: Int64, length: Int64)?
    ) async throws {
        let written = try await handle.write(contentsOf: buffer.readableBytesView, toAbsoluteOffset: offset)
        guard written == Int64(buffer.readableBytes) else {
            throw BlobStoreError.systemCall("pwrite (short write)", path: "upload", errno: EIO)
        }
        if let writeback { await startWriteback(handle, from: writeback.start, length: writeback.length) }
    }

    /// SYNC_FILE_RANGE_WRITE only queues the pages for writing and returns; durability still comes
    /// from the fsync in prepareUpload. A failure here changes nothing but timing.
    private static func startWriteback(_ handle: WriteFileHandle, from start: Int64, length: Int64) async {
        _ = try? await handle.withUnsafeDescriptor { descriptor in
            wharf_start_writeback(descriptor.rawValue, start, length)
        }
    }

    func close() async throws {
        guard !closed else { return }
        closed = true
        do {
            if pending.readableBytes > 0 {
                try await startWrite(pending)
                pending.clear()
            }
            try await inFlight?.value
            inFlight = nil
            // Queue the tail too: a chunked upload otherwise leaves every PATCH's last few
            // megabytes for the fsync of the closing PUT (about 200 MiB of a 1 GiB push in 10 MiB chunks).
            if offset > writebackFrom {
                await Self.startWriteback(handle, from: writebackFrom, length: offset - writebackFrom)
                writebackFrom = offset
            }
        } catch {
            _ = try? await inFlight?.value
            try? await handle.close()
            throw error
        }
        try await handle.close()
    }

    deinit {
        if !closed {
            let (handle, inFlight) = (self.handle, self.inFlight)
            Task {
                _ = try? await inFlight?.value
                try? await handle.close()
            }
        }
    }
}
