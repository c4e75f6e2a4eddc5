import Access
import Metadata
import OCI

#if canImport(FoundationEssentials)
import FoundationEssentials
#else
import Foundation
#endif

/// What an operation needs from the caller, in terms of the namespace roles.
enum Requirement: Sendable {
    case pull, push, delete
    /// Namespace admin (settings and policies of the repository).
    case administer
    case systemAdministrator
}

extension ECRService {
    // MARK: Authorisation

    /// Allows the call when the roles allow it or a resource policy does, unless a policy denies
    /// `ecr:<Operation>` explicitly. System administrators may do everything.
    func authorize(_ call: ECRCall, _ requirement: Requirement, on repository: RepositoryName?) async throws {
        let identity = call.identity
        if identity.isAdmin { return }
        let action = "ecr:\(call.operation)"
        if let repository {
            switch try await access.authorizer.policies.decision(for: identity, action: action, on: repository) {
            case .deny:
                throw denied(call, repository, reason: "with an explicit deny in a resource-based policy")
            case .allow:
                return
            case .none:
                break
            }
        }
        let allowed: Bool
        switch (requirement, repository) {
        case (.pull, let repository?): allowed = try await access.authorizer.actions(for: identity, on: repository).contains(.pull)
        case (.push, let repository?): allowed = try await access.authorizer.actions(for: identity, on: repository).contains(.push)
        case (.delete, let repository?): allowed = try await access.authorizer.actions(for: identity, on: repository).contains(.delete)
        case (.administer, let repository?): allowed = try await access.authorizer.role(of: identity, in: String(repository.namespace)) == .admin
        default: allowed = false
        }
        guard allowed else { throw denied(call, repository, reason: "because no role or resource-based policy allows the \(action) action") }
    }

    private func denied(_ call: ECRCall, _ repository: RepositoryName?, reason: String) -> ECRError {
        let who = call.identity.principalARN(registryID: registryID) ?? "anonymous"
        let resource = repository.map { arn(of: $0.value, call) } ?? "arn:aws:ecr:\(call.region):\(registryID):*"
        return .accessDenied("User: \(who) is not authorized to perform: ecr:\(call.operation) on resource: \(resource) \(reason)")
    }

    // MARK: Repositories

    func repositoryName(_ call: ECRCall, member: String = "repositoryName") throws -> RepositoryName {
        guard let text = call.string(member) else {
            throw ECRError.invalidParameter("Invalid parameter at '\(member)' failed to satisfy constraint: 'Member must not be null'")
        }
        guard let name = RepositoryName(text) else {
            throw ECRError.invalidParameter("Invalid parameter at '\(member)' failed to satisfy constraint: '\(text)' is not a valid repository name")
        }
        return name
    }

    /// The repository, or ECR's RepositoryNotFoundException.
    func existingRepository(_ name: RepositoryName) async throws -> RepositoryRecord {
        guard let record = try await metadata.repositoryRecord(name) else { throw ECRError.repositoryNotFound(name.value, registryID: registryID) }
        return record
    }

    func arn(of repository: String, _ call: ECRCall) -> String {
        access.authorizer.policies.repositoryARN(repository, region: call.region)
    }

    func uri(of repository: String, _ call: ECRCall) -> String { "\(call.host)/\(repository)" }

    func repositoryJSON(_ record: RepositoryRecord, _ call: ECRCall) -> JSONValue {
        let settings = record.settings
        var object: [String: JSONValue] = [
            "repositoryArn": .string(arn(of: record.name, call)),
            "registryId": .string(registryID),
            "repositoryName": .string(record.name),
            "repositoryUri": .string(uri(of: record.name, call)),
            "createdAt": .timestamp(millis: record.createdAt),
            "imageTagMutability": .string(settings.tagMutability.mode.rawValue),
            "imageScanningConfiguration": ["scanOnPush": .bool(settings.scanOnPush)],
        ]
        // Only what is applied is reported: a repository stored plain (made by a push with no
        // registry default, or before encryption at rest existed) has no encryption configuration.
        if let encryption = settings.encryption, encryption.domain != nil {
            object["encryptionConfiguration"] = .compact([
                "encryptionType": .string(encryption.type), "kmsKey": encryption.kmsKey.map(JSONValue.string),
            ])
        }
        if !settings.tagMutability.exclusions.isEmpty {
            object["imageTagMutabilityExclusionFilters"] = .array(settings.tagMutability.exclusions.map { ["filterType": "WILDCARD", "filter": .string($0)] })
        }
        return .object(object)
    }

