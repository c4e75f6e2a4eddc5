import OCI

/// What a principal may do to a repository. `delete` covers manifests, tags and blobs.
/// `scan` and `replicate` are robot permissions for the machines that must read every image,
/// vulnerable or not yet scanned: they pull through a namespace's pull gate.
public enum Action: String, Sendable, Hashable, CaseIterable, Codable, Comparable {
    case pull
    case push
    case delete
    case scan
    case replicate

    public static func < (lhs: Action, rhs: Action) -> Bool {
        allCases.firstIndex(of: lhs)! < allCases.firstIndex(of: rhs)!
    }

    /// Parses a comma-separated list (`pull,push`), accepting `*` for all actions.
    public static func parseList(_ string: some StringProtocol) -> Set<Action>? {
        var result = Set<Action>()
        for item in string.split(separator: ",") {
            let trimmed = item.trimmingSpaces()
            if trimmed == "*" {
                result.formUnion(Action.allCases)
            } else if let action = Action(rawValue: String(trimmed)) {
                result.insert(action)
            } else {
                return nil
            }
        }
        return result
    }
}

extension Set where Element == Action {
    /// `pull,push` in a stable order.
    public var listString: String { sorted().map(\.rawValue).joined(separator: ",") }
}

/// A member's role in a namespace, as in Harbor's projects.
public enum Role: String, Sendable, Hashable, CaseIterable, Codable {
    /// Pull.
    case reader
    /// Pull and push.
    case developer
    /// Pull, push and delete (tags, manifests, blobs).
    case maintainer
    /// Everything a maintainer does, plus managing members and namespace settings.
    case admin

    public var actions: Set<Action> {
        switch self {
        case .reader: [.pull]
        case .developer: [.pull, .push]
        case .maintainer, .admin: [.pull, .push, .delete]
        }
    }

    public var canManageNamespace: Bool { self == .admin }
}

/// Who is making a request.
public struct Identity: Sendable, Hashable, CustomStringConvertible {
    public enum Kind: String, Sendable, Hashable, Codable {
        case user
        case robot
        case anonymous
    }

    public let kind: Kind
    /// User or robot name (`robot$…`); empty for anonymous.
    public let name: String
    /// Database id of the user or robot; 0 for anonymous.
    public let id: Int64
    /// System administrators may do everything.
    public let isAdmin: Bool

    public init(kind: Kind, name: String, id: Int64, isAdmin: Bool) {
        self.kind = kind
        self.name = name
        self.id = id
        self.isAdmin = isAdmin
    }

    public static let anonymous = Identity(kind: .anonymous, name: "", id: 0, isAdmin: false)

    public var description: String { kind == .anonymous ? "anonymous" : name }
}

/// A robot's permission: actions on the whole registry, a namespace, or one repository.
public struct RobotPermission: Sendable, Hashable, Codable {
    public enum Scope: String, Sendable, Hashable, Codable {
        case registry
        case namespace
        case repository
    }

    public var scope: Scope
    /// Namespace or repository name; `*` for the registry scope.
    public var name: String
    public var actions: Set<Action>

    public init(scope: Scope, name: String, actions: Set<Action>) {
        self.scope = scope
        self.name = name
        self.actions = actions
    }

    public func covers(_ repository: RepositoryName) -> Bool {
        switch scope {
        case .registry: true
        case .namespace: repository.namespace == name
        case .repository: repository.value == name
        }
    }
}

/// One entry of a Docker token `scope` parameter: `type[(class)]:name:action[,action]`
/// (distribution's `scope.md`). The name may itself contain colons (a `host:port/…` prefix).
public struct AccessScope: Sendable, Hashable, Codable, CustomStringConvertible {
    public var type: String
    public var name: String
    public var actions: [String]

    public init(type: String, name: String, actions: [String]) {
        self.type = type
        self.name = name
        self.actions = actions
    }

    /// Parses one scope; nil when malformed.
    public init?(parsing string: some StringProtocol) {
        let string = String(string)
        guard let firstColon = string.firstIndex(of: ":"), let lastColon = string.lastIndex(of: ":"), firstColon < lastColon else {
            return nil
        }
        var type = String(string[..<firstColon])
        if let open = type.firstIndex(of: "(") { type = String(type[..<open]) }  // repository(plugin) → repository
        let name = String(string[string.index(after: firstColon)..<lastColon])
        let actions = string[string.index(after: lastColon)...].split(separator: ",").map(String.init)
        guard !type.isEmpty, !name.isEmpty else { return nil }
        self.type = type
        self.name = name
        self.actions = actions
    }

    /// Parses a scope parameter that may hold several space-separated scopes (the OAuth2 form).
    public static func parseList(_ value: some StringProtocol) -> [AccessScope] {
        value.split(separator: " ").compactMap { AccessScope(parsing: $0) }
    }

    public var description: String { "\(type):\(name):\(actions.joined(separator: ","))" }
}

/// What proved an identity. It decides what the caller may create (no narrow or short-lived
/// credential mints a broader or longer-lived one) and what revoking a credential takes with it.
public enum Credential: Sendable, Hashable {
    /// A user's password: the account's primary credential.
    case password
    /// A personal access token; `expiresAt` in Unix milliseconds, nil for never.
    case accessToken(id: Int64, expiresAt: Int64?)
    /// A robot account's secret.
    case robotSecret
    /// A SigV4 access key (ECR API).
    case accessKey(id: String)
    /// An ECR registry login (Basic `AWS:<token>`, 12 hours).
    case registryLoginToken
    /// A registry bearer token (minutes, scoped to what its `access` claim lists).
    case bearerToken
    /// No credential: anonymous, or authentication switched off.
    case none

    /// May this credential create a credential that lives until `expiresAt` (nil: forever)?
    /// Passwords, robot secrets and access keys are primary and long-lived; an access token may
    /// mint only what expires no later than itself; bearer tokens and registry logins mint nothing.
    public func mayMint(expiringAt expiresAt: Int64?) -> Bool {
        switch self {
        case .password, .robotSecret, .accessKey:
            return true
        case .accessToken(_, let own):
            guard let own else { return true }
            guard let expiresAt else { return false }
            return expiresAt <= own
        case .registryLoginToken, .bearerToken, .none:
            return false
        }
    }

    /// How the credential is named in messages.
    public var kindDescription: String {
        switch self {
        case .password: "a password"
        case .accessToken: "an access token"
        case .robotSecret: "a robot secret"
        case .accessKey: "an access key"
        case .registryLoginToken: "a registry login token"
        case .bearerToken: "a bearer token"
        case .none: "no credential"
        }
    }
}
