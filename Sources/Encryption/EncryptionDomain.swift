import Crypto
import Foundation
import OCI

/// How a repository's content is encrypted at rest (ECR's `encryptionConfiguration`). Objects are
/// shared (deduplicated) only within one domain: bytes stored for a repository under key K are
/// readable only through K, so disabling K shuts exactly K's repositories, whatever else holds the
/// same layer in plain or under another key.
public struct EncryptionDomain: Hashable, Sendable, CustomStringConvertible {
    public enum Kind: String, Sendable, CaseIterable {
        /// Data keys wrapped by the registry's master key.
        case aes256 = "AES256"
        /// Data keys from a KMS key (AWS KMS, a compatible service, or the built-in local key service).
        case kms = "KMS"
        /// Two layers: one data key from the KMS key, a second under the registry's master key.
        case kmsDSSE = "KMS_DSSE"
    }

    public var kind: Kind
    /// The KMS key's ARN (KMS and KMS_DSSE only).
    public var kmsKey: String?

    public init(kind: Kind, kmsKey: String? = nil) {
        self.kind = kind
        self.kmsKey = kind == .aes256 ? nil : kmsKey
    }

    /// Parses the stored form (`AES256`, `KMS:<arn>`, `KMS_DSSE:<arn>`).
    public init?(identifier: String) {
        if identifier == Kind.aes256.rawValue {
            self.init(kind: .aes256)
            return
        }
        guard let colon = identifier.firstIndex(of: ":"), let kind = Kind(rawValue: String(identifier[..<colon])), kind != .aes256 else {
            return nil
        }
        let key = String(identifier[identifier.index(after: colon)...])
        guard !key.isEmpty else { return nil }
        self.init(kind: kind, kmsKey: key)
    }

    public var identifier: String { kmsKey.map { "\(kind.rawValue):\($0)" } ?? kind.rawValue }
    public var description: String { identifier }
    public var layers: Int { kind == .kmsDSSE ? 2 : 1 }

    /// The name under which this domain's copy of a blob is stored: a digest-shaped key derived
    /// from the domain and the blob's digest, so each domain's objects sit beside plain blobs in
    /// the same content-addressed store without colliding with them or with each other.
    public func objectKey(for digest: String) -> String {
        "sha256:" + Hex.encode(SHA256.hash(data: Data("wharf-encrypted-object\u{0}\(identifier)\u{0}\(digest)".utf8)))
    }
}

/// A KMS key ARN as ECR accepts it: `arn:<partition>:kms:<region>:<account>:key/<id>` or an alias ARN.
public struct KMSKeyARN: Sendable, Equatable {
    public var partition: String
    public var region: String
    public var account: String
    public var resource: String

    public init?(_ text: String) {
        let parts = text.split(separator: ":", maxSplits: 5, omittingEmptySubsequences: false).map(String.init)
        guard text.count <= 2048, parts.count == 6, parts[0] == "arn", parts[2] == "kms", !parts[1].isEmpty, !parts[3].isEmpty,
            parts[4].count == 12, parts[4].allSatisfy(\.isNumber),
            parts[5].hasPrefix("key/") || parts[5].hasPrefix("alias/"), parts[5].count > 4,
            parts[5].allSatisfy({ $0.isASCII && !$0.isWhitespace })
        else { return nil }
        partition = parts[1]
        region = parts[3]
        account = parts[4]
        resource = parts[5]
    }
}
