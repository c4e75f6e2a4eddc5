import Metadata
import OCI
import Synchronization

/// The registry's identity as ECR clients see it, and the resource policies that apply to each
/// repository (the registry's and the repository's own), parsed and cached for a few seconds.
public final class PolicyStore: Sendable {
    public static let registryPolicySetting = "registry_policy"
    static let registryIDSetting = "registry_id"

    private let metadata: MetadataStore
    private let cache = TTLCache<String, [ResourcePolicy]>(timeToLive: .seconds(5))
    private let anyPolicyCache = TTLCache<String, Bool>(timeToLive: .seconds(5))
    private let currentRegistryID = Mutex("000000000000")

    init(database: Database) {
        self.metadata = MetadataStore(database: database)
    }

    /// The 12-digit registry (account) id in ARNs: configured, or generated once and stored.
    public var registryID: String { currentRegistryID.withLock { $0 } }

    func start(configuredRegistryID: String?) async throws {
        let id: String
        if let configuredRegistryID {
            id = configuredRegistryID
        } else {
            var generator = SystemRandomNumberGenerator()
            let random = String(UInt64.random(in: 100_000_000_000...999_999_999_999, using: &generator))
            id = try await metadata.registrySetting(Self.registryIDSetting, initial: random)
        }
        currentRegistryID.withLock { $0 = id }
    }

    public func repositoryARN(_ repository: String, region: String) -> String {
        "arn:aws:ecr:\(region):\(registryID):repository/\(repository)"
    }

    /// The registry policy, then the repository's, as they apply to `repository`.
    public func policies(for repository: RepositoryName) async throws -> [ResourcePolicy] {
        if let cached = cache.get(repository.value) { return cached }
        var policies: [ResourcePolicy] = []
        // A stored policy that no longer parses is skipped, not fatal: it was valid when stored.
        if let text = try await metadata.registrySetting(Self.registryPolicySetting),
            let policy = try? ResourcePolicy(parsing: text, registryID: registryID, knownActions: nil)
        {
            policies.append(policy)
        }
        if let text = try await metadata.settings(of: repository).repositoryPolicy,
            let policy = try? ResourcePolicy(parsing: text, registryID: registryID, knownActions: nil)
        {
            policies.append(policy)
        }
        cache.set(repository.value, policies)
        return policies
    }

    /// The combined verdict of the policies on `identity` doing `action` to `repository`.
    public func decision(for identity: Identity, action: String, on repository: RepositoryName) async throws -> ResourcePolicy.Decision {
        let policies = try await policies(for: repository)
        guard !policies.isEmpty else { return .none }
        return ResourcePolicy.decision(
            of: policies, principal: identity.principalARN(registryID: registryID), action: action,
            resource: repositoryARN(repository.value, region: "*"))
    }

    /// Whether any resource policy exists at all (the registry's, or any repository's): when none
    /// does, roles alone decide and listings need no per-repository check. Cached like the policies.
    public func anyPolicy() async throws -> Bool {
        if let cached = anyPolicyCache.get("") { return cached }
        var found = try await metadata.registrySetting(Self.registryPolicySetting) != nil
        if !found { found = try await metadata.anyRepositoryPolicy() }
        anyPolicyCache.set("", found)
        return found
    }

    public func invalidate() {
        cache.removeAll()
        anyPolicyCache.removeAll()
    }
}
