import Metadata
import OCI
import SQLKit

public struct UserRecord: Sendable, Equatable {
    public var id: Int64
    public var name: String
    public var passwordHash: String?
    public var email: String?
    public var isAdmin: Bool
    public var disabled: Bool
    public var createdAt: Int64
    public var updatedAt: Int64
    public var lastLoginAt: Int64?
}

public struct RobotRecord: Sendable, Equatable {
    public var id: Int64
    public var name: String
    public var description: String?
    public var secretHash: String
    public var expiresAt: Int64?
    public var disabled: Bool
    public var createdBy: String?
    public var createdAt: Int64
    public var lastUsedAt: Int64?
    public var permissions: [RobotPermission]

    public func isExpired(at now: Int64) -> Bool { expiresAt.map { $0 <= now } ?? false }
}

public struct AccessTokenRecord: Sendable, Equatable {
    public var id: Int64
    public var userID: Int64
    public var name: String
    public var expiresAt: Int64?
    public var createdAt: Int64
    public var lastUsedAt: Int64?
}

public struct NamespaceRecord: Sendable, Equatable {
    public var id: Int64
    public var name: String
    public var isPublic: Bool
    public var createdBy: String?
    public var createdAt: Int64
}

public struct MemberRecord: Sendable, Equatable {
    public var user: String
    public var role: Role
    public var addedAt: Int64
}

public struct SigningKeyRecord: Sendable, Equatable {
    public var kid: String
    public var privateKeyPEM: String
    public var createdAt: Int64
    public var retiredAt: Int64?
}

public enum AccessError: Error, Sendable, Equatable, CustomStringConvertible {
    case notFound(String)
    case conflict(String)
    case invalid(String)
    case forbidden(String)

    public var description: String {
        switch self {
        case .notFound(let message), .conflict(let message), .invalid(let message), .forbidden(let message): message
        }
    }
}

/// SQL for identities, namespaces, memberships and signing keys.
public struct AccessStore: Sendable {
    public let database: Database
    /// Seals the secrets this store keeps readable (signing keys, access-key secrets).
    public let sealer: SecretSealer

    public init(database: Database, sealer: SecretSealer) {
        self.database = database
        self.sealer = sealer
    }

    /// Seals secrets stored in the clear by versions before sealing existed. Idempotent; each
    /// value is rewritten only if it is still the plain value read.
    public func sealPlainSecrets() async throws -> Int {
        try await database.transaction { sql in
            var sealed = 0
            // (table, key column, secret column): every secret this store keeps readable.
            for (table, key, column) in [("signing_keys", "kid", "private_key_pem"), ("access_keys", "key_id", "secret")] {
                for row in try await sql.raw("SELECT \(ident: key), \(ident: column) FROM \(ident: table)").all() {
                    let value = try row.decode(column: column, as: String.self)
                    guard !SecretSealer.isSealed(value) else { continue }
                    try await sql.raw(
                        """
                        UPDATE \(ident: table) SET \(ident: column) = \(bind: try sealer.seal(value))
                        WHERE \(ident: key) = \(bind: try row.decode(column: key, as: String.self)) AND \(ident: column) = \(bind: value)
                        """
                    ).run()
                    sealed += 1
                }
            }
            return sealed
        }
    }

    // MARK: Users

    public func createUser(name: String, passwordHash: String?, email: String?, isAdmin: Bool) async throws -> UserRecord {
        try await database.transaction { sql in
            if try await sql.raw("SELECT id FROM users WHERE name = \(bind: name)").first() != nil {
                throw AccessError.conflict("user '\(name)' already exists")
            }
            let now = Timestamp.nowMillis()
            let row = try await sql.raw(
                """
                INSERT INTO users (name, password_hash, email, is_admin, disabled, created_at, updated_at)
                VALUES (\(bind: name), \(bind: passwordHash), \(bind: email), \(bind: isAdmin), \(bind: false), \(bind: now), \(bind: now))
                RETURNING *
                """
            ).first()
            return try Self.user(row!)
        }
    }

    public func user(named name: String) async throws -> UserRecord? {
        try await database.read { sql in
            try await sql.raw("SELECT * FROM users WHERE name = \(bind: name)").first().map(Self.user)
        }
    }

