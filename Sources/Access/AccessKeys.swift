import Metadata
import OCI
import SQLKit

/// An AWS-style access key (id + secret) that `aws` and boto3 sign requests with (SigV4). The
/// server must know the secret to check an HMAC signature, so unlike passwords it cannot be
/// hashed: it is sealed with the master key (`SecretSealer`), like the token-signing keys.
public struct AccessKeyRecord: Sendable, Equatable {
    public var keyID: String
    /// The owner: a user or a robot account.
    public var owner: Identity
    public var description: String?
    public var disabled: Bool
    public var createdAt: Int64
    public var lastUsedAt: Int64?
}

extension Secrets {
    /// 20 characters like AWS's, prefixed `WKIA` so a leaked Wharf key is recognisable.
    static func newAccessKeyID() -> String {
        let alphabet = Array("ABCDEFGHIJKLMNOPQRSTUVWXYZ234567")
        var generator = SystemRandomNumberGenerator()
        return "WKIA" + String((0..<16).map { _ in alphabet[Int.random(in: 0..<alphabet.count, using: &generator)] })
    }

    /// 40 characters, as long as an AWS secret access key.
    static func newSecretAccessKey() -> String { String((randomToken() + randomToken()).prefix(40)) }

    /// The password half of an ECR-style registry login (`AWS:<token>`): no colon, recognisable prefix.
    static func newRegistryLoginToken() -> String { "wharf_ecr_" + randomToken() }
}

extension AccessStore {
    // MARK: Access keys

    public func createAccessKey(keyID: String, secret: String, owner: Identity, description: String?) async throws -> AccessKeyRecord {
        try await database.transaction { sql in
            let now = Timestamp.nowMillis()
            try await sql.raw(
                """
                INSERT INTO access_keys (key_id, secret, user_id, robot_id, description, disabled, created_at)
                VALUES (\(bind: keyID), \(bind: try sealer.seal(secret)), \(bind: owner.kind == .user ? owner.id : nil), \(bind: owner.kind == .robot ? owner.id : nil),
                        \(bind: description), \(bind: false), \(bind: now))
                """
            ).run()
            return AccessKeyRecord(keyID: keyID, owner: owner, description: description, disabled: false, createdAt: now, lastUsedAt: nil)
        }
    }

    /// The key's secret and its owner, when the key exists and neither it nor its owner is disabled or expired.
    public func activeAccessKey(_ keyID: String, now: Int64 = Timestamp.nowMillis()) async throws -> (secret: String, owner: Identity)? {
        try await database.read { sql in
            guard
                let row = try await sql.raw(
                    """
                    SELECT k.secret, k.disabled, u.id AS user_id, u.name AS user_name, u.is_admin, u.disabled AS user_disabled,
                           r.id AS robot_id, r.name AS robot_name, r.disabled AS robot_disabled, r.expires_at AS robot_expires_at
                    FROM access_keys k LEFT JOIN users u ON u.id = k.user_id LEFT JOIN robots r ON r.id = k.robot_id
                    WHERE k.key_id = \(bind: keyID)
                    """
                ).first(), try !row.decode(column: "disabled", as: Bool.self),
                let owner = try Self.activeOwner(row, now: now)
            else { return nil }
            return (try sealer.open(try row.decode(column: "secret", as: String.self)), owner)
        }
    }

    public func accessKeys(of owner: Identity) async throws -> [AccessKeyRecord] {
        try await database.read { sql in
            let column = owner.kind == .robot ? "robot_id" : "user_id"
            return try await sql.raw("SELECT * FROM access_keys WHERE \(ident: column) = \(bind: owner.id) ORDER BY created_at, key_id").all().map { row in
                AccessKeyRecord(
                    keyID: try row.decode(column: "key_id", as: String.self), owner: owner,
                    description: try row.decode(column: "description", as: String?.self),
                    disabled: try row.decode(column: "disabled", as: Bool.self),
                    createdAt: try row.decode(column: "created_at", as: Int64.self),
                    lastUsedAt: try row.decode(column: "last_used_at", as: Int64?.self))
            }
        }
    }

    public func setAccessKeyDisabled(_ keyID: String, of owner: Identity, _ disabled: Bool) async throws -> Bool {
        try await database.transaction { sql in
            let column = owner.kind == .robot ? "robot_id" : "user_id"
            return try await !sql.raw(
                """
                UPDATE access_keys SET disabled = \(bind: disabled) WHERE key_id = \(bind: keyID) AND \(ident: column) = \(bind: owner.id) RETURNING key_id
                """
            ).all().isEmpty
        }
    }

