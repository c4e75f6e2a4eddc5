import BlobStore
import Encryption
import Foundation
import Metadata
import NIOCore
import OCI

/// Encryption at rest, as the registry applies it to blobs. A repository's domain is fixed when
/// it is created; each domain stores its own sealed copy of a blob (under a key derived from the
/// domain and the digest), so a layer shared by a plain repository and an encrypted one, or by
/// repositories under two KMS keys, is stored once per domain and read only through its own keys.
///
/// Uploads are sealed as they stream: each request seals whole segments into the upload's
/// stored bytes and keeps its partial last segment, sealed, in the session's database row; the
/// next request (on any node) continues from it, and the closing request seals the last record.
/// No plaintext byte of an encrypted repository's blobs reaches storage, even mid-upload.
extension Registry {
    /// What an encrypted upload session stores in its row: its domain and wrapped data keys.
    struct UploadEncryption: Codable, Sendable {
        var domain: String
        var keys: [String]

        var encoded: String { String(decoding: (try? JSONEncoder().encode(self)) ?? Data(), as: UTF8.self) }

        static func decode(_ text: String) throws -> UploadEncryption {
            guard let value = try? JSONDecoder().decode(UploadEncryption.self, from: Data(text.utf8)) else {
                throw RegistryError(.unknown, "an upload session's encryption record is unreadable")
            }
            return value
        }

        func wrapped() throws -> [[UInt8]] {
            try keys.map {
                guard let data = Data(base64Encoded: $0) else { throw RegistryError(.unknown, "an upload session's wrapped key is not base64") }
                return Array(data)
            }
        }
    }

    /// The domain of `repository`, or of the repository a push would create (the registry's default).
    func encryptionDomain(of repository: RepositoryName) async throws -> EncryptionDomain? {
        let (exists, stored) = try await metadata.encryptionDomain(of: repository)
        let identifier = exists ? stored : (stored ?? metadata.defaultEncryption?.domain)
        guard let identifier else { return nil }
        guard let domain = EncryptionDomain(identifier: identifier) else {
            throw RegistryError(.unknown, "\(repository) has an unknown encryption domain '\(identifier)'", status: 500)
        }
        return domain
    }

    func requireEncryption() throws -> BlobEncryption {
        guard let encryption else {
            throw RegistryError(.unknown, "this repository is encrypted, but this registry has no key service configured", status: 500)
        }
        return encryption
    }

    /// Key-service failures as the protocol reports them: a disabled or missing key refuses the
    /// request (403 DENIED, as access is what the key's owner withdrew); a key service that cannot
    /// be reached is the server's trouble (503).
    func keyFailure(_ error: any Error, in repository: RepositoryName) -> any Error {
        switch error {
        case EncryptionError.keyUnavailable(let keyID, let code, let message):
            return RegistryError(
                .denied, "the KMS key of \(repository) cannot be used (\(code): \(message)); the key's owner must enable it",
                detail: Self.kmsDetail(code: code, keyID: keyID), status: 403)
        case EncryptionError.serviceFailed(let message):
            return RegistryError(
                .unknown, "the key service is unavailable: \(message)", detail: Self.kmsDetail(code: "KMSInternalException", keyID: ""), status: 503)
        case EncryptionError.corrupt(let message):
            logger.error("encrypted content does not open", metadata: ["repository": "\(repository)", "error": "\(message)"])
            return RegistryError(.unknown, "stored content of \(repository) does not decrypt: \(message); run `wharf fsck`", status: 500)
        default:
            return error
        }
    }

    /// The error detail that names a key-service failure (ECR answers it as `KmsException`).
    static func kmsDetail(code: String, keyID: String) -> String {
        String(decoding: (try? JSONSerialization.data(withJSONObject: ["kmsError": code, "kmsKey": keyID], options: [.sortedKeys])) ?? Data(), as: UTF8.self)
    }

    func withKeys<T>(in repository: RepositoryName, _ body: () async throws -> T) async throws -> T {
        do {
            return try await body()
        } catch let error as EncryptionError {
            throw keyFailure(error, in: repository)
        }
    }

