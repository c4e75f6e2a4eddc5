import Crypto
import Foundation
import NIOCore
import NIOFoundationCompat

/// The stored form of an encrypted blob: a 16-byte header, then records of at most
/// `segmentSize` plaintext bytes each, every record sealed on its own with AES-256-GCM.
///
/// Why records: a registry serves ranges (resumed downloads, the scanner) and streams blobs of any
/// size; one GCM message over a whole layer could be neither read from the middle nor checked
/// before its end. Every record but the last holds exactly `segmentSize` bytes, so the record
/// holding plaintext offset `x` starts at a computed stored offset.
///
///     header  = "WHARFENC" | version (1) | layers (1 or 2) | reserved (2) | segmentSize (UInt32 BE)
///     record  = length (UInt32 BE) | nonce per layer (12 each) | ciphertext (length + 16 per inner layer) | tag (16)
///
/// Each record's nonce is random (96 bits): an upload may rewrite its tail after an interrupted
/// request, and a counter nonce would then seal different bytes under the same key and nonce.
/// The additional data binds the header, the record's index and its length, so records cannot be
/// reordered, moved between objects (each object has its own data key) or re-labelled; a cut at
/// a record boundary is caught by the caller, which knows the plaintext size from the database.
/// Two layers (ECR's `KMS_DSSE`) seal each record twice, with independent keys.
public enum SegmentedEnvelope {
    public static let magic: [UInt8] = Array("WHARFENC".utf8)
    public static let version: UInt8 = 1
    public static let headerSize = 16
    public static let defaultSegmentSize = 64 << 10
    static let nonceSize = 12
    static let tagSize = 16

    public static func header(layers: Int, segmentSize: Int = defaultSegmentSize) -> [UInt8] {
        var bytes = magic
        bytes.append(version)
        bytes.append(UInt8(layers))
        bytes += [0, 0]
        bytes += withUnsafeBytes(of: UInt32(segmentSize).bigEndian, Array.init)
        return bytes
    }

    /// Per-record overhead in stored bytes.
    public static func overhead(layers: Int) -> Int { 4 + layers * (nonceSize + tagSize) }

    /// Stored bytes of an object holding `plaintext` bytes.
    public static func storedSize(plaintext: Int64, layers: Int, segmentSize: Int = defaultSegmentSize) -> Int64 {
        let segment = Int64(segmentSize)
        let records = (plaintext + segment - 1) / segment
        return Int64(headerSize) + plaintext + records * Int64(overhead(layers: layers))
    }

    /// Stored bytes up to the end of the `records` first (full) records.
    public static func storedOffset(fullRecords records: Int64, layers: Int, segmentSize: Int = defaultSegmentSize) -> Int64 {
        Int64(headerSize) + records * Int64(segmentSize + overhead(layers: layers))
    }

    static func additionalData(header: [UInt8], index: UInt64, length: Int) -> [UInt8] {
        var aad = header
        aad += withUnsafeBytes(of: index.bigEndian, Array.init)
        aad += withUnsafeBytes(of: UInt32(length).bigEndian, Array.init)
        return aad
    }

    /// Seals one record of `plaintext` (at most a segment) as record `index`.
    public static func sealRecord(_ plaintext: some DataProtocol, index: UInt64, keys: ObjectKeys, header: [UInt8]) throws -> [UInt8] {
        let length = plaintext.count
        let aad = additionalData(header: header, index: index, length: length)
        var nonces: [[UInt8]] = []
        var body = Data(plaintext)
        // Innermost layer first: the outer key seals what the inner one produced.
        for key in keys.layers {
            let nonce = AES.GCM.Nonce()
            let box = try AES.GCM.seal(body, using: key, nonce: nonce, authenticating: aad)
            nonces.append(Array(nonce))
            body = box.ciphertext + box.tag
        }
        var record = withUnsafeBytes(of: UInt32(length).bigEndian, Array.init)
        record.reserveCapacity(4 + keys.layers.count * nonceSize + body.count)
        for nonce in nonces { record += nonce }
        record += body
        return record
    }

