import Logging
import NIOCore
import NIOPosix
import NIOSSL
import PostgresKit
import PostgresNIO
import SQLKit
import SQLiteKit
import SQLiteNIO

#if canImport(FoundationEssentials)
import FoundationEssentials
#else
import Foundation
#endif

/// The SQL engine behind the metadata store. The same SQL runs on both; `Dialect` covers the few
/// differences in DDL (identity columns, byte columns, collation).
public enum Dialect: String, Sendable {
    case sqlite
    case postgres
}

/// A connection to the metadata database with two entry points: `read` for queries and
/// `transaction` for writes, which run atomically (`BEGIN … COMMIT`, rolled back on error).
///
/// SQLite: one writer connection (writes are serialised, as SQLite requires, without busy-retries)
/// and a pool of reader connections that run in parallel thanks to WAL mode.
/// PostgreSQL: PostgresNIO's connection pool.
public final class Database: Sendable {
    public let dialect: Dialect
    private let backend: Backend
    private let logger: Logger

    private enum Backend: Sendable {
        case sqlite(writer: ConnectionPool<SQLiteConnection>, readers: ConnectionPool<SQLiteConnection>)
        case postgres(client: PostgresClient, runner: Task<Void, Never>)
    }

    /// Opens `url`: `sqlite:PATH` (or a plain path) or `postgres://user:password@host:port/database`.
    public static func open(url: String, logger: Logger, readerCount: Int = 4) async throws -> Database {
        if url.hasPrefix("postgres://") || url.hasPrefix("postgresql://") {
            return try await openPostgres(url: url, logger: logger)
        }
        var path = url
        if path.hasPrefix("sqlite://") { path.removeFirst("sqlite://".count) }
        else if path.hasPrefix("sqlite:") { path.removeFirst("sqlite:".count) }
        return try await openSQLite(path: path, logger: logger, readerCount: readerCount)
    }

    private init(dialect: Dialect, backend: Backend, logger: Logger) {
        self.dialect = dialect
        self.backend = backend
        self.logger = logger
    }

    private static func openSQLite(path: String, logger: Logger, readerCount: Int) async throws -> Database {
        // A dedicated pool keeps slow disk I/O of blobs from starving queries, and vice versa.
        let threadPool = NIOThreadPool(numberOfThreads: max(2, readerCount))
        threadPool.start()
        func connect() async throws -> SQLiteConnection {
            let connection = try await SQLiteConnection.open(
                storage: .file(path: path), threadPool: threadPool, logger: logger,
                on: MultiThreadedEventLoopGroup.singleton.any()
            )
            // WAL: readers never block the writer. synchronous=FULL: a committed transaction
            // survives power loss. busy_timeout covers other processes (`wharf fsck`, a second CLI).
            for pragma in ["PRAGMA journal_mode=WAL", "PRAGMA synchronous=FULL", "PRAGMA busy_timeout=15000", "PRAGMA foreign_keys=ON"] {
                _ = try await connection.query(pragma, [])
            }
            return connection
        }
        let writer = try await connect()
        var readers: [SQLiteConnection] = []
        for _ in 0..<readerCount { readers.append(try await connect()) }
        return Database(
            dialect: .sqlite,
            backend: .sqlite(writer: ConnectionPool([writer]), readers: ConnectionPool(readers)),
            logger: logger
        )
    }

    private static func openPostgres(url: String, logger: Logger) async throws -> Database {
        guard let components = URLComponents(string: url), let host = components.host else {
            throw DatabaseError.invalidURL(url)
        }
        let sslMode = components.queryItems?.first(where: { $0.name == "sslmode" })?.value ?? "disable"
        let tls: PostgresClient.Configuration.TLS
        switch sslMode {
        case "disable": tls = .disable
        case "prefer", "allow": tls = .prefer(.makeClientConfiguration())
        case "require", "verify-ca", "verify-full": tls = .require(.makeClientConfiguration())
        default: throw DatabaseError.invalidURL("unknown sslmode '\(sslMode)' in \(url)")
        }
        var database = components.path
        if database.hasPrefix("/") { database.removeFirst() }
        var configuration = PostgresClient.Configuration(
            host: host,
            port: components.port ?? 5432,
            username: components.user?.removingPercentEncoding ?? "postgres",
            password: components.password?.removingPercentEncoding,
            database: database.isEmpty ? nil : database,
            tls: tls
        )
        configuration.options.maximumConnections = 20
        let client = PostgresClient(configuration: configuration, backgroundLogger: logger)
        let runner = Task { await client.run() }
        let db = Database(dialect: .postgres, backend: .postgres(client: client, runner: runner), logger: logger)
        // Fail fast with a clear error if the server is unreachable or the credentials are wrong.
        do {
            _ = try await db.read { try await $0.raw("SELECT 1").all() }
        } catch {
            runner.cancel()
            throw DatabaseError.connectionFailed(url: redact(url), underlying: "\(String(reflecting: error))")
        }
        return db
    }

