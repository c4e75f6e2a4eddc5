import NIOCore
import OCI
import SQLKit

#if canImport(FoundationEssentials)
import FoundationEssentials
#else
import Foundation
#endif

/// A repository as the control plane describes it: name, creation time and settings.
public struct RepositoryRecord: Sendable, Equatable {
    public var name: String
    public var createdAt: Int64
    public var settings: RepositorySettings
}

/// A manifest with what `DescribeImages` reports about it.
public struct ImageRecord: Sendable {
    public var digest: Digest
    public var tags: [String]
    public var mediaType: String
    public var artifactType: String?
    /// The exact bytes, or sealed (see `ManifestRecord.sealedWith`).
    public var content: [UInt8]
    public var sealedWith: String?
    public var pushedAt: Int64
    public var lastPulledAt: Int64?
}

public enum RepositoryDeletion: Sendable, Equatable {
    case deleted(RepositoryRecord, manifests: Int)
    case notFound
    /// Holds images and `force` was not given.
    case notEmpty(manifests: Int)
}

/// The latest lifecycle-policy dry run of a repository, as stored.
public struct StoredLifecyclePreview: Sendable, Equatable {
    public var policy: String
    public var status: String
    /// JSON written by whoever ran the preview.
    public var result: String
    public var createdAt: Int64

    public init(policy: String, status: String, result: String, createdAt: Int64) {
        self.policy = policy
        self.status = status
        self.result = result
        self.createdAt = createdAt
    }
}

extension MetadataStore {
    // MARK: Repositories as resources

    /// Creates an empty repository with its settings; `conflict` if it exists.
    /// Settings without encryption get the registry's default.
    public func createRepository(_ name: RepositoryName, settings: RepositorySettings, labels: [(String, String)]) async throws -> RepositoryRecord {
        var settings = settings
        if settings.encryption == nil, let fallback = defaultEncryption {
            settings.encryption = RepositorySettings.Encryption(type: fallback.type, kmsKey: fallback.kmsKey, domain: fallback.domain)
        }
        return try await database.transaction { [settings] sql in
            if try await Self.repositoryID(name, sql) != nil { throw MetadataError.conflict("repository '\(name)' already exists") }
            let id = try await Self.ensureRepository(name, sql, encryption: nil, applyingTemplate: false)
            let stored = try await Self.updateSettings(repositoryID: id, { $0 = settings }, sql)
            for (key, value) in labels { try await Self.putLabel(repositoryID: id, key: key, value: value, sql) }
            let createdAt = try await sql.raw("SELECT created_at FROM repositories WHERE id = \(bind: id)").first()!.decode(
                column: "created_at", as: Int64.self)
            return RepositoryRecord(name: name.value, createdAt: createdAt, settings: stored)
        }
    }

    public func repositoryRecord(_ name: RepositoryName) async throws -> RepositoryRecord? {
        try await repositoryRecords(named: [name.value]).first
    }

    /// The named repositories that exist, in name order.
    public func repositoryRecords(named names: [String]) async throws -> [RepositoryRecord] {
        guard !names.isEmpty else { return [] }
        return try await database.read { sql in
            try await sql.raw(
                """
                SELECT r.name, r.created_at, s.* FROM repositories r LEFT JOIN repository_settings s ON s.repository_id = r.id
                WHERE r.name IN (\(binds: names)) ORDER BY r.name
                """
            ).all().map(Self.repositoryRecord)
        }
    }

    /// A page of repositories in name order after `last`, limited to `filter` when given.
    public func repositoryRecords(after last: String?, limit: Int, filter: RepositoryFilter?) async throws -> [RepositoryRecord] {
        let names = try await listRepositories(after: last, limit: limit, filter: filter)
        return try await repositoryRecords(named: names)
    }

    private static func repositoryRecord(_ row: any SQLRow) throws -> RepositoryRecord {
        let hasSettings = try row.decode(column: "tag_mutability", as: String?.self) != nil
        return RepositoryRecord(
            name: try row.decode(column: "name", as: String.self),
            createdAt: try row.decode(column: "created_at", as: Int64.self),
            settings: hasSettings ? try settings(row) : RepositorySettings())
    }

