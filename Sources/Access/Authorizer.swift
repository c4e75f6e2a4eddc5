import Metadata
import OCI

/// Who may create namespaces (and so new top-level repositories).
public enum NamespaceCreationPolicy: String, Sendable, Codable, CaseIterable {
    /// Only system administrators.
    case administrators
    /// Any signed-in user (who becomes the new namespace's admin).
    case users
}

/// Decides what an identity may do. Rules:
/// - system administrators: everything;
/// - users: their namespace role's actions (reader: pull; developer: +push; maintainer, admin: +delete);
///   pushing into a namespace that does not exist yet is allowed when the policy lets them create it;
/// - robots: the union of their permissions covering the repository;
/// - everyone, anonymous included: pull from public namespaces;
/// - then resource policies (the registry's and the repository's): an explicit Deny removes an
///   action, an Allow adds it (system administrators are exempt, so they cannot lock themselves out).
/// Look-ups are cached for a few seconds; local changes clear the cache at once.
public final class Authorizer: Sendable {
    private let store: AccessStore
    public let namespaceCreation: NamespaceCreationPolicy
    public let policies: PolicyStore
    private let memberships = TTLCache<Int64, [String: Role]>(timeToLive: .seconds(5))
    private let robots = TTLCache<Int64, RobotRecord>(timeToLive: .seconds(5))
    private let namespaces = TTLCache<String, NamespaceState>(timeToLive: .seconds(5))

    private enum NamespaceState: Sendable {
        case absent
        case present(id: Int64, isPublic: Bool)
    }

    public init(store: AccessStore, namespaceCreation: NamespaceCreationPolicy, policies: PolicyStore) {
        self.store = store
        self.namespaceCreation = namespaceCreation
        self.policies = policies
    }

    public func invalidateCache() {
        policies.invalidate()
        memberships.removeAll()
        robots.removeAll()
        namespaces.removeAll()
    }

    /// The actions `identity` may take on `repository`.
    public func actions(for identity: Identity, on repository: RepositoryName) async throws -> Set<Action> {
        if identity.isAdmin { return Set(Action.allCases) }
        let namespace = String(repository.namespace)
        var allowed = Set<Action>()
        let state = try await namespaceState(namespace)
        if case .present(_, isPublic: true) = state { allowed.insert(.pull) }
        switch identity.kind {
        case .anonymous:
            break
        case .user:
            if let role = try await role(of: identity, in: namespace) {
                allowed.formUnion(role.actions)
            } else if case .absent = state, canCreateNamespace(identity) {
                // A first push creates the namespace with this user as its admin.
                allowed.formUnion(Role.admin.actions)
            }
        case .robot:
            for permission in try await robot(identity)?.permissions ?? [] where permission.covers(repository) {
                allowed.formUnion(permission.actions)
            }
        }
        return try await applyingPolicies(to: allowed, for: identity, on: repository)
    }

    private func applyingPolicies(to allowed: Set<Action>, for identity: Identity, on repository: RepositoryName) async throws -> Set<Action> {
        let policies = try await self.policies.policies(for: repository)
        guard !policies.isEmpty else { return allowed }
        let principal = identity.principalARN(registryID: self.policies.registryID)
        let resource = self.policies.repositoryARN(repository.value, region: "*")
        var result = allowed
        for action in Action.allCases {
            let verdicts = action.ecrActions.map { ResourcePolicy.decision(of: policies, principal: principal, action: $0, resource: resource) }
            if verdicts.contains(.deny) {
                result.remove(action)
            } else if principal != nil, verdicts.allSatisfy({ $0 == .allow }) {
                result.insert(action)
            }
        }
        return result
    }

    /// Whether `identity` reads images whatever a namespace's pull gate says: robots that scan or
    /// replicate must read every image, passing or not.
    public func bypassesPullGate(_ identity: Identity, on repository: RepositoryName) async throws -> Bool {
        guard identity.kind == .robot else { return false }
        let allowed = try await actions(for: identity, on: repository)
        return allowed.contains(.scan) || allowed.contains(.replicate)
    }

