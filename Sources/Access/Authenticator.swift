import Logging
import Metadata
import OCI
import Synchronization

/// Checks username/password credentials, as sent with HTTP Basic authentication, to the token
/// endpoint or directly to `/v2`. The password may be a user's password, a personal access
/// token (`wharf_pat_…`), or a robot account's secret (usernames `robot$…`). Other credential kinds
/// (for example ECR authorization tokens) plug in as `CredentialVerifier`s.
public final class Authenticator: Sendable {
    public enum Outcome: Sendable, Equatable {
        case authenticated(Identity, Credential)
        case invalid
        /// Too many recent failures: try again after this many seconds.
        case throttled(retryAfter: Int)
    }

    private let store: AccessStore
    public let throttle: LoginThrottle
    private let logger: Logger
    private let extraVerifiers: [any CredentialVerifier]
    /// Successful checks, keyed by a hash of the credentials: bcrypt costs ~250 ms, and clients
    /// sending Basic credentials on every request must not pay it each time.
    private let verified = TTLCache<String, Authenticated>(timeToLive: .seconds(30))

    private struct Authenticated: Sendable {
        let identity: Identity
        let credential: Credential
    }

    /// The bcrypt cost of new passwords: the decoy hash checked for unknown accounts costs the same.
    private let passwordCost: UInt8
    private let decoy = Mutex<String?>(nil)
    private let passwordCheckCount = Atomic<Int>(0)

    /// bcrypt checks made so far, real and decoy: every failed password sign-in costs exactly one.
    public var passwordChecks: Int { passwordCheckCount.load(ordering: .relaxed) }

    public init(store: AccessStore, throttle: LoginThrottle, logger: Logger, passwordCost: UInt8 = 12, extraVerifiers: [any CredentialVerifier] = []) {
        self.passwordCost = passwordCost
        self.store = store
        self.throttle = throttle
        self.logger = logger
        self.extraVerifiers = extraVerifiers
    }

    public func authenticate(username: String, password: String, source: String?) async throws -> Outcome {
        // Only passwords can be guessed; generated secrets (256 random bits) are never throttled,
        // so nobody's failures can lock a CI robot or an access token out.
        let isPassword = !(username.hasPrefix("robot$") || password.hasPrefix(Secrets.accessTokenPrefix) || username == RegistryLoginTokenVerifier.username)
        if isPassword, let wait = throttle.retryAfter(account: username, source: source) { return .throttled(retryAfter: wait) }
        let cacheKey = Secrets.sha256Hex(username + "\u{0}" + password)
        if let cached = verified.get(cacheKey) { return .authenticated(cached.identity, cached.credential) }

        guard let (identity, credential) = try await check(username: username, password: password) else {
            if isPassword { throttle.recordFailure(account: username, source: source) }
            logger.notice("authentication failed", metadata: ["account": "\(username)", "source": "\(source ?? "?")"])
            return .invalid
        }
        if isPassword { throttle.recordSuccess(account: username, source: source) }
        verified.set(cacheKey, Authenticated(identity: identity, credential: credential))
        return .authenticated(identity, credential)
    }

    /// A hash of a random password at the configured cost, made once.
    private func decoyHash() async throws -> String {
        if let hash = decoy.withLock({ $0 }) { return hash }
        let hash = try await Secrets.hashPassword(Secrets.randomPassword(), cost: passwordCost)
        decoy.withLock { $0 = $0 ?? hash }
        return hash
    }

    /// Forgets cached successes, so a disabled account or changed password takes effect at once.
    public func invalidateCache() { verified.removeAll() }

    private func check(username: String, password: String) async throws -> (Identity, Credential)? {
        guard !username.isEmpty, !password.isEmpty else { return nil }
        for verifier in extraVerifiers {
            if let result = try await verifier.verify(username: username, password: password) {
                return result.identity.map { ($0, result.credential) }
            }
        }
        let now = Timestamp.nowMillis()
        if username.hasPrefix("robot$") {
            guard let robot = try await store.robot(named: username), !robot.disabled, !robot.isExpired(at: now),
                Secrets.constantTimeEquals(robot.secretHash, Secrets.sha256Hex(password))
            else { return nil }
            try? await store.touchRobot(id: robot.id)  // at most every 30 s per credential: successes are cached
            return (Identity(kind: .robot, name: robot.name, id: robot.id, isAdmin: false), .robotSecret)
        }
        if password.hasPrefix(Secrets.accessTokenPrefix) {
            guard let (token, user) = try await store.accessToken(hash: Secrets.sha256Hex(password)),
                user.name == username, !user.disabled, token.expiresAt.map({ $0 > now }) ?? true
            else { return nil }
            try? await store.touchAccessToken(id: token.id)
            return (Identity(kind: .user, name: user.name, id: user.id, isAdmin: user.isAdmin), .accessToken(id: token.id, expiresAt: token.expiresAt))
        }
        // An unknown, disabled or password-less account costs one bcrypt check too, so the answer's
        // time does not tell which usernames exist (a wrong password took ~280 ms, an unknown name ~2 ms).
        let user = try await store.user(named: username)
        passwordCheckCount.add(1, ordering: .relaxed)
        guard let user, !user.disabled, let hash = user.passwordHash else {
            _ = try await Secrets.verifyPassword(password, hash: try await decoyHash())
            return nil
        }
        guard try await Secrets.verifyPassword(password, hash: hash) else { return nil }
        try? await store.recordLogin(userID: user.id)
        return (Identity(kind: .user, name: user.name, id: user.id, isAdmin: user.isAdmin), .password)
    }
}

/// A further kind of credential the authenticator accepts.
public protocol CredentialVerifier: Sendable {
    /// Nil when these credentials are not of this verifier's kind. A verifier that recognises the
    /// credentials but rejects them returns a `VerifiedCredential` without an identity.
    func verify(username: String, password: String) async throws -> VerifiedCredential?
}

public struct VerifiedCredential: Sendable {
    public let identity: Identity?
    public let credential: Credential

    public init(identity: Identity?, credential: Credential) {
        self.identity = identity
        self.credential = credential
    }
}
