import Access
import Encryption
import Foundation
import Metadata
import OCI
import Registry

/// Administering the keys of encryption at rest, for `/api/v1` and `wharf admin`: list the keys
/// in use, disable and enable keys of the built-in key service, and rotate a key, which re-wraps
/// every stored data key under the key's current version without rewriting any blob.
///
/// Permission (system administrator) is checked by the front end before this is called.
public struct EncryptionKeyChanges: Sendable {
    let registry: Registry
    /// Nil when authentication is off.
    let audit: AuditLog?

    public init(registry: Registry, audit: AuditLog?) {
        self.registry = registry
        self.audit = audit
    }

    public struct KeyStatus: Sendable, Codable, Equatable {
        public var keyId: String
        /// `local` (the built-in key service) or `kms`.
        public var service: String
        /// ENABLED or DISABLED for local keys; nil for KMS keys (KMS reports their state).
        public var state: String?
        public var versions: Int?
        /// Stored encrypted copies whose data keys this key wraps.
        public var encryptedCopies: Int
    }

    public struct RotationReport: Sendable, Codable, Equatable {
        public var keyId: String
        /// The key's material versions after the rotation (local keys).
        public var versions: Int?
        public var rewrappedCopies = 0
        public var rewrappedUploads = 0
        /// Copies that were already under the current version.
        public var unchangedCopies = 0
        public var failures: [String] = []
    }

    func encryption() throws -> BlobEncryption {
        guard let encryption = registry.encryption else { throw UseCaseError.invalid("this registry has no key service") }
        return encryption
    }

    /// Whether `domain` uses `keyID` for one of its layers.
    static func domain(_ domain: EncryptionDomain, uses keyID: String) -> Bool {
        switch domain.kind {
        case .aes256: keyID == BlobEncryption.registryKeyID
        case .kms: domain.kmsKey == keyID
        case .kmsDSSE: domain.kmsKey == keyID || keyID == BlobEncryption.registryKeyID
        }
    }

    public func list() async throws -> [KeyStatus] {
        let encryption = try encryption()
        var counts: [String: Int] = [:]
        var after: (String, String)?
        while true {
            let page = try await registry.metadata.encryptedBlobs(domain: nil, after: after, limit: 1000)
            guard let last = page.last else { break }
            after = (last.domain, last.digest.description)
            for copy in page {
                guard let domain = EncryptionDomain(identifier: copy.domain) else { continue }
                if let key = domain.kmsKey { counts[key, default: 0] += 1 }
                if domain.kind != .kms { counts[BlobEncryption.registryKeyID, default: 0] += 1 }
            }
        }
        var statuses: [String: KeyStatus] = [:]
        for key in try await encryption.local.list() {
            let isLocal = encryption.kmsIsLocal || key.keyID == BlobEncryption.registryKeyID
            guard isLocal else { continue }
            statuses[key.keyID] = KeyStatus(
                keyId: key.keyID, service: "local", state: key.state.rawValue, versions: key.sealedVersions.count,
                encryptedCopies: counts[key.keyID] ?? 0)
        }
        for (key, count) in counts where statuses[key] == nil {
            statuses[key] = KeyStatus(keyId: key, service: "kms", state: nil, versions: nil, encryptedCopies: count)
        }
        return statuses.values.sorted { $0.keyId < $1.keyId }
    }

    /// Disables or enables a key of the built-in key service. KMS keys are managed in KMS.
    public func setEnabled(_ keyID: String, _ enabled: Bool, by requester: Requester) async throws -> KeyStatus {
        let encryption = try encryption()
        try requireLocal(keyID, encryption)
        let key: LocalKeyRecord
        do {
            key = try await encryption.local.setEnabled(keyID, enabled)
        } catch EncryptionError.keyUnavailable(_, _, let message) {
            throw UseCaseError.invalid(message)
        }
        record(enabled ? "encryption.key.enable" : "encryption.key.disable", keyID, requester)
        return KeyStatus(keyId: keyID, service: "local", state: key.state.rawValue, versions: key.sealedVersions.count, encryptedCopies: 0)
    }

    /// Rotates `keyID`: a local key gets a new version (a KMS key's material is rotated by KMS);
    /// then every data key it wraps, in stored copies and open uploads, is re-wrapped under the
    /// current version. Runs again safely after an interruption: re-wrapped keys are left alone.
    public func rotate(_ keyID: String, by requester: Requester) async throws -> RotationReport {
        let encryption = try encryption()
        var report = RotationReport(keyId: keyID)
        if encryption.kmsIsLocal || keyID == BlobEncryption.registryKeyID {
            do {
                report.versions = try await encryption.local.rotate(keyID).sealedVersions.count
            } catch EncryptionError.keyUnavailable(_, _, let message) {
                throw UseCaseError.invalid(message)
            }
        }
        var after: (String, String)?
        while true {
            let page = try await registry.metadata.encryptedBlobs(domain: nil, after: after, limit: 500)
            guard let last = page.last else { break }
            after = (last.domain, last.digest.description)
            for copy in page {
                guard let domain = EncryptionDomain(identifier: copy.domain), Self.domain(domain, uses: keyID) else { continue }
                do {
                    let wrapped = try WrappedKeys.decode(copy.wrappedKeys)
                    let rewrapped = try await encryption.rewrap(wrapped, for: domain)
                    if rewrapped == wrapped {
                        report.unchangedCopies += 1
                    } else if try await registry.metadata.replaceWrappedKeys(copy, with: WrappedKeys.encode(rewrapped)) {
                        report.rewrappedCopies += 1
                    }
                } catch {
                    report.failures.append("\(copy.digest) in \(copy.domain): \(error)")
                }
            }
        }
        for upload in try await registry.metadata.encryptedUploads() {
            guard let text = upload.encryption,
                let object = try? JSONSerialization.jsonObject(with: Data(text.utf8)) as? [String: Any],
                let identifier = object["domain"] as? String, let keys = object["keys"] as? [String],
                let domain = EncryptionDomain(identifier: identifier), Self.domain(domain, uses: keyID)
            else { continue }
            do {
                let wrapped = try keys.map { try WrappedKeys.decode("[\"\($0)\"]")[0] }
                let rewrapped = try await encryption.rewrap(wrapped, for: domain)
                guard rewrapped != wrapped else { continue }
                let replaced = String(
                    decoding: try JSONSerialization.data(
                        withJSONObject: ["domain": identifier, "keys": rewrapped.map { Data($0).base64EncodedString() }], options: [.sortedKeys]),
                    as: UTF8.self)
                if try await registry.metadata.replaceUploadEncryption(upload.id, from: text, to: replaced) { report.rewrappedUploads += 1 }
            } catch {
                report.failures.append("upload \(upload.id): \(error)")
            }
        }
        record("encryption.key.rotate", keyID, requester, detail: "\(report.rewrappedCopies) copies re-wrapped")
        return report
    }

    private func requireLocal(_ keyID: String, _ encryption: BlobEncryption) throws {
        guard encryption.kmsIsLocal || keyID == BlobEncryption.registryKeyID else {
            throw UseCaseError.invalid("\(keyID) is a KMS key: enable or disable it in KMS")
        }
    }

    private func record(_ action: String, _ keyID: String, _ requester: Requester, detail: String? = nil) {
        audit?.record(AuditEvent(actor: requester.identity, action: action, target: keyID, source: requester.source, detail: detail))
    }
}