    public func user(id: Int64) async throws -> UserRecord? {
        try await database.read { sql in
            try await sql.raw("SELECT * FROM users WHERE id = \(bind: id)").first().map(Self.user)
        }
    }

    public func listUsers() async throws -> [UserRecord] {
        try await database.read { sql in
            try await sql.raw("SELECT * FROM users ORDER BY name").all().map(Self.user)
        }
    }

    public func countUsers() async throws -> Int {
        try await database.read { sql in
            try await sql.raw("SELECT COUNT(*) AS n FROM users").first()!.decode(column: "n", as: Int.self)
        }
    }

    /// Updates the given fields; nil leaves a field unchanged.
    public func updateUser(
        _ name: String, passwordHash: String? = nil, email: String?? = nil, isAdmin: Bool? = nil, disabled: Bool? = nil
    ) async throws -> UserRecord {
        try await database.transaction { sql in
            guard let existing = try await sql.raw("SELECT * FROM users WHERE name = \(bind: name)").first().map(Self.user) else {
                throw AccessError.notFound("user '\(name)' does not exist")
            }
            let row = try await sql.raw(
                """
                UPDATE users SET password_hash = \(bind: passwordHash ?? existing.passwordHash), email = \(bind: email ?? existing.email),
                    is_admin = \(bind: isAdmin ?? existing.isAdmin), disabled = \(bind: disabled ?? existing.disabled),
                    updated_at = \(bind: Timestamp.nowMillis())
                WHERE id = \(bind: existing.id) RETURNING *
                """
            ).first()
            return try Self.user(row!)
        }
    }

    public func deleteUser(_ name: String) async throws -> Bool {
        try await database.transaction { sql in
            try await !sql.raw("DELETE FROM users WHERE name = \(bind: name) RETURNING id").all().isEmpty
        }
    }

    public func recordLogin(userID: Int64) async throws {
        try await database.transaction { sql in
            try await sql.raw("UPDATE users SET last_login_at = \(bind: Timestamp.nowMillis()) WHERE id = \(bind: userID)").run()
        }
    }

    private static func user(_ row: any SQLRow) throws -> UserRecord {
        UserRecord(
            id: try row.decode(column: "id", as: Int64.self),
            name: try row.decode(column: "name", as: String.self),
            passwordHash: try row.decode(column: "password_hash", as: String?.self),
            email: try row.decode(column: "email", as: String?.self),
            isAdmin: try row.decode(column: "is_admin", as: Bool.self),
            disabled: try row.decode(column: "disabled", as: Bool.self),
            createdAt: try row.decode(column: "created_at", as: Int64.self),
            updatedAt: try row.decode(column: "updated_at", as: Int64.self),
            lastLoginAt: try row.decode(column: "last_login_at", as: Int64?.self)
        )
    }

    // MARK: Robots

    public func createRobot(
        name: String, description: String?, secretHash: String, expiresAt: Int64?, createdBy: String?, permissions: [RobotPermission]
    ) async throws -> RobotRecord {
        try await database.transaction { sql in
            if try await sql.raw("SELECT id FROM robots WHERE name = \(bind: name)").first() != nil {
                throw AccessError.conflict("robot account '\(name)' already exists")
            }
            let now = Timestamp.nowMillis()
            let row = try await sql.raw(
                """
                INSERT INTO robots (name, description, secret_hash, expires_at, disabled, created_by, created_at, updated_at)
                VALUES (\(bind: name), \(bind: description), \(bind: secretHash), \(bind: expiresAt), \(bind: false), \(bind: createdBy), \(bind: now), \(bind: now))
                RETURNING id
                """
            ).first()
            let id = try row!.decode(column: "id", as: Int64.self)
            try await Self.replacePermissions(robotID: id, permissions, sql)
            return try await Self.robot(where: "id", id, sql)!
        }
    }

    public func robot(named name: String) async throws -> RobotRecord? {
        try await database.read { sql in try await Self.robot(where: "name", name, sql) }
    }

