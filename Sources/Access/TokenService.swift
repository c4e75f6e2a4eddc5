import Crypto
import JWTKit
import Logging
import Metadata
import OCI
import Synchronization

#if canImport(FoundationEssentials)
import FoundationEssentials
#else
import Foundation
#endif

/// Issues and verifies the registry's bearer tokens: ES256-signed JWTs in the Docker token format
/// (`docs/content/spec/auth/jwt.md`), whose `access` claim lists what the bearer may do.
///
/// Signing keys live in the database so every node signs and verifies with the same set. Rotation
/// adds a key and retires the old one, which keeps verifying until every token it signed has expired.
public final class TokenService: Sendable {
    public struct Settings: Sendable {
        /// `iss` of issued tokens; tokens from any other issuer are refused.
        public var issuer = "wharf"
        /// `aud` of issued tokens, and the `service` of the `WWW-Authenticate` challenge.
        public var service = "wharf"
        public var lifetime: Duration = .seconds(300)
        /// Clock skew tolerated on `exp` and `nbf`.
        public var leeway: Duration = .seconds(60)

        public init() {}
    }

    public struct Claims: JWTPayload, Equatable {
        public var iss: IssuerClaim
        public var sub: SubjectClaim
        public var aud: AudienceClaim
        public var exp: ExpirationClaim
        public var nbf: NotBeforeClaim
        public var iat: IssuedAtClaim
        public var jti: IDClaim
        public var access: [AccessScope]
        /// Wharf's own: what kind of principal the subject is, and its id.
        public var kind: Identity.Kind
        public var uid: Int64
        public var adm: Bool?
        /// Wharf's own: the id of each namespace the `access` claim names, at issue (0: it did not
        /// exist), so a grant does not carry over to a namespace deleted and created again.
        public var nsid: [String: Int64]?

        public init(
            iss: IssuerClaim, sub: SubjectClaim, aud: AudienceClaim, exp: ExpirationClaim, nbf: NotBeforeClaim, iat: IssuedAtClaim,
            jti: IDClaim, access: [AccessScope], kind: Identity.Kind, uid: Int64, adm: Bool?, nsid: [String: Int64]? = nil
        ) {
            self.nsid = nsid
            self.iss = iss
            self.sub = sub
            self.aud = aud
            self.exp = exp
            self.nbf = nbf
            self.iat = iat
            self.jti = jti
            self.access = access
            self.kind = kind
            self.uid = uid
            self.adm = adm
        }

        /// Signature and algorithm are checked by the key collection; the claims by `TokenService.verify`.
        public func verify(using algorithm: some JWTAlgorithm) async throws {}
    }

    public struct IssuedToken: Sendable {
        public let token: String
        public let expiresIn: Int
        public let issuedAt: Date
    }

    public struct VerifiedToken: Sendable {
        public let identity: Identity
        public let access: [AccessScope]
        public let expires: Date
        /// Namespace ids at issue (see `Claims.nsid`); nil in tokens from before it existed.
        public let namespaceIDs: [String: Int64]?

        /// The actions this token grants on a repository.
        public func actions(on repository: String) -> Set<Action> {
            var result = Set<Action>()
            for scope in access where scope.type == "repository" && scope.name == repository {
                for action in scope.actions {
                    if action == "*" { result.formUnion(Action.allCases) } else if let a = Action(rawValue: action) { result.insert(a) }
                }
            }
            return result
        }

        public var mayListCatalog: Bool { access.contains { $0.type == "registry" && $0.name == "catalog" } }
    }

    public enum VerificationError: Error, Sendable, CustomStringConvertible {
        case malformed
        case badSignature
        case wrongIssuer
        case wrongAudience
        case expired
        case notYetValid

        public var description: String {
            switch self {
            case .malformed: "the token is not a valid JWT"
            case .badSignature: "the token's signature is not valid"
            case .wrongIssuer: "the token was issued by someone else"
            case .wrongAudience: "the token is meant for another service"
            case .expired: "the token has expired"
            case .notYetValid: "the token is not valid yet"
            }
        }
    }

    public let settings: Settings
    private let store: AccessStore
    private let logger: Logger
    private let keys = Mutex<KeySet>(KeySet(collection: JWTKeyCollection(), active: nil, kids: []))
    /// Verified tokens: ECDSA verification is the most expensive step of an authenticated pull.
    private let verifiedTokens = TTLCache<String, VerifiedToken>(timeToLive: .seconds(300), capacity: 100_000)

    private struct KeySet: Sendable {
        var collection: JWTKeyCollection
        var active: String?
        var kids: Set<String>
    }

    public init(store: AccessStore, settings: Settings, logger: Logger) {
        self.store = store
        self.settings = settings
        self.logger = logger
    }

