import Crypto
import Foundation
import Synchronization

/// Something that issues data keys under a key-encryption key and unwraps them again: AWS KMS (or
/// a compatible service) through `KMSKeyService`, or Wharf's built-in `LocalKeyService`.
public protocol KeyService: Sendable {
    /// A fresh 256-bit data key, and the same key wrapped as it is to be stored.
    func generateDataKey(keyID: String) async throws -> (key: SymmetricKey, wrapped: [UInt8])
    /// Unwraps a stored data key.
    func decrypt(_ wrapped: [UInt8], keyID: String) async throws -> SymmetricKey
    /// The same data key wrapped under the key's current version (rotation re-wraps every stored
    /// data key this way; the blobs themselves are never rewritten).
    func rewrap(_ wrapped: [UInt8], keyID: String) async throws -> [UInt8]
    /// Throws `EncryptionError.keyUnavailable` unless the key exists and may be used now.
    func checkUsable(keyID: String) async throws
}

/// A key of the local key service as stored: its state and every version of its material, each
/// sealed by the registry's master key (the key service never sees the master key itself).
public struct LocalKeyRecord: Sendable, Equatable {
    public enum State: String, Sendable { case enabled = "ENABLED", disabled = "DISABLED" }
    public var keyID: String
    public var state: State
    /// Sealed material, oldest first; the last is current.
    public var sealedVersions: [String]
    public var createdAt: Int64
    public var updatedAt: Int64

    public init(keyID: String, state: State, sealedVersions: [String], createdAt: Int64, updatedAt: Int64) {
        self.keyID = keyID
        self.state = state
        self.sealedVersions = sealedVersions
        self.createdAt = createdAt
        self.updatedAt = updatedAt
    }
}

/// Where the local key service keeps its keys (the metadata database).
public protocol LocalKeyStore: Sendable {
    func localKey(_ keyID: String) async throws -> LocalKeyRecord?
    /// Inserts the key unless one with the id exists; returns the stored record either way.
    func createLocalKey(_ record: LocalKeyRecord) async throws -> LocalKeyRecord
    func updateLocalKey(_ record: LocalKeyRecord) async throws
    func localKeys() async throws -> [LocalKeyRecord]
}

/// Seals key material with the registry's master key.
public protocol MaterialSealer: Sendable {
    func seal(_ material: [UInt8]) throws -> String
    func open(_ sealed: String) throws -> [UInt8]
}

/// Wharf's own key service, for installs without a KMS: keys named like KMS keys (ARNs, and the
/// registry's `AES256` key) whose material lives in the database sealed by the master key.
/// Keys are created on first use when allowed, can be disabled and rotated; rotation adds a
/// version, and data keys wrapped under older versions still open until they are re-wrapped.
///
/// Wrapped data key: "WK" | format 1 | version (UInt32 BE) | nonce (12) | ciphertext (32) | tag (16),
/// authenticated with the key id, so a wrapped key cannot be moved to another key's objects.
public final class LocalKeyService: KeyService {
    private let store: any LocalKeyStore
    private let sealer: any MaterialSealer
    private let createOnFirstUse: Bool
    /// Unsealed keys, briefly: another node may disable or rotate a key, and sees it within this time.
    private let cache = Mutex<[String: (record: LocalKeyRecord, material: [SymmetricKey], until: ContinuousClock.Instant)]>([:])
    private let cacheLifetime: Duration

    public init(store: any LocalKeyStore, sealer: any MaterialSealer, createOnFirstUse: Bool = true, cacheLifetime: Duration = .seconds(5)) {
        self.store = store
        self.sealer = sealer
        self.createOnFirstUse = createOnFirstUse
        self.cacheLifetime = cacheLifetime
    }

    static let prefix: [UInt8] = [0x57, 0x4B, 0x01]

    public func generateDataKey(keyID: String) async throws -> (key: SymmetricKey, wrapped: [UInt8]) {
        let dataKey = SymmetricKey(size: .bits256)
        return (dataKey, try await wrap(dataKey, keyID: keyID))
    }

    public func decrypt(_ wrapped: [UInt8], keyID: String) async throws -> SymmetricKey {
        var (record, material) = try await usableKey(keyID)
        guard wrapped.count == 3 + 4 + 12 + 32 + 16, Array(wrapped.prefix(3)) == Self.prefix else {
            throw EncryptionError.corrupt("a wrapped data key of key \(keyID) is malformed")
        }
        let version = wrapped[3..<7].reduce(0) { $0 << 8 | Int($1) }
        if version >= material.count {
            // Another node rotated the key moments ago: read it again rather than trust this node's copy.
            (record, material) = try await usableKey(keyID, fresh: true)
        }
        guard version < material.count else {
            throw EncryptionError.corrupt("a data key is wrapped under version \(version) of key \(keyID), which has \(record.sealedVersions.count)")
        }
        do {
            let box = try AES.GCM.SealedBox(nonce: AES.GCM.Nonce(data: wrapped[7..<19]), ciphertext: wrapped[19..<51], tag: wrapped[51..<67])
            return SymmetricKey(data: try AES.GCM.open(box, using: material[version], authenticating: Data(keyID.utf8)))
        } catch {
            throw EncryptionError.corrupt("a data key of key \(keyID) does not open (altered, or wrapped under another key)")
        }
    }

