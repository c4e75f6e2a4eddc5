import DurableFiles
import Logging
import Metadata
import OCI

#if canImport(FoundationEssentials)
import FoundationEssentials
#else
import Foundation
#endif

public struct AccessConfiguration: Sendable {
    public var namespaceCreation: NamespaceCreationPolicy = .administrators
    public var token = TokenService.Settings()
    public var throttle = LoginThrottle.Policy()
    /// How long refresh tokens (docker login's identity token) stay valid.
    public var refreshTokenLifetime: Duration = .seconds(90 * 24 * 3600)
    /// bcrypt cost for stored passwords.
    public var passwordCost: UInt8 = 12
    /// The 12-digit registry id in ARNs and ECR responses; nil generates one at first start.
    public var registryID: String?

    public init() {}
}

/// Access control in one place: identities and their credentials, namespaces and roles, bearer
/// tokens, and the audit log. The management operations check who is asking, record what they
/// did, and clear the authentication caches so changes apply immediately on this node.
public final class AccessControl: Sendable {
    public let store: AccessStore
    public let authenticator: Authenticator
    public let authorizer: Authorizer
    public let tokens: TokenService
    public let audit: AuditLog
    public let configuration: AccessConfiguration
    private let logger: Logger

    public init(database: Database, sealer: SecretSealer, configuration: AccessConfiguration, logger: Logger, extraVerifiers: [any CredentialVerifier] = []) {
        let store = AccessStore(database: database, sealer: sealer)
        self.store = store
        self.configuration = configuration
        self.logger = logger
        self.authenticator = Authenticator(
            store: store, throttle: LoginThrottle(policy: configuration.throttle), logger: logger,
            passwordCost: configuration.passwordCost, extraVerifiers: [RegistryLoginTokenVerifier(store: store)] + extraVerifiers)
        self.authorizer = Authorizer(store: store, namespaceCreation: configuration.namespaceCreation, policies: PolicyStore(database: database))
        self.tokens = TokenService(store: store, settings: configuration.token, logger: logger)
        self.audit = AuditLog(database: database, logger: logger)
    }

    /// Loads signing keys and makes sure a system administrator exists.
    /// Returns the generated administrator password when one was created (to show once).
    public func start(dataDirectory: String, administratorPassword: String?) async throws -> String? {
        let sealed = try await store.sealPlainSecrets()
        if sealed > 0 { logger.notice("sealed secrets stored in the clear by an earlier version", metadata: ["count": "\(sealed)"]) }
        try await tokens.start()
        try await authorizer.policies.start(configuredRegistryID: configuration.registryID)
        return try await bootstrapAdministrator(dataDirectory: dataDirectory, password: administratorPassword)
    }

