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
    /// Told after every commit that may have appended to the event outbox.
    public let outboxAppended = ChangeSignal()
    private let backend: Backend
    private let logger: Logger

    private enum Backend: Sendable {
        case sqlite(writer: ConnectionPool<SQLiteConnection>, readers: ConnectionPool<SQLiteConnection>)
        case postgres(client: PostgresClient, runner: Task<Void, Never>, listener: PostgresConnection.Configuration)
    }

    /// Opens `url`: `sqlite:PATH` (or a plain path) or `postgres://user:password@host:port/database`.
    public static func open(url: String, logger: Logger, readerCount: Int = 4) async throws -> Database {
        if url.hasPrefix("postgres://") || url.hasPrefix("postgresql://") {
            return try await openPostgres(url: url, logger: logger)
        }
        var path = url
        if path.hasPrefix("sqlite://") { path.removeFirst("sqlite://".count) } else if path.hasPrefix("sqlite:") { path.removeFirst("sqlite:".count) }
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
        let probeTLS: PostgresConnection.Configuration.TLS
        switch sslMode {
        case "disable": (tls, probeTLS) = (.disable, .disable)
        case "prefer", "allow":
            (tls, probeTLS) = (.prefer(.makeClientConfiguration()), .prefer(try NIOSSLContext(configuration: .makeClientConfiguration())))
        case "require", "verify-ca", "verify-full":
            (tls, probeTLS) = (.require(.makeClientConfiguration()), .require(try NIOSSLContext(configuration: .makeClientConfiguration())))
        default: throw DatabaseError.invalidURL("unknown sslmode '\(sslMode)' in \(url)")
        }
        var database = components.path
        if database.hasPrefix("/") { database.removeFirst() }
        // One direct connection first: the pool retries a failing connection forever (Wharf hung at
        // start-up on a wrong host, port or sslmode), while a single attempt fails within its
        // connect timeout and says why.
        var probe = PostgresConnection.Configuration(
            host: host, port: components.port ?? 5432, username: components.user?.removingPercentEncoding ?? "postgres",
            password: components.password?.removingPercentEncoding, database: database.isEmpty ? nil : database, tls: probeTLS)
        probe.options.connectTimeout = .seconds(10)
        do {
            let connection = try await PostgresConnection.connect(configuration: probe, id: 0, logger: logger)
            try await connection.close()
        } catch {
            var reason = String(reflecting: error)
            if let error = error as? PSQLError, error.code == .sslUnsupported {
                reason = "the server does not offer TLS, and sslmode=\(sslMode) requires it (use sslmode=disable or prefer)"
            }
            throw DatabaseError.connectionFailed(url: redact(url), underlying: reason)
        }
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
        let db = Database(dialect: .postgres, backend: .postgres(client: client, runner: runner, listener: probe), logger: logger)
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
        case .postgres(let client, _, _):
            return try await client.withConnection { connection in
                try await body(connection.sql(queryLogLevel: .trace))
            }
        }
    }

    /// Runs `body` in a transaction: all of it commits, or none of it does, and a commit is on
    /// disk before this returns (SQLite synchronous=FULL, PostgreSQL's default).
    public func transaction<T: Sendable>(_ body: (any SQLDatabase) async throws -> T) async throws -> T {
        switch backend {
        case .sqlite(let writer, _):
            return try await writer.withConnection { connection in
                let sql = connection.sql(queryLogLevel: .trace)
                let outcome: Result<T, any Error>
                try await sql.raw("BEGIN IMMEDIATE").run()
                do {
                    let result = try await body(sql)
                    try await sql.raw("COMMIT").run()
                    outcome = .success(result)
                } catch {
                    try? await sql.raw("ROLLBACK").run()
                    outcome = .failure(error)
                }
                return try outcome.get()
            }
        case .postgres(let client, _, _):
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

    // MARK: Notifications between nodes (PostgreSQL LISTEN/NOTIFY)

    /// Whether other processes may write this database (so in-memory caches must hear of their changes).
    public var isShared: Bool { dialect == .postgres }

    /// Tells every node listening on `channel` (this one included) about `payload` (at most 7,900
    /// bytes). With SQLite there is no other node, and nothing is sent.
    public func notify(channel: String, payload: String) async throws {
        guard case .postgres(let client, _, _) = backend else { return }
        try await client.withConnection { connection in
            _ = try await connection.sql(queryLogLevel: .trace).raw("SELECT pg_notify(\(bind: channel), \(bind: payload))").all()
        }
    }

    /// Calls `onMessage` with every notification on `channel` until the task is cancelled, over a
    /// connection of its own, reconnecting when it drops. `onMessage(nil)` is called whenever the
    /// listener (re)connects: notifications sent while it was away are lost, so a cache must start
    /// over. Returns at once with SQLite.
    public func listen(channel: String, onMessage: @escaping @Sendable (String?) async -> Void) async {
        guard case .postgres(_, _, let configuration) = backend else { return }
        var failures = 0
        while !Task.isCancelled {
            do {
                let connection = try await PostgresConnection.connect(configuration: configuration, id: 1, logger: logger)
                do {
                    try await connection.listen(on: channel) { notifications in
                        failures = 0
                        await onMessage(nil)
                        for try await notification in notifications { await onMessage(notification.payload) }
                    }
                } catch {
                    try? await connection.close()
                    throw error
                }
                try? await connection.close()
            } catch {
                if Task.isCancelled { return }
                failures += 1
                logger.warning(
                    "lost the database notification connection; reconnecting", metadata: ["channel": "\(channel)", "error": "\(error)"])
            }
            // 0.1 s, 0.2 s, … at most 5 s between attempts.
            try? await Task.sleep(for: .milliseconds(min(5_000, 100 << min(failures, 6))))
        }
    }

    public func close() async {
        switch backend {
        case .sqlite(let writer, let readers):
            // Waits for connections still in use, so none is left open (SQLiteNIO insists).
            for connection in await writer.shutDown() + readers.shutDown() {
                try? await connection.close()
            }
        case .postgres(_, let runner, _):
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
    case closed

    public var description: String {
        switch self {
        case .closed: "the database is closed"
        case .invalidURL(let url): "invalid database URL: \(url)"
        case .connectionFailed(let url, let underlying): "cannot connect to \(url): \(underlying)"
        case .migrationFailed(let version, let underlying): "migration \(version) failed: \(underlying)"
        }
    }
}

/// A fixed set of connections handed out one task at a time; waiters queue in order.
actor ConnectionPool<Connection: Sendable> {
    private var idle: [Connection]
    private let total: Int
    private var waiters: [CheckedContinuation<Connection?, Never>] = []
    private var closing = false
    private var drained: CheckedContinuation<Void, Never>?

    init(_ connections: [Connection]) {
        self.idle = connections
        self.total = connections.count
    }

    private func acquire() async throws -> Connection {
        guard !closing else { throw DatabaseError.closed }
        if let connection = idle.popLast() { return connection }
        guard let connection = await withCheckedContinuation({ waiters.append($0) }) else { throw DatabaseError.closed }
        return connection
    }

    private func release(_ connection: Connection) {
        if !closing, !waiters.isEmpty {
            waiters.removeFirst().resume(returning: connection)
            return
        }
        idle.append(connection)
        if closing, idle.count == total {
            drained?.resume()
            drained = nil
        }
    }

    nonisolated func withConnection<T: Sendable>(_ body: (Connection) async throws -> T) async throws -> T {
        let connection = try await acquire()
        do {
            let result = try await body(connection)
            await release(connection)
            return result
        } catch {
            await release(connection)
            throw error
        }
    }

    private func giveUpWaiting() {
        drained?.resume()
        drained = nil
    }

    /// Refuses new work, waits for every connection to come back, and hands them all over to be closed.
    func shutDown() async -> [Connection] {
        closing = true
        for waiter in waiters { waiter.resume(returning: nil) }
        waiters.removeAll()
        if idle.count < total {
            // Bounded: a connection held by a stuck task must not keep the process from exiting.
            let timeout = Task { [weak self] in
                try? await Task.sleep(for: .seconds(10))
                await self?.giveUpWaiting()
            }
            await withCheckedContinuation { drained = $0 }
            timeout.cancel()
        }
        let all = idle
        idle = []
        return all
    }
}

/// A wake-up call for one listener: `signal()` never blocks, and signals that arrive while the
/// listener is busy collapse into one.
public final class ChangeSignal: Sendable {
    public let signals: AsyncStream<Void>
    private let continuation: AsyncStream<Void>.Continuation

    public init() { (signals, continuation) = AsyncStream.makeStream(of: Void.self, bufferingPolicy: .bufferingNewest(1)) }

    public func signal() { continuation.yield() }
}
