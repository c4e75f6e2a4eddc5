import Foundation
import Logging
import NIOCore
import SQLiteNIO

/// The vulnerability database: OSV records in one indexed SQLite file, looked up by ecosystem,
/// release and package. Records are kept as OSV JSON and evaluated in Swift (`AffectedVersions`),
/// so the database needs no schema change when OSV grows fields.
///
/// A database file is written once by `AdvisoryDatabaseBuilder` and then only read; a new import
/// writes a new file and renames it over the old one, so readers never see half an import.
public actor AdvisoryDatabase {
    public struct Summary: Sendable, Equatable, Codable {
        public var records: Int
        public var packages: Int
        public var ecosystems: [String: Int]
        public var importedAt: String?
        /// A fresh id per import: tells two databases apart even when imported in the same second.
        public var version: String?
        public var sources: [String]
    }

    private let connection: SQLiteConnection
    public let path: String
    private var decoded: [String: OSVRecord] = [:]

    private init(connection: SQLiteConnection, path: String) {
        self.connection = connection
        self.path = path
    }

    /// Opens an existing database file (read-only use).
    public static func open(_ path: String) async throws -> AdvisoryDatabase {
        guard FileManager.default.fileExists(atPath: path) else {
            throw AdvisoryImportError("no vulnerability database at \(path): import one with `wharf advisories import`")
        }
        let connection = try await SQLiteConnection.open(storage: .file(path: path), logger: Logger(label: "wharf.advisories"))
        let database = AdvisoryDatabase(connection: connection, path: path)
        do {
            _ = try await database.rows("SELECT value FROM meta WHERE key = 'schema'", [])
        } catch {
            // Not a database of ours (or not SQLite at all): close before the connection is dropped.
            try? await connection.close()
            throw AdvisoryImportError("\(path) is not a Wharf vulnerability database: \(error)")
        }
        return database
    }

    public func close() async throws { try await connection.close() }

    /// The records that name `package` in `ecosystem` (any release, or exactly `release`).
    public func records(ecosystem: Ecosystem, release: String?, package: String) async throws -> [OSVRecord] {
        let rows = try await self.rows(
            """
            SELECT r.id, r.json FROM affected a JOIN records r ON r.id = a.record_id
            WHERE a.ecosystem = ?1 AND a.package = ?2 AND (a.release = '' OR a.release = ?3)
            GROUP BY r.id ORDER BY r.id
            """,
            [.text(ecosystem.rawValue), .text(Self.key(package, ecosystem)), .text(release ?? "")])
        var records: [OSVRecord] = []
        for row in rows {
            guard let id = row.column("id")?.string else { continue }
            if let cached = decoded[id] {
                records.append(cached)
                continue
            }
            guard case .blob(let buffer)? = row.column("json") else { continue }
            let record = try JSONDecoder().decode(OSVRecord.self, from: Data(buffer.readableBytesView))
            if decoded.count > 50_000 { decoded.removeAll(keepingCapacity: true) }
            decoded[id] = record
            records.append(record)
        }
        return records
    }

    public func summary() async throws -> Summary {
        let records = try await rows("SELECT count(*) AS n FROM records", []).first?.column("n")?.integer ?? 0
        let packages = try await rows("SELECT count(DISTINCT ecosystem || '/' || package) AS n FROM affected", []).first?.column("n")?.integer ?? 0
        var ecosystems: [String: Int] = [:]
        for row in try await rows("SELECT ecosystem, count(DISTINCT record_id) AS n FROM affected GROUP BY ecosystem", []) {
            if let name = row.column("ecosystem")?.string { ecosystems[name] = row.column("n")?.integer ?? 0 }
        }
        let importedAt = try await rows("SELECT value FROM meta WHERE key = 'imported_at'", []).first?.column("value")?.string
        let sources = try await rows("SELECT value FROM meta WHERE key = 'sources'", []).first?.column("value")?.string
        return Summary(
            records: records, packages: packages, ecosystems: ecosystems, importedAt: importedAt,
            version: try await version(), sources: sources.map { $0.split(separator: "\n").map(String.init) } ?? [])
    }

    /// The import's id (its time, for databases written before ids existed).
    public func version() async throws -> String? {
        let rows = try await rows("SELECT key, value FROM meta WHERE key IN ('version', 'imported_at')", [])
        let values = Dictionary(rows.compactMap { row in row.column("key")?.string.map { ($0, row.column("value")?.string ?? "") } }) { a, _ in a }
        return values["version"] ?? values["imported_at"]
    }

    /// Which file is at `path` now (device, inode, size, modification time): a cheap way to notice
    /// that an import or an update replaced the database. Nil when there is none.
    public static func fileIdentity(_ path: String) -> String? {
        var info = stat()
        guard stat(path, &info) == 0 else { return nil }
        return "\(info.st_dev):\(info.st_ino):\(info.st_size):\(info.st_mtim.tv_sec).\(info.st_mtim.tv_nsec)"
    }

    private func rows(_ sql: String, _ binds: [SQLiteData]) async throws -> [SQLiteRow] {
        let collector = RowCollector()
        try await connection.query(sql, binds) { collector.append($0) }
        return collector.rows
    }

    /// How a package name is looked up: PyPI names are case- and separator-insensitive (PEP 503).
    static func key(_ package: String, _ ecosystem: Ecosystem) -> String {
        switch ecosystem {
        case .pypi:
            var result = ""
            var lastWasSeparator = false
            for character in package.lowercased() {
                if character == "-" || character == "_" || character == "." {
                    if !lastWasSeparator { result.append("-") }
                    lastWasSeparator = true
                } else {
                    result.append(character)
                    lastWasSeparator = false
                }
            }
            return result
        default:
            return package
        }
    }
}