    public func deleteAccessKey(_ keyID: String, of owner: Identity) async throws -> Bool {
        try await database.transaction { sql in
            let column = owner.kind == .robot ? "robot_id" : "user_id"
            return try await !sql.raw("DELETE FROM access_keys WHERE key_id = \(bind: keyID) AND \(ident: column) = \(bind: owner.id) RETURNING key_id").all()
                .isEmpty
        }
    }

    public func touchAccessKey(_ keyID: String) async throws {
        try await database.transaction { sql in
            try await sql.raw("UPDATE access_keys SET last_used_at = \(bind: Timestamp.nowMillis()) WHERE key_id = \(bind: keyID)").run()
        }
    }

    // MARK: Registry login tokens (ECR's GetAuthorizationToken)

    /// `accessKeyID`: the key that signed GetAuthorizationToken; deleting or disabling it ends the login.
    public func createRegistryLoginToken(hash: String, owner: Identity, expiresAt: Int64, accessKeyID: String?) async throws {
        try await database.transaction { sql in
            let now = Timestamp.nowMillis()
            // Expired tokens are useless: drop them here rather than in a separate sweeper.
            try await sql.raw("DELETE FROM registry_login_tokens WHERE expires_at < \(bind: now)").run()
            try await sql.raw(
                """
                INSERT INTO registry_login_tokens (token_hash, user_id, robot_id, created_at, expires_at, access_key_id)
                VALUES (\(bind: hash), \(bind: owner.kind == .user ? owner.id : nil), \(bind: owner.kind == .robot ? owner.id : nil), \(bind: now),
                        \(bind: expiresAt), \(bind: accessKeyID))
                """
            ).run()
        }
    }

    public func registryLoginTokenOwner(hash: String, now: Int64 = Timestamp.nowMillis()) async throws -> Identity? {
        try await database.read { sql in
            guard
                let row = try await sql.raw(
                    """
                    SELECT t.expires_at, u.id AS user_id, u.name AS user_name, u.is_admin, u.disabled AS user_disabled,
                           r.id AS robot_id, r.name AS robot_name, r.disabled AS robot_disabled, r.expires_at AS robot_expires_at
                    FROM registry_login_tokens t LEFT JOIN users u ON u.id = t.user_id LEFT JOIN robots r ON r.id = t.robot_id
                    LEFT JOIN access_keys k ON k.key_id = t.access_key_id
                    WHERE t.token_hash = \(bind: hash) AND (t.access_key_id IS NULL OR k.disabled = \(bind: false))
                    """
                ).first(), try row.decode(column: "expires_at", as: Int64.self) > now
            else { return nil }
            return try Self.activeOwner(row, now: now)
        }
    }

    /// The user or robot of a joined row, unless disabled or expired.
    private static func activeOwner(_ row: any SQLRow, now: Int64) throws -> Identity? {
        if let userID = try row.decode(column: "user_id", as: Int64?.self) {
            guard try !row.decode(column: "user_disabled", as: Bool.self) else { return nil }
            return Identity(
                kind: .user, name: try row.decode(column: "user_name", as: String.self), id: userID,
                isAdmin: try row.decode(column: "is_admin", as: Bool.self))
        }
        if let robotID = try row.decode(column: "robot_id", as: Int64?.self) {
            guard try !row.decode(column: "robot_disabled", as: Bool.self),
                (try row.decode(column: "robot_expires_at", as: Int64?.self)).map({ $0 > now }) ?? true
            else { return nil }
            return Identity(kind: .robot, name: try row.decode(column: "robot_name", as: String.self), id: robotID, isAdmin: false)
        }
        return nil
    }
}

/// Accepts `AWS` / `<registry login token>` as Basic credentials, so
/// `aws ecr get-login-password | docker login --username AWS --password-stdin` works.
struct RegistryLoginTokenVerifier: CredentialVerifier {
    static let username = "AWS"
    let store: AccessStore

    func verify(username: String, password: String) async throws -> VerifiedCredential? {
        guard username == Self.username else { return nil }
        return VerifiedCredential(identity: try await store.registryLoginTokenOwner(hash: Secrets.sha256Hex(password)), credential: .registryLoginToken)
    }
}

