import BlobStore
import Crypto
import Foundation
import NIOCore
import Synchronization

/// Data keys for the encryption domains: which key service wraps each layer, new keys for new
/// objects, stored keys unwrapped for reads, rotation.
public final class BlobEncryption: Sendable {
    /// The local key holding the registry's `AES256` key material (and the outer layer of `KMS_DSSE`).
    public static let registryKeyID = "wharf/aes256"

    public let local: LocalKeyService
    /// The KMS API when an endpoint (or AWS) is configured; nil means the local key service answers
    /// for KMS key ARNs too.
    public let kms: (any KeyService)?

    public init(local: LocalKeyService, kms: (any KeyService)?) {
        self.local = local
        self.kms = kms
    }

    /// Whether KMS key ARNs are served by the built-in local key service.
    public var kmsIsLocal: Bool { kms == nil }

    private func layers(of domain: EncryptionDomain) -> [(service: any KeyService, keyID: String)] {
        let kmsService: any KeyService = kms ?? local
        switch domain.kind {
        case .aes256: return [(local, Self.registryKeyID)]
        case .kms: return [(kmsService, domain.kmsKey ?? "")]
        case .kmsDSSE: return [(kmsService, domain.kmsKey ?? ""), (local, Self.registryKeyID)]
        }
    }

    /// Fresh keys for a new object, and their wrapped forms to store.
    public func newKeys(for domain: EncryptionDomain) async throws -> (keys: ObjectKeys, wrapped: [[UInt8]]) {
        var keys: [SymmetricKey] = []
        var wrapped: [[UInt8]] = []
        for layer in layers(of: domain) {
            let generated = try await layer.service.generateDataKey(keyID: layer.keyID)
            keys.append(generated.key)
            wrapped.append(generated.wrapped)
        }
        return (ObjectKeys(layers: keys), wrapped)
    }

    /// The keys of a stored object.
    public func keys(for domain: EncryptionDomain, wrapped: [[UInt8]]) async throws -> ObjectKeys {
        let layers = layers(of: domain)
        guard wrapped.count == layers.count else {
            throw EncryptionError.corrupt("\(wrapped.count) wrapped keys stored for a domain of \(layers.count) layers")
        }
        var keys: [SymmetricKey] = []
        for (layer, key) in zip(layers, wrapped) { keys.append(try await layer.service.decrypt(key, keyID: layer.keyID)) }
        return ObjectKeys(layers: keys)
    }

    /// Throws `keyUnavailable` unless every key of the domain may be used now.
    public func checkUsable(_ domain: EncryptionDomain) async throws {
        for layer in layers(of: domain) { try await layer.service.checkUsable(keyID: layer.keyID) }
    }

    /// The stored keys wrapped again under each key's current version.
    public func rewrap(_ wrapped: [[UInt8]], for domain: EncryptionDomain) async throws -> [[UInt8]] {
        let layers = layers(of: domain)
        guard wrapped.count == layers.count else { throw EncryptionError.corrupt("wrapped keys do not match the domain's layers") }
        var result: [[UInt8]] = []
        for (layer, key) in zip(layers, wrapped) { result.append(try await layer.service.rewrap(key, keyID: layer.keyID)) }
        return result
    }
}

/// Wrapped keys as stored in the database: a JSON array of base64 strings, innermost layer first.
public enum WrappedKeys {
    public static func encode(_ keys: [[UInt8]]) -> String {
        "[" + keys.map { "\"" + Data($0).base64EncodedString() + "\"" }.joined(separator: ",") + "]"
    }

    public static func decode(_ text: String) throws -> [[UInt8]] {
        guard let array = try? JSONSerialization.jsonObject(with: Data(text.utf8)) as? [String] else {
            throw EncryptionError.corrupt("stored wrapped keys are not a JSON array of strings")
        }
        return try array.map {
            guard let data = Data(base64Encoded: $0) else { throw EncryptionError.corrupt("a stored wrapped key is not base64") }
            return Array(data)
        }
    }
}

/// A stored encrypted object read as its plaintext, whole or by range.
public struct DecryptingBlobReader: BlobReader {
    private let stored: any BlobReader
    private let keys: ObjectKeys
    private let segmentSize: Int
    public let size: Int64

