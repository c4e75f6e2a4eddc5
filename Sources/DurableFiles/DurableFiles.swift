#if canImport(Glibc)
import Glibc
#elseif canImport(Musl)
import Musl
#elseif canImport(Darwin)
import Darwin
#endif

/// Files and folders that survive a power cut, by POSIX's rules rather than one filesystem's habits.
///
/// Why: a file's bytes are durable after its fsync, but its *name* is durable only after the
/// folder holding the name is fsynced, and a new folder only after its parent is. ext4 in its
/// default `data=ordered` mode happens to persist both together, which is why `kill -9` tests
/// never showed the difference; stricter filesystems (and a power cut at the wrong moment on
/// others) lose every blob published into a folder whose creation was never synced.
public enum DurableFiles {
    public struct Failure: Error, CustomStringConvertible {
        public let call: String
        public let path: String
        public let errno: Int32
        public var description: String { "\(call)(\(path)) failed: \(String(cString: strerror(errno)))" }
    }

    /// Creates `path` and any missing parents, fsyncing the folder that gained each new entry.
    /// Returns whether anything was created. An existing path is left as it is.
    @discardableResult
    public static func createDirectory(_ path: String, mode: mode_t = 0o700) throws -> Bool {
        if mkdir(path, mode) == 0 {
            try syncDirectory(parent(of: path))
            return true
        }
        let code = errno
        switch code {
        case EEXIST:
            var info = stat()
            guard stat(path, &info) == 0, info.st_mode & S_IFMT == S_IFDIR else { throw Failure(call: "mkdir", path: path, errno: ENOTDIR) }
            return false
        case ENOENT:
            let above = parent(of: path)
            guard above != path else { throw Failure(call: "mkdir", path: path, errno: code) }
            try createDirectory(above, mode: mode)
            if mkdir(path, mode) == 0 {
                try syncDirectory(above)
                return true
            }
            guard errno == EEXIST else { throw Failure(call: "mkdir", path: path, errno: errno) }
            return false
        default:
            throw Failure(call: "mkdir", path: path, errno: code)
        }
    }

    /// fsync(2) of a folder: makes the names created, renamed or removed in it durable.
    public static func syncDirectory(_ path: String) throws {
        let descriptor = open(path, O_RDONLY | O_DIRECTORY | O_CLOEXEC)
        guard descriptor >= 0 else { throw Failure(call: "open", path: path, errno: errno) }
        defer { close(descriptor) }
        guard fsync(descriptor) == 0 else { throw Failure(call: "fsync", path: path, errno: errno) }
    }

    /// fsync(2) of a file's bytes and size.
    public static func syncFile(_ path: String) throws {
        let descriptor = open(path, O_RDONLY | O_CLOEXEC)
        guard descriptor >= 0 else { throw Failure(call: "open", path: path, errno: errno) }
        defer { close(descriptor) }
        guard fsync(descriptor) == 0 else { throw Failure(call: "fsync", path: path, errno: errno) }
    }

    /// Writes a whole small file atomically and durably: a temporary file in the same folder,
    /// fsynced, renamed over `path`, then the folder fsynced. A crash leaves either no file or the
    /// complete one, never an empty or half-written one (which, for a key, would stop every later start).
    /// With `exclusive`, an existing `path` is an error (EEXIST) and is left untouched.
    public static func writeFile(_ path: String, contents: [UInt8], mode: mode_t = 0o600, exclusive: Bool = false) throws {
        let temporary = "\(path).tmp-\(UInt64.random(in: 0...UInt64.max))"
        let descriptor = open(temporary, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, mode)
        guard descriptor >= 0 else { throw Failure(call: "open", path: temporary, errno: errno) }
        var written = 0
        while written < contents.count {
            let result = contents[written...].withUnsafeBytes { write(descriptor, $0.baseAddress, $0.count) }
            if result < 0 {
                if errno == EINTR { continue }
                let code = errno
                close(descriptor)
                unlink(temporary)
                throw Failure(call: "write", path: temporary, errno: code)
            }
            written += result
        }
        guard fsync(descriptor) == 0 else {
            let code = errno
            close(descriptor)
            unlink(temporary)
            throw Failure(call: "fsync", path: temporary, errno: code)
        }
        close(descriptor)
        if exclusive {
            // link(2) fails if the name exists, so two starts cannot both win.
            guard link(temporary, path) == 0 else {
                let code = errno
                unlink(temporary)
                throw Failure(call: "link", path: path, errno: code)
            }
            unlink(temporary)
        } else {
            guard rename(temporary, path) == 0 else {
                let code = errno
                unlink(temporary)
                throw Failure(call: "rename", path: path, errno: code)
            }
        }
        try syncDirectory(parent(of: path))
    }

    /// The folder holding `path` ("." for a bare name).
    public static func parent(of path: String) -> String {
        var trimmed = Substring(path)
        while trimmed.count > 1, trimmed.hasSuffix("/") { trimmed = trimmed.dropLast() }
        guard let slash = trimmed.lastIndex(of: "/") else { return "." }
        return slash == trimmed.startIndex ? "/" : String(trimmed[..<slash])
    }
}
