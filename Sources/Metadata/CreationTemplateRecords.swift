import Foundation
import OCI
import SQLKit

/// ECR's repository creation template: what a repository gets when something other than an
/// explicit create makes it (a push, replication into this registry).
public struct RepositoryCreationTemplate: Sendable, Equatable {
    /// `ROOT` (every repository) or a name prefix such as `team/`.
    public var prefix: String
    public var description: String?
    /// `CREATE_ON_PUSH`, `REPLICATION`, `PULL_THROUGH_CACHE`.
    public var appliedFor: [String]
    /// Tag mutability, lifecycle policy, repository policy and encryption (nil: the registry's default).
    public var settings: RepositorySettings
    public var resourceTags: [[String]]
    public var customRoleArn: String?
    public var createdAt: Int64 = 0
    public var updatedAt: Int64 = 0

    public init(
        prefix: String, description: String?, appliedFor: [String], settings: RepositorySettings, resourceTags: [[String]], customRoleArn: String?
    ) {
        self.prefix = prefix
        self.description = description
        self.appliedFor = appliedFor
        self.settings = settings
        self.resourceTags = resourceTags
        self.customRoleArn = customRoleArn
    }

    /// Whether it applies to `repository` when a push creates it, and how specifically (longer prefixes win).
    func specificity(for repository: String) -> Int? {
        guard appliedFor.contains("CREATE_ON_PUSH") || appliedFor.contains("REPLICATION") else { return nil }
        if prefix == "ROOT" { return 0 }
        return repository.hasPrefix(prefix) ? prefix.count : nil
    }
}

extension MetadataStore {
    public func creationTemplates() async throws -> [RepositoryCreationTemplate] {
        try await database.read { sql in try await Self.creationTemplates(sql) }
    }

    static func creationTemplates(_ sql: any SQLDatabase) async throws -> [RepositoryCreationTemplate] {
        try await sql.raw("SELECT * FROM repository_creation_templates ORDER BY prefix").all().map(Self.creationTemplate)
    }

    /// The template a push-created repository of this name gets, if any.
    static func creationTemplate(for repository: RepositoryName, _ sql: any SQLDatabase) async throws -> RepositoryCreationTemplate? {
        try await creationTemplates(sql).compactMap { template in template.specificity(for: repository.value).map { (template, $0) } }
            .max { $0.1 < $1.1 }?.0
    }

    /// Stores a new template; `conflict` when its prefix has one.
    public func createCreationTemplate(_ template: RepositoryCreationTemplate) async throws -> RepositoryCreationTemplate {
        try await database.transaction { sql in
            if try await sql.raw("SELECT prefix FROM repository_creation_templates WHERE prefix = \(bind: template.prefix)").first() != nil {
                throw MetadataError.conflict("a template for prefix '\(template.prefix)' exists")
            }
            return try await Self.writeCreationTemplate(template, createdAt: nil, sql)
        }
    }

    /// Changes a template; nil when there is none for the prefix.
    public func updateCreationTemplate(
        _ prefix: String, _ change: @Sendable (inout RepositoryCreationTemplate) throws -> Void
    ) async throws -> RepositoryCreationTemplate? {
        try await database.transaction { sql in
            guard let row = try await sql.raw("SELECT * FROM repository_creation_templates WHERE prefix = \(bind: prefix)").first() else { return nil }
            var template = try Self.creationTemplate(row)
            try change(&template)
            return try await Self.writeCreationTemplate(template, createdAt: template.createdAt, sql)
        }
    }

    public func deleteCreationTemplate(_ prefix: String) async throws -> RepositoryCreationTemplate? {
        try await database.transaction { sql in
            try await sql.raw("DELETE FROM repository_creation_templates WHERE prefix = \(bind: prefix) RETURNING *").first().map(Self.creationTemplate)
        }
    }

    private static func writeCreationTemplate(
        _ template: RepositoryCreationTemplate, createdAt: Int64?, _ sql: any SQLDatabase
    ) async throws -> RepositoryCreationTemplate {
        try template.settings.tagMutability.validate()
        let now = Timestamp.nowMillis()
        let settings = template.settings
        let exclusions =
            settings.tagMutability.exclusions.isEmpty ? nil : String(decoding: try JSONEncoder().encode(settings.tagMutability.exclusions), as: UTF8.self)
        let tags = String(decoding: try JSONEncoder().encode(template.resourceTags), as: UTF8.self)
        try await sql.raw(
            """
            INSERT INTO repository_creation_templates (prefix, description, applied_for, tag_mutability, mutability_exclusions, lifecycle_policy,
                scan_on_push, encryption_type, kms_key, encryption_domain, repository_policy, resource_tags, custom_role_arn, created_at, updated_at)
            VALUES (\(bind: template.prefix), \(bind: template.description), \(bind: template.appliedFor.joined(separator: ",")),
                    \(bind: settings.tagMutability.mode.rawValue), \(bind: exclusions), \(bind: settings.lifecyclePolicy), \(bind: false),
                    \(bind: settings.encryption?.type), \(bind: settings.encryption?.kmsKey), \(bind: settings.encryption?.domain),
                    \(bind: settings.repositoryPolicy), \(bind: tags), \(bind: template.customRoleArn), \(bind: createdAt ?? now), \(bind: now))
            ON CONFLICT (prefix) DO UPDATE SET description = excluded.description, applied_for = excluded.applied_for,
                tag_mutability = excluded.tag_mutability, mutability_exclusions = excluded.mutability_exclusions,
                lifecycle_policy = excluded.lifecycle_policy, encryption_type = excluded.encryption_type, kms_key = excluded.kms_key,
                encryption_domain = excluded.encryption_domain, repository_policy = excluded.repository_policy,
                resource_tags = excluded.resource_tags, custom_role_arn = excluded.custom_role_arn, updated_at = excluded.updated_at
            """
        ).run()
        var stored = template
        stored.createdAt = createdAt ?? now
        stored.updatedAt = now
        return stored
    }

    private static func creationTemplate(_ row: any SQLRow) throws -> RepositoryCreationTemplate {
        var template = RepositoryCreationTemplate(
            prefix: try row.decode(column: "prefix", as: String.self), description: try row.decode(column: "description", as: String?.self),
            appliedFor: try row.decode(column: "applied_for", as: String.self).split(separator: ",").map(String.init),
            settings: try settings(row),
            resourceTags: (try? JSONDecoder().decode([[String]].self, from: Data(try row.decode(column: "resource_tags", as: String.self).utf8))) ?? [],
            customRoleArn: try row.decode(column: "custom_role_arn", as: String?.self))
        template.createdAt = try row.decode(column: "created_at", as: Int64.self)
        template.updatedAt = try row.decode(column: "updated_at", as: Int64.self)
        return template
    }
}