extension AccessControl {
    /// Who an access key belongs to: a user (themselves or an administrator manages their keys) or a
    /// robot (whoever manages the robot manages its keys).
    public enum AccessKeyOwner: Sendable {
        case user(String)
        case robot(String)
    }

    private func resolve(_ owner: AccessKeyOwner, by caller: Identity) async throws -> Identity {
        switch owner {
        case .user(let name):
            guard caller.isAdmin || (caller.kind == .user && caller.name == name) else {
                throw AccessError.forbidden("you may only manage your own access keys")
            }
            guard let user = try await store.user(named: name) else { throw AccessError.notFound("user '\(name)' does not exist") }
            return Identity(kind: .user, name: user.name, id: user.id, isAdmin: user.isAdmin)
        case .robot(let name):
            let robot = try await robot(name, by: caller)
            return Identity(kind: .robot, name: robot.name, id: robot.id, isAdmin: false)
        }
    }

    /// Issues an access key; the secret is returned once and never shown again.
    public func createAccessKey(
        for owner: AccessKeyOwner, by caller: Identity, credential: Credential, description: String?, source: String?
    ) async throws -> (AccessKeyRecord, secret: String) {
        try Self.requireMayMint(credential, expiringAt: nil, what: "an access key")
        let identity = try await resolve(owner, by: caller)
        guard (description?.count ?? 0) <= 256 else { throw AccessError.invalid("descriptions have at most 256 characters") }
        guard try await store.accessKeys(of: identity).filter({ !$0.disabled }).count < 10 else {
            throw AccessError.conflict("'\(identity.name)' already has 10 active access keys; delete or disable one first")
        }
        let secret = Secrets.newSecretAccessKey()
        let record = try await store.createAccessKey(keyID: Secrets.newAccessKeyID(), secret: secret, owner: identity, description: description)
        audit.record(AuditEvent(actor: caller, action: "access-key.create", target: "\(identity.name)/\(record.keyID)", source: source))
        return (record, secret)
    }

    public func listAccessKeys(of owner: AccessKeyOwner, by caller: Identity) async throws -> [AccessKeyRecord] {
        try await store.accessKeys(of: try await resolve(owner, by: caller))
    }

    public func setAccessKeyDisabled(_ keyID: String, of owner: AccessKeyOwner, disabled: Bool, by caller: Identity, source: String?) async throws {
        let identity = try await resolve(owner, by: caller)
        guard try await store.setAccessKeyDisabled(keyID, of: identity, disabled) else {
            throw AccessError.notFound("'\(identity.name)' has no access key '\(keyID)'")
        }
        changed()  // cached registry logins it minted stop working at once
        audit.record(
            AuditEvent(actor: caller, action: disabled ? "access-key.disable" : "access-key.enable", target: "\(identity.name)/\(keyID)", source: source))
    }

    public func deleteAccessKey(_ keyID: String, of owner: AccessKeyOwner, by caller: Identity, source: String?) async throws {
        let identity = try await resolve(owner, by: caller)
        guard try await store.deleteAccessKey(keyID, of: identity) else {
            throw AccessError.notFound("'\(identity.name)' has no access key '\(keyID)'")
        }
        changed()  // its registry logins went with it (ON DELETE CASCADE); forget cached ones
        audit.record(AuditEvent(actor: caller, action: "access-key.delete", target: "\(identity.name)/\(keyID)", source: source))
    }

    /// A registry login for `identity`: Basic `AWS:<token>` on `/v2` until it expires.
    /// `credential` is what signed the request: the login lives only as long as that access key does.
    public func issueRegistryLoginToken(
        for identity: Identity, credential: Credential, lifetime: Int64 = 12 * 3600 * 1000, source: String?
    ) async throws -> (token: String, expiresAt: Int64) {
        guard identity.kind != .anonymous else { throw AccessError.forbidden("sign in first") }
        let expiresAt = Timestamp.nowMillis() + lifetime
        guard credential.mayMint(expiringAt: expiresAt) else {
            throw AccessError.forbidden("\(credential.kindDescription) cannot create a registry login")
        }
        let token = Secrets.newRegistryLoginToken()
        var accessKeyID: String?
        if case .accessKey(let id) = credential { accessKeyID = id }
        try await store.createRegistryLoginToken(hash: Secrets.sha256Hex(token), owner: identity, expiresAt: expiresAt, accessKeyID: accessKeyID)
        audit.record(AuditEvent(actor: identity, action: "token", target: "registry-login", source: source))
        return (token, expiresAt)
    }
}
