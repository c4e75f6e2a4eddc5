import Access
import DurableFiles
import Foundation
import Logging
import Metadata

#if canImport(Glibc)
import Glibc
#endif

/// What Wharf keeps on disk stays readable by its own user only, and the secrets in its database
/// stay useless without a master key kept beside it.
///
/// Why: `wharf.db` holds the token-signing keys and the ECR access-key secrets, and the blobs are
/// people's private images. A 0644 database in a 0755 folder let any local user forge bearer
/// tokens and read every image.
enum DataAtRest {
    enum Failure: Error, CustomStringConvertible {
        case notOwned(String, owner: UInt32)
        case unusable(String, String)
        case otherMasterKey(String)

        var description: String {
            switch self {
            case .notOwned(let path, let owner):
                "\(path) belongs to uid \(owner), not to the user Wharf runs as (uid \(getuid())); refusing to use it: chown it to this user or choose another data folder"
            case .unusable(let path, let reason): "\(path): \(reason)"
            case .otherMasterKey(let source):
                "the secrets in this database were sealed with another master key than \(source). Give every node of one registry the same key (WHARF_MASTER_KEY or secrets.masterKeyFile); a lost key means signing keys and access keys must be reissued"
            }
        }
    }

    /// New files and folders are created 0600 and 0700: the database's WAL and SHM files, blobs,
    /// uploads, the advisory database, every file Wharf or SQLite creates from now on.
    static func restrictNewFiles() {
        umask(0o077)
    }

    /// Creates `folder` 0700 if missing; otherwise repairs group and other permission bits on it
    /// and on the files directly in it that hold secrets or data, logging what it changed. A
    /// folder owned by another user is refused.
    static func secure(folder: String, files: [String] = [], logger: Logger) throws {
        // Durably: the folder's own name must survive a power cut, or a fresh install loses its
        // database and keys along with it.
        try DurableFiles.createDirectory(folder)
        try repair(folder, logger: logger)
        for name in files {
            let path = folder + "/" + name
            if FileManager.default.fileExists(atPath: path) { try repair(path, logger: logger) }
        }
    }

    /// Removes group and other bits from one path (no recursion: a 0700 folder already keeps
    /// other users out of everything below it).
    private static func repair(_ path: String, logger: Logger) throws {
        var info = stat()
        guard lstat(path, &info) == 0 else { throw Failure.unusable(path, String(cString: strerror(errno))) }
        guard info.st_uid == getuid() || getuid() == 0 else { throw Failure.notOwned(path, owner: info.st_uid) }
        let mode = info.st_mode & 0o7777
        guard mode & 0o077 != 0 else { return }
        guard chmod(path, mode & ~0o077) == 0 else { throw Failure.unusable(path, "cannot restrict permissions: \(String(cString: strerror(errno)))") }
        logger.warning(
            "restricted permissions: other local users could read this",
            metadata: [
                "path": "\(path)", "was": "\(String(mode, radix: 8))", "now": "\(String(mode & ~0o077, radix: 8))",
            ])
    }

    /// The master key: `WHARF_MASTER_KEY`, else the key file (created with a new random key on the
    /// first start, 0600, and repaired if others could read it).
    static func sealer(configuration: WharfConfiguration, logger: Logger) throws -> (SecretSealer, source: String) {
        if let text = configuration.masterKey {
            return (SecretSealer(key: try SecretSealer.parseKey(text)), "WHARF_MASTER_KEY")
        }
        let path = configuration.resolvedMasterKeyFile
        if !FileManager.default.fileExists(atPath: path) {
            try create(path, contents: SecretSealer.newKeyText() + "\n")
            logger.notice("created a master key for the secrets in the database; back it up with the database", metadata: ["path": "\(path)"])
        }
        try repair(path, logger: logger)
        guard let text = FileManager.default.contents(atPath: path).map({ String(decoding: $0, as: UTF8.self) }) else {
            throw Failure.unusable(path, "cannot read the master key")
        }
        do {
            return (SecretSealer(key: try SecretSealer.parseKey(text)), path)
        } catch {
            throw Failure.unusable(path, "\(error)")
        }
    }

    /// Stops with a clear message when the database's secrets were sealed with another key.
    static func checkKey(_ sealer: SecretSealer, source: String, metadata: MetadataStore) async throws {
        let stored = try await metadata.registrySetting("master_key_check", initial: sealer.keyCheck)
        guard stored == sealer.keyCheck else { throw Failure.otherMasterKey(source) }
    }

    /// Writes a new file exclusively with mode 0600, atomically and durably: a crash leaves no key
    /// or the whole key, never an empty file that would stop every later start.
    private static func create(_ path: String, contents: String) throws {
        do {
            try DurableFiles.writeFile(path, contents: Array(contents.utf8), mode: 0o600, exclusive: true)
        } catch let error as DurableFiles.Failure {
            throw Failure.unusable(path, "cannot create: \(error)")
        }
    }
}
