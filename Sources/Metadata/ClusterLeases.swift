import SQLKit
import Synchronization

#if canImport(Glibc)
import Glibc
#endif

#if canImport(FoundationEssentials)
import FoundationEssentials
#else
import Foundation
#endif

/// Leases on named pieces of background work, so that several nodes over one database run each of
/// them on one node at a time: garbage collection, scheduled lifecycle runs, webhook sending. A
/// lease is taken or renewed by one atomic upsert and expires unless renewed, so the work moves to
/// another node within `duration` of its holder's death.
public struct ClusterLeases: Sendable {
    let database: Database
    /// This process: random per start, so a restarted node does not inherit its old leases early.
    public let holder: String
    /// When this process last renewed each lease it holds. Work asks before every batch (webhooks
    /// after every push); a lease renewed less than a third of its duration ago is still ours for
    /// two thirds more (nobody else can take it before it expires), so no write is needed.
    private let renewed = RenewalTimes()

    public init(database: Database, holder: String) {
        self.database = database
        self.holder = holder
    }

    /// A holder name for this process: host, process id and a random part.
    public static func newHolder() -> String {
        let host = ProcessInfo.processInfo.hostName
        let random = (0..<6).map { _ in String(UInt8.random(in: 0...255), radix: 16) }.joined()
        return "\(host)/\(ProcessInfo.processInfo.processIdentifier)/\(random)"
    }

    /// Takes `name` for `durationMillis` if it is free or expired, or renews it if this node holds
    /// it. True when this node holds it now.
    public func acquire(_ name: String, durationMillis: Int64, now: Int64 = Timestamp.nowMillis()) async throws -> Bool {
        if let last = renewed.times.withLock({ $0[name] }), now >= last, now - last < durationMillis / 3 { return true }
        let held = try await database.transaction { sql in
            let rows = try await sql.raw(
                """
                INSERT INTO cluster_leases (name, holder, expires_at) VALUES (\(bind: name), \(bind: holder), \(bind: now + durationMillis))
                ON CONFLICT (name) DO UPDATE SET holder = excluded.holder, expires_at = excluded.expires_at
                WHERE cluster_leases.holder = excluded.holder OR cluster_leases.expires_at < \(bind: now)
                RETURNING holder
                """
            ).all()
            return try rows.first?.decode(column: "holder", as: String.self) == holder
        }
        renewed.times.withLock { $0[name] = held ? now : nil }
        return held
    }

    /// Frees the leases of processes of this host that no longer run (a node killed with SIGKILL
    /// and started again), so its restart takes its work back at once instead of after the
    /// leases expire. Holders on other hosts are left to expire: their liveness is unknowable here.
    /// Returns the names freed.
    @discardableResult
    public func reclaimFromDeadProcesses() async throws -> [String] {
        let host = ProcessInfo.processInfo.hostName
        let stale = try await current().filter { lease in
            let parts = lease.holder.split(separator: "/")
            guard parts.count == 3, parts[0] == host, let pid = Int32(parts[1]), lease.holder != holder else { return false }
            // Our own pid under another holder name is an earlier start (a container's pid 1).
            return pid == ProcessInfo.processInfo.processIdentifier || (kill(pid, 0) != 0 && errno == ESRCH)
        }
        for lease in stale {
            try await database.transaction { sql in
                try await sql.raw("DELETE FROM cluster_leases WHERE name = \(bind: lease.name) AND holder = \(bind: lease.holder)").run()
            }
        }
        return stale.map(\.name)
    }

    /// Gives `name` up (at shutdown), so another node need not wait for it to expire.
    public func release(_ name: String) async throws {
        renewed.times.withLock { $0[name] = nil }
        try await database.transaction { sql in
            try await sql.raw("DELETE FROM cluster_leases WHERE name = \(bind: name) AND holder = \(bind: holder)").run()
        }
    }

    /// A lease as stored.
    public struct Lease: Sendable, Codable, Equatable {
        public var name: String
        public var holder: String
        public var expiresAt: Int64
    }

    /// Every lease not yet expired.
    public func current(now: Int64 = Timestamp.nowMillis()) async throws -> [Lease] {
        try await database.read { sql in
            try await sql.raw("SELECT name, holder, expires_at FROM cluster_leases WHERE expires_at >= \(bind: now) ORDER BY name").all().map {
                Lease(
                    name: try $0.decode(column: "name", as: String.self), holder: try $0.decode(column: "holder", as: String.self),
                    expiresAt: try $0.decode(column: "expires_at", as: Int64.self))
            }
        }
    }

    /// Who holds `name` now, if anyone (for status pages and tests).
    public func holder(of name: String, now: Int64 = Timestamp.nowMillis()) async throws -> String? {
        try await database.read { sql in
            try await sql.raw("SELECT holder FROM cluster_leases WHERE name = \(bind: name) AND expires_at >= \(bind: now)").first()?
                .decode(column: "holder", as: String.self)
        }
    }
}

final class RenewalTimes: Sendable {
    let times = Mutex<[String: Int64]>([:])
}
