import Foundation
import NIOCore
import Testing

@testable import OCI

@Suite("Digests")
struct DigestTests {
    @Test("known SHA-256 and SHA-512 vectors")
    func knownVectors() {
        #expect(Digest.of(Array("abc".utf8)).description == "sha256:ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad")
        #expect(
            Digest.of(Array("abc".utf8), algorithm: .sha512).description
                == "sha512:ddaf35a193617abacc417349ae20413112e6fa4e89a97ea20a9eeee64b55d39a2192992a274fc1a836ba3c23a3feebbd454d4423643ce80e2a9ac94fa54ca49f")
        #expect(Digest.ofEmpty(.sha256).description == "sha256:e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855")
        #expect(EmptyJSON.sha256.description == "sha256:44136fa355b3678a1146ad16f7e8649e94fb4fc21fe77e8310c060f61caaff8a")
    }

    @Test("incremental hashing equals one-shot hashing, whatever the chunking")
    func incremental() {
        let bytes = (0..<100_000).map { UInt8(truncatingIfNeeded: $0 &* 31) }
        for algorithm in DigestAlgorithm.allCases {
            var hasher = DigestHasher(algorithm)
            var index = 0
            var step = 1
            while index < bytes.count {
                let end = min(bytes.count, index + step)
                hasher.update(ByteBuffer(bytes: bytes[index..<end]))
                index = end
                step = step * 3 + 1
            }
            #expect(hasher.finalize() == Digest.of(bytes, algorithm: algorithm))
        }
    }

    @Test(
        "parsing accepts well-formed digests of supported algorithms",
        arguments: [
            "sha256:" + String(repeating: "a", count: 64),
            "sha256:0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef",
            "sha512:" + String(repeating: "f", count: 128),
        ])
    func parsesValid(_ string: String) throws {
        let digest = try Digest(parsing: string)
        #expect(digest.description == string)
    }

    @Test(
        "parsing rejects malformed digests with the right reason",
        arguments: [
            ("", "malformed"),
            ("sha256", "malformed"),
            ("sha256:", "malformed"),
            (":abc", "malformed"),
            ("SHA256:" + String(repeating: "a", count: 64), "malformed"),
            ("sha256:" + String(repeating: "A", count: 64), "encoding"),
            ("sha256:" + String(repeating: "a", count: 63), "encoding"),
            ("sha256:" + String(repeating: "g", count: 64), "encoding"),
            ("sha512:" + String(repeating: "a", count: 64), "encoding"),
            ("sha384:" + String(repeating: "a", count: 96), "unsupported"),
            ("blake3:abc", "unsupported"),
            ("sha256:abc/def", "malformed"),
            ("sha-:abc", "malformed"),
        ])
    func rejectsInvalid(_ string: String, _ reason: String) {
        do {
            _ = try Digest(parsing: string)
            Issue.record("accepted \(string)")
        } catch {
            switch (error, reason) {
            case (.malformed, "malformed"), (.invalidEncoding, "encoding"), (.unsupportedAlgorithm, "unsupported"): break
            default: Issue.record("\(string): got \(error), expected \(reason)")
            }
        }
    }

    @Test("digests round-trip through JSON and refuse invalid strings")
    func codable() throws {
        let digest = Digest.of(Array("x".utf8))
        let encoded = try JSONEncoder().encode([digest])
        #expect(try JSONDecoder().decode([Digest].self, from: encoded) == [digest])
        #expect(throws: DecodingError.self) { try JSONDecoder().decode([Digest].self, from: Data(#"["sha256:nothex"]"#.utf8)) }
    }
}