/// Rows gathered from SQLiteNIO's callback, which runs on its thread pool.
final class RowCollector: @unchecked Sendable {
    private let lock = NSLock()
    private var collected: [SQLiteRow] = []
    func append(_ row: SQLiteRow) { lock.withLock { collected.append(row) } }
    var rows: [SQLiteRow] { lock.withLock { collected } }
}

public struct AdvisoryImportError: Error, Sendable, CustomStringConvertible {
    public let description: String
    public init(_ description: String) { self.description = description }
}

/// Writes a new database file from OSV records. Withdrawn records are left out; a record seen
/// twice (the same id from two sources) keeps the most recently modified copy.
public final class AdvisoryDatabaseBuilder {
    public private(set) var imported = 0
    public private(set) var skippedWithdrawn = 0
    public private(set) var skippedUnreadable: [String] = []
    private var sources: [String] = []
    private let connection: SQLiteConnection
    private let temporaryPath: String
    private let finalPath: String
    private var pendingRecords: [(OSVRecord, [UInt8])] = []

    private init(connection: SQLiteConnection, temporaryPath: String, finalPath: String) {
        self.connection = connection
        self.temporaryPath = temporaryPath
        self.finalPath = finalPath
    }

    /// Starts a new database that `commit()` will move to `path`.
    public static func create(at path: String) async throws -> AdvisoryDatabaseBuilder {
        let directory = (path as NSString).deletingLastPathComponent
        if !directory.isEmpty { try FileManager.default.createDirectory(atPath: directory, withIntermediateDirectories: true) }
        let temporary = path + ".new-\(UUID().uuidString.prefix(8))"
        let connection = try await SQLiteConnection.open(storage: .file(path: temporary), logger: Logger(label: "wharf.advisories"))
        let builder = AdvisoryDatabaseBuilder(connection: connection, temporaryPath: temporary, finalPath: path)
        for statement in [
            "PRAGMA journal_mode = OFF", "PRAGMA synchronous = OFF",
            "CREATE TABLE meta (key TEXT PRIMARY KEY, value TEXT NOT NULL)",
            "CREATE TABLE records (id TEXT PRIMARY KEY, modified TEXT NOT NULL, json BLOB NOT NULL)",
            "CREATE TABLE affected (ecosystem TEXT NOT NULL, release TEXT NOT NULL, package TEXT NOT NULL, record_id TEXT NOT NULL)",
            "BEGIN",
        ] {
            try await connection.query(statement, []) { _ in }
        }
        return builder
    }

    public func addSource(_ description: String) { sources.append(description) }