    public func listRobots() async throws -> [RobotRecord] {
        try await database.read { sql in
            var robots: [RobotRecord] = []
            for row in try await sql.raw("SELECT name FROM robots ORDER BY name").all() {
                if let robot = try await Self.robot(where: "name", try row.decode(column: "name", as: String.self), sql) { robots.append(robot) }
            }
            return robots
        }
    }

    public func updateRobot(
        _ name: String, description: String?? = nil, expiresAt: Int64?? = nil, disabled: Bool? = nil, secretHash: String? = nil,
        permissions: [RobotPermission]? = nil
    ) async throws -> RobotRecord {
        try await database.transaction { sql in
            guard let existing = try await Self.robot(where: "name", name, sql) else {
                throw AccessError.notFound("robot account '\(name)' does not exist")
            }
            try await sql.raw(
                """
                UPDATE robots SET description = \(bind: description ?? existing.description), expires_at = \(bind: expiresAt ?? existing.expiresAt),
                    disabled = \(bind: disabled ?? existing.disabled), secret_hash = \(bind: secretHash ?? existing.secretHash),
                    updated_at = \(bind: Timestamp.nowMillis())
                WHERE id = \(bind: existing.id)
                """
            ).run()
            if let permissions { try await Self.replacePermissions(robotID: existing.id, permissions, sql) }
            return try await Self.robot(where: "id", existing.id, sql)!
        }
    }

    public func deleteRobot(_ name: String) async throws -> Bool {
        try await database.transaction { sql in
            try await !sql.raw("DELETE FROM robots WHERE name = \(bind: name) RETURNING id").all().isEmpty
        }
    }

    public func touchRobot(id: Int64) async throws {
        try await database.transaction { sql in
            try await sql.raw("UPDATE robots SET last_used_at = \(bind: Timestamp.nowMillis()) WHERE id = \(bind: id)").run()
        }
    }

    private static func replacePermissions(robotID: Int64, _ permissions: [RobotPermission], _ sql: any SQLDatabase) async throws {
        try await sql.raw("DELETE FROM robot_permissions WHERE robot_id = \(bind: robotID)").run()
        for permission in permissions {
            try await sql.raw(
                """
                INSERT INTO robot_permissions (robot_id, scope_kind, scope_name, actions)
                VALUES (\(bind: robotID), \(bind: permission.scope.rawValue), \(bind: permission.name), \(bind: permission.actions.listString))
                ON CONFLICT (robot_id, scope_kind, scope_name) DO UPDATE SET actions = excluded.actions
                """
            ).run()
        }
    }

    private static func robot(where column: String, _ value: any Encodable & Sendable, _ sql: any SQLDatabase) async throws -> RobotRecord? {
        guard let row = try await sql.raw("SELECT * FROM robots WHERE \(ident: column) = \(bind: value)").first() else { return nil }
        let id = try row.decode(column: "id", as: Int64.self)
        let permissions = try await sql.raw(
            """
            SELECT scope_kind, scope_name, actions FROM robot_permissions WHERE robot_id = \(bind: id) ORDER BY scope_kind, scope_name
            """
        ).all().compactMap { row -> RobotPermission? in
            guard let scope = RobotPermission.Scope(rawValue: try row.decode(column: "scope_kind", as: String.self)),
                let actions = Action.parseList(try row.decode(column: "actions", as: String.self))
            else { return nil }
            return RobotPermission(scope: scope, name: try row.decode(column: "scope_name", as: String.self), actions: actions)
        }
        return RobotRecord(
            id: id,
            name: try row.decode(column: "name", as: String.self),
            description: try row.decode(column: "description", as: String?.self),
            secretHash: try row.decode(column: "secret_hash", as: String.self),
            expiresAt: try row.decode(column: "expires_at", as: Int64?.self),
            disabled: try row.decode(column: "disabled", as: Bool.self),
            createdBy: try row.decode(column: "created_by", as: String?.self),
            createdAt: try row.decode(column: "created_at", as: Int64.self),
            lastUsedAt: try row.decode(column: "last_used_at", as: Int64?.self),
            permissions: permissions
        )
    }

    // MARK: Personal access tokens and refresh tokens

