import OCI
import SQLKit

#if canImport(FoundationEssentials)
import FoundationEssentials
#else
import Foundation
#endif

/// Whether tags may move to another manifest once set (ECR's `imageTagMutability`).
public struct TagMutabilityPolicy: Sendable, Equatable, Codable {
    public enum Mode: String, Sendable, Codable, CaseIterable {
        case mutable = "MUTABLE"
        case immutable = "IMMUTABLE"
        /// Immutable except tags matching an exclusion filter.
        case immutableWithExclusion = "IMMUTABLE_WITH_EXCLUSION"
        /// Mutable except tags matching an exclusion filter (those are immutable).
        case mutableWithExclusion = "MUTABLE_WITH_EXCLUSION"
    }

    public var mode: Mode
    /// Wildcard filters (`*` matches any run of characters).
    public var exclusions: [String]

    public init(mode: Mode = .mutable, exclusions: [String] = []) {
        self.mode = mode
        self.exclusions = exclusions
    }

    public static let mutable = TagMutabilityPolicy()

    public func isImmutable(_ tag: String) -> Bool {
        let excluded = exclusions.contains { WildcardPattern.matches($0, tag) }
        switch mode {
        case .mutable: return false
        case .immutable: return true
        case .immutableWithExclusion: return !excluded
        case .mutableWithExclusion: return excluded
        }
    }

    /// Exclusion filters only make sense with the *_WITH_EXCLUSION modes, and those need at least one.
    public func validate() throws(MetadataError) {
        switch mode {
        case .mutable, .immutable:
            guard exclusions.isEmpty else { throw .invalid("exclusion filters need IMMUTABLE_WITH_EXCLUSION or MUTABLE_WITH_EXCLUSION") }
        case .immutableWithExclusion, .mutableWithExclusion:
            guard !exclusions.isEmpty else { throw .invalid("\(mode.rawValue) needs at least one exclusion filter") }
        }
        for filter in exclusions {
            guard (1...128).contains(filter.count), filter.allSatisfy({ $0 == "*" || $0.isLetter || $0.isNumber || "._-".contains($0) }) else {
                throw .invalid("'\(filter)' is not a valid tag filter: tag characters and * only, 1 to 128 characters")
            }
            guard filter.filter({ $0 == "*" }).count <= 2 else { throw .invalid("'\(filter)' has more than two wildcards") }
        }
    }
}

public struct RepositorySettings: Sendable, Equatable {
    /// How content is encrypted at rest (ECR's `encryptionConfiguration`). `domain` is where the
    /// registry applies it (`AES256`, `KMS:<arn>`, `KMS_DSSE:<arn>`); nil for a repository created
    /// before encryption at rest existed, whose type was only recorded.
    public struct Encryption: Sendable, Equatable {
        public var type: String
        public var kmsKey: String?
        public var domain: String?

        public init(type: String, kmsKey: String? = nil, domain: String? = nil) {
            self.type = type
            self.kmsKey = kmsKey
            self.domain = domain
        }
    }

    public var tagMutability: TagMutabilityPolicy
    /// The repository's own lifecycle policy text, if any.
    public var lifecyclePolicy: String?
    /// Scan each image when it is pushed (ECR's `scanOnPush`).
    public var scanOnPush: Bool
    public var encryption: Encryption?
    /// IAM-style resource policy text (ECR's repository policy), if any.
    public var repositoryPolicy: String?

    public init(
        tagMutability: TagMutabilityPolicy = .mutable, lifecyclePolicy: String? = nil, scanOnPush: Bool = false,
        encryption: Encryption? = nil, repositoryPolicy: String? = nil
    ) {
        self.tagMutability = tagMutability
        self.lifecyclePolicy = lifecyclePolicy
        self.scanOnPush = scanOnPush
        self.encryption = encryption
        self.repositoryPolicy = repositoryPolicy
    }
}

public struct RegistryLifecyclePolicy: Sendable, Equatable {
    public var id: Int64
    /// Repository name pattern, `*` wildcards: `team/*`, `*`.
    public var scope: String
    public var policy: String
    public var createdBy: String?
    public var updatedAt: Int64
}

/// A manifest as lifecycle policies see it.
public struct ManifestSummary: Sendable, Equatable {
    public var digest: Digest
    public var tags: [String]
    public var pushedAt: Int64
    public var lastPulledAt: Int64?
}

extension MetadataStore {
    // MARK: Settings

