import BlobStore
import Encryption
import Foundation
import Metadata
import NIOCore
import OCI
import Registry
import Scanning
import Synchronization
import Testing
import UseCases

import enum Crypto.AES
import struct Crypto.SymmetricKey

/// The built-in key service's keys in memory (the server keeps them in the database).
final class InMemoryKeys: LocalKeyStore, MaterialSealer {
    let keys = Mutex<[String: LocalKeyRecord]>([:])
    let master = SymmetricKey(size: .bits256)
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
    func seal(_ material: [UInt8]) throws -> String { try AES.GCM.seal(material, using: master).combined!.base64EncodedString() }
    func open(_ sealed: String) throws -> [UInt8] { Array(try AES.GCM.open(AES.GCM.SealedBox(combined: Data(base64Encoded: sealed)!), using: master)) }
}

/// Uploads into an encrypted repository as two nodes (or a node before and after a restart) see
/// them: each `Registry` has its own caches, they share the database and the blob store.
@Suite("Encrypted content")
struct EncryptedContentTests {
    static let arn = "arn:aws:kms:us-east-1:123456789012:key/11111111-2222-3333-4444-555555555555"

    struct Nodes {
        let store: MetadataStore
        let blobs: FileSystemBlobStore
        let local: LocalKeyService
        let directory: URL
        func node() -> Registry {
            Registry(
                metadata: store, blobs: blobs, configuration: RegistryConfiguration(), logger: Fixture.logger,
                encryption: BlobEncryption(local: local, kms: nil))
        }
    }

    static func withNodes(_ body: (Nodes) async throws -> Void) async throws {
        let directory = FileManager.default.temporaryDirectory.appendingPathComponent("wharf-encrypted-\(UUID().uuidString)")
        try FileManager.default.createDirectory(at: directory, withIntermediateDirectories: true)
        defer { try? FileManager.default.removeItem(at: directory) }
        let store = try await MetadataStore.open(url: "sqlite:\(directory.path)/wharf.db", logger: Fixture.logger)
        let blobs = FileSystemBlobStore(root: directory.path + "/storage")
        try await blobs.prepare()
        let keys = InMemoryKeys()
        let nodes = Nodes(store: store, blobs: blobs, local: LocalKeyService(store: keys, sealer: keys, cacheLifetime: .zero), directory: directory)
        let repository = RepositoryName("secure/app")!
        _ = try await store.createRepository(
            repository, settings: RepositorySettings(encryption: .init(type: "KMS", kmsKey: arn, domain: "KMS:\(arn)")), labels: [])
        do {
            try await body(nodes)
            await store.close()
        } catch {
            await store.close()
            throw error
        }
    }

    static func read(_ registry: Registry, _ digest: OCI.Digest, range: ClosedRange<Int64>? = nil) async throws -> [UInt8] {
        let reader = try await registry.openBlob(digest, in: RepositoryName("secure/app")!)
        var bytes: [UInt8] = []
        try await reader.stream(range: range) { bytes += $0.readableBytesView }
        return bytes
    }

    @Test("a chunked upload alternating between nodes at cuts that split segments is sealed whole and reads back")
    func chunkedAcrossNodes() async throws {
        try await Self.withNodes { nodes in
            let repository = RepositoryName("secure/app")!
            let data = (0..<300_001).map { _ in UInt8.random(in: 0...255) }
            let digest = Digest.of(data)
            let registries = [nodes.node(), nodes.node()]
            let session = try await registries[0].startUpload(in: repository)
            let cuts = [1, 65_535, 65_537, 131_072, 200_000, 299_999]
            var start = 0
            for (i, end) in cuts.enumerated() {
                let status = try await registries[(i + 1) % 2].appendToUpload(
                    session.id, in: repository, start: Int64(start), length: Int64(end - start),
                    body: [ByteBuffer(bytes: data[start..<end])].async)
                #expect(status.size == Int64(end))
                #expect(try await registries[i % 2].uploadStatus(session.id, in: repository).size == Int64(end))
                start = end
            }
            let record = try await registries[1].completeUpload(
                session.id, in: repository, digest: digest, start: Int64(start), length: Int64(data.count - start),
                body: [ByteBuffer(bytes: data[start...])].async)
            #expect(record.size == Int64(data.count))
            for registry in registries {
                #expect(try await Self.read(registry, digest) == data)
                #expect(try await Self.read(registry, digest, range: 65_530...131_080) == Array(data[65_530...131_080]))
            }
            // The stored object is the domain's copy, whole records only, with no plaintext run in it.
            let copy = try #require(try await nodes.store.encryptedBlob(digest, domain: "KMS:\(Self.arn)"))
            #expect(try await nodes.blobs.size(of: digest) == nil)
            let reader = try #require(try await nodes.blobs.open(copy.objectKey))
            #expect(reader.size == SegmentedEnvelope.storedSize(plaintext: Int64(data.count), layers: 1))
            var stored: [UInt8] = []
            try await reader.stream(range: nil) { stored += $0.readableBytesView }
            let probe = Array(data[150_000..<150_032])
            #expect(!stored.indices.dropLast(31).contains { stored[$0] == probe[0] && Array(stored[$0..<$0 + 32]) == probe })
            // A mount from a plain repository is refused; within the domain it links the same copy.
            _ = try await registries[0].pushBlob([ByteBuffer(bytes: data)].async, in: RepositoryName("plain/app")!, digest: digest, length: nil)
            let other = RepositoryName("secure/other")!
            _ = try await nodes.store.createRepository(
                other, settings: RepositorySettings(encryption: .init(type: "KMS", kmsKey: Self.arn, domain: "KMS:\(Self.arn)")), labels: [])
            #expect(try await registries[0].mountBlob(digest, from: RepositoryName("plain/app")!, into: other) == nil)
            #expect(try await registries[0].mountBlob(digest, from: repository, into: other) != nil)
            let mounted = try await registries[1].openBlob(digest, in: other)
            var bytes: [UInt8] = []
            try await mounted.stream(range: nil) { bytes += $0.readableBytesView }
            #expect(bytes == data)
        }
    }