    /// - Parameter size: the plaintext size (from the database, which is trusted; a cut object is caught against it).
    public init(stored: any BlobReader, keys: ObjectKeys, size: Int64, segmentSize: Int = SegmentedEnvelope.defaultSegmentSize) throws {
        guard (0...(1 << 52)).contains(size), (1024...(16 << 20)).contains(segmentSize) else {
            throw EncryptionError.corrupt("a recorded size of \(size) or segment size of \(segmentSize) is out of range")
        }
        let expected = SegmentedEnvelope.storedSize(plaintext: size, layers: keys.layers.count, segmentSize: segmentSize)
        guard stored.size == expected else {
            throw EncryptionError.corrupt("the stored object holds \(stored.size) bytes; \(size) plaintext bytes need \(expected)")
        }
        self.stored = stored
        self.keys = keys
        self.size = size
        self.segmentSize = segmentSize
    }

    public func stream(range: ClosedRange<Int64>?, consume: (ByteBuffer) async throws -> Void) async throws {
        if let range, range.lowerBound < 0 || range.upperBound >= size {
            try? await stored.close()
            throw BlobStoreError.invalidRange
        }
        guard size > 0 else {
            try await stored.stream(range: nil) { _ in }
            return
        }
        let wanted = range ?? 0...(size - 1)
        guard var mapping = EnvelopeRange(plaintext: wanted, plaintextSize: size, layers: keys.layers.count, segmentSize: segmentSize) else {
            try? await stored.close()
            throw BlobStoreError.invalidRange
        }
        let header = SegmentedEnvelope.header(layers: keys.layers.count, segmentSize: segmentSize)
        var opener: EnvelopeOpener
        if mapping.firstRecord == 0 {
            // From the start: the stored header is read and must be the expected one.
            mapping.stored = 0...mapping.stored.upperBound
            opener = EnvelopeOpener(keys: keys, expectedHeader: header)
        } else {
            opener = EnvelopeOpener(keys: keys, firstIndex: mapping.firstRecord, knownHeader: header)
        }
        var toSkip = mapping.skip
        var toSend = wanted.upperBound - wanted.lowerBound + 1
        // The expected header is authenticated with every record, so a range from the middle checks it too.
        try await stored.stream(range: mapping.stored) { chunk in
            var plaintext = try opener.feed(chunk)
            if toSkip > 0 {
                let dropped = Int(min(toSkip, Int64(plaintext.readableBytes)))
                plaintext.moveReaderIndex(forwardBy: dropped)
                toSkip -= Int64(dropped)
            }
            if Int64(plaintext.readableBytes) > toSend { plaintext = plaintext.getSlice(at: plaintext.readerIndex, length: Int(toSend))! }
            guard plaintext.readableBytes > 0 else { return }
            toSend -= Int64(plaintext.readableBytes)
            try await consume(plaintext)
        }
        try opener.finish()
        guard toSend == 0 else { throw EncryptionError.corrupt("the stored object ended \(toSend) bytes early") }
    }

    public func close() async throws { try await stored.close() }
}

/// Seals what an upload receives before the blob store sees it. Whole segments go to storage;
/// the partial tail is kept for the caller (`takeTail`) or sealed as the last record (`finish`).
public final class EncryptingUploadWriter: UploadWriter {
    private let stored: any UploadWriter
    private let sealer: Mutex<EnvelopeSealer>

    public init(stored: any UploadWriter, sealer: EnvelopeSealer) {
        self.stored = stored
        self.sealer = Mutex(sealer)
    }

    public func write(_ buffer: ByteBuffer) async throws {
        if let sealed = try sealer.withLock({ try $0.feed(buffer) }) { try await stored.write(sealed) }
    }

    /// Writes the final record and closes: the stored object is complete.
    public func finish() async throws {
        if let last = try sealer.withLock({ try $0.finish() }) { try await stored.write(last) }
        try await stored.close()
    }

    /// Closes without sealing the tail, which is returned (an upload that continues later).
    public func takeTailAndClose() async throws -> [UInt8] {
        try await stored.close()
        return sealer.withLock { $0.takeTail() }
    }

    public func close() async throws { try await stored.close() }
}