    /// Deletes a repository with its tags, manifests and blob links (the collector reclaims the
    /// bytes). Without `force`, only an empty repository is deleted.
    public func deleteRepository(_ name: RepositoryName, force: Bool) async throws -> RepositoryDeletion {
        try await database.transaction { sql in
            try await database.lock("repository:\(name)", in: sql)
            guard
                let row = try await sql.raw(
                    """
                    SELECT r.id, r.name, r.created_at, s.* FROM repositories r LEFT JOIN repository_settings s ON s.repository_id = r.id
                    WHERE r.name = \(bind: name.value)
                    """
                ).first()
            else { return .notFound }
            let record = try Self.repositoryRecord(row)
            let id = try row.decode(column: "id", as: Int64.self)
            let count = try await sql.raw("SELECT COUNT(*) AS n FROM manifests WHERE repository_id = \(bind: id)").first()!.decode(column: "n", as: Int64.self)
            if count > 0 && !force { return .notEmpty(manifests: Int(count)) }
            // Tags and references first: their foreign keys point at manifests.
            try await sql.raw("DELETE FROM tags WHERE repository_id = \(bind: id)").run()
            try await sql.raw("DELETE FROM manifest_references WHERE repository_id = \(bind: id)").run()
            try await sql.raw("DELETE FROM manifests WHERE repository_id = \(bind: id)").run()
            // Unlinked blobs get a fresh grace clock, like any unlink.
            try await sql.raw(
                """
                UPDATE blobs SET touched_at = \(bind: Timestamp.nowMillis()) WHERE digest IN (SELECT digest FROM repository_blobs WHERE repository_id = \(bind: id))
                """
            ).run()
            try await sql.raw("DELETE FROM repository_blobs WHERE repository_id = \(bind: id)").run()
            try await sql.raw("DELETE FROM repositories WHERE id = \(bind: id)").run()
            try await sql.raw("DELETE FROM upload_sessions WHERE repository = \(bind: name.value)").run()
            return .deleted(record, manifests: Int(count))
        }
    }

    /// Every manifest of a repository with its tags, newest push first.
    public func images(in repository: RepositoryName) async throws -> [ImageRecord]? {
        try await database.read { sql in
            guard let id = try await Self.repositoryID(repository, sql) else { return nil }
            var tags: [String: [String]] = [:]
            for row in try await sql.raw("SELECT name, digest FROM tags WHERE repository_id = \(bind: id) ORDER BY name").all() {
                tags[try row.decode(column: "digest", as: String.self), default: []].append(try row.decode(column: "name", as: String.self))
            }
            return try await sql.raw(
                """
                SELECT digest, media_type, artifact_type, content, sealed_with, pushed_at, last_pulled_at FROM manifests
                WHERE repository_id = \(bind: id) ORDER BY pushed_at DESC, digest
                """
            ).all().compactMap { row -> ImageRecord? in
                let text = try row.decode(column: "digest", as: String.self)
                guard let digest = Digest(text) else { return nil }
                var content = try row.decode(column: "content", as: ByteBuffer.self)
                return ImageRecord(
                    digest: digest, tags: tags[text] ?? [], mediaType: try row.decode(column: "media_type", as: String.self),
                    artifactType: try row.decode(column: "artifact_type", as: String?.self),
                    content: content.readBytes(length: content.readableBytes) ?? [],
                    sealedWith: try row.decode(column: "sealed_with", as: String?.self),
                    pushedAt: try row.decode(column: "pushed_at", as: Int64.self),
                    lastPulledAt: try row.decode(column: "last_pulled_at", as: Int64?.self))
            }
        }
    }

    /// Sizes of committed blobs, for reporting image sizes.
    public func blobSizes(_ digests: [Digest]) async throws -> [Digest: Int64] {
        guard !digests.isEmpty else { return [:] }
        return try await database.read { sql in
            var sizes: [Digest: Int64] = [:]
            for chunk in Array(Set(digests.map(\.description))).chunked(500) {
                for row in try await sql.raw("SELECT digest, size FROM blobs WHERE digest IN (\(binds: Array(chunk)))").all() {
                    if let digest = Digest(try row.decode(column: "digest", as: String.self)) { sizes[digest] = try row.decode(column: "size", as: Int64.self) }
                }
            }
            return sizes
        }
    }

    /// Manifests in the repository that an index there lists as a child.
    public func childManifests(in repository: RepositoryName, of digests: [Digest]) async throws -> Set<Digest> {
        guard !digests.isEmpty else { return [] }
        return try await database.read { sql in
            guard let id = try await Self.repositoryID(repository, sql) else { return [] }
            return Set(
                try await sql.raw(
                    """
                    SELECT DISTINCT child_digest FROM manifest_references
                    WHERE repository_id = \(bind: id) AND kind = 'manifest' AND child_digest IN (\(binds: digests.map(\.description)))
                    """
                ).all().compactMap { Digest(try $0.decode(column: "child_digest", as: String.self)) })
        }
    }

    // MARK: Labels (resource tags)

    public func labels(of repository: RepositoryName) async throws -> [(key: String, value: String)]? {
        try await database.read { sql in
            guard let id = try await Self.repositoryID(repository, sql) else { return nil }
            return try await sql.raw("SELECT label_key, label_value FROM repository_labels WHERE repository_id = \(bind: id) ORDER BY label_key").all().map {
                (try $0.decode(column: "label_key", as: String.self), try $0.decode(column: "label_value", as: String.self))
            }
        }
    }

