import AWSSigning
import AsyncHTTPClient
import Crypto
import Foundation
import Logging
import Synchronization
import Testing

@testable import Encryption

final class MemoryKeyStore: LocalKeyStore {
    let keys = Mutex<[String: LocalKeyRecord]>([:])
    func localKey(_ keyID: String) async throws -> LocalKeyRecord? { keys.withLock { $0[keyID] } }
    func createLocalKey(_ record: LocalKeyRecord) async throws -> LocalKeyRecord {
        keys.withLock { keys in
            if let existing = keys[record.keyID] { return existing }
            keys[record.keyID] = record
            return record
        }
    }
    func updateLocalKey(_ record: LocalKeyRecord) async throws { keys.withLock { $0[record.keyID] = record } }
    func localKeys() async throws -> [LocalKeyRecord] { keys.withLock { Array($0.values) } }
}

struct TestSealer: MaterialSealer {
    let key = SymmetricKey(size: .bits256)
    func seal(_ material: [UInt8]) throws -> String { try AES.GCM.seal(material, using: key).combined!.base64EncodedString() }
    func open(_ sealed: String) throws -> [UInt8] {
        Array(try AES.GCM.open(AES.GCM.SealedBox(combined: Data(base64Encoded: sealed)!), using: key))
    }
}

@Suite struct LocalKeyServiceTests {
    let arn = "arn:aws:kms:us-east-1:123456789012:key/11111111-2222-3333-4444-555555555555"

    @Test func keysAreCreatedOnFirstUseAndWrapUnderTheirOwnID() async throws {
        let store = MemoryKeyStore()
        let service = LocalKeyService(store: store, sealer: TestSealer(), cacheLifetime: .zero)
        let (key, wrapped) = try await service.generateDataKey(keyID: arn)
        #expect(try await service.decrypt(wrapped, keyID: arn) == key)
        #expect(try await store.localKey(arn)?.state == .enabled)
        // A wrapped key does not open under another key, nor altered.
        let other = arn.replacingOccurrences(of: "1111", with: "9999")
        await #expect(throws: EncryptionError.self) { try await service.decrypt(wrapped, keyID: other) }
        var altered = wrapped
        altered[30] ^= 1
        await #expect(throws: EncryptionError.self) { try await service.decrypt(altered, keyID: arn) }
        // The stored material is sealed, never the raw key.
        let record = try #require(try await store.localKey(arn))
        #expect(!record.sealedVersions[0].contains(key.withUnsafeBytes { Data($0).base64EncodedString() }))
    }

    @Test func disablingRefusesEveryUseAndEnablingRestoresIt() async throws {
        let service = LocalKeyService(store: MemoryKeyStore(), sealer: TestSealer(), cacheLifetime: .seconds(60))
        let (key, wrapped) = try await service.generateDataKey(keyID: arn)
        _ = try await service.setEnabled(arn, false)
        do {
            _ = try await service.decrypt(wrapped, keyID: arn)
            Issue.record("a disabled key unwrapped a data key")
        } catch EncryptionError.keyUnavailable(_, let code, _) {
            #expect(code == "DisabledException")
        }
        await #expect(throws: EncryptionError.self) { try await service.checkUsable(keyID: arn) }
        await #expect(throws: EncryptionError.self) { try await service.generateDataKey(keyID: arn) }
        _ = try await service.setEnabled(arn, true)
        #expect(try await service.decrypt(wrapped, keyID: arn) == key)
    }

    @Test func withoutCreationOnFirstUseAnUnknownKeyIsNotFound() async throws {
        let service = LocalKeyService(store: MemoryKeyStore(), sealer: TestSealer(), createOnFirstUse: false)
        do {
            try await service.checkUsable(keyID: arn)
            Issue.record("an unknown key was usable")
        } catch EncryptionError.keyUnavailable(_, let code, _) {
            #expect(code == "NotFoundException")
        }
    }

    @Test func rotationKeepsOldDataKeysOpenAndRewrapsThem() async throws {
        let store = MemoryKeyStore()
        let service = LocalKeyService(store: store, sealer: TestSealer(), cacheLifetime: .zero)
        let (key, wrapped) = try await service.generateDataKey(keyID: arn)
        let rotated = try await service.rotate(arn)
        #expect(rotated.sealedVersions.count == 2)
        #expect(try await service.decrypt(wrapped, keyID: arn) == key)
        let rewrapped = try await service.rewrap(wrapped, keyID: arn)
        #expect(rewrapped != wrapped)
        #expect(rewrapped[3..<7] == [0, 0, 0, 1])
        #expect(try await service.decrypt(rewrapped, keyID: arn) == key)
        #expect(try await service.rewrap(rewrapped, keyID: arn) == rewrapped)
        let (_, fresh) = try await service.generateDataKey(keyID: arn)
        #expect(fresh[3..<7] == [0, 0, 0, 1])
    }

