import Access
import AsyncHTTPClient
import Encryption
import Foundation
import Logging
import Metadata

/// Builds the key services of encryption at rest: the built-in local key service over the
/// database (its keys sealed by the registry's master key), and AWS KMS when configured.
public enum EncryptionSetup {
    /// For tools that run beside or instead of the server (`wharf fsck`): the same keys, read
    /// with the same master key; nil when the master key cannot be read.
    public static func forMaintenance(configuration: WharfConfiguration, metadata: MetadataStore, logger: Logger) -> BlobEncryption? {
        guard let (sealer, _) = try? DataAtRest.sealer(configuration: configuration, logger: logger) else { return nil }
        return try? make(configuration: configuration, metadata: metadata, sealer: sealer, logger: logger)
    }

    static func make(configuration: WharfConfiguration, metadata: MetadataStore, sealer: SecretSealer, logger: Logger) throws -> BlobEncryption {
        // KMS key ARNs are created on first use only by the built-in service: with a real KMS a
        // missing key is the KMS's NotFoundException, as ECR reports it.
        let local = LocalKeyService(store: DatabaseKeyStore(metadata: metadata), sealer: MasterKeySealer(sealer: sealer))
        var kms: KMSKeyService?
        if let settings = try configuration.loadKMSSettings(environment: ProcessInfo.processInfo.environment) {
            kms = KMSKeyService(settings: settings, http: HTTPClient.shared, logger: logger)
            logger.info("KMS keys are served by the KMS API", metadata: ["endpoint": "\(settings.endpoint ?? "AWS")"])
        }
        if let domain = try configuration.defaultEncryptionDomain() {
            metadata.defaultEncryption = NewRepositoryEncryption(type: domain.kind.rawValue, kmsKey: domain.kmsKey, domain: domain.identifier)
            logger.info("new repositories are encrypted by default", metadata: ["encryption": "\(domain)"])
        }
        return BlobEncryption(local: local, kms: kms)
    }
}

/// The local key service's keys in the metadata database.
struct DatabaseKeyStore: LocalKeyStore {
    let metadata: MetadataStore

    func localKey(_ keyID: String) async throws -> LocalKeyRecord? { try await metadata.encryptionKey(keyID).map(Self.record) }
    func createLocalKey(_ record: LocalKeyRecord) async throws -> LocalKeyRecord { Self.record(try await metadata.createEncryptionKey(Self.row(record))) }
    func updateLocalKey(_ record: LocalKeyRecord) async throws { try await metadata.updateEncryptionKey(Self.row(record)) }
    func localKeys() async throws -> [LocalKeyRecord] { try await metadata.encryptionKeys().map(Self.record) }

    static func record(_ row: EncryptionKeyRow) -> LocalKeyRecord {
        LocalKeyRecord(
            keyID: row.keyID, state: LocalKeyRecord.State(rawValue: row.state) ?? .disabled, sealedVersions: row.versions, createdAt: row.createdAt,
            updatedAt: row.updatedAt)
    }

    static func row(_ record: LocalKeyRecord) -> EncryptionKeyRow {
        EncryptionKeyRow(
            keyID: record.keyID, state: record.state.rawValue, versions: record.sealedVersions, createdAt: record.createdAt, updatedAt: record.updatedAt)
    }
}

/// Key material sealed as the database's other secrets are, with the registry's master key.
struct MasterKeySealer: MaterialSealer {
    let sealer: SecretSealer

    func seal(_ material: [UInt8]) throws -> String { try sealer.seal(Data(material).base64EncodedString()) }

    func open(_ sealed: String) throws -> [UInt8] {
        guard let data = Data(base64Encoded: try sealer.open(sealed)) else { throw EncryptionError.corrupt("sealed key material is not base64") }
        return Array(data)
    }
}