    /// Adds one OSV record given as JSON; unreadable input is counted, not fatal.
    public func add(json bytes: [UInt8], origin: String) async throws {
        let record: OSVRecord
        do { record = try JSONDecoder().decode(OSVRecord.self, from: Data(bytes)) } catch {
            skippedUnreadable.append(origin)
            return
        }
        try await add(record, json: bytes)
    }

    public func add(_ record: OSVRecord, json: [UInt8]? = nil) async throws {
        guard !record.isWithdrawn else {
            skippedWithdrawn += 1
            return
        }
        let bytes = try json ?? [UInt8](JSONEncoder().encode(record))
        pendingRecords.append((record, bytes))
        imported += 1
        if pendingRecords.count >= 500 { try await flush() }
    }

    private func flush() async throws {
        guard !pendingRecords.isEmpty else { return }
        // Multi-row statements: one SQLite call per 500 records keeps a 50,000-record import fast.
        var recordBinds: [SQLiteData] = []
        var affectedBinds: [SQLiteData] = []
        var affectedRows = 0
        for (record, bytes) in pendingRecords {
            recordBinds += [.text(record.id), .text(record.modified ?? ""), .blob(ByteBuffer(bytes: bytes))]
            var seen = Set<String>()
            for affected in record.affected ?? [] {
                guard let package = affected.package, let ecosystem = Ecosystem(osv: package.ecosystem) else { continue }
                let release = Ecosystem.release(ofOSV: package.ecosystem) ?? ""
                let name = AdvisoryDatabase.key(package.name, ecosystem)
                guard seen.insert("\(ecosystem.rawValue)\u{0}\(release)\u{0}\(name)").inserted else { continue }
                affectedBinds += [.text(ecosystem.rawValue), .text(release), .text(name), .text(record.id)]
                affectedRows += 1
            }
        }
        let placeholders = Array(repeating: "(?, ?, ?)", count: pendingRecords.count).joined(separator: ", ")
        // The newest copy of a record wins when two sources carry it.
        try await connection.query(
            "INSERT INTO records (id, modified, json) VALUES \(placeholders) ON CONFLICT (id) DO UPDATE SET modified = excluded.modified, json = excluded.json WHERE excluded.modified >= records.modified",
            recordBinds
        ) { _ in }
        var offset = 0
        while offset < affectedRows {
            let count = min(affectedRows - offset, 200)
            let rows = Array(repeating: "(?, ?, ?, ?)", count: count).joined(separator: ", ")
            try await connection.query(
                "INSERT INTO affected (ecosystem, release, package, record_id) VALUES \(rows)",
                Array(affectedBinds[(offset * 4)..<((offset + count) * 4)])
            ) { _ in }
            offset += count
        }
        pendingRecords.removeAll(keepingCapacity: true)
    }

    /// Indexes, writes metadata and atomically replaces the database at the final path.
    public func commit() async throws {
        try await flush()
        let now = ISO8601DateFormatter().string(from: Date())
        for (statement, binds) in [
            // Duplicate (record, package) rows from a record imported twice.
            ("DELETE FROM affected WHERE rowid NOT IN (SELECT min(rowid) FROM affected GROUP BY ecosystem, release, package, record_id)", []),
            ("CREATE INDEX affected_lookup ON affected (ecosystem, package, release)", []),
            (
                "INSERT INTO meta (key, value) VALUES ('schema', '1'), ('imported_at', ?1), ('sources', ?2), ('version', ?3)",
                [SQLiteData.text(now), .text(sources.joined(separator: "\n")), .text(UUID().uuidString.lowercased())]
            ),
            ("COMMIT", []),
        ] as [(String, [SQLiteData])] {
            try await connection.query(statement, binds) { _ in }
        }
        try await connection.close()
        guard rename(temporaryPath, finalPath) == 0 else {
            throw AdvisoryImportError("cannot move the new database to \(finalPath): \(String(cString: strerror(errno)))")
        }
    }

    /// Abandons the import; the previous database stays as it was.
    public func discard() async {
        try? await connection.close()
        try? FileManager.default.removeItem(atPath: temporaryPath)
    }
}