    /// The first start creates `admin`: with `WHARF_ADMIN_PASSWORD` when given, otherwise a random
    /// password written to `<data>/admin-password` (mode 0600). There is never a default password.
    func bootstrapAdministrator(dataDirectory: String, password: String?) async throws -> String? {
        guard try await store.countUsers() == 0 else { return nil }
        let chosen = password ?? Secrets.randomPassword()
        if password != nil { try Secrets.validatePassword(chosen) }
        let hash = try await Secrets.hashPassword(chosen, cost: configuration.passwordCost)
        // The generated password is on disk (durably) before the account exists: a crash between
        // the two must not leave an administrator whose password nobody was ever shown.
        let path = "\(dataDirectory)/admin-password"
        if password == nil {
            do {
                try DurableFiles.writeFile(path, contents: Array((chosen + "\n").utf8), mode: 0o600)
            } catch {
                throw AccessError.invalid("could not write \(path): \(error)")
            }
        }
        do {
            _ = try await store.createUser(name: "admin", passwordHash: hash, email: nil, isAdmin: true)
        } catch AccessError.conflict {
            // Another node created it at the same moment: our password is not the administrator's.
            if password == nil, FileManager.default.contents(atPath: path) == Data((chosen + "\n").utf8) {
                try? FileManager.default.removeItem(atPath: path)
            }
            return nil
        }
        audit.record(AuditEvent(actor: nil, action: "user.create", target: "admin", detail: #"{"bootstrap":true}"#))
        return password == nil ? chosen : nil
    }

    /// The account behind `identity` as it is now: nil when it was deleted (an id no longer
    /// carrying this name: a new account of the same name is someone else), disabled or expired;
    /// otherwise the identity with its current administrator flag.
    public func currentIdentity(of identity: Identity) async throws -> Identity? {
        switch identity.kind {
        case .user:
            guard let user = try await store.user(id: identity.id), user.name == identity.name, !user.disabled else { return nil }
            return Identity(kind: .user, name: user.name, id: user.id, isAdmin: user.isAdmin)
        case .robot:
            guard let robot = try await store.robot(named: identity.name), robot.id == identity.id, !robot.disabled,
                !robot.isExpired(at: Timestamp.nowMillis())
            else { return nil }
            return Identity(kind: .robot, name: robot.name, id: robot.id, isAdmin: false)
        case .anonymous:
            return nil
        }
    }

    /// Clears this node's authentication and authorisation caches after a change.
    func changed() {
        authenticator.invalidateCache()
        authorizer.invalidateCache()
    }

    private func requireAdmin(_ caller: Identity) throws(AccessError) {
        guard caller.isAdmin else { throw .forbidden("only system administrators may do this") }
    }

    // MARK: Users

    public func createUser(by caller: Identity, name: String, password: String, email: String?, isAdmin: Bool, source: String?) async throws -> UserRecord {
        try requireAdmin(caller)
        try Self.validateUserName(name)
        try Secrets.validatePassword(password)
        let user = try await store.createUser(
            name: name, passwordHash: try await Secrets.hashPassword(password, cost: configuration.passwordCost), email: email, isAdmin: isAdmin)
        audit.record(AuditEvent(actor: caller, action: "user.create", target: name, source: source, detail: isAdmin ? #"{"admin":true}"# : nil))
        return user
    }

    /// Creates a user who keeps the password they had elsewhere: the bcrypt hash comes from an
    /// htpasswd file (migrating from CNCF Distribution, which accepts only bcrypt entries).
    public func importUser(by caller: Identity, name: String, bcryptHash: String, email: String?, isAdmin: Bool, source: String?) async throws -> UserRecord {
        try requireAdmin(caller)
        try Self.validateUserName(name)
        let cost = try Secrets.validateBcryptHash(bcryptHash)
        // $2y$ (htpasswd, PHP) is the same algorithm as OpenBSD's $2b$, the only name our verifier reads.
        let stored = bcryptHash.hasPrefix("$2y$") ? "$2b$" + bcryptHash.dropFirst(4) : bcryptHash
        let user = try await store.createUser(name: name, passwordHash: stored, email: email, isAdmin: isAdmin)
        audit.record(
            AuditEvent(
                actor: caller, action: "user.import", target: name, source: source,
                detail: #"{"bcryptCost":\#(cost)\#(isAdmin ? #","admin":true"# : "")}"#))
        return user
    }

    public func listUsers(by caller: Identity) async throws -> [UserRecord] {
        try requireAdmin(caller)
        return try await store.listUsers()
    }

    public func user(_ name: String, by caller: Identity) async throws -> UserRecord {
        guard caller.isAdmin || (caller.kind == .user && caller.name == name) else { throw AccessError.forbidden("you may only view your own account") }
        guard let user = try await store.user(named: name) else { throw AccessError.notFound("user '\(name)' does not exist") }
        return user
    }

    public func updateUser(
        _ name: String, by caller: Identity, email: String?? = nil, isAdmin: Bool? = nil, disabled: Bool? = nil, source: String?
    ) async throws -> UserRecord {
        try requireAdmin(caller)
        if isAdmin == false || disabled == true { try await ensureAnotherAdministrator(besides: name) }
        let user = try await store.updateUser(name, email: email, isAdmin: isAdmin, disabled: disabled)
        if disabled == true { try await store.deleteRefreshTokens(userID: user.id) }
        changed()
        audit.record(
            AuditEvent(
                actor: caller, action: "user.update", target: name, source: source,
                detail: Self.json(["admin": isAdmin.map(String.init), "disabled": disabled.map(String.init)])))
        return user
    }

    /// Users change their own password (giving the current one); administrators may set anyone's.
    public func setPassword(of name: String, by caller: Identity, newPassword: String, currentPassword: String?, source: String?) async throws {
        guard let user = try await store.user(named: name) else { throw AccessError.notFound("user '\(name)' does not exist") }
        if !caller.isAdmin {
            guard caller.kind == .user, caller.id == user.id else { throw AccessError.forbidden("you may only change your own password") }
            guard let currentPassword, let hash = user.passwordHash, try await Secrets.verifyPassword(currentPassword, hash: hash) else {
                throw AccessError.forbidden("the current password is wrong")
            }
        }
        try Secrets.validatePassword(newPassword)
        _ = try await store.updateUser(name, passwordHash: try await Secrets.hashPassword(newPassword, cost: configuration.passwordCost))
        try await store.deleteRefreshTokens(userID: user.id)
        changed()
        audit.record(AuditEvent(actor: caller, action: "user.password", target: name, source: source))
    }

    public func deleteUser(_ name: String, by caller: Identity, source: String?) async throws {
        try requireAdmin(caller)
        try await ensureAnotherAdministrator(besides: name)
        guard try await store.deleteUser(name) else { throw AccessError.notFound("user '\(name)' does not exist") }
        changed()
        audit.record(AuditEvent(actor: caller, action: "user.delete", target: name, source: source))
    }

    private func ensureAnotherAdministrator(besides name: String) async throws {
        guard let user = try await store.user(named: name), user.isAdmin, !user.disabled else { return }
        let others = try await store.listUsers().filter { $0.isAdmin && !$0.disabled && $0.name != name }
        guard !others.isEmpty else { throw AccessError.conflict("'\(name)' is the last active system administrator") }
    }

    static func validateUserName(_ name: String) throws(AccessError) {
        let bytes = Array(name.utf8)
        guard (1...64).contains(bytes.count),
            bytes.allSatisfy({ ($0 >= 0x61 && $0 <= 0x7A) || ($0 >= 0x30 && $0 <= 0x39) || $0 == 0x2E || $0 == 0x5F || $0 == 0x2D }),
            let first = bytes.first, (first >= 0x61 && first <= 0x7A) || (first >= 0x30 && first <= 0x39)
        else { throw .invalid("user names are 1-64 characters: lowercase letters, digits, '.', '_' and '-', starting with a letter or digit") }
        guard name != "aws" else { throw .invalid("'aws' is reserved") }
    }

    // MARK: Personal access tokens

    public func createAccessToken(
        for name: String, by caller: Identity, credential: Credential, tokenName: String, expiresAt: Int64?, source: String?
    ) async throws -> (AccessTokenRecord, String) {
        try Self.requireMayMint(credential, expiringAt: expiresAt, what: "an access token")
        let user = try await ownedUser(name, by: caller)
        guard !tokenName.isEmpty, tokenName.count <= 64 else { throw AccessError.invalid("token names are 1-64 characters") }
        let token = Secrets.newAccessToken()
        let record = try await store.createAccessToken(userID: user.id, name: tokenName, tokenHash: Secrets.sha256Hex(token), expiresAt: expiresAt)
        audit.record(AuditEvent(actor: caller, action: "token.create", target: "\(name)/\(tokenName)", source: source))
        return (record, token)
    }

    public func listAccessTokens(for name: String, by caller: Identity) async throws -> [AccessTokenRecord] {
        try await store.listAccessTokens(userID: try await ownedUser(name, by: caller).id)
    }

    public func deleteAccessToken(for name: String, by caller: Identity, tokenName: String, source: String?) async throws {
        let user = try await ownedUser(name, by: caller)
        guard try await store.deleteAccessToken(userID: user.id, name: tokenName) else {
            throw AccessError.notFound("user '\(name)' has no access token named '\(tokenName)'")
        }
        changed()
        audit.record(AuditEvent(actor: caller, action: "token.delete", target: "\(name)/\(tokenName)", source: source))
    }

    /// No narrow or short-lived credential mints a broader or longer-lived one.
    static func requireMayMint(_ credential: Credential, expiringAt expiresAt: Int64?, what: String) throws(AccessError) {
        guard credential.mayMint(expiringAt: expiresAt) else {
            if case .accessToken(_, let own?) = credential {
                throw .forbidden(
                    "an access token that expires cannot create \(what) that outlives it (set an expiry no later than \(own) ms since the epoch, or sign in with a password)"
                )
            }
            throw .forbidden("\(credential.kindDescription) cannot create \(what); sign in with a password or an access token")
        }
    }

    private func ownedUser(_ name: String, by caller: Identity) async throws -> UserRecord {
        guard caller.isAdmin || (caller.kind == .user && caller.name == name) else {
            throw AccessError.forbidden("you may only manage your own access tokens")
        }
        guard let user = try await store.user(named: name) else { throw AccessError.notFound("user '\(name)' does not exist") }
        return user
    }

    // MARK: Robots

    /// Administrators manage every robot; a namespace admin manages robots whose permissions all
    /// lie in namespaces they administer.
    private func mayManage(robotPermissions permissions: [RobotPermission], caller: Identity) async throws -> Bool {
        if caller.isAdmin { return true }
        guard caller.kind == .user, !permissions.isEmpty else { return false }
        for permission in permissions {
            let namespace: String
            switch permission.scope {
            case .registry: return false
            case .namespace: namespace = permission.name
            case .repository: namespace = String(RepositoryName(permission.name)?.namespace ?? "")
            }
            guard try await authorizer.role(of: caller, in: namespace) == .admin else { return false }
        }
        return true
    }

    public func createRobot(
        by caller: Identity, credential: Credential, name: String, description: String?, expiresAt: Int64?, permissions: [RobotPermission], source: String?
    ) async throws -> (RobotRecord, String) {
        try Self.requireMayMint(credential, expiringAt: expiresAt, what: "a robot account")
        let fullName = name.hasPrefix("robot$") ? name : "robot$" + name
        try Self.validateRobot(name: fullName, permissions: permissions)
        guard try await mayManage(robotPermissions: permissions, caller: caller) else {
            throw AccessError.forbidden("you may only create robots with permissions in namespaces you administer")
        }
        let secret = Secrets.randomToken()
        let robot = try await store.createRobot(
            name: fullName, description: description, secretHash: Secrets.sha256Hex(secret),
            expiresAt: expiresAt, createdBy: caller.name, permissions: permissions)
        audit.record(
            AuditEvent(
                actor: caller, action: "robot.create", target: fullName, source: source,
                detail: Self.json(["permissions": permissions.map { "\($0.scope.rawValue):\($0.name):\($0.actions.listString)" }.joined(separator: " ")])))
        return (robot, secret)
    }

    public func listRobots(by caller: Identity) async throws -> [RobotRecord] {
        var visible: [RobotRecord] = []
        for robot in try await store.listRobots() where try await mayManage(robotPermissions: robot.permissions, caller: caller) {
            visible.append(robot)
        }
        return visible
    }

    public func robot(_ name: String, by caller: Identity) async throws -> RobotRecord {
        guard let robot = try await store.robot(named: name) else { throw AccessError.notFound("robot account '\(name)' does not exist") }
        guard try await mayManage(robotPermissions: robot.permissions, caller: caller) else {
            throw AccessError.forbidden("you may not manage robot account '\(name)'")
        }
        return robot
    }

    public func updateRobot(
        _ name: String, by caller: Identity, credential: Credential, description: String?? = nil, expiresAt: Int64?? = nil, disabled: Bool? = nil,
        permissions: [RobotPermission]? = nil, source: String?
    ) async throws -> RobotRecord {
        let existing = try await robot(name, by: caller)
        if permissions != nil || expiresAt != nil {
            // Widening a robot or extending its life is as strong as creating one.
            try Self.requireMayMint(credential, expiringAt: expiresAt ?? existing.expiresAt, what: "a robot account's permissions or expiry")
        }
        if let permissions {
            try Self.validateRobot(name: name, permissions: permissions)
            guard try await mayManage(robotPermissions: permissions, caller: caller) else {
                throw AccessError.forbidden("you may only grant permissions in namespaces you administer")
            }
        }
        let updated = try await store.updateRobot(name, description: description, expiresAt: expiresAt, disabled: disabled, permissions: permissions)
        changed()
        audit.record(AuditEvent(actor: caller, action: "robot.update", target: name, source: source))
        return updated
    }

    public func rotateRobotSecret(_ name: String, by caller: Identity, credential: Credential, source: String?) async throws -> String {
        let existing = try await robot(name, by: caller)
        try Self.requireMayMint(credential, expiringAt: existing.expiresAt, what: "a robot secret")
        let secret = Secrets.randomToken()
        _ = try await store.updateRobot(name, secretHash: Secrets.sha256Hex(secret))
        changed()
        audit.record(AuditEvent(actor: caller, action: "robot.secret.rotate", target: name, source: source))
        return secret
    }

    public func deleteRobot(_ name: String, by caller: Identity, source: String?) async throws {
        _ = try await robot(name, by: caller)
        _ = try await store.deleteRobot(name)
        changed()
        audit.record(AuditEvent(actor: caller, action: "robot.delete", target: name, source: source))
    }

    static func validateRobot(name: String, permissions: [RobotPermission]) throws(AccessError) {
        let suffix = name.dropFirst("robot$".count)
        guard name.hasPrefix("robot$"), (1...64).contains(suffix.count),
            suffix.utf8.allSatisfy({ ($0 >= 0x61 && $0 <= 0x7A) || ($0 >= 0x30 && $0 <= 0x39) || [0x2E, 0x5F, 0x2D, 0x2B].contains($0) })
        else { throw .invalid("robot names are 'robot$' plus 1-64 lowercase letters, digits, '.', '_', '-' or '+'") }
        for permission in permissions {
            guard !permission.actions.isEmpty else { throw .invalid("a robot permission needs at least one action") }
            switch permission.scope {
            case .registry:
                guard permission.name == "*" else { throw .invalid("registry-wide permissions use the name '*'") }
            case .namespace:
                guard RepositoryName.isValid(permission.name), !permission.name.contains("/") else {
                    throw .invalid("'\(permission.name)' is not a namespace name")
                }
            case .repository:
                guard RepositoryName.isValid(permission.name) else { throw .invalid("'\(permission.name)' is not a repository name") }
            }
        }
    }

    // MARK: Namespaces and members

    public func createNamespace(by caller: Identity, name: String, isPublic: Bool, source: String?) async throws -> NamespaceRecord {
        guard authorizer.canCreateNamespace(caller) else {
            throw AccessError.forbidden("you may not create namespaces (policy: \(authorizer.namespaceCreation.rawValue))")
        }
        guard RepositoryName.isValid(name), !name.contains("/") else {
            throw AccessError.invalid("'\(name)' is not a valid namespace name (one repository path component)")
        }
        let namespace = try await store.createNamespace(
            name: name, isPublic: isPublic, createdBy: caller.name,
            admin: caller.kind == .user && !caller.isAdmin ? caller.id : nil)
        changed()
        audit.record(AuditEvent(actor: caller, action: "namespace.create", namespace: name, source: source, detail: isPublic ? #"{"public":true}"# : nil))
        return namespace
    }

    /// Namespaces the caller may see: all for administrators, else public ones and their own.
    public func listNamespaces(by caller: Identity) async throws -> [NamespaceRecord] {
        let all = try await store.listNamespaces()
        if caller.isAdmin { return all }
        let mine = caller.kind == .user ? try await store.memberships(userID: caller.id) : [:]
        return all.filter { $0.isPublic || mine[$0.name] != nil }
    }

    public func namespace(_ name: String, by caller: Identity) async throws -> NamespaceRecord {
        guard let namespace = try await store.namespace(named: name) else { throw AccessError.notFound("namespace '\(name)' does not exist") }
        let role = try await authorizer.role(of: caller, in: name)
        guard caller.isAdmin || namespace.isPublic || role != nil else { throw AccessError.notFound("namespace '\(name)' does not exist") }
        return namespace
    }

    public func setNamespacePublic(_ name: String, _ isPublic: Bool, by caller: Identity, source: String?) async throws -> NamespaceRecord {
        try await requireNamespaceAdmin(name, caller)
        let namespace = try await store.setNamespacePublic(name, isPublic)
        changed()
        audit.record(AuditEvent(actor: caller, action: "namespace.update", namespace: name, source: source, detail: Self.json(["public": String(isPublic)])))
        return namespace
    }

    public func deleteNamespace(_ name: String, by caller: Identity, source: String?) async throws {
        try await requireNamespaceAdmin(name, caller)
        guard try await store.deleteNamespace(name) else { throw AccessError.notFound("namespace '\(name)' does not exist") }
        changed()
        audit.record(AuditEvent(actor: caller, action: "namespace.delete", namespace: name, source: source))
    }

    public func members(of namespace: String, by caller: Identity) async throws -> [MemberRecord] {
        let role = try await authorizer.role(of: caller, in: namespace)
        guard caller.isAdmin || role != nil else {
            throw AccessError.forbidden("only members of '\(namespace)' may list its members")
        }
        return try await store.members(of: namespace)
    }

    public func setMember(_ user: String, of namespace: String, role: Role, by caller: Identity, source: String?) async throws {
        try await requireNamespaceAdmin(namespace, caller)
        guard let record = try await store.user(named: user) else { throw AccessError.notFound("user '\(user)' does not exist") }
        try await store.setMember(namespace: namespace, userID: record.id, role: role)
        changed()
        audit.record(
            AuditEvent(
                actor: caller, action: "namespace.member.set", namespace: namespace, target: user, source: source, detail: Self.json(["role": role.rawValue])))
    }

    public func removeMember(_ user: String, of namespace: String, by caller: Identity, source: String?) async throws {
        try await requireNamespaceAdmin(namespace, caller)
        guard let record = try await store.user(named: user), try await store.removeMember(namespace: namespace, userID: record.id) else {
            throw AccessError.notFound("'\(user)' is not a member of '\(namespace)'")
        }
        changed()
        audit.record(AuditEvent(actor: caller, action: "namespace.member.remove", namespace: namespace, target: user, source: source))
    }

    /// Admins of the namespace (and system administrators) pass. Anyone who cannot see the
    /// namespace (not a member of a private one) gets the same 404 whether it exists or not: a
    /// 403 for existing and a 404 for missing namespaces told outsiders which names are taken.
    private func requireNamespaceAdmin(_ namespace: String, _ caller: Identity) async throws {
        let record = try await store.namespace(named: namespace)
        let role = record == nil ? nil : try await authorizer.role(of: caller, in: namespace)
        guard let record, caller.isAdmin || role != nil || record.isPublic else {
            throw AccessError.notFound("namespace '\(namespace)' does not exist or is not visible to you")
        }
        guard role == .admin else {
            throw AccessError.forbidden("only admins of namespace '\(namespace)' may do this")
        }
    }

    // MARK: Repository-level checks (settings, lifecycle policies, quotas)

    public func requireSystemAdministrator(_ caller: Identity) throws {
        try requireAdmin(caller)
    }

    /// Admins of the repository's namespace (and system administrators) manage its settings and policies.
    public func requireRepositoryAdministration(_ repository: RepositoryName, by caller: Identity) async throws {
        guard try await authorizer.role(of: caller, in: String(repository.namespace)) == .admin else {
            throw AccessError.forbidden("only admins of namespace '\(repository.namespace)' may change \(repository)'s settings")
        }
    }

    /// Admins of a namespace (and system administrators) manage its policies.
    public func requireNamespaceAdministration(_ namespace: String, by caller: Identity) async throws {
        try await requireNamespaceAdmin(namespace, caller)
    }

    /// Anyone who may pull from the repository may read its settings.
    public func requireRepositoryRead(_ repository: RepositoryName, by caller: Identity) async throws {
        guard try await authorizer.actions(for: caller, on: repository).contains(.pull) else {
            throw AccessError.notFound("repository '\(repository)' does not exist or is not visible to you")
        }
    }

    /// Pushers of a repository (and system administrators) may queue work on it, such as scans,
    /// as ECR's StartImageScan requires.
    public func requireRepositoryWrite(_ repository: RepositoryName, by caller: Identity) async throws {
        try await requireRepositoryRead(repository, by: caller)
        guard try await authorizer.actions(for: caller, on: repository).contains(.push) else {
            throw AccessError.forbidden("only those who may push to \(repository) may request its scans")
        }
    }

    /// Members of a namespace (and system administrators) may read its usage.
    public func requireNamespaceMember(_ namespace: String, by caller: Identity) async throws {
        guard try await authorizer.role(of: caller, in: namespace) != nil else {
            throw AccessError.forbidden("only members of '\(namespace)' may see its usage")
        }
    }

    // MARK: Audit and keys

    /// Administrators read the whole log; namespace admins read their namespace's events.
    public func auditEvents(_ query: AuditQuery, by caller: Identity) async throws -> [AuditEvent] {
        if !caller.isAdmin {
            guard let namespace = query.namespace, try await authorizer.role(of: caller, in: namespace) == .admin else {
                throw AccessError.forbidden("namespace admins must name a namespace they administer; only system administrators read the whole log")
            }
        }
        await audit.flush()
        return try await audit.events(matching: query)
    }

    public func rotateSigningKey(by caller: Identity, source: String?) async throws -> String {
        try requireAdmin(caller)
        let kid = try await tokens.rotate()
        audit.record(AuditEvent(actor: caller, action: "key.rotate", target: kid, source: source))
        return kid
    }

    static func json(_ fields: [String: String?]) -> String? {
        let present = fields.compactMapValues { $0 }
        guard !present.isEmpty, let data = try? JSONEncoder().encode(present) else { return nil }
        return String(decoding: data, as: UTF8.self)
    }
}