    /// New data keys for an upload into `domain`, as the session row stores them.
    func newUploadEncryption(_ domain: EncryptionDomain, in repository: RepositoryName) async throws -> (ObjectKeys, String) {
        let encryption = try requireEncryption()
        return try await withKeys(in: repository) {
            let (keys, wrapped) = try await encryption.newKeys(for: domain)
            return (keys, UploadEncryption(domain: domain.identifier, keys: wrapped.map { Data($0).base64EncodedString() }).encoded)
        }
    }

    /// The data keys of an encrypted upload session (cached while the session lives on this node).
    func uploadKeys(_ upload: UploadRecord, in repository: RepositoryName) async throws -> (EncryptionDomain, ObjectKeys)? {
        guard let text = upload.encryption else { return nil }
        let record = try UploadEncryption.decode(text)
        guard let domain = EncryptionDomain(identifier: record.domain) else {
            throw RegistryError(.unknown, "an upload session names an unknown encryption domain", status: 500)
        }
        if let cached = uploadKeyCache.withLock({ $0[upload.id] }) { return (domain, cached) }
        let encryption = try requireEncryption()
        let keys = try await withKeys(in: repository) { try await encryption.keys(for: domain, wrapped: try record.wrapped()) }
        uploadKeyCache.withLock { $0[upload.id] = keys }
        return (domain, keys)
    }

    func forgetUploadKeys(_ id: String) {
        uploadKeyCache.withLock { _ = $0.removeValue(forKey: id) }
    }

    /// The sealed tail's plaintext (the part of the last segment received so far).
    static func openTail(_ sealed: String?, keys: ObjectKeys, expected: Int) throws -> [UInt8] {
        guard expected > 0 else { return [] }
        guard let sealed, let data = Data(base64Encoded: sealed), data.count > 4 else {
            throw RegistryError(.unknown, "an encrypted upload session lost the tail of its last request", status: 500)
        }
        let bytes = [UInt8](data)
        let length = bytes[0..<4].reduce(0) { $0 << 8 | Int($1) }
        let plaintext = try SegmentedEnvelope.openRecord(
            bytes[4...], length: length, index: tailIndex, keys: keys, header: SegmentedEnvelope.header(layers: keys.layers.count))
        guard plaintext.count == expected else {
            throw RegistryError(.unknown, "an encrypted upload session's tail holds \(plaintext.count) bytes, not \(expected)", status: 500)
        }
        return plaintext
    }

    static func sealTail(_ plaintext: [UInt8], keys: ObjectKeys) throws -> String? {
        guard !plaintext.isEmpty else { return nil }
        let record = try SegmentedEnvelope.sealRecord(plaintext, index: tailIndex, keys: keys, header: SegmentedEnvelope.header(layers: keys.layers.count))
        return Data(record).base64EncodedString()
    }

    /// A record index no stored record ever has: a sealed tail cannot be passed off as one.
    static let tailIndex = UInt64.max

    /// Opens `digest` as `repository`'s domain stores it.
    func openEncrypted(_ record: BlobRecord, domain: EncryptionDomain, in repository: RepositoryName) async throws -> any BlobReader {
        let encryption = try requireEncryption()
        guard let copy = try await metadata.encryptedBlob(record.digest, domain: domain.identifier) else {
            logger.error(
                "blob is linked in an encrypted repository without its encrypted copy", metadata: ["digest": "\(record.digest)", "repository": "\(repository)"])
            throw RegistryError(.blobUnknown, "blob \(record.digest) has no encrypted copy for \(repository); push it again")
        }
        let keys = try await withKeys(in: repository) {
            try await encryption.keys(for: domain, wrapped: try WrappedKeys.decode(copy.wrappedKeys))
        }
        guard let stored = try await blobs.open(copy.objectKey) else {
            logger.error("encrypted copy is recorded but missing from storage; run `wharf fsck`", metadata: ["digest": "\(record.digest)"])
            throw RegistryError(.blobUnknown, "blob \(record.digest) is recorded but its bytes are missing from storage")
        }
        do {
            return try DecryptingBlobReader(stored: stored, keys: keys, size: record.size, segmentSize: copy.segmentSize)
        } catch {
            try? await stored.close()
            throw keyFailure(error, in: repository)
        }
    }