    /// Loads the signing keys, creating the first one if the database has none.
    public func start() async throws {
        if try await store.signingKeys().allSatisfy({ $0.retiredAt != nil }) {
            try await store.insertInitialSigningKey(Self.newKey())
        }
        try await reloadKeys()
    }

    /// Re-reads keys from the database (picks up a rotation done by another node).
    public func reloadKeys() async throws {
        let records = try await store.signingKeys()
        let kids = Set(records.map(\.kid))
        if keys.withLock({ $0.kids }) == kids { return }
        let collection = JWTKeyCollection()
        var active: String?
        for record in records {
            let key = try ES256PrivateKey(pem: record.privateKeyPEM)
            await collection.add(ecdsa: key, kid: JWKIdentifier(string: record.kid))
            if record.retiredAt == nil { active = record.kid }
        }
        keys.withLock { $0 = KeySet(collection: collection, active: active, kids: kids) }
    }

    /// Starts signing with a new key; the old one keeps verifying until its tokens expire.
    @discardableResult
    public func rotate() async throws -> String {
        let key = Self.newKey()
        try await store.rotateSigningKey(to: key)
        let cutoff = Timestamp.nowMillis() - Int64((settings.lifetime + settings.leeway).components.seconds * 1000) * 2
        try await store.purgeSigningKeys(retiredBefore: cutoff)
        try await reloadKeys()
        logger.notice("token signing key rotated", metadata: ["kid": "\(key.kid)"])
        return key.kid
    }

    public var activeKeyID: String? { keys.withLock { $0.active } }

    public func issue(to identity: Identity, access: [AccessScope], namespaceIDs: [String: Int64]? = nil) async throws -> IssuedToken {
        let (collection, kid) = keys.withLock { ($0.collection, $0.active) }
        guard let kid else { throw AccessError.invalid("no active token signing key") }
        // Whole seconds: JWT NumericDates are integers in every client we care about.
        let now = Date(timeIntervalSince1970: Date().timeIntervalSince1970.rounded(.down))
        let lifetime = TimeInterval(settings.lifetime.components.seconds)
        let claims = Claims(
            iss: .init(value: settings.issuer),
            sub: .init(value: identity.name),
            aud: .init(value: [settings.service]),
            exp: .init(value: now.addingTimeInterval(lifetime)),
            nbf: .init(value: now),
            iat: .init(value: now),
            jti: .init(value: Secrets.randomToken()),
            access: access,
            kind: identity.kind,
            uid: identity.id,
            adm: identity.isAdmin ? true : nil,
            nsid: namespaceIDs
        )
        let token = try await collection.sign(claims, kid: JWKIdentifier(string: kid))
        return IssuedToken(token: token, expiresIn: Int(lifetime), issuedAt: now)
    }

    /// Checks signature, algorithm, issuer, audience and validity period.
    public func verify(_ token: String) async throws(VerificationError) -> VerifiedToken {
        if let cached = verifiedTokens.get(token) {
            guard cached.expires.addingTimeInterval(leewaySeconds) > Date() else { throw .expired }
            return cached
        }
        let collection = keys.withLock { $0.collection }
        let claims: Claims
        do {
            claims = try await collection.verify(token, as: Claims.self)
        } catch let error as JWTError {
            // Malformed tokens, unknown key ids, `alg: none` and bad signatures all end here.
            logger.debug("token refused", metadata: ["reason": "\(error)"])
            throw token.split(separator: ".").count == 3 ? .badSignature : .malformed
        } catch {
            throw .malformed
        }
        let now = Date()
        guard claims.iss.value == settings.issuer else { throw .wrongIssuer }
        guard claims.aud.value.contains(settings.service) else { throw .wrongAudience }
        guard claims.exp.value.addingTimeInterval(leewaySeconds) > now else { throw .expired }
        guard claims.nbf.value.addingTimeInterval(-leewaySeconds) <= now else { throw .notYetValid }
        let verified = VerifiedToken(
            identity: Identity(kind: claims.kind, name: claims.sub.value, id: claims.uid, isAdmin: claims.adm ?? false),
            access: claims.access,
            expires: claims.exp.value,
            namespaceIDs: claims.nsid
        )
        verifiedTokens.set(token, verified, expires: ContinuousClock.now + .seconds(max(1, claims.exp.value.timeIntervalSince(now) + leewaySeconds)))
        return verified
    }

    private var leewaySeconds: TimeInterval { TimeInterval(settings.leeway.components.seconds) }

    static func newKey() -> SigningKeyRecord {
        let key = P256.Signing.PrivateKey()
        // A short, readable key id derived from the public key.
        let kid = String(Secrets.sha256Hex(bytes: Array(key.publicKey.derRepresentation)).prefix(16))
        return SigningKeyRecord(kid: kid, privateKeyPEM: key.pemRepresentation, createdAt: Timestamp.nowMillis(), retiredAt: nil)
    }
}
