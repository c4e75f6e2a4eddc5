import Access
import Encryption
import Metadata
import OCI
import UseCases

extension ECRService {
    static let maximumResourceTags = 50

    func createRepository(_ call: ECRCall) async throws -> JSONValue {
        let name = try repositoryName(call)
        try await authorize(call, .push, on: name)
        var settings = RepositorySettings(tagMutability: try tagMutability(call))
        settings.scanOnPush = call.input["imageScanningConfiguration"]?["scanOnPush"]?.bool ?? false
        settings.encryption = try await encryption(call)
        let labels = try resourceTags(call.input["tags"])
        // The namespace is created on first use, as a first push does.
        try await access.authorizer.ensureNamespace(String(name.namespace), for: call.identity)
        do {
            let record = try await metadata.createRepository(name, settings: settings, labels: labels)
            return ["repository": repositoryJSON(record, call)]
        } catch MetadataError.conflict {
            throw ECRError("RepositoryAlreadyExistsException", "The repository with name '\(name)' already exists in the registry with id '\(registryID)'")
        }
    }

    /// The repository's encryption, checked with its key service before anything is created: a
    /// missing or disabled key is ECR's `KmsException`. Without `encryptionConfiguration` the
    /// registry's default applies, else `AES256`, as ECR encrypts every repository.
    func encryption(_ call: ECRCall) async throws -> RepositorySettings.Encryption? {
        try await encryption(call.input["encryptionConfiguration"], call)
    }

    /// `encryptionConfiguration` (of a repository or a creation template) checked as above.
    func encryption(_ given: JSONValue?, _ call: ECRCall) async throws -> RepositorySettings.Encryption? {
        let domain: EncryptionDomain
        if let configuration = given {
            let type = configuration["encryptionType"]?.string ?? "AES256"
            guard let kind = EncryptionDomain.Kind(rawValue: type) else {
                throw ECRError.invalidParameter(
                    "Invalid parameter at 'encryptionType' failed to satisfy constraint: 'Member must satisfy enum value set: [AES256, KMS, KMS_DSSE]'")
            }
            var kmsKey = configuration["kmsKey"]?.string
            if kind == .aes256, kmsKey != nil {
                throw ECRError.invalidParameter(
                    "Invalid parameter at 'encryptionConfiguration' failed to satisfy constraint: 'kmsKey can only be specified when encryptionType is KMS or KMS_DSSE'"
                )
            }
            if kind != .aes256, kmsKey == nil {
                // ECR's AWS managed key for the registry.
                kmsKey = "arn:aws:kms:\(call.region):\(registryID):alias/aws/ecr"
            }
            if let kmsKey, kmsKey.isEmpty || kmsKey.utf8.count > 2048 || !kmsKey.unicodeScalars.allSatisfy({ $0.isASCII && $0.value > 32 && $0.value < 127 }) {
                throw ECRError.invalidParameter(
                    "Invalid parameter at 'kmsKey' failed to satisfy constraint: 'a key ARN, key id or alias of at most 2048 characters'")
            }
            domain = EncryptionDomain(kind: kind, kmsKey: kmsKey)
        } else if let fallback = metadata.defaultEncryption {
            guard let parsed = EncryptionDomain(identifier: fallback.domain) else { throw ECRError.server("the registry's default encryption is invalid") }
            domain = parsed
        } else {
            domain = EncryptionDomain(kind: .aes256)
        }
        if let keys = registry.encryption {
            do {
                try await keys.checkUsable(domain)
            } catch EncryptionError.keyUnavailable(let keyID, let code, let message) {
                throw ECRError.kms(code, "The KMS key \(keyID) cannot be used (\(code)): \(message.isEmpty ? code : message)")
            } catch EncryptionError.serviceFailed(let message) {
                throw ECRError.kms("KMSInternalException", message)
            }
        }
        return RepositorySettings.Encryption(type: domain.kind.rawValue, kmsKey: domain.kmsKey, domain: domain.identifier)
    }

    func describeRepositories(_ call: ECRCall) async throws -> JSONValue {
        if let names = call.input["repositoryNames"]?.array?.compactMap(\.string) {
            guard call.string("nextToken") == nil, call.int("maxResults") == nil else {
                throw ECRError.invalidParameter(
                    "Invalid parameter at 'repositoryNames' failed to satisfy constraint: 'repositoryNames cannot be used with maxResults or nextToken'")
            }
            var records: [RepositoryRecord] = []
            for text in names {
                guard let name = RepositoryName(text) else { throw ECRError.repositoryNotFound(text, registryID: registryID) }
                try await authorize(call, .pull, on: name)
                records.append(try await existingRepository(name))
            }
            return ["repositories": .array(records.map { repositoryJSON($0, call) })]
        }
        let size = pageSize(call)
        let after = try Self.pagePosition(call)
        // Only what the caller may pull, explicit Deny policies included (as /v2/_catalog).
        let (names, more) = try await RepositoryListings(registry: registry, authorizer: access.authorizer)
            .names(after: after, limit: size, by: call.requester)
        let page = try await metadata.repositoryRecords(named: names)
        return .compact([
            "repositories": .array(page.map { repositoryJSON($0, call) }),
            "nextToken": more && !page.isEmpty ? .string(Self.pageToken(call.operation, page.last!.name)) : nil,
        ])
    }