    /// Stores small content (an empty config) for `repository`, sealed when its domain asks for it.
    func storeSmallBlob(_ bytes: [UInt8], as digest: Digest, in repository: RepositoryName) async throws {
        guard let domain = try await encryptionDomain(of: repository) else {
            try await blobs.put(ByteBuffer(bytes: bytes), as: digest)
            try await metadata.linkBlob(BlobRecord(digest: digest, size: Int64(bytes.count)), to: repository)
            return
        }
        let (keys, encoded) = try await newUploadEncryption(domain, in: repository)
        var sealer = EnvelopeSealer(keys: keys)
        var stored = ByteBuffer(bytes: SegmentedEnvelope.header(layers: keys.layers.count))
        if var sealed = try sealer.feed(ByteBuffer(bytes: bytes)) { stored.writeBuffer(&sealed) }
        if var last = try sealer.finish() { stored.writeBuffer(&last) }
        let objectKey = Digest(domain.objectKey(for: digest.description))!
        let copy = EncryptedBlobRecord(
            domain: domain.identifier, digest: digest, objectKey: objectKey,
            wrappedKeys: WrappedKeys.encode(try UploadEncryption.decode(encoded).wrapped()), segmentSize: sealer.segmentSize,
            createdAt: Timestamp.nowMillis())
        let blobs = self.blobs
        try await linkChecked(
            BlobRecord(digest: digest, size: Int64(bytes.count)), to: repository, encryption: BlobLinkEncryption(domain: domain.identifier, copy: copy)
        ) { [stored] copyRecorded in
            // The domain's recorded copy stays; only a missing one is written (over any leftover).
            if !copyRecorded { try await blobs.put(stored, as: objectKey) }
        }
    }

    /// A manifest as an encrypted repository stores it: sealed under a data key of its own, with
    /// the wrapped key beside it. Plain repositories store the exact bytes (nil).
    func sealManifest(_ content: ByteBuffer, in repository: RepositoryName) async throws -> (sealed: ByteBuffer, sealedWith: String)? {
        guard let domain = try await encryptionDomain(of: repository) else { return nil }
        let (keys, encoded) = try await newUploadEncryption(domain, in: repository)
        var sealer = EnvelopeSealer(keys: keys)
        var sealed = ByteBuffer(bytes: sealer.header)
        if var records = try sealer.feed(content) { sealed.writeBuffer(&records) }
        if var last = try sealer.finish() { sealed.writeBuffer(&last) }
        return (sealed, encoded)
    }

    /// A stored manifest's exact bytes: opened under its repository's keys when it was sealed.
    public func openManifest(_ content: ByteBuffer, sealedWith: String?, in repository: RepositoryName) async throws -> ByteBuffer {
        guard let sealedWith else { return content }
        let record = try UploadEncryption.decode(sealedWith)
        guard let domain = EncryptionDomain(identifier: record.domain) else {
            throw RegistryError(.unknown, "a manifest names an unknown encryption domain", status: 500)
        }
        let encryption = try requireEncryption()
        return try await withKeys(in: repository) {
            let keys = try await encryption.keys(for: domain, wrapped: try record.wrapped())
            var opener = EnvelopeOpener(keys: keys, expectedHeader: SegmentedEnvelope.header(layers: keys.layers.count))
            let plaintext = try opener.feed(content)
            try opener.finish()
            return plaintext
        }
    }

    /// Links, reporting a repository whose encryption changed under the push as a conflict to retry.
    func linkChecked(
        _ record: BlobRecord, to repository: RepositoryName, endingSession: String? = nil, encryption: BlobLinkEncryption,
        publish: (@Sendable (_ copyRecorded: Bool) async throws -> Void)? = nil
    ) async throws {
        do {
            try await metadata.linkBlob(record, to: repository, endingSession: endingSession, encryption: encryption, publish: publish)
        } catch MetadataError.encryptionMismatch(let message) {
            throw RegistryError(.denied, "\(message); start the upload again", status: 409)
        }
    }
}
