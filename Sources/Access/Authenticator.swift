import OCI
import Logging
import Metadata

/// Checks username/password credentials, as sent with HTTP Basic authentication, to the token
/// endpoint or directly to `/v2`. The password may be a user's password, a personal access
/// token (`wharf_pat_…`), or a robot account's secret (usernames `robot$…`). Other credential kinds
/// (for example ECR authorization tokens) plug in as `CredentialVerifier`s.
public final class Authenticator: Sendable {
    public enum Outcome: Sendable, Equatable {
        case authenticated(Identity)
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
    private let verified = TTLCache<String, Identity>(timeToLive: .seconds(30))

    public init(store: AccessStore, throttle: LoginThrottle, logger: Logger, extraVerifiers: [any CredentialVerifier] = []) {
        self.store = store
        self.throttle = throttle
        self.logger = logger
        self.extraVerifiers = extraVerifiers
    }

    public func authenticate(username: String, password: String, source: String?) async throws -> Outcome {
        if let wait = throttle.retryAfter(account: username, source: source) { return .throttled(retryAfter: wait) }
        let cacheKey = Secrets.sha256Hex(username + "\u{0}" + password)
        if let identity = verified.get(cacheKey) { return .authenticated(identity) }

        let identity = try await check(username: username, password: password)
        guard let identity else {
            throttle.recordFailure(account: username, source: source)
            logger.notice("authentication failed", metadata: ["account": "\(username)", "source": "\(source ?? "?")"])
            return .invalid
        }
        throttle.recordSuccess(account: username)
        verified.set(cacheKey, identity)
        return .authenticated(identity)
    }

    /// Forgets cached successes, so a disabled account or changed password takes effect at once.
    public func invalidateCache() { verified.removeAll() }

    private func check(username: String, password: String) async throws -> Identity? {
        guard !username.isEmpty, !password.isEmpty else { return nil }
        for verifier in extraVerifiers {
            if let result = try await verifier.verify(username: username, password: password) { return result.identity }
        }
        let now = Timestamp.nowMillis()
        if username.hasPrefix("robot$") {
            guard let robot = try await store.robot(named: username), !robot.disabled, !robot.isExpired(at: now),
                  Secrets.constantTimeEquals(robot.secretHash, Secrets.sha256Hex(password)) else { return nil }
            try? await store.touchRobot(id: robot.id)  // at most every 30 s per credential: successes are cached
            return Identity(kind: .robot, name: robot.name, id: robot.id, isAdmin: false)
        }
        if password.hasPrefix(Secrets.accessTokenPrefix) {
            guard let (token, user) = try await store.accessToken(hash: Secrets.sha256Hex(password)),
                  user.name == username, !user.disabled, token.expiresAt.map({ $0 > now }) ?? true else { return nil }
            try? await store.touchAccessToken(id: token.id)
            return Identity(kind: .user, name: user.name, id: user.id, isAdmin: user.isAdmin)
        }
        guard let user = try await store.user(named: username), !user.disabled, let hash = user.passwordHash,
              try await Secrets.verifyPassword(password, hash: hash) else { return nil }
        try? await store.recordLogin(userID: user.id)
        return Identity(kind: .user, name: user.name, id: user.id, isAdmin: user.isAdmin)
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

    public init(identity: Identity?) {
        self.identity = identity
    }
}