    func deleteRepository(_ call: ECRCall) async throws -> JSONValue {
        let name = try repositoryName(call)
        try await authorize(call, .delete, on: name)
        switch try await registry.deleteRepository(name, force: call.bool("force") ?? false) {
        case .deleted(let record, _):
            access.authorizer.invalidateCache()
            return ["repository": repositoryJSON(record, call)]
        case .notFound:
            throw ECRError.repositoryNotFound(name.value, registryID: registryID)
        case .notEmpty(let count):
            throw ECRError(
                "RepositoryNotEmptyException",
                "The repository with name '\(name)' in registry with id '\(registryID)' cannot be deleted because it still contains images (\(count)); delete them first or use force"
            )
        }
    }

    // MARK: Resource tags

    func tagResource(_ call: ECRCall) async throws -> JSONValue {
        let name = try repository(fromARN: call)
        try await authorize(call, .administer, on: name)
        let labels = try resourceTags(call.input["tags"])
        do {
            guard try await metadata.putLabels(labels, on: name, maximum: Self.maximumResourceTags) else {
                throw ECRError.repositoryNotFound(name.value, registryID: registryID)
            }
        } catch MetadataError.invalid(let message) {
            throw ECRError("TooManyTagsException", message)
        }
        return [:]
    }

    func untagResource(_ call: ECRCall) async throws -> JSONValue {
        let name = try repository(fromARN: call)
        try await authorize(call, .administer, on: name)
        let keys = call.input["tagKeys"]?.array?.compactMap(\.string) ?? []
        for key in keys where key.lowercased().hasPrefix("aws:") {
            throw ECRError("InvalidTagParameterException", "tag keys beginning with 'aws:' are reserved")
        }
        guard try await metadata.removeLabels(keys, from: name) else { throw ECRError.repositoryNotFound(name.value, registryID: registryID) }
        return [:]
    }

    func listTagsForResource(_ call: ECRCall) async throws -> JSONValue {
        let name = try repository(fromARN: call)
        try await authorize(call, .pull, on: name)
        guard let labels = try await metadata.labels(of: name) else { throw ECRError.repositoryNotFound(name.value, registryID: registryID) }
        return ["tags": .array(labels.map { ["Key": .string($0.key), "Value": .string($0.value)] })]
    }

    /// `arn:aws:ecr:<region>:<registry id>:repository/<name>` → the repository.
    func repository(fromARN call: ECRCall) throws -> RepositoryName {
        let arn = call.string("resourceArn") ?? ""
        let parts = arn.split(separator: ":", maxSplits: 5, omittingEmptySubsequences: false)
        guard parts.count == 6, parts[0] == "arn", parts[2] == "ecr", parts[5].hasPrefix("repository/"),
            let name = RepositoryName(String(parts[5].dropFirst("repository/".count)))
        else {
            throw ECRError.invalidParameter(
                "Invalid parameter at 'resourceArn' failed to satisfy constraint: '\(arn)' is not a repository ARN (arn:aws:ecr:<region>:<registry id>:repository/<name>)"
            )
        }
        guard parts[4] == registryID else {
            throw ECRError.invalidParameter(
                "Invalid parameter at 'resourceArn' failed to satisfy constraint: the ARN names registry '\(parts[4])'; this registry is '\(registryID)'")
        }
        return name
    }

    /// Checks a `tags` list as AWS does: unique keys of 1-128 characters, values up to 256, no `aws:` prefix, at most 50.
    func resourceTags(_ value: JSONValue?) throws -> [(String, String)] {
        guard let items = value?.array else { return [] }
        guard items.count <= Self.maximumResourceTags else {
            throw ECRError("TooManyTagsException", "a repository can have at most \(Self.maximumResourceTags) tags")
        }
        var seen = Set<String>()
        var tags: [(String, String)] = []
        for item in items {
            guard let key = item["Key"]?.string, let value = item["Value"]?.string else {
                throw ECRError("InvalidTagParameterException", "every tag needs a Key and a Value")
            }
            guard (1...128).contains(key.count), value.count <= 256 else {
                throw ECRError("InvalidTagParameterException", "tag keys have 1 to 128 characters and values at most 256")
            }
            guard !key.lowercased().hasPrefix("aws:") else { throw ECRError("InvalidTagParameterException", "tag keys beginning with 'aws:' are reserved") }
            guard seen.insert(key).inserted else { throw ECRError("InvalidTagParameterException", "tag key '\(key)' appears twice") }
            tags.append((key, value))
        }
        return tags
    }
}