    /// Runs read-only work. On SQLite it may not see a concurrent transaction until it commits.
    public func read<T: Sendable>(_ body: (any SQLDatabase) async throws -> T) async throws -> T {
        switch backend {
        case .sqlite(_, let readers):
            return try await readers.withConnection { connection in
                try await body(connection.sql(queryLogLevel: .trace))
            }
        case .postgres(let client, _):
            return try await client.withConnection { connection in
                try await body(connection.sql(queryLogLevel: .trace))
            }
        }
    }

    /// Runs `body` in a transaction: all of it commits, or none of it does.
    public func transaction<T: Sendable>(_ body: (any SQLDatabase) async throws -> T) async throws -> T {
        switch backend {
        case .sqlite(let writer, _):
            return try await writer.withConnection { connection in
                let sql = connection.sql(queryLogLevel: .trace)
                try await sql.raw("BEGIN IMMEDIATE").run()
                do {
                    let result = try await body(sql)
                    try await sql.raw("COMMIT").run()
                    return result
                } catch {
                    try? await sql.raw("ROLLBACK").run()
                    throw error
                }
            }
        case .postgres(let client, _):
            return try await client.withConnection { connection in
                let sql = connection.sql(queryLogLevel: .trace)
                try await sql.raw("BEGIN").run()
                do {
                    let result = try await body(sql)
                    try await sql.raw("COMMIT").run()
                    return result
                } catch {
                    try? await sql.raw("ROLLBACK").run()
                    throw error
                }
            }
        }
    }

    public func close() async {
        switch backend {
        case .sqlite(let writer, let readers):
            for connection in await writer.drain() + readers.drain() {
                try? await connection.close()
            }
        case .postgres(_, let runner):
            runner.cancel()
            _ = await runner.value
        }
    }

    private static func redact(_ url: String) -> String {
        guard var components = URLComponents(string: url) else { return url }
        if components.password != nil { components.password = "****" }
        return components.string ?? url
    }
}

public enum DatabaseError: Error, CustomStringConvertible {
    case invalidURL(String)
    case connectionFailed(url: String, underlying: String)
    case migrationFailed(version: Int, underlying: String)

    public var description: String {
        switch self {
        case .invalidURL(let url): "invalid database URL: \(url)"
        case .connectionFailed(let url, let underlying): "cannot connect to \(url): \(underlying)"
        case .migrationFailed(let version, let underlying): "migration \(version) failed: \(underlying)"
        }
    }
}

/// A fixed set of connections handed out one task at a time; waiters queue in order.
actor ConnectionPool<Connection: Sendable> {
    private var idle: [Connection]
    private var waiters: [CheckedContinuation<Connection, Never>] = []

    init(_ connections: [Connection]) {
        self.idle = connections
    }

    private func acquire() async -> Connection {
        if let connection = idle.popLast() { return connection }
        return await withCheckedContinuation { waiters.append($0) }
    }

    private func release(_ connection: Connection) {
        if waiters.isEmpty {
            idle.append(connection)
        } else {
            waiters.removeFirst().resume(returning: connection)
        }
    }

    nonisolated func withConnection<T: Sendable>(_ body: (Connection) async throws -> T) async throws -> T {
        let connection = await acquire()
        do {
            let result = try await body(connection)
            await release(connection)
            return result
        } catch {
            await release(connection)
            throw error
        }
    }

    func drain() -> [Connection] {
        let all = idle
        idle = []
        return all
    }
}
