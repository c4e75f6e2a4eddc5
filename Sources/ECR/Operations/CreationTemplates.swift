import Metadata
import OCI
import UseCases

/// ECR's repository creation templates: the settings a repository gets when a push (or
/// replication into this registry) creates it. The longest matching prefix wins; `ROOT` matches
/// every name. An explicit CreateRepository is not affected. System administrators only.
extension ECRService {
    func createRepositoryCreationTemplate(_ call: ECRCall) async throws -> JSONValue {
        try await authorize(call, .systemAdministrator, on: nil)
        let template = try await creationTemplate(from: call, prefix: try templatePrefix(call), existing: nil)
        do {
            let stored = try await metadata.createCreationTemplate(template)
            return ["registryId": .string(registryID), "repositoryCreationTemplate": templateJSON(stored)]
        } catch MetadataError.conflict {
            throw ECRError(
                "TemplateAlreadyExistsException",
                "The creation template with prefix '\(template.prefix)' already exists in the registry with id '\(registryID)'")
        }
    }

    func updateRepositoryCreationTemplate(_ call: ECRCall) async throws -> JSONValue {
        try await authorize(call, .systemAdministrator, on: nil)
        let prefix = try templatePrefix(call)
        guard let existing = try await metadata.creationTemplates().first(where: { $0.prefix == prefix }) else { throw templateNotFound(prefix) }
        let changed = try await creationTemplate(from: call, prefix: prefix, existing: existing)
        guard let stored = try await metadata.updateCreationTemplate(prefix, { $0 = changed }) else { throw templateNotFound(prefix) }
        return ["registryId": .string(registryID), "repositoryCreationTemplate": templateJSON(stored)]
    }

    func deleteRepositoryCreationTemplate(_ call: ECRCall) async throws -> JSONValue {
        try await authorize(call, .systemAdministrator, on: nil)
        let prefix = try templatePrefix(call)
        guard let deleted = try await metadata.deleteCreationTemplate(prefix) else { throw templateNotFound(prefix) }
        return ["registryId": .string(registryID), "repositoryCreationTemplate": templateJSON(deleted)]
    }

    func describeRepositoryCreationTemplates(_ call: ECRCall) async throws -> JSONValue {
        try await authorize(call, .systemAdministrator, on: nil)
        var templates = try await metadata.creationTemplates()
        if let prefixes = call.input["prefixes"]?.array?.compactMap(\.string), !prefixes.isEmpty {
            let wanted = Set(prefixes.map { $0 == "ROOT" || $0.hasSuffix("/") ? $0 : $0 + "/" })
            templates = templates.filter { wanted.contains($0.prefix) }
        }
        let page = try Self.page(templates, call, size: pageSize(call))
        return .compact([
            "registryId": .string(registryID), "repositoryCreationTemplates": .array(page.items.map(templateJSON)),
            "nextToken": page.nextToken.map(JSONValue.string),
        ])
    }

    /// ECR's prefixes name namespaces: `team` and `team/` are the same template.
    func templatePrefix(_ call: ECRCall) throws -> String {
        let prefix = call.string("prefix") ?? ""
        guard !prefix.isEmpty else { throw ECRError.invalidParameter("Invalid parameter at 'prefix' failed to satisfy constraint: 'Member must not be null'") }
        return prefix == "ROOT" || prefix.hasSuffix("/") ? prefix : prefix + "/"
    }

    func templateNotFound(_ prefix: String) -> ECRError {
        ECRError("TemplateNotFoundException", "The creation template with prefix '\(prefix)' does not exist in the registry with id '\(registryID)'")
    }

    /// The template the call describes, every part validated as CreateRepository and the policy
    /// operations validate it; on an update, what the call leaves out is kept.
    func creationTemplate(from call: ECRCall, prefix: String, existing: RepositoryCreationTemplate?) async throws -> RepositoryCreationTemplate {
        var template =
            existing
            ?? RepositoryCreationTemplate(
                prefix: prefix, description: nil, appliedFor: [], settings: RepositorySettings(), resourceTags: [], customRoleArn: nil)
        if let applied = call.input["appliedFor"]?.array?.compactMap(\.string) {
            guard !applied.isEmpty else {
                throw ECRError.invalidParameter(
                    "Invalid parameter at 'appliedFor' failed to satisfy constraint: 'name at least one of REPLICATION, PULL_THROUGH_CACHE, CREATE_ON_PUSH'")
            }
            template.appliedFor = Array(Set(applied)).sorted()
        }
        if let description = call.string("description") { template.description = description }
        if call.input["imageTagMutability"] != nil || existing == nil {
            template.settings.tagMutability = try tagMutability(call)
        }
        if let text = call.string("lifecyclePolicy") {
            if text.isEmpty {
                template.settings.lifecyclePolicy = nil
            } else {
                do {
                    try RepositorySettingsChanges.validateLifecyclePolicy(text)
                } catch {
                    throw ECRError.invalidParameter("Invalid parameter at 'lifecyclePolicy' failed to satisfy constraint: '\(error)'")
                }
                template.settings.lifecyclePolicy = text
            }
        }
        if let text = call.string("repositoryPolicy") {
            template.settings.repositoryPolicy = text.isEmpty ? nil : try checkedResourcePolicy(text)
        }
        if let configuration = call.input["encryptionConfiguration"] {
            // An empty key in a template means ECR's managed key; the key is checked with the key service now.
            let given = configuration["kmsKey"]?.string == "" ? .object((configuration.object ?? [:]).filter { $0.key != "kmsKey" }) : configuration
            template.settings.encryption = try await encryption(given, call)
        }
        if let tags = call.input["resourceTags"] { template.resourceTags = try resourceTags(tags).map { [$0.0, $0.1] } }
        if let role = call.string("customRoleArn") { template.customRoleArn = role.isEmpty ? nil : role }
        guard !template.appliedFor.isEmpty else {
            throw ECRError.invalidParameter("Invalid parameter at 'appliedFor' failed to satisfy constraint: 'Member must not be null'")
        }
        return template
    }

    func templateJSON(_ template: RepositoryCreationTemplate) -> JSONValue {
        let settings = template.settings
        return .compact([
            "prefix": .string(template.prefix), "description": template.description.map(JSONValue.string),
            "appliedFor": .array(template.appliedFor.map(JSONValue.string)),
            "imageTagMutability": .string(settings.tagMutability.mode.rawValue),
            "imageTagMutabilityExclusionFilters": settings.tagMutability.exclusions.isEmpty
                ? nil : .array(settings.tagMutability.exclusions.map { ["filter": .string($0), "filterType": "WILDCARD"] }),
            "lifecyclePolicy": settings.lifecyclePolicy.map(JSONValue.string),
            "repositoryPolicy": settings.repositoryPolicy.map(JSONValue.string),
            "encryptionConfiguration": settings.encryption.map { encryption in
                .compact(["encryptionType": .string(encryption.type), "kmsKey": encryption.kmsKey.map(JSONValue.string)])
            },
            "resourceTags": .array(template.resourceTags.filter { $0.count == 2 }.map { ["Key": .string($0[0]), "Value": .string($0[1])] }),
            "customRoleArn": template.customRoleArn.map(JSONValue.string),
            "createdAt": .timestamp(millis: template.createdAt), "updatedAt": .timestamp(millis: template.updatedAt),
        ])
    }
}