    /// Opens a record's sealed part (everything after the length) as record `index`.
    public static func openRecord(_ sealed: ArraySlice<UInt8>, length: Int, index: UInt64, keys: ObjectKeys, header: [UInt8]) throws -> [UInt8] {
        let layers = keys.layers.count
        let aad = additionalData(header: header, index: index, length: length)
        let noncesEnd = sealed.startIndex + layers * nonceSize
        var body = Data(sealed[noncesEnd...])
        for layer in (0..<layers).reversed() {
            let nonceStart = sealed.startIndex + layer * nonceSize
            guard body.count >= tagSize else { throw EncryptionError.corrupt("record \(index) is shorter than its tag") }
            let box = try AES.GCM.SealedBox(
                nonce: AES.GCM.Nonce(data: sealed[nonceStart..<nonceStart + nonceSize]),
                ciphertext: body.prefix(body.count - tagSize), tag: body.suffix(tagSize))
            do {
                body = try AES.GCM.open(box, using: keys.layers[layer], authenticating: aad)
            } catch {
                throw EncryptionError.corrupt("record \(index) failed authentication (wrong key, or the stored bytes were changed)")
            }
        }
        guard body.count == length else { throw EncryptionError.corrupt("record \(index) holds \(body.count) bytes, its header says \(length)") }
        return [UInt8](body)
    }
}

/// The data keys of one object: one per layer, innermost first.
public struct ObjectKeys: Sendable {
    public var layers: [SymmetricKey]

    public init(layers: [SymmetricKey]) {
        precondition((1...2).contains(layers.count))
        self.layers = layers
    }

    public static func random(layers: Int) -> ObjectKeys {
        ObjectKeys(layers: (0..<layers).map { _ in SymmetricKey(size: .bits256) })
    }
}

public enum EncryptionError: Error, Sendable, CustomStringConvertible, Equatable {
    /// Stored bytes that do not open: changed, cut, or sealed under another key.
    case corrupt(String)
    /// A key the key service refuses to use (disabled, pending deletion, not found, not allowed).
    case keyUnavailable(keyID: String, code: String, message: String)
    /// The key service could not be reached or failed.
    case serviceFailed(String)
    /// A setting that cannot work (a master key file with loose permissions, an unknown key).
    case configuration(String)

    public var description: String {
        switch self {
        case .corrupt(let message): "encrypted object is corrupt: \(message)"
        case .keyUnavailable(let keyID, let code, let message): "key \(keyID) is unavailable (\(code)): \(message)"
        case .serviceFailed(let message): "key service failed: \(message)"
        case .configuration(let message): message
        }
    }
}

/// Seals a plaintext stream into records as it arrives. Only full segments are sealed by `feed`;
/// the partial tail stays here until `finish` (end of the object) or `takeTail` (end of one
/// request of an upload that continues later).
public struct EnvelopeSealer: Sendable {
    public let keys: ObjectKeys
    public let segmentSize: Int
    public let header: [UInt8]
    /// Index of the next record to seal.
    public private(set) var nextIndex: UInt64
    private var pending: [UInt8] = []

    /// - Parameters:
    ///   - startIndex: records already stored (an upload continuing after `startIndex` full segments).
    ///   - tail: plaintext after those records that was kept aside (less than a segment).
    public init(keys: ObjectKeys, segmentSize: Int = SegmentedEnvelope.defaultSegmentSize, startIndex: UInt64 = 0, tail: [UInt8] = []) {
        self.keys = keys
        self.segmentSize = segmentSize
        self.header = SegmentedEnvelope.header(layers: keys.layers.count, segmentSize: segmentSize)
        self.nextIndex = startIndex
        self.pending = tail
        pending.reserveCapacity(segmentSize)
    }

    /// The plaintext bytes waiting for a full segment.
    public var pendingCount: Int { pending.count }

    /// Seals every full segment `buffer` completes; returns the stored bytes to append.
    public mutating func feed(_ buffer: ByteBuffer) throws -> ByteBuffer? {
        var input = buffer
        var output: ByteBuffer?
        while input.readableBytes > 0 {
            if pending.isEmpty, input.readableBytes >= segmentSize {
                // A whole segment straight from the request's buffer, without copying it aside.
                let segment = input.readSlice(length: segmentSize)!
                try append(segment.readableBytesView, to: &output)
                continue
            }
            let take = min(segmentSize - pending.count, input.readableBytes)
            pending += input.readableBytesView.prefix(take)
            input.moveReaderIndex(forwardBy: take)
            if pending.count == segmentSize {
                try append(pending, to: &output)
                pending.removeAll(keepingCapacity: true)
            }
        }
        return output
    }

    /// Seals what is left as the last record (an object's end).
    public mutating func finish() throws -> ByteBuffer? {
        guard !pending.isEmpty else { return nil }
        var output: ByteBuffer?
        try append(pending, to: &output)
        pending.removeAll()
        return output
    }