    /// Whether any repository has its own resource policy: listings skip per-repository policy
    /// checks when none has (and no registry policy exists).
    public func anyRepositoryPolicy() async throws -> Bool {
        try await database.read { sql in
            try await sql.raw("SELECT 1 AS found FROM repository_settings WHERE repository_policy IS NOT NULL LIMIT 1").first() != nil
        }
    }

    public func settings(of repository: RepositoryName) async throws -> RepositorySettings {
        try await database.read { sql in
            guard
                let row = try await sql.raw(
                    """
                    SELECT s.* FROM repository_settings s JOIN repositories r ON r.id = s.repository_id WHERE r.name = \(bind: repository.value)
                    """
                ).first()
            else { return RepositorySettings() }
            return try Self.settings(row)
        }
    }

    static func settings(_ row: any SQLRow) throws -> RepositorySettings {
        let mode = TagMutabilityPolicy.Mode(rawValue: try row.decode(column: "tag_mutability", as: String.self)) ?? .mutable
        let exclusions =
            try row.decode(column: "mutability_exclusions", as: String?.self)
            .flatMap { try? JSONDecoder().decode([String].self, from: Data($0.utf8)) } ?? []
        let encryption = try row.decode(column: "encryption_type", as: String?.self).map {
            RepositorySettings.Encryption(
                type: $0, kmsKey: try? row.decode(column: "kms_key", as: String?.self),
                domain: try? row.decode(column: "encryption_domain", as: String?.self))
        }
        return RepositorySettings(
            tagMutability: TagMutabilityPolicy(mode: mode, exclusions: exclusions),
            lifecyclePolicy: try row.decode(column: "lifecycle_policy", as: String?.self),
            scanOnPush: try row.decode(column: "scan_on_push", as: Bool.self),
            encryption: encryption,
            repositoryPolicy: try row.decode(column: "repository_policy", as: String?.self))
    }

    /// Changes a repository's settings, creating the repository if needed.
    public func updateSettings(of repository: RepositoryName, _ change: @Sendable (inout RepositorySettings) throws -> Void) async throws -> RepositorySettings
    {
        try await database.transaction { sql in
            let id = try await Self.ensureRepository(repository, sql, encryption: defaultEncryption)
            return try await Self.updateSettings(repositoryID: id, change, sql)
        }
    }

    static func updateSettings(
        repositoryID id: Int64, _ change: @Sendable (inout RepositorySettings) throws -> Void, _ sql: any SQLDatabase
    ) async throws -> RepositorySettings {
        do {
            var settings =
                try await sql.raw("SELECT * FROM repository_settings WHERE repository_id = \(bind: id)").first().map(Self.settings) ?? RepositorySettings()
            let domain = settings.encryption?.domain
            try change(&settings)
            // Content is stored under the domain's keys: changing it would strand every blob.
            if let domain, settings.encryption?.domain != domain {
                throw MetadataError.invalid("a repository's encryption is fixed when it is created")
            }
            try settings.tagMutability.validate()
            let exclusions =
                settings.tagMutability.exclusions.isEmpty ? nil : String(decoding: try JSONEncoder().encode(settings.tagMutability.exclusions), as: UTF8.self)
            try await sql.raw(
                """
                INSERT INTO repository_settings (repository_id, tag_mutability, mutability_exclusions, lifecycle_policy,
                                                 scan_on_push, encryption_type, kms_key, encryption_domain, repository_policy, updated_at)
                VALUES (\(bind: id), \(bind: settings.tagMutability.mode.rawValue), \(bind: exclusions), \(bind: settings.lifecyclePolicy),
                        \(bind: settings.scanOnPush), \(bind: settings.encryption?.type), \(bind: settings.encryption?.kmsKey),
                        \(bind: settings.encryption?.domain), \(bind: settings.repositoryPolicy), \(bind: Timestamp.nowMillis()))
                ON CONFLICT (repository_id) DO UPDATE SET tag_mutability = excluded.tag_mutability,
                    mutability_exclusions = excluded.mutability_exclusions, lifecycle_policy = excluded.lifecycle_policy,
                    scan_on_push = excluded.scan_on_push, encryption_type = excluded.encryption_type, kms_key = excluded.kms_key,
                    encryption_domain = excluded.encryption_domain,
                    repository_policy = excluded.repository_policy, updated_at = excluded.updated_at
                """
            ).run()
            return settings
        }
    }

    // MARK: Registry-wide lifecycle policies