    /// Grants the intersection of what is asked and what is allowed, per scope (the token rule).
    public func grant(_ requested: [AccessScope], to identity: Identity) async throws -> [AccessScope] {
        // One entry per resource, whatever the client repeated (1,500 scopes once made a 258 KB
        // token), and a bounded number of resources per token.
        var merged: [String: AccessScope] = [:]
        var order: [String] = []
        for scope in requested {
            let key = scope.type + "\u{0}" + scope.name
            if var existing = merged[key] {
                existing.actions = Array(Set(existing.actions + scope.actions)).sorted()
                merged[key] = existing
            } else {
                guard order.count < Self.maximumScopesPerToken else { continue }
                merged[key] = scope
                order.append(key)
            }
        }
        var granted: [AccessScope] = []
        for scope in order.compactMap({ merged[$0] }) {
            switch scope.type {
            case "repository":
                guard let repository = RepositoryName(scope.name) else { continue }
                let allowed = try await actions(for: identity, on: repository)
                let wanted = scope.actions.contains("*") ? Set(Action.allCases) : Set(scope.actions.compactMap(Action.init(rawValue:)))
                let actions = wanted.intersection(allowed)
                if !actions.isEmpty {
                    granted.append(AccessScope(type: "repository", name: repository.value, actions: actions.sorted().map(\.rawValue)))
                }
            case "registry" where scope.name == "catalog":
                // Everyone signed in may list the catalog; it only shows what they may pull.
                if identity.kind != .anonymous { granted.append(AccessScope(type: "registry", name: "catalog", actions: ["*"])) }
            default:
                continue
            }
        }
        return granted
    }

    /// Distinct resources one token may name (Docker clients ask for a handful: a mount names two).
    public static let maximumScopesPerToken = 100

    public func canCreateNamespace(_ identity: Identity) -> Bool {
        switch identity.kind {
        case .anonymous, .robot: identity.isAdmin
        case .user: identity.isAdmin || namespaceCreation == .users
        }
    }

    /// The user's role in `namespace`, if any (system administrators count as admins everywhere).
    public func role(of identity: Identity, in namespace: String) async throws -> Role? {
        if identity.isAdmin { return .admin }
        guard identity.kind == .user else { return nil }
        if let cached = memberships.get(identity.id) { return cached[namespace] }
        let roles = try await store.memberships(userID: identity.id)
        memberships.set(identity.id, roles)
        return roles[namespace]
    }

    /// Which repositories a catalog listing may show: nil means all of them.
    public func catalogFilter(for identity: Identity) async throws -> RepositoryFilter? {
        if identity.isAdmin { return nil }
        var namespaces = try await store.publicNamespaces()
        var repositories = Set<String>()
        switch identity.kind {
        case .anonymous:
            break
        case .user:
            namespaces.formUnion(try await store.memberships(userID: identity.id).keys)
        case .robot:
            for permission in try await robot(identity)?.permissions ?? [] where permission.actions.contains(.pull) {
                switch permission.scope {
                case .registry: return nil
                case .namespace: namespaces.insert(permission.name)
                case .repository: repositories.insert(permission.name)
                }
            }
        }
        return RepositoryFilter(namespaces: namespaces, repositories: repositories)
    }

    /// Creates `namespace` for a first push, if it does not exist yet.
    public func ensureNamespace(_ namespace: String, for identity: Identity) async throws {
        guard case .absent = try await namespaceState(namespace) else { return }
        do {
            let created = try await store.createNamespace(
                name: namespace, isPublic: false, createdBy: identity.name,
                admin: identity.kind == .user && !identity.isAdmin ? identity.id : nil
            )
            namespaces.set(namespace, .present(id: created.id, isPublic: false))
        } catch AccessError.conflict {
            // Another request created it first: fine; read it again when next needed.
            namespaces.remove(namespace)
        }
        memberships.removeAll()
    }

    /// The namespace's database id, 0 when it does not exist. A name can be deleted and created
    /// again for someone else; grants recorded with an id stop applying when it changes.
    public func namespaceID(_ name: String) async throws -> Int64 {
        if case .present(let id, _) = try await namespaceState(name) { return id }
        return 0
    }

    /// What a bearer token grants on `repository`, as long as the namespace is the one the token
    /// was issued for. For a namespace deleted and created again since (or created since, when it
    /// did not exist at issue), only what the identity may do now counts.
    public func tokenActions(_ token: TokenService.VerifiedToken, on repository: RepositoryName) async throws -> Set<Action> {
        let granted = token.actions(on: repository.value)
        guard !granted.isEmpty, let issuedFor = token.namespaceIDs?[String(repository.namespace)] else { return granted }
        guard try await namespaceID(String(repository.namespace)) != issuedFor else { return granted }
        return granted.intersection(try await actions(for: token.identity, on: repository))
    }

    private func namespaceState(_ name: String) async throws -> NamespaceState {
        if let cached = namespaces.get(name) { return cached }
        let state: NamespaceState = try await store.namespace(named: name).map { .present(id: $0.id, isPublic: $0.isPublic) } ?? .absent
        namespaces.set(name, state)
        return state
    }

    private func robot(_ identity: Identity) async throws -> RobotRecord? {
        if let cached = robots.get(identity.id) { return cached }
        guard let robot = try await store.robot(named: identity.name) else { return nil }
        robots.set(identity.id, robot)
        return robot
    }
}