    public func createAccessToken(userID: Int64, name: String, tokenHash: String, expiresAt: Int64?) async throws -> AccessTokenRecord {
        try await database.transaction { sql in
            if try await sql.raw("SELECT id FROM access_tokens WHERE user_id = \(bind: userID) AND name = \(bind: name)").first() != nil {
                throw AccessError.conflict("an access token named '\(name)' already exists")
            }
            let row = try await sql.raw(
                """
                INSERT INTO access_tokens (user_id, name, token_hash, expires_at, created_at)
                VALUES (\(bind: userID), \(bind: name), \(bind: tokenHash), \(bind: expiresAt), \(bind: Timestamp.nowMillis()))
                RETURNING *
                """
            ).first()
            return try Self.accessToken(row!)
        }
    }

    /// The token with this hash and its owner.
    public func accessToken(hash: String) async throws -> (AccessTokenRecord, UserRecord)? {
        try await database.read { sql in
            guard let row = try await sql.raw("SELECT * FROM access_tokens WHERE token_hash = \(bind: hash)").first() else { return nil }
            let token = try Self.accessToken(row)
            guard let user = try await sql.raw("SELECT * FROM users WHERE id = \(bind: token.userID)").first().map(Self.user) else { return nil }
            return (token, user)
        }
    }

    public func listAccessTokens(userID: Int64) async throws -> [AccessTokenRecord] {
        try await database.read { sql in
            try await sql.raw("SELECT * FROM access_tokens WHERE user_id = \(bind: userID) ORDER BY name").all().map(Self.accessToken)
        }
    }

    public func deleteAccessToken(userID: Int64, name: String) async throws -> Bool {
        try await database.transaction { sql in
            try await !sql.raw("DELETE FROM access_tokens WHERE user_id = \(bind: userID) AND name = \(bind: name) RETURNING id").all().isEmpty
        }
    }

    public func touchAccessToken(id: Int64) async throws {
        try await database.transaction { sql in
            try await sql.raw("UPDATE access_tokens SET last_used_at = \(bind: Timestamp.nowMillis()) WHERE id = \(bind: id)").run()
        }
    }

    private static func accessToken(_ row: any SQLRow) throws -> AccessTokenRecord {
        AccessTokenRecord(
            id: try row.decode(column: "id", as: Int64.self),
            userID: try row.decode(column: "user_id", as: Int64.self),
            name: try row.decode(column: "name", as: String.self),
            expiresAt: try row.decode(column: "expires_at", as: Int64?.self),
            createdAt: try row.decode(column: "created_at", as: Int64.self),
            lastUsedAt: try row.decode(column: "last_used_at", as: Int64?.self)
        )
    }

    /// `accessTokenID`: the access token the refresh token was minted with; deleting that token deletes this one.
    public func createRefreshToken(userID: Int64, tokenHash: String, clientID: String?, expiresAt: Int64, accessTokenID: Int64?) async throws {
        try await database.transaction { sql in
            try await sql.raw(
                """
                INSERT INTO refresh_tokens (user_id, token_hash, client_id, created_at, expires_at, access_token_id)
                VALUES (\(bind: userID), \(bind: tokenHash), \(bind: clientID), \(bind: Timestamp.nowMillis()), \(bind: expiresAt), \(bind: accessTokenID))
                """
            ).run()
        }
    }

    /// The owner of a live refresh token.
    public func refreshTokenOwner(hash: String, now: Int64) async throws -> UserRecord? {
        try await database.read { sql in
            try await sql.raw(
                """
                SELECT u.* FROM refresh_tokens t JOIN users u ON u.id = t.user_id
                WHERE t.token_hash = \(bind: hash) AND t.expires_at > \(bind: now)
                """
            ).first().map(Self.user)
        }
    }

    public func deleteRefreshTokens(userID: Int64) async throws {
        try await database.transaction { sql in
            try await sql.raw("DELETE FROM refresh_tokens WHERE user_id = \(bind: userID)").run()
        }
    }

    // MARK: Namespaces and members

