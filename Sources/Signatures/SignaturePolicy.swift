import Foundation

/// A namespace's signed-only rule: images must carry a cosign signature that one of `keys`
/// verifies. `enforce` refuses other pulls; `audit` lets them through and writes why to the audit
/// log (to roll a policy out before enforcing it).
public struct SignaturePolicy: Codable, Sendable, Equatable {
    public enum Mode: String, Codable, Sendable {
        case enforce, audit
    }

    public struct Key: Codable, Sendable, Equatable {
        public var name: String
        /// PEM SubjectPublicKeyInfo: ECDSA P-256/P-384, Ed25519 or RSA.
        public var publicKey: String

        public init(name: String, publicKey: String) {
            self.name = name
            self.publicKey = publicKey
        }
    }

    public var mode: Mode
    public var keys: [Key]

    public static let maximumKeys = 20

    public init(mode: Mode, keys: [Key]) {
        self.mode = mode
        self.keys = keys
    }

    /// The keys, parsed; throws naming the first that is not usable.
    public func verificationKeys() throws(SignatureError) -> [(name: String, key: VerificationKey)] {
        guard !keys.isEmpty, keys.count <= Self.maximumKeys else { throw SignatureError("give 1 to \(Self.maximumKeys) keys") }
        var names = Set<String>()
        var result: [(String, VerificationKey)] = []
        for key in keys {
            guard !key.name.isEmpty, key.name.count <= 128, names.insert(key.name).inserted else {
                throw SignatureError("key names must be unique and 1 to 128 characters ('\(key.name)')")
            }
            do {
                result.append((key.name, try VerificationKey(pem: key.publicKey)))
            } catch {
                throw SignatureError("key '\(key.name)': \(error.description)")
            }
        }
        return result
    }
}