    /// Hands over the partial tail instead of sealing it as a record (an upload's request ended
    /// mid-segment; the next request continues the segment, so every stored record stays full).
    public mutating func takeTail() -> [UInt8] {
        defer { pending.removeAll() }
        return pending
    }

    private mutating func append(_ plaintext: some DataProtocol, to output: inout ByteBuffer?) throws {
        if output == nil { output = ByteBufferAllocator().buffer(capacity: 4 * (segmentSize + 64)) }
        if keys.layers.count == 1 {
            // One layer: the record after its length is exactly GCM's combined form (nonce, ciphertext, tag).
            let aad = SegmentedEnvelope.additionalData(header: header, index: nextIndex, length: plaintext.count)
            let box = try AES.GCM.seal(plaintext, using: keys.layers[0], nonce: AES.GCM.Nonce(), authenticating: aad)
            output!.writeInteger(UInt32(plaintext.count))
            output!.writeBytes(box.combined!)
        } else {
            output!.writeBytes(try SegmentedEnvelope.sealRecord(plaintext, index: nextIndex, keys: keys, header: header))
        }
        nextIndex += 1
    }
}

/// Opens a stored object as its bytes stream past, returning plaintext. Checks the header, every
/// record's tag, index and length, and that no record but the last is short.
public struct EnvelopeOpener: Sendable {
    public let keys: ObjectKeys
    private var header: [UInt8]?
    private var segmentSize = 0
    /// Stored bytes of a record (or the header) that continues in the next chunk.
    private var partial = ByteBuffer()
    private var index: UInt64
    private var sawShortRecord = false
    private let expectsHeader: Bool
    private let expectedHeader: [UInt8]?

    /// - Parameters:
    ///   - firstIndex: when opening from the middle of an object (a range), the index of the
    ///     first record given, and the header known without reading it (`knownHeader`).
    ///   - expectedHeader: when the stream starts with the header, what it must be.
    public init(keys: ObjectKeys, firstIndex: UInt64 = 0, knownHeader: [UInt8]? = nil, expectedHeader: [UInt8]? = nil) {
        self.keys = keys
        self.index = firstIndex
        self.expectsHeader = knownHeader == nil
        self.expectedHeader = expectedHeader
        if let knownHeader { try? adopt(header: knownHeader) }
    }

    private mutating func adopt(header bytes: [UInt8]) throws {
        if let expectedHeader, bytes != expectedHeader { throw EncryptionError.corrupt("the envelope header was changed") }
        guard bytes.count == SegmentedEnvelope.headerSize, Array(bytes.prefix(8)) == SegmentedEnvelope.magic else {
            throw EncryptionError.corrupt("no envelope header")
        }
        guard bytes[8] == SegmentedEnvelope.version else { throw EncryptionError.corrupt("envelope version \(bytes[8]) is not known") }
        guard Int(bytes[9]) == keys.layers.count else {
            throw EncryptionError.corrupt("the envelope has \(bytes[9]) layers, the object's keys \(keys.layers.count)")
        }
        let size = bytes[12..<16].reduce(0) { $0 << 8 | Int($1) }
        guard (1024...(16 << 20)).contains(size) else { throw EncryptionError.corrupt("segment size \(size) is out of range") }
        segmentSize = size
        header = bytes
    }

    /// Feeds stored bytes; returns the plaintext of every record they complete. Whole records are
    /// opened straight from `buffer`; only a record cut by the chunk's end is copied aside.
    public mutating func feed(_ buffer: ByteBuffer) throws -> ByteBuffer {
        var input = buffer
        var output = ByteBufferAllocator().buffer(capacity: input.readableBytes)
        if header == nil {
            guard expectsHeader else { throw EncryptionError.corrupt("no envelope header") }
            let need = SegmentedEnvelope.headerSize - partial.readableBytes
            var piece = input.readSlice(length: min(need, input.readableBytes))!
            partial.writeBuffer(&piece)
            guard partial.readableBytes == SegmentedEnvelope.headerSize else { return output }
            try adopt(header: partial.readBytes(length: SegmentedEnvelope.headerSize)!)
            partial.clear()
        }
        let overhead = SegmentedEnvelope.overhead(layers: keys.layers.count)
        // A record begun in an earlier chunk: complete it from this one first.
        if partial.readableBytes > 0 {
            if partial.readableBytes < 4 {
                var piece = input.readSlice(length: min(4 - partial.readableBytes, input.readableBytes))!
                partial.writeBuffer(&piece)
                guard partial.readableBytes == 4 else { return output }
            }
            let length = try recordLength(partial.getInteger(at: partial.readerIndex, as: UInt32.self)!)
            var piece = input.readSlice(length: min(length + overhead - partial.readableBytes, input.readableBytes))!
            partial.writeBuffer(&piece)
            guard partial.readableBytes == length + overhead else { return output }
            var record = partial
            partial = ByteBuffer()
            try open(&record, length: length, into: &output)
        }
        while input.readableBytes >= 4 {
            let length = try recordLength(input.getInteger(at: input.readerIndex, as: UInt32.self)!)
            guard input.readableBytes >= length + overhead else { break }
            var record = input.readSlice(length: length + overhead)!
            try open(&record, length: length, into: &output)
        }
        if input.readableBytes > 0 { partial.writeBuffer(&input) }
        return output
    }