    /// Creates a namespace; `admin` (if given) becomes its first admin member.
    public func createNamespace(name: String, isPublic: Bool, createdBy: String?, admin: Int64?) async throws -> NamespaceRecord {
        try await database.transaction { sql in
            if try await sql.raw("SELECT id FROM namespaces WHERE name = \(bind: name)").first() != nil {
                throw AccessError.conflict("namespace '\(name)' already exists")
            }
            let now = Timestamp.nowMillis()
            let row = try await sql.raw(
                """
                INSERT INTO namespaces (name, public, created_by, created_at) VALUES (\(bind: name), \(bind: isPublic), \(bind: createdBy), \(bind: now))
                RETURNING *
                """
            ).first()
            let namespace = try Self.namespace(row!)
            if let admin {
                try await sql.raw(
                    """
                    INSERT INTO namespace_members (namespace_id, user_id, role, added_at) VALUES (\(bind: namespace.id), \(bind: admin), \(bind: Role.admin.rawValue), \(bind: now))
                    """
                ).run()
            }
            return namespace
        }
    }

    public func namespace(named name: String) async throws -> NamespaceRecord? {
        try await database.read { sql in
            try await sql.raw("SELECT * FROM namespaces WHERE name = \(bind: name)").first().map(Self.namespace)
        }
    }

    public func listNamespaces() async throws -> [NamespaceRecord] {
        try await database.read { sql in
            try await sql.raw("SELECT * FROM namespaces ORDER BY name").all().map(Self.namespace)
        }
    }

    public func setNamespacePublic(_ name: String, _ isPublic: Bool) async throws -> NamespaceRecord {
        try await database.transaction { sql in
            guard let row = try await sql.raw("UPDATE namespaces SET public = \(bind: isPublic) WHERE name = \(bind: name) RETURNING *").first() else {
                throw AccessError.notFound("namespace '\(name)' does not exist")
            }
            return try Self.namespace(row)
        }
    }

    /// Deletes an empty namespace. A namespace that still holds repositories is refused.
    public func deleteNamespace(_ name: String) async throws -> Bool {
        try await database.transaction { sql in
            if try await sql.raw("SELECT id FROM repositories WHERE namespace = \(bind: name) LIMIT 1").first() != nil {
                throw AccessError.conflict("namespace '\(name)' still holds repositories; delete them first")
            }
            guard try await !sql.raw("DELETE FROM namespaces WHERE name = \(bind: name) RETURNING id").all().isEmpty else { return false }
            // What was granted or set on this namespace goes with it (members and the quota go
            // with the row): a namespace of the same name created later for someone else starts
            // clean, with no robot permission and no pull policy carried over.
            try await sql.raw(
                """
                DELETE FROM robot_permissions WHERE (scope_kind = 'namespace' AND scope_name = \(bind: name))
                   OR (scope_kind = 'repository' AND substr(scope_name, 1, \(bind: name.utf8.count + 1)) = \(bind: name + "/"))
                """
            ).run()
            try await sql.raw(
                "DELETE FROM registry_settings WHERE name IN (\(bind: "pull_policy:" + name), \(bind: "vex:" + name), \(bind: "tag_rules:" + name), \(bind: "signature_policy:" + name))"
            ).run()
            return true
        }
    }

    public func setMember(namespace: String, userID: Int64, role: Role) async throws {
        try await database.transaction { sql in
            guard let row = try await sql.raw("SELECT id FROM namespaces WHERE name = \(bind: namespace)").first() else {
                throw AccessError.notFound("namespace '\(namespace)' does not exist")
            }
            let id = try row.decode(column: "id", as: Int64.self)
            try await sql.raw(
                """
                INSERT INTO namespace_members (namespace_id, user_id, role, added_at) VALUES (\(bind: id), \(bind: userID), \(bind: role.rawValue), \(bind: Timestamp.nowMillis()))
                ON CONFLICT (namespace_id, user_id) DO UPDATE SET role = excluded.role
                """
            ).run()
        }
    }

    public func removeMember(namespace: String, userID: Int64) async throws -> Bool {
        try await database.transaction { sql in
            try await !sql.raw(
                """
                DELETE FROM namespace_members WHERE user_id = \(bind: userID)
                  AND namespace_id = (SELECT id FROM namespaces WHERE name = \(bind: namespace)) RETURNING user_id
                """
            ).all().isEmpty
        }
    }

