import BlobStore
import Crypto
import Foundation
import NIOCore
import Testing

@testable import Encryption

/// A stored object held in memory, streamed in uneven chunks like a network body.
struct MemoryReader: BlobReader {
    let bytes: [UInt8]
    var chunk = 7_777
    var size: Int64 { Int64(bytes.count) }

    func stream(range: ClosedRange<Int64>?, consume: (ByteBuffer) async throws -> Void) async throws {
        let slice = range.map { bytes[Int($0.lowerBound)...Int($0.upperBound)] } ?? bytes[...]
        var start = slice.startIndex
        while start < slice.endIndex {
            let end = min(start + chunk, slice.endIndex)
            try await consume(ByteBuffer(bytes: slice[start..<end]))
            start = end
        }
    }

    func close() async throws {}
}

func seal(_ plaintext: [UInt8], keys: ObjectKeys, segmentSize: Int = 4096, pieces: Int = 5) throws -> [UInt8] {
    var sealer = EnvelopeSealer(keys: keys, segmentSize: segmentSize)
    var stored = SegmentedEnvelope.header(layers: keys.layers.count, segmentSize: segmentSize)
    var rng = SystemRandomNumberGenerator()
    var offset = 0
    while offset < plaintext.count {
        let take = min(plaintext.count - offset, Int.random(in: 1...max(1, plaintext.count / pieces + 1), using: &rng))
        if let out = try sealer.feed(ByteBuffer(bytes: plaintext[offset..<offset + take])) { stored += out.readableBytesView }
        offset += take
    }
    if let last = try sealer.finish() { stored += last.readableBytesView }
    return stored
}

func readAll(_ reader: any BlobReader, range: ClosedRange<Int64>? = nil) async throws -> [UInt8] {
    var out: [UInt8] = []
    try await reader.stream(range: range) { out += $0.readableBytesView }
    return out
}

@Suite struct EnvelopeTests {
    @Test(arguments: [1, 2])
    func roundTripsEverySizeAroundSegmentBoundaries(layers: Int) async throws {
        let segment = 4096
        for size in [0, 1, segment - 1, segment, segment + 1, 3 * segment + 17, 5 * segment] {
            let keys = ObjectKeys.random(layers: layers)
            let plaintext = (0..<size).map { _ in UInt8.random(in: 0...255) }
            let stored = try seal(plaintext, keys: keys, segmentSize: segment)
            #expect(Int64(stored.count) == SegmentedEnvelope.storedSize(plaintext: Int64(size), layers: layers, segmentSize: segment))
            let reader = try DecryptingBlobReader(stored: MemoryReader(bytes: stored), keys: keys, size: Int64(size), segmentSize: segment)
            #expect(try await readAll(reader) == plaintext, "size \(size)")
            // No plaintext run of 16 bytes survives in the stored object.
            if size >= 64 {
                let probe = Array(plaintext[20..<36])
                #expect(!stored.indices.dropLast(15).contains { Array(stored[$0..<$0 + 16]) == probe })
            }
        }
    }

    @Test func rangesOpenOnlyTheRecordsTheyNeed() async throws {
        let segment = 1024
        let keys = ObjectKeys.random(layers: 1)
        let plaintext = (0..<(10 * segment + 333)).map { UInt8(truncatingIfNeeded: $0 &* 31 &+ 7) }
        let stored = try seal(plaintext, keys: keys, segmentSize: segment)
        for _ in 0..<200 {
            let a = Int.random(in: 0..<plaintext.count)
            let b = Int.random(in: a..<plaintext.count)
            let reader = try DecryptingBlobReader(
                stored: MemoryReader(bytes: stored, chunk: Int.random(in: 1...3000)), keys: keys, size: Int64(plaintext.count), segmentSize: segment)
            #expect(try await readAll(reader, range: Int64(a)...Int64(b)) == Array(plaintext[a...b]))
        }
        let mapping = try #require(EnvelopeRange(plaintext: 1500...1600, plaintextSize: Int64(plaintext.count), layers: 1, segmentSize: segment))
        #expect(EnvelopeRange(plaintext: 0...0, plaintextSize: 0, layers: 1) == nil)
        #expect(EnvelopeRange(plaintext: 5...Int64(plaintext.count), plaintextSize: Int64(plaintext.count), layers: 1) == nil)
        #expect(mapping.firstRecord == 1)
        #expect(mapping.skip == 476)
        #expect(mapping.stored == Int64(16 + 1056)...Int64(16 + 2 * 1056 - 1))
        let reader = try DecryptingBlobReader(stored: MemoryReader(bytes: stored), keys: keys, size: Int64(plaintext.count), segmentSize: segment)
        await #expect(throws: BlobStoreError.self) { try await readAll(reader, range: 0...Int64(plaintext.count)) }
    }