    /// `imageTagMutability` and its exclusion filters from the input, checked.
    func tagMutability(_ call: ECRCall, default fallback: TagMutabilityPolicy.Mode = .mutable) throws -> TagMutabilityPolicy {
        let mode = call.string("imageTagMutability").flatMap(TagMutabilityPolicy.Mode.init(rawValue:)) ?? fallback
        let filters = (call.input["imageTagMutabilityExclusionFilters"]?.array ?? []).compactMap { $0["filter"]?.string }
        let policy = TagMutabilityPolicy(mode: mode, exclusions: filters)
        do {
            try policy.validate()
        } catch {
            throw ECRError.invalidParameter("Invalid parameter at 'imageTagMutabilityExclusionFilters' failed to satisfy constraint: '\(error)'")
        }
        return policy
    }

    // MARK: Images

    static func imageID(digest: Digest?, tag: String?) -> JSONValue {
        .compact(["imageDigest": digest.map { .string($0.description) }, "imageTag": tag.map(JSONValue.string)])
    }

    /// `{imageDigest:'…', imageTag:'…'}` as ECR writes image ids in messages.
    static func describe(_ imageID: JSONValue) -> String {
        var parts: [String] = []
        if let digest = imageID["imageDigest"]?.string { parts.append("imageDigest:'\(digest)'") }
        if let tag = imageID["imageTag"]?.string { parts.append("imageTag:'\(tag)'") }
        return "{" + parts.joined(separator: ", ") + "}"
    }

    func imageNotFound(_ imageID: JSONValue, in repository: RepositoryName) -> ECRError {
        ECRError(
            "ImageNotFoundException",
            "The image with imageId \(Self.describe(imageID)) does not exist within the repository with name '\(repository)' in the registry with id '\(registryID)'"
        )
    }

    // MARK: Paging

    /// The page size asked for (`maxResults`), ECR's default 100 otherwise.
    func pageSize(_ call: ECRCall, default fallback: Int = 100) -> Int { call.int("maxResults", in: 1...Int(Int32.max)) ?? fallback }

    /// Opaque page tokens: the operation and a position, so a token is only good where it came from.
    static func pageToken(_ operation: String, _ position: String) -> String {
        Data("\(operation)\n\(position)".utf8).base64EncodedString()
    }

    static func pagePosition(_ call: ECRCall) throws -> String? {
        guard let token = call.string("nextToken") else { return nil }
        guard let data = Data(base64Encoded: token), let text = String(data: data, encoding: .utf8),
            let newline = text.firstIndex(of: "\n"), text[..<newline] == call.operation
        else {
            throw ECRError.invalidParameter("Invalid parameter at 'nextToken' failed to satisfy constraint: 'the token is not one this operation returned'")
        }
        return String(text[text.index(after: newline)...])
    }

    /// A page of `items` starting at the token's offset.
    static func page<T>(_ items: [T], _ call: ECRCall, size: Int) throws -> (items: ArraySlice<T>, nextToken: String?) {
        let start =
            try pagePosition(call).map { position -> Int in
                guard let offset = ClientNumber.parse(position, in: 0...Int(Int32.max)) else {
                    throw ECRError.invalidParameter("Invalid parameter at 'nextToken' failed to satisfy constraint: 'malformed token'")
                }
                return offset
            } ?? 0
        guard start <= items.count else { return ([], nil) }
        let end = min(items.count, start + size)
        return (items[start..<end], end < items.count ? pageToken(call.operation, String(end)) : nil)
    }
}