    public func members(of namespace: String) async throws -> [MemberRecord] {
        try await database.read { sql in
            try await sql.raw(
                """
                SELECT u.name, m.role, m.added_at FROM namespace_members m
                JOIN namespaces n ON n.id = m.namespace_id JOIN users u ON u.id = m.user_id
                WHERE n.name = \(bind: namespace) ORDER BY u.name
                """
            ).all().compactMap { row in
                guard let role = Role(rawValue: try row.decode(column: "role", as: String.self)) else { return nil }
                return MemberRecord(
                    user: try row.decode(column: "name", as: String.self), role: role, addedAt: try row.decode(column: "added_at", as: Int64.self))
            }
        }
    }

    /// A user's role in every namespace they belong to.
    public func memberships(userID: Int64) async throws -> [String: Role] {
        try await database.read { sql in
            var result: [String: Role] = [:]
            for row in try await sql.raw(
                """
                SELECT n.name, m.role FROM namespace_members m JOIN namespaces n ON n.id = m.namespace_id WHERE m.user_id = \(bind: userID)
                """
            ).all() {
                if let role = Role(rawValue: try row.decode(column: "role", as: String.self)) {
                    result[try row.decode(column: "name", as: String.self)] = role
                }
            }
            return result
        }
    }

    public func publicNamespaces() async throws -> Set<String> {
        try await database.read { sql in
            Set(try await sql.raw("SELECT name FROM namespaces WHERE public = \(bind: true)").all().map { try $0.decode(column: "name", as: String.self) })
        }
    }

    private static func namespace(_ row: any SQLRow) throws -> NamespaceRecord {
        NamespaceRecord(
            id: try row.decode(column: "id", as: Int64.self),
            name: try row.decode(column: "name", as: String.self),
            isPublic: try row.decode(column: "public", as: Bool.self),
            createdBy: try row.decode(column: "created_by", as: String?.self),
            createdAt: try row.decode(column: "created_at", as: Int64.self)
        )
    }

    // MARK: Signing keys

    public func signingKeys() async throws -> [SigningKeyRecord] {
        try await database.read { sql in
            try await sql.raw("SELECT * FROM signing_keys ORDER BY created_at").all().map { row in
                SigningKeyRecord(
                    kid: try row.decode(column: "kid", as: String.self),
                    privateKeyPEM: try sealer.open(try row.decode(column: "private_key_pem", as: String.self)),
                    createdAt: try row.decode(column: "created_at", as: Int64.self),
                    retiredAt: try row.decode(column: "retired_at", as: Int64?.self)
                )
            }
        }
    }

    /// Adds a key and retires every other active key, atomically.
    public func rotateSigningKey(to key: SigningKeyRecord) async throws {
        try await database.transaction { sql in
            try await sql.raw("UPDATE signing_keys SET retired_at = \(bind: key.createdAt) WHERE retired_at IS NULL").run()
            try await sql.raw(
                """
                INSERT INTO signing_keys (kid, private_key_pem, created_at) VALUES (\(bind: key.kid), \(bind: try sealer.seal(key.privateKeyPEM)), \(bind: key.createdAt))
                """
            ).run()
        }
    }

    /// Adds the first key unless some node already did (several nodes may start at once).
    public func insertInitialSigningKey(_ key: SigningKeyRecord) async throws {
        try await database.transaction { sql in
            if try await sql.raw("SELECT kid FROM signing_keys WHERE retired_at IS NULL").first() != nil { return }
            try await sql.raw(
                """
                INSERT INTO signing_keys (kid, private_key_pem, created_at) VALUES (\(bind: key.kid), \(bind: try sealer.seal(key.privateKeyPEM)), \(bind: key.createdAt))
                """
            ).run()
        }
    }

    /// Deletes keys retired before `cutoff`: no token they signed can still be valid.
    public func purgeSigningKeys(retiredBefore cutoff: Int64) async throws {
        try await database.transaction { sql in
            try await sql.raw("DELETE FROM signing_keys WHERE retired_at IS NOT NULL AND retired_at < \(bind: cutoff)").run()
        }
    }
}
