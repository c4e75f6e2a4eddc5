import Logging
import Synchronization

#if canImport(Glibc)
import Glibc
#endif

/// Keeps a full disk from locking the registry out of its own clean-up.
///
/// Why: with the disk full, manifest DELETE answered 500 and `wharf gc` failed (SQLite needs room
/// for its journal even to delete), so the registry could not free space until someone removed a
/// file by hand. Two defences:
/// - uploads stop, with a clear error, while free space is below `minimumFreeBytes`, so Wharf's
///   own writes never take the last bytes;
/// - a reserve file (`reserved-space`, `reserveBytes` long) holds room that is released before a
///   delete or a collection when the disk is nearly full (something else may have filled it), and
///   taken back once space is free again.
public final class StorageSpace: Sendable {
    public let root: String
    public let minimumFreeBytes: Int64
    public let reserveBytes: Int64
    private let logger: Logger
    private let reserveHeld = Mutex(false)

    public init(root: String, minimumFreeBytes: Int64, reserveBytes: Int64, logger: Logger) {
        self.root = root
        self.minimumFreeBytes = minimumFreeBytes
        self.reserveBytes = reserveBytes
        self.logger = logger
    }

    var reservePath: String { root + "/reserved-space" }

    /// Bytes an unprivileged writer may still use on the filesystem holding `root`.
    public func freeBytes() -> Int64? {
        var stats = statvfs()
        guard statvfs(root, &stats) == 0 else { return nil }
        let (bytes, overflow) = Int64(clamping: stats.f_bavail).multipliedReportingOverflow(by: Int64(clamping: stats.f_frsize))
        return overflow ? Int64.max : bytes
    }

    /// Size of the filesystem holding `root`.
    public func volumeBytes() -> Int64? {
        var stats = statvfs()
        guard statvfs(root, &stats) == 0 else { return nil }
        let (bytes, overflow) = Int64(clamping: stats.f_blocks).multipliedReportingOverflow(by: Int64(clamping: stats.f_frsize))
        return overflow ? Int64.max : bytes
    }

    public enum SpaceError: Error, CustomStringConvertible {
        case belowMinimum(free: Int64, minimum: Int64, path: String)

        public var description: String {
            switch self {
            case .belowMinimum(let free, let minimum, let path):
                "the registry's storage is nearly full: \(free) bytes free on \(path), below storage.minimumFreeBytes (\(minimum)); "
                    + "pushes are refused until space is freed (delete images, then garbage collection runs; reads and deletes keep working)"
            }
        }
    }

    /// Before an upload writes: refuses while free space is below the minimum.
    public func checkWritable() throws(SpaceError) {
        guard minimumFreeBytes > 0, let free = freeBytes(), free < minimumFreeBytes else { return }
        throw .belowMinimum(free: free, minimum: minimumFreeBytes, path: root)
    }

    /// Creates the reserve file if it is missing and there is room for it. Call at start and after
    /// a collection.
    public func holdReserve() {
        guard reserveBytes > 0 else { return }
        if reserveHeld.withLock({ $0 }) { return }
        if let free = freeBytes(), free < reserveBytes * 2 { return }
        let fd = open(reservePath, O_WRONLY | O_CREAT | O_CLOEXEC, 0o600)
        guard fd >= 0 else { return }
        defer { close(fd) }
        // Real blocks, not a sparse file: the point is that the space is taken.
        guard posix_fallocate(fd, 0, off_t(reserveBytes)) == 0 else {
            _ = unlink(reservePath)
            return
        }
        reserveHeld.withLock { $0 = true }
    }

    /// Before a delete or a collection: gives the reserve back when free space is short, so the
    /// database has room to record the deletion.
    public func releaseReserveIfLow() {
        guard reserveBytes > 0, reserveHeld.withLock({ $0 }) else { return }
        guard let free = freeBytes(), free < max(reserveBytes, minimumFreeBytes) else { return }
        if unlink(reservePath) == 0 || errno == ENOENT {
            reserveHeld.withLock { $0 = false }
            logger.warning(
                "storage nearly full: released the reserved space so deletes and garbage collection can proceed",
                metadata: ["free": "\(free)", "released": "\(reserveBytes)"])
        }
    }

    /// Whether `error` (from the filesystem, NIO or the database) means the disk is full.
    public static func isNoSpace(_ error: any Error) -> Bool {
        if error is SpaceError { return true }
        let text = String(reflecting: error)
        return text.contains("No space left on device") || text.contains("ENOSPC") || text.contains("database or disk is full")
            || text.contains("errno: 28)") || text.contains("SQLITE_FULL")
    }
}