    /// Two nodes: one rotates; data keys it wraps under the new version open on the other at
    /// once, although that node cached the key's material moments before.
    @Test func aRotationOnAnotherNodeIsSeenAtOnce() async throws {
        let store = MemoryKeyStore()
        let sealer = TestSealer()
        let first = LocalKeyService(store: store, sealer: sealer, cacheLifetime: .seconds(3600))
        let second = LocalKeyService(store: store, sealer: sealer, cacheLifetime: .seconds(3600))
        let (old, oldWrapped) = try await first.generateDataKey(keyID: arn)
        #expect(try await second.decrypt(oldWrapped, keyID: arn) == old)
        _ = try await first.rotate(arn)
        let (new, newWrapped) = try await first.generateDataKey(keyID: arn)
        #expect(newWrapped[3..<7] == [0, 0, 0, 1])
        #expect(try await second.decrypt(newWrapped, keyID: arn) == new)
    }

    @Test func domainsUseTheirLayers() async throws {
        let local = LocalKeyService(store: MemoryKeyStore(), sealer: TestSealer(), cacheLifetime: .zero)
        let encryption = BlobEncryption(local: local, kms: nil)
        for domain in [EncryptionDomain(kind: .aes256), EncryptionDomain(kind: .kms, kmsKey: arn), EncryptionDomain(kind: .kmsDSSE, kmsKey: arn)] {
            let (keys, wrapped) = try await encryption.newKeys(for: domain)
            #expect(keys.layers.count == domain.layers)
            let opened = try await encryption.keys(for: domain, wrapped: wrapped)
            #expect(opened.layers == keys.layers)
            let stored = try seal(Array("layer bytes".utf8), keys: keys)
            let reader = try DecryptingBlobReader(stored: MemoryReader(bytes: stored), keys: opened, size: 11, segmentSize: 4096)
            #expect(try await readAll(reader) == Array("layer bytes".utf8))
        }
        // KMS_DSSE needs both keys: disabling the registry's AES256 key stops it, not plain KMS.
        let dsse = EncryptionDomain(kind: .kmsDSSE, kmsKey: arn)
        let (_, wrapped) = try await encryption.newKeys(for: dsse)
        _ = try await local.setEnabled(BlobEncryption.registryKeyID, false)
        await #expect(throws: EncryptionError.self) { try await encryption.keys(for: dsse, wrapped: wrapped) }
        try await encryption.checkUsable(EncryptionDomain(kind: .kms, kmsKey: arn))
    }
}

/// Against moto's KMS (the S3 server of the test script serves KMS on the same endpoint, with
/// signature checking on). Under `CI=true` a missing server is a failure, not a skip.
@Suite struct KMSKeyServiceTests {
    static var configured: Bool {
        let environment = ProcessInfo.processInfo.environment
        return environment["WHARF_TEST_S3_ENDPOINT"] != nil || environment["CI"] == "true"
    }

    static func settings(secret: String? = nil) throws -> KMSSettings {
        let environment = ProcessInfo.processInfo.environment
        guard let endpoint = environment["WHARF_TEST_S3_ENDPOINT"], let key = environment["WHARF_TEST_S3_ACCESS_KEY"],
            let storedSecret = environment["WHARF_TEST_S3_SECRET_KEY"]
        else { throw EncryptionError.configuration("CI=true but WHARF_TEST_S3_ENDPOINT is not set: the test script must start moto (scripts/s3.sh)") }
        return KMSSettings(
            endpoint: endpoint, credentials: AWSCredentials(accessKeyID: key, secretAccessKey: secret ?? storedSecret), dataKeyCacheLifetime: .zero)
    }

    @Test(.enabled(if: configured)) func dataKeysRoundTripThroughMotoAndStatesAreReported() async throws {
        let http = HTTPClient.shared
        let service = KMSKeyService(settings: try Self.settings(), http: http, logger: Logger(label: "test"))
        let created = try await service.call("CreateKey", keyID: "", ["Description": "wharf test"])
        let arn = try #require((created["KeyMetadata"] as? [String: Any])?["Arn"] as? String)
        let keyID = try #require((created["KeyMetadata"] as? [String: Any])?["KeyId"] as? String)
        try await service.checkUsable(keyID: arn)
        let (key, wrapped) = try await service.generateDataKey(keyID: arn)
        #expect(try await service.decrypt(wrapped, keyID: arn) == key)
        let rewrapped = try await service.rewrap(wrapped, keyID: arn)
        #expect(try await service.decrypt(rewrapped, keyID: arn) == key)

        _ = try await service.call("DisableKey", keyID: arn, ["KeyId": keyID])
        do {
            try await service.checkUsable(keyID: arn)
            Issue.record("a disabled KMS key was reported usable")
        } catch EncryptionError.keyUnavailable(_, let code, _) {
            #expect(code == "DisabledException")
        }
        await #expect(throws: EncryptionError.self) { try await service.generateDataKey(keyID: arn) }
        _ = try await service.call("EnableKey", keyID: arn, ["KeyId": keyID])

        let missing = "arn:aws:kms:us-east-1:123456789012:key/00000000-0000-0000-0000-000000000000"
        do {
            try await service.checkUsable(keyID: missing)
            Issue.record("a missing KMS key was reported usable")
        } catch EncryptionError.keyUnavailable(_, let code, _) {
            #expect(code == "NotFoundException")
        }
    }

    @Test(.enabled(if: configured)) func aWrongSecretIsRefusedByTheServer() async throws {
        let http = HTTPClient.shared
        let service = KMSKeyService(settings: try Self.settings(secret: "not-the-secret"), http: http, logger: Logger(label: "test"))
        await #expect(throws: EncryptionError.self) { try await service.call("CreateKey", keyID: "", ["Description": "refused"]) }
    }
}