    @Test func tamperingIsCaught() async throws {
        let segment = 1024
        let keys = ObjectKeys.random(layers: 1)
        let plaintext = (0..<(4 * segment)).map { _ in UInt8.random(in: 0...255) }
        let stored = try seal(plaintext, keys: keys, segmentSize: segment)
        let size = Int64(plaintext.count)
        func opens(_ bytes: [UInt8], keys: ObjectKeys = keys, size: Int64 = size) async -> Bool {
            guard let reader = try? DecryptingBlobReader(stored: MemoryReader(bytes: bytes), keys: keys, size: size, segmentSize: segment) else { return false }
            return (try? await readAll(reader)) == plaintext
        }
        #expect(await opens(stored))
        // One flipped bit anywhere: header, length, nonce, ciphertext, tag.
        for position in [3, 13, 16, 18, 25, 100, 16 + 1056 + 500, stored.count - 1] {
            var changed = stored
            changed[position] ^= 0x01
            #expect(!(await opens(changed)), "bit flip at \(position)")
        }
        // Records swapped.
        let record = 1056
        var swapped = Array(stored[0..<16])
        swapped += stored[16 + record..<16 + 2 * record]
        swapped += stored[16..<16 + record]
        swapped += stored[(16 + 2 * record)...]
        #expect(!(await opens(swapped)))
        // Cut after a whole record: the size from the database catches it.
        #expect(!(await opens(Array(stored.dropLast(record)), size: size)))
        #expect(!(await opens(Array(stored.dropLast(record)), size: size - Int64(segment))))
        // Another object's keys.
        #expect(!(await opens(stored, keys: ObjectKeys.random(layers: 1))))
        // The outer layer alone does not open a two-layer object.
        let two = ObjectKeys.random(layers: 2)
        let dual = try seal(plaintext, keys: two, segmentSize: segment)
        #expect(await opens(dual, keys: two))
        #expect(!(await opens(dual, keys: ObjectKeys(layers: [two.layers[1]]))))
    }

    /// An upload in several requests: each request seals whole segments and hands its tail over;
    /// the next continues from it. The stored records are the same shape as one request's.
    @Test func uploadsAcrossRequestsKeepEveryRecordFull() async throws {
        let segment = 2048
        let keys = ObjectKeys.random(layers: 1)
        let plaintext = (0..<(7 * segment + 99)).map { _ in UInt8.random(in: 0...255) }
        var stored = SegmentedEnvelope.header(layers: 1, segmentSize: segment)
        var tail: [UInt8] = []
        var offset = 0
        for request in [100, 3000, 1, segment, 5000, 1000] {
            let records = UInt64((offset - tail.count) / segment)
            #expect(Int64(stored.count) == SegmentedEnvelope.storedOffset(fullRecords: Int64(records), layers: 1, segmentSize: segment))
            var sealer = EnvelopeSealer(keys: keys, segmentSize: segment, startIndex: records, tail: tail)
            let end = min(offset + request, plaintext.count)
            if let out = try sealer.feed(ByteBuffer(bytes: plaintext[offset..<end])) { stored += out.readableBytesView }
            tail = sealer.takeTail()
            offset = end
        }
        var last = EnvelopeSealer(keys: keys, segmentSize: segment, startIndex: UInt64((offset - tail.count) / segment), tail: tail)
        if let out = try last.feed(ByteBuffer(bytes: plaintext[offset...])) { stored += out.readableBytesView }
        if let out = try last.finish() { stored += out.readableBytesView }
        #expect(Int64(stored.count) == SegmentedEnvelope.storedSize(plaintext: Int64(plaintext.count), layers: 1, segmentSize: segment))
        let reader = try DecryptingBlobReader(stored: MemoryReader(bytes: stored), keys: keys, size: Int64(plaintext.count), segmentSize: segment)
        #expect(try await readAll(reader) == plaintext)
    }

    /// The format as documented, written by an independent implementation (Python's `cryptography`,
    /// for the fuzz corpus): it opens here, whole and by range.
    @Test func objectsWrittenByAnotherImplementationOpen() async throws {
        let corpus = URL(fileURLWithPath: #filePath).deletingLastPathComponent().appendingPathComponent("../../Fuzz/corpus/envelope").standardized
        let one = try [UInt8](Data(contentsOf: corpus.appendingPathComponent("one-layer")))
        let keys = ObjectKeys(layers: [SymmetricKey(data: [UInt8](repeating: 7, count: 32))])
        let expected = Array(String(repeating: "wharf fuzz seed ", count: 5000).utf8)
        let reader = try DecryptingBlobReader(stored: MemoryReader(bytes: one), keys: keys, size: Int64(expected.count))
        #expect(try await readAll(reader) == expected)
        let ranged = try DecryptingBlobReader(stored: MemoryReader(bytes: one), keys: keys, size: Int64(expected.count))
        #expect(try await readAll(ranged, range: 65_000...70_000) == Array(expected[65_000...70_000]))
        let two = try [UInt8](Data(contentsOf: corpus.appendingPathComponent("two-layers")))
        let dual = ObjectKeys(layers: [SymmetricKey(data: [UInt8](repeating: 7, count: 32)), SymmetricKey(data: [UInt8](repeating: 9, count: 32))])
        let both = try DecryptingBlobReader(stored: MemoryReader(bytes: two), keys: dual, size: 70_000)
        #expect(try await readAll(both) == [UInt8](repeating: UInt8(ascii: "x"), count: 70_000))
    }

    @Test func domainsNameTheirObjectsApart() throws {
        let digest = "sha256:" + String(repeating: "ab", count: 32)
        let arn = "arn:aws:kms:us-east-1:123456789012:key/1234abcd-12ab-34cd-56ef-1234567890ab"
        let domains = [EncryptionDomain(kind: .aes256), EncryptionDomain(kind: .kms, kmsKey: arn), EncryptionDomain(kind: .kmsDSSE, kmsKey: arn)]
        let keys = Set(domains.map { $0.objectKey(for: digest) })
        #expect(keys.count == 3)
        #expect(!keys.contains(digest))
        for domain in domains { #expect(EncryptionDomain(identifier: domain.identifier) == domain) }
        #expect(EncryptionDomain(identifier: "KMS:") == nil)
        #expect(EncryptionDomain(identifier: "NONE") == nil)
        #expect(KMSKeyARN(arn)?.region == "us-east-1")
        #expect(KMSKeyARN("arn:aws:kms:us-east-1:123:key/x") == nil)
        #expect(KMSKeyARN("arn:aws:s3:us-east-1:123456789012:key/x") == nil)
        #expect(KMSKeyARN("arn:aws:kms:eu-west-1:123456789012:alias/registry")?.resource == "alias/registry")
    }
}