    private func recordLength(_ raw: UInt32) throws -> Int {
        let length = Int(raw)
        guard length > 0, length <= segmentSize else { throw EncryptionError.corrupt("record \(index) claims \(length) bytes") }
        return length
    }

    /// Opens one whole record (its length first) and appends its plaintext.
    private mutating func open(_ record: inout ByteBuffer, length: Int, into output: inout ByteBuffer) throws {
        guard !sawShortRecord else { throw EncryptionError.corrupt("a short record is followed by record \(index)") }
        record.moveReaderIndex(forwardBy: 4)
        if keys.layers.count == 1 {
            let aad = SegmentedEnvelope.additionalData(header: header!, index: index, length: length)
            do {
                let box = try AES.GCM.SealedBox(combined: record.readableBytesView)
                let plaintext = try AES.GCM.open(box, using: keys.layers[0], authenticating: aad)
                guard plaintext.count == length else {
                    throw EncryptionError.corrupt("record \(index) holds \(plaintext.count) bytes, its header says \(length)")
                }
                output.writeBytes(plaintext)
            } catch let error as EncryptionError {
                throw error
            } catch {
                throw EncryptionError.corrupt("record \(index) failed authentication (wrong key, or the stored bytes were changed)")
            }
        } else {
            output.writeBytes(
                try SegmentedEnvelope.openRecord(
                    ArraySlice(record.readableBytesView), length: length, index: index, keys: keys, header: header!))
        }
        if length < segmentSize { sawShortRecord = true }
        index += 1
    }

    /// Call at the end of the stored bytes: throws if a record was cut.
    public func finish() throws {
        guard partial.readableBytes == 0 else { throw EncryptionError.corrupt("the object ends inside record \(index)") }
        if expectsHeader, header == nil { throw EncryptionError.corrupt("no envelope header") }
    }

    /// Records opened so far (the next record's index).
    public var recordsOpened: UInt64 { index }
}

/// Where a plaintext range lies in the stored object.
public struct EnvelopeRange: Sendable, Equatable {
    /// Stored bytes to read (inclusive).
    public var stored: ClosedRange<Int64>
    /// Index of the first record in `stored`.
    public var firstRecord: UInt64
    /// Plaintext bytes of the first record to drop before the range starts.
    public var skip: Int64

    /// Nil when the range is not inside the plaintext.
    public init?(plaintext range: ClosedRange<Int64>, plaintextSize: Int64, layers: Int, segmentSize: Int = SegmentedEnvelope.defaultSegmentSize) {
        // Blobs are at most 2^50 bytes (ClientNumber.maximumByteOffset) and segments at least
        // 1 KiB, so the offsets below cannot overflow.
        guard range.lowerBound >= 0, range.upperBound < plaintextSize, segmentSize >= 1024, plaintextSize <= 1 << 52 else { return nil }
        let segment = Int64(segmentSize)
        let first = range.lowerBound / segment
        let last = range.upperBound / segment
        let recordSize = segment + Int64(SegmentedEnvelope.overhead(layers: layers))
        let start = Int64(SegmentedEnvelope.headerSize) + first * recordSize
        let end =
            min(
                Int64(SegmentedEnvelope.headerSize) + (last + 1) * recordSize,
                SegmentedEnvelope.storedSize(plaintext: plaintextSize, layers: layers, segmentSize: segmentSize)) - 1
        stored = start...end
        firstRecord = UInt64(first)
        skip = range.lowerBound - first * segment
    }
}