    public func registryLifecyclePolicies() async throws -> [RegistryLifecyclePolicy] {
        try await database.read { sql in
            try await sql.raw("SELECT * FROM lifecycle_policies ORDER BY scope").all().map { row in
                RegistryLifecyclePolicy(
                    id: try row.decode(column: "id", as: Int64.self), scope: try row.decode(column: "scope", as: String.self),
                    policy: try row.decode(column: "policy", as: String.self), createdBy: try row.decode(column: "created_by", as: String?.self),
                    updatedAt: try row.decode(column: "updated_at", as: Int64.self)
                )
            }
        }
    }

    public func putRegistryLifecyclePolicy(scope: String, policy: String, by actor: String?) async throws {
        try await database.transaction { sql in
            try await sql.raw(
                """
                INSERT INTO lifecycle_policies (scope, policy, created_by, updated_at) VALUES (\(bind: scope), \(bind: policy), \(bind: actor), \(bind: Timestamp.nowMillis()))
                ON CONFLICT (scope) DO UPDATE SET policy = excluded.policy, created_by = excluded.created_by, updated_at = excluded.updated_at
                """
            ).run()
        }
    }

    public func deleteRegistryLifecyclePolicy(scope: String) async throws -> Bool {
        try await database.transaction { sql in
            try await !sql.raw("DELETE FROM lifecycle_policies WHERE scope = \(bind: scope) RETURNING id").all().isEmpty
        }
    }

    /// Every repository with the lifecycle policy text it has of its own, if any.
    public func repositoriesWithOwnPolicies() async throws -> [(repository: String, policy: String?)] {
        try await database.read { sql in
            try await sql.raw(
                """
                SELECT r.name, s.lifecycle_policy FROM repositories r LEFT JOIN repository_settings s ON s.repository_id = r.id ORDER BY r.name
                """
            ).all().map { (try $0.decode(column: "name", as: String.self), try $0.decode(column: "lifecycle_policy", as: String?.self)) }
        }
    }

    // MARK: What lifecycle policies look at

    /// The repository's images for lifecycle rules: every manifest with its tags, except index
    /// children (an index's platforms live and die with it) and referrers (they follow their subject).
    public func lifecycleCandidates(in repository: RepositoryName) async throws -> [ManifestSummary] {
        try await database.read { sql in
            guard let id = try await Self.repositoryID(repository, sql) else { return [] }
            var tags: [String: [String]] = [:]
            for row in try await sql.raw("SELECT name, digest FROM tags WHERE repository_id = \(bind: id)").all() {
                tags[try row.decode(column: "digest", as: String.self), default: []].append(try row.decode(column: "name", as: String.self))
            }
            return try await sql.raw(
                """
                SELECT m.digest, m.pushed_at, m.last_pulled_at FROM manifests m
                WHERE m.repository_id = \(bind: id) AND m.subject_digest IS NULL
                  AND NOT EXISTS (SELECT 1 FROM manifest_references r
                                  WHERE r.repository_id = m.repository_id AND r.child_digest = m.digest AND r.kind = 'manifest')
                """
            ).all().compactMap { row in
                let digest = try row.decode(column: "digest", as: String.self)
                guard let parsed = Digest(digest) else { return nil }
                return ManifestSummary(
                    digest: parsed, tags: (tags[digest] ?? []).sorted(),
                    pushedAt: try row.decode(column: "pushed_at", as: Int64.self),
                    lastPulledAt: try row.decode(column: "last_pulled_at", as: Int64?.self))
            }
        }
    }

    /// Manifests whose subject is `digest`, and theirs, recursively (signatures of SBOMs, …).
    public func referrerClosure(of digest: Digest, in repository: RepositoryName) async throws -> [Digest] {
        var result: [Digest] = []
        var frontier = [digest]
        var seen = Set<Digest>([digest])
        while let next = frontier.popLast() {
            for referrer in try await referrers(of: next, in: repository, artifactType: nil).map(\.digest) where seen.insert(referrer).inserted {
                result.append(referrer)
                frontier.append(referrer)
            }
        }
        return result
    }
}

extension Database {
    /// Serialises work on one key across nodes: a transaction-scoped advisory lock on PostgreSQL.
    /// On SQLite every write transaction is already serialised, so nothing is needed.
    public func lock(_ key: String, in sql: any SQLDatabase) async throws {
        guard dialect == .postgres else { return }
        try await sql.raw("SELECT pg_advisory_xact_lock(hashtextextended(\(bind: key), 0))").run()
    }
}
