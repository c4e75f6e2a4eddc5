import Crypto
import Foundation
import _CryptoExtras

/// A public key that signatures are checked against, from its PEM (`-----BEGIN PUBLIC KEY-----`,
/// SubjectPublicKeyInfo) as `cosign generate-key-pair` and `openssl` write it: ECDSA P-256 or P-384,
/// Ed25519, or RSA (2048 bits or more).
public enum VerificationKey: Sendable {
    case p256(P256.Signing.PublicKey)
    case p384(P384.Signing.PublicKey)
    case ed25519(Curve25519.Signing.PublicKey)
    case rsa(_RSA.Signing.PublicKey)

    public init(pem: String) throws(SignatureError) {
        if let key = try? P256.Signing.PublicKey(pemRepresentation: pem) {
            self = .p256(key)
        } else if let key = try? P384.Signing.PublicKey(pemRepresentation: pem) {
            self = .p384(key)
        } else if let key = try? Curve25519.Signing.PublicKey(pemRepresentation: pem) {
            self = .ed25519(key)
        } else if let key = try? _RSA.Signing.PublicKey(pemRepresentation: pem) {
            self = .rsa(key)
        } else if (try? _RSA.Signing.PublicKey(unsafePEMRepresentation: pem)) != nil {
            // Parsed only without swift-crypto's floor: say why rather than "not a key".
            throw SignatureError("RSA keys shorter than 2048 bits are refused")
        } else {
            throw SignatureError("not a PEM public key of a supported kind (ECDSA P-256 or P-384, Ed25519, RSA)")
        }
    }

    public var kind: String {
        switch self {
        case .p256: "ECDSA P-256"
        case .p384: "ECDSA P-384"
        case .ed25519: "Ed25519"
        case .rsa(let key): "RSA \(key.keySizeInBits)"
        }
    }

    /// Whether `signature` (DER for ECDSA, raw for Ed25519 and RSA) signs `payload`. cosign hashes
    /// with SHA-256 (SHA-384 for P-384 in newer releases: both are accepted); RSA is PKCS #1 v1.5
    /// or PSS.
    public func isValid(signature: [UInt8], for payload: [UInt8]) -> Bool {
        switch self {
        case .p256(let key):
            guard let parsed = try? P256.Signing.ECDSASignature(derRepresentation: signature) else { return false }
            return key.isValidSignature(parsed, for: SHA256.hash(data: payload))
        case .p384(let key):
            guard let parsed = try? P384.Signing.ECDSASignature(derRepresentation: signature) else { return false }
            return key.isValidSignature(parsed, for: SHA384.hash(data: payload)) || key.isValidSignature(parsed, for: SHA256.hash(data: payload))
        case .ed25519(let key):
            return key.isValidSignature(signature, for: payload)
        case .rsa(let key):
            let parsed = _RSA.Signing.RSASignature(rawRepresentation: signature)
            return key.isValidSignature(parsed, for: SHA256.hash(data: payload), padding: .insecurePKCS1v1_5)
                || key.isValidSignature(parsed, for: SHA256.hash(data: payload), padding: .PSS)
        }
    }
}

public struct SignatureError: Error, CustomStringConvertible, Equatable {
    public let description: String
    public init(_ description: String) { self.description = description }
}