    /// Adds or replaces labels; fails with `invalid` when the total would exceed `maximum`.
    /// Returns false when the repository does not exist.
    public func putLabels(_ labels: [(String, String)], on repository: RepositoryName, maximum: Int) async throws -> Bool {
        try await database.transaction { sql in
            guard let id = try await Self.repositoryID(repository, sql) else { return false }
            let existing = Set(
                try await sql.raw("SELECT label_key FROM repository_labels WHERE repository_id = \(bind: id)").all().map {
                    try $0.decode(column: "label_key", as: String.self)
                })
            guard existing.union(labels.map(\.0)).count <= maximum else { throw MetadataError.invalid("a repository can have at most \(maximum) tags") }
            for (key, value) in labels { try await Self.putLabel(repositoryID: id, key: key, value: value, sql) }
            return true
        }
    }

    public func removeLabels(_ keys: [String], from repository: RepositoryName) async throws -> Bool {
        try await database.transaction { sql in
            guard let id = try await Self.repositoryID(repository, sql) else { return false }
            if !keys.isEmpty {
                try await sql.raw("DELETE FROM repository_labels WHERE repository_id = \(bind: id) AND label_key IN (\(binds: keys))").run()
            }
            return true
        }
    }

    static func putLabel(repositoryID: Int64, key: String, value: String, _ sql: any SQLDatabase) async throws {
        try await sql.raw(
            """
            INSERT INTO repository_labels (repository_id, label_key, label_value) VALUES (\(bind: repositoryID), \(bind: key), \(bind: value))
            ON CONFLICT (repository_id, label_key) DO UPDATE SET label_value = excluded.label_value
            """
        ).run()
    }

    // MARK: Registry settings

    public func registrySetting(_ name: String) async throws -> String? {
        try await database.read { sql in
            try await sql.raw("SELECT value FROM registry_settings WHERE name = \(bind: name)").first()?.decode(column: "value", as: String.self)
        }
    }

    public func putRegistrySetting(_ name: String, _ value: String) async throws {
        try await database.transaction { sql in
            try await sql.raw(
                """
                INSERT INTO registry_settings (name, value, updated_at) VALUES (\(bind: name), \(bind: value), \(bind: Timestamp.nowMillis()))
                ON CONFLICT (name) DO UPDATE SET value = excluded.value, updated_at = excluded.updated_at
                """
            ).run()
        }
    }

    public func deleteRegistrySetting(_ name: String) async throws -> Bool {
        try await database.transaction { sql in
            try await !sql.raw("DELETE FROM registry_settings WHERE name = \(bind: name) RETURNING name").all().isEmpty
        }
    }

    /// The stored value, or `initial` stored now if there was none (first writer wins on every node).
    public func registrySetting(_ name: String, initial: @autoclosure () -> String) async throws -> String {
        let candidate = initial()
        return try await database.transaction { sql in
            try await sql.raw(
                """
                INSERT INTO registry_settings (name, value, updated_at) VALUES (\(bind: name), \(bind: candidate), \(bind: Timestamp.nowMillis()))
                ON CONFLICT (name) DO NOTHING
                """
            ).run()
            return try await sql.raw("SELECT value FROM registry_settings WHERE name = \(bind: name)").first()!.decode(column: "value", as: String.self)
        }
    }

    // MARK: Lifecycle previews

    public func saveLifecyclePreview(_ preview: StoredLifecyclePreview, for repository: RepositoryName) async throws -> Bool {
        try await database.transaction { sql in
            guard let id = try await Self.repositoryID(repository, sql) else { return false }
            try await sql.raw(
                """
                INSERT INTO lifecycle_previews (repository_id, policy, status, result, created_at)
                VALUES (\(bind: id), \(bind: preview.policy), \(bind: preview.status), \(bind: preview.result), \(bind: preview.createdAt))
                ON CONFLICT (repository_id) DO UPDATE SET policy = excluded.policy, status = excluded.status,
                    result = excluded.result, created_at = excluded.created_at
                """
            ).run()
            return true
        }
    }

    public func lifecyclePreview(for repository: RepositoryName) async throws -> StoredLifecyclePreview? {
        try await database.read { sql in
            guard
                let row = try await sql.raw(
                    """
                    SELECT p.* FROM lifecycle_previews p JOIN repositories r ON r.id = p.repository_id WHERE r.name = \(bind: repository.value)
                    """
                ).first()
            else { return nil }
            return StoredLifecyclePreview(
                policy: try row.decode(column: "policy", as: String.self), status: try row.decode(column: "status", as: String.self),
                result: try row.decode(column: "result", as: String.self), createdAt: try row.decode(column: "created_at", as: Int64.self))
        }
    }
}