    @Test("a record lost to a crash is found by the next node, which resumes the client at the last whole record")
    func tornRecordAfterACrash() async throws {
        try await Self.withNodes { nodes in
            let repository = RepositoryName("secure/app")!
            let data = (0..<200_000).map { _ in UInt8.random(in: 0...255) }
            let session = try await nodes.node().startUpload(in: repository)
            _ = try await nodes.node().appendToUpload(
                session.id, in: repository, start: 0, length: 150_000, body: [ByteBuffer(bytes: data[0..<150_000])].async)
            // Two whole records (131,072 bytes) are stored, 18,928 wait sealed in the row. The power
            // cut takes the second record half-way.
            let path = nodes.directory.path + "/storage/uploads/\(session.id)"
            let cut = SegmentedEnvelope.storedOffset(fullRecords: 1, layers: 1) + 1000
            #expect(truncate(path, off_t(cut)) == 0)
            let fresh = nodes.node()
            #expect(try await fresh.uploadStatus(session.id, in: repository).size == 65_536)
            do {
                _ = try await fresh.appendToUpload(
                    session.id, in: repository, start: 150_000, length: 50_000, body: [ByteBuffer(bytes: data[150_000...])].async)
                Issue.record("an append past the surviving bytes was accepted")
            } catch let error as UploadError {
                guard case .outOfOrder(let status, _) = error else { throw error }
                #expect(status.size == 65_536)
            }
            let record = try await fresh.completeUpload(
                session.id, in: repository, digest: Digest.of(data), start: 65_536, length: Int64(data.count - 65_536),
                body: [ByteBuffer(bytes: data[65_536...])].async)
            #expect(record.size == Int64(data.count))
            #expect(try await Self.read(nodes.node(), Digest.of(data)) == data)
        }
    }

    /// The gate judges a blob by the images that use it; an encrypted repository's manifests are
    /// sealed in the database, and the gate must read them opened (sealed bytes parse as nothing,
    /// and an image that is nothing would be no reason to refuse).
    @Test("the pull gate refuses the layers of an unscanned image in an encrypted repository")
    func gateReadsSealedManifests() async throws {
        try await Self.withNodes { nodes in
            let repository = RepositoryName("secure/app")!
            let registry = nodes.node()
            let config = ByteBuffer(string: #"{"architecture":"amd64","os":"linux"}"#)
            let layer = ByteBuffer(string: "layer bytes")
            for blob in [config, layer] {
                _ = try await registry.pushBlob([blob].async, in: repository, digest: Digest.of(blob), length: Int64(blob.readableBytes))
            }
            let manifest = """
                {"schemaVersion":2,"mediaType":"\(MediaType.ociManifest)","config":{"mediaType":"application/vnd.oci.image.config.v1+json","digest":"\(Digest.of(config))","size":\(config.readableBytes)},\
                "layers":[{"mediaType":"application/vnd.oci.image.layer.v1.tar","digest":"\(Digest.of(layer))","size":\(layer.readableBytes)}]}
                """
            _ = try await registry.putManifest(ByteBuffer(string: manifest), contentType: MediaType.ociManifest, in: repository, reference: .tag(Tag("v1")!))
            #expect(try await nodes.store.manifest(Digest.of(ByteBuffer(string: manifest)), in: repository)?.sealedWith != nil)
            let gate = PullGate(metadata: nodes.store)
            try await gate.setPolicy(PullPolicy(blockUnscanned: true), for: "secure")
            let blobs = BlobPulls(registry: registry, pullGate: gate, authorizer: nil, audit: nil)
            do {
                try await blobs.open(Digest.of(layer), in: repository, by: alice).close()
                Issue.record("a layer of an unscanned image was served although the namespace blocks unscanned images")
            } catch ManifestPulls.Refusal.gated(let message, _) {
                #expect(message.contains("has not been scanned"))
            }
        }
    }

    @Test("a disabled key refuses pushes and pulls with the key's reason; enabled again, everything reads")
    func disabledKey() async throws {
        try await Self.withNodes { nodes in
            let repository = RepositoryName("secure/app")!
            let data = Array("a layer".utf8)
            let registry = nodes.node()
            _ = try await registry.pushBlob([ByteBuffer(bytes: data)].async, in: repository, digest: Digest.of(data), length: nil)
            _ = try await nodes.local.setEnabled(Self.arn, false)
            do {
                _ = try await registry.startUpload(in: repository)
                Issue.record("a push with a disabled key started")
            } catch let error as RegistryError {
                #expect(error.status == 403 && error.code == .denied && error.message.contains("DisabledException"))
                #expect(error.detail?.contains("\"kmsError\":\"DisabledException\"") == true)
            }
            await #expect(throws: RegistryError.self) { try await Self.read(registry, Digest.of(data)) }
            _ = try await nodes.local.setEnabled(Self.arn, true)
            #expect(try await Self.read(registry, Digest.of(data)) == data)
        }
    }
}