    public func rewrap(_ wrapped: [UInt8], keyID: String) async throws -> [UInt8] {
        let (_, material) = try await usableKey(keyID)
        if wrapped.count > 7, wrapped[3..<7].reduce(0, { $0 << 8 | Int($1) }) == material.count - 1 { return wrapped }
        return try await wrap(try await decrypt(wrapped, keyID: keyID), keyID: keyID)
    }

    public func checkUsable(keyID: String) async throws {
        _ = try await usableKey(keyID)
    }

    private func wrap(_ dataKey: SymmetricKey, keyID: String) async throws -> [UInt8] {
        let (_, material) = try await usableKey(keyID)
        let version = material.count - 1
        let box = try AES.GCM.seal(dataKey.withUnsafeBytes { Data($0) }, using: material[version], authenticating: Data(keyID.utf8))
        var wrapped = Self.prefix
        wrapped += withUnsafeBytes(of: UInt32(version).bigEndian, Array.init)
        wrapped += Array(box.nonce)
        wrapped += box.ciphertext
        wrapped += box.tag
        return wrapped
    }

    private func usableKey(_ keyID: String, fresh: Bool = false) async throws -> (LocalKeyRecord, [SymmetricKey]) {
        let (record, material) = try await key(keyID, fresh: fresh)
        guard record.state == .enabled else {
            throw EncryptionError.keyUnavailable(keyID: keyID, code: "DisabledException", message: "\(keyID) is disabled.")
        }
        return (record, material)
    }

    private func key(_ keyID: String, fresh: Bool = false) async throws -> (LocalKeyRecord, [SymmetricKey]) {
        let now = ContinuousClock.now
        if !fresh, let cached = cache.withLock({ $0[keyID] }), cached.until > now { return (cached.record, cached.material) }
        var record = try await store.localKey(keyID)
        if record == nil {
            guard createOnFirstUse else {
                throw EncryptionError.keyUnavailable(keyID: keyID, code: "NotFoundException", message: "Key '\(keyID)' does not exist")
            }
            record = try await store.createLocalKey(newRecord(keyID))
        }
        let material = try record!.sealedVersions.map { SymmetricKey(data: try sealer.open($0)) }
        guard !material.isEmpty else { throw EncryptionError.corrupt("key \(keyID) has no material") }
        cache.withLock { $0[keyID] = (record!, material, now + cacheLifetime) }
        return (record!, material)
    }

    private func newRecord(_ keyID: String) throws -> LocalKeyRecord {
        let now = Int64(Date().timeIntervalSince1970 * 1000)
        let material = SymmetricKey(size: .bits256).withUnsafeBytes { Array($0) }
        return LocalKeyRecord(keyID: keyID, state: .enabled, sealedVersions: [try sealer.seal(material)], createdAt: now, updatedAt: now)
    }

    // MARK: Administration

    /// Creates the key if it does not exist (enabled).
    @discardableResult
    public func create(_ keyID: String) async throws -> LocalKeyRecord {
        let record = try await store.createLocalKey(newRecord(keyID))
        cache.withLock { _ = $0.removeValue(forKey: keyID) }
        return record
    }

    public func setEnabled(_ keyID: String, _ enabled: Bool) async throws -> LocalKeyRecord {
        guard var record = try await store.localKey(keyID) else {
            throw EncryptionError.keyUnavailable(keyID: keyID, code: "NotFoundException", message: "Key '\(keyID)' does not exist")
        }
        record.state = enabled ? .enabled : .disabled
        record.updatedAt = Int64(Date().timeIntervalSince1970 * 1000)
        try await store.updateLocalKey(record)
        cache.withLock { _ = $0.removeValue(forKey: keyID) }
        return record
    }

    /// Adds a new version of the key's material; new data keys are wrapped under it.
    public func rotate(_ keyID: String) async throws -> LocalKeyRecord {
        guard var record = try await store.localKey(keyID) else {
            throw EncryptionError.keyUnavailable(keyID: keyID, code: "NotFoundException", message: "Key '\(keyID)' does not exist")
        }
        record.sealedVersions.append(try sealer.seal(SymmetricKey(size: .bits256).withUnsafeBytes { Array($0) }))
        record.updatedAt = Int64(Date().timeIntervalSince1970 * 1000)
        try await store.updateLocalKey(record)
        cache.withLock { _ = $0.removeValue(forKey: keyID) }
        return record
    }

    public func describe(_ keyID: String) async throws -> LocalKeyRecord? { try await store.localKey(keyID) }
    public func list() async throws -> [LocalKeyRecord] { try await store.localKeys() }
}
