import Crypto

#if canImport(FoundationEssentials)
import FoundationEssentials
#else
import Foundation
#endif

/// Seals the secrets Wharf must keep readable (token-signing private keys, access-key secrets,
/// the layer-download key) with a master key that lives outside the database: AES-256-GCM, so a
/// copy of the database alone (a backup, a dump, a stolen `wharf.db`) reveals none of them, and a
/// tampered value is refused instead of used.
///
/// Sealed values are text: `wharf-sealed:v1:` + base64(nonce ‖ ciphertext ‖ tag). Values written
/// before sealing existed are plain; `open` passes them through and start-up seals them in place.
public struct SecretSealer: Sendable {
    public static let prefix = "wharf-sealed:v1:"
    private let key: SymmetricKey

    public init(key: SymmetricKey) {
        self.key = key
    }

    /// A sealer with a fresh random key (tests, benchmarks).
    public static func withRandomKey() -> SecretSealer { SecretSealer(key: SymmetricKey(size: .bits256)) }

    public enum SealerError: Error, CustomStringConvertible {
        case badKey(String)
        case cannotOpen

        public var description: String {
            switch self {
            case .badKey(let reason): "master key: \(reason)"
            case .cannotOpen: "a sealed secret in the database does not open with this master key (another key, or the value was altered)"
            }
        }
    }

    /// A new random master key, base64 (how it is written to its file or given in `WHARF_MASTER_KEY`).
    public static func newKeyText() -> String {
        SymmetricKey(size: .bits256).withUnsafeBytes { Data($0).base64EncodedString() }
    }

    /// Reads a master key: base64 of exactly 32 bytes, surrounding white space ignored.
    public static func parseKey(_ text: String) throws(SealerError) -> SymmetricKey {
        let trimmed = text.trimmingCharacters(in: .whitespacesAndNewlines)
        guard let data = Data(base64Encoded: trimmed), data.count == 32 else {
            throw .badKey("expected base64 of 32 random bytes (for example `openssl rand -base64 32`)")
        }
        return SymmetricKey(data: data)
    }

    public func seal(_ plaintext: String) throws -> String {
        let box = try AES.GCM.seal(Data(plaintext.utf8), using: key)
        guard let combined = box.combined else { throw SealerError.cannotOpen }
        return Self.prefix + combined.base64EncodedString()
    }

    /// The plaintext of a sealed value; a plain (legacy) value is returned as it is.
    public func open(_ stored: String) throws -> String {
        guard stored.hasPrefix(Self.prefix) else { return stored }
        guard let combined = Data(base64Encoded: String(stored.dropFirst(Self.prefix.count))),
            let box = try? AES.GCM.SealedBox(combined: combined),
            let plaintext = try? AES.GCM.open(box, using: key)
        else { throw SealerError.cannotOpen }
        return String(decoding: plaintext, as: UTF8.self)
    }

    public static func isSealed(_ stored: String) -> Bool { stored.hasPrefix(prefix) }

    /// A value that identifies the key without revealing it (HMAC of a fixed label), stored in the
    /// database so a node started with a different master key stops with a clear message instead
    /// of failing on every secret.
    public var keyCheck: String {
        let mac = HMAC<SHA256>.authenticationCode(for: Data("wharf master key check v1".utf8), using: key)
        return "v1:" + Data(mac).base64EncodedString()
    }
}
