import Crypto
import Foundation
import NIOCore
import OCI
import Registry
import Signatures
import Testing
import UseCases
import _CryptoExtras

/// Signed-only pulls (issue 17): cosign's key-based signatures, made here with swift-crypto the way
/// cosign makes them (a simple signing payload, its signature base64 in the layer annotation),
/// verified by the SignatureGate through ManifestPulls.
@Suite("Signatures and signed-only pulls")
struct SignatureTests {
    static func payload(for digest: OCI.Digest, reference: String = "registry.example/team/app") -> [UInt8] {
        Array(
            #"{"critical":{"identity":{"docker-reference":"\#(reference)"},"image":{"docker-manifest-digest":"\#(digest)"},"type":"cosign container image signature"},"optional":null}"#
                .utf8)
    }

    /// Pushes a cosign signature manifest for `image`: by tag (`sha256-<hex>.sig`) or as a referrer.
    static func pushSignature(
        _ fixture: Fixture, _ repository: RepositoryName, image: OCI.Digest, payload: [UInt8], signature: [UInt8], asReferrer: Bool = false
    ) async throws {
        let config = ByteBuffer(string: #"{"architecture":"","os":"","config":{},"rootfs":{"type":"layers","diff_ids":[]}}"#)
        let configDigest = OCI.Digest.of(Array(config.readableBytesView))
        let payloadDigest = OCI.Digest.of(payload)
        _ = try await fixture.registry.pushBlob([config].async, in: repository, digest: configDigest, length: Int64(config.readableBytes))
        _ = try await fixture.registry.pushBlob([ByteBuffer(bytes: payload)].async, in: repository, digest: payloadDigest, length: Int64(payload.count))
        let imageManifest = try #require(try await fixture.store.manifest(image, in: repository))
        let subject =
            asReferrer
            ? #","artifactType":"\#(CosignSignature.referrerArtifactType)","subject":{"mediaType":"\#(imageManifest.mediaType)","digest":"\#(image)","size":\#(imageManifest.content.readableBytes)}"#
            : ""
        let manifest = """
            {"schemaVersion":2,"mediaType":"\(MediaType.ociManifest)"\(subject),"config":{"mediaType":"application/vnd.oci.image.config.v1+json","digest":"\(configDigest)","size":\(config.readableBytes)},\
            "layers":[{"mediaType":"\(CosignSignature.payloadMediaType)","digest":"\(payloadDigest)","size":\(payload.count),\
            "annotations":{"\(CosignSignature.signatureAnnotation)":"\(Data(signature).base64EncodedString())"}}]}
            """
        let content = ByteBuffer(string: manifest)
        let reference: Reference = asReferrer ? .digest(OCI.Digest.of(Array(content.readableBytesView))) : .tag(Tag(CosignSignature.tag(for: image))!)
        _ = try await ManifestChanges(registry: fixture.registry, audit: nil, signatureGate: fixture.signatures)
            .push(content, contentType: MediaType.ociManifest, in: repository, reference: reference, by: alice)
    }

    @Test("every supported key kind verifies what it signed and nothing else")
    func keyKinds() throws {
        let message = Array("payload".utf8)
        let p256 = P256.Signing.PrivateKey(), p384 = P384.Signing.PrivateKey(), ed = Curve25519.Signing.PrivateKey()
        let rsa = try _RSA.Signing.PrivateKey(keySize: .bits2048)
        let cases: [(String, [UInt8])] = [
            (p256.publicKey.pemRepresentation, Array(try p256.signature(for: message).derRepresentation)),
            (p384.publicKey.pemRepresentation, Array(try p384.signature(for: SHA384.hash(data: message)).derRepresentation)),
            (ed.publicKey.pemRepresentation, Array(try ed.signature(for: message))),
            (rsa.publicKey.pemRepresentation, Array(try rsa.signature(for: message, padding: .insecurePKCS1v1_5).rawRepresentation)),
        ]
        for (pem, signature) in cases {
            let key = try VerificationKey(pem: pem)
            #expect(key.isValid(signature: signature, for: message), "\(key.kind)")
            #expect(!key.isValid(signature: signature, for: Array("tampered".utf8)), "\(key.kind)")
            #expect(!key.isValid(signature: Array(signature.dropLast()), for: message), "\(key.kind)")
        }
        #expect(throws: SignatureError.self) { try VerificationKey(pem: "-----BEGIN PUBLIC KEY-----\nAAAA\n-----END PUBLIC KEY-----\n") }
        let short = try _RSA.Signing.PrivateKey(unsafeKeySize: .init(bitCount: 1024))
        #expect(throws: SignatureError("RSA keys shorter than 2048 bits are refused")) { try VerificationKey(pem: short.publicKey.pemRepresentation) }
    }

    @Test("signed-only pulls: unsigned, wrongly keyed, other-digest and tampered signatures are refused with the reason; tag and referrer signatures pass")
    func gate() async throws {
        try await Fixture.with { fixture in
            let repository = RepositoryName("signed/app")!
            let image = try await fixture.pushImage(repository, tag: "v1")
            let other = try await fixture.pushImage(repository, tag: "v2")
            let trusted = P256.Signing.PrivateKey(), stranger = P256.Signing.PrivateKey()
            let policies = NamespaceSignaturePolicies(gate: fixture.signatures, audit: fixture.audit)
            await #expect(throws: UseCaseError.self) {
                try await policies.set(.init(mode: .enforce, keys: [.init(name: "ci", publicKey: "not a key")]), of: "signed", by: alice)
            }
            try await policies.set(.init(mode: .enforce, keys: [.init(name: "ci", publicKey: trusted.publicKey.pemRepresentation)]), of: "signed", by: alice)
            let pulls = ManifestPulls(registry: fixture.registry, pullGate: nil, authorizer: nil, audit: fixture.audit, signatureGate: fixture.signatures)
            func refusal(_ tag: String) async throws -> String? {
                do {
                    _ = try await pulls.pull(.tag(Tag(tag)!), in: repository, by: alice, accepting: { _ in true })
                    return nil
                } catch ManifestPulls.Refusal.gated(let message, _) { return message }
            }
            #expect(try await refusal("v1")?.contains("no cosign signature is attached") == true)
            // Nor are the unsigned image's layers served to whoever knows their digests.
            let stored = try #require(try await fixture.store.manifest(image, in: repository))
            let parsed = try ManifestParser.parse(Array(stored.content.readableBytesView), contentType: MediaType.ociManifest)
            let layer = try #require(parsed.layers.first?.digest)
            let blobs = BlobPulls(registry: fixture.registry, pullGate: nil, authorizer: nil, audit: nil, signatureGate: fixture.signatures)
            await #expect(throws: ManifestPulls.Refusal.self) { try await blobs.open(layer, in: repository, by: alice).close() }

            // A stranger's signature, then a trusted signature of the other image, then a tampered payload.
            try await Self.pushSignature(
                fixture, repository, image: image, payload: Self.payload(for: image),
                signature: Array(try stranger.signature(for: Self.payload(for: image)).derRepresentation))
            #expect(try await refusal("v1")?.contains("verifies with none of the policy's keys") == true)
            try await Self.pushSignature(
                fixture, repository, image: image, payload: Self.payload(for: other),
                signature: Array(try trusted.signature(for: Self.payload(for: other)).derRepresentation))
            #expect(try await refusal("v1")?.contains("is for \(other), not this image") == true)
            var tampered = Self.payload(for: image)
            let signature = Array(try trusted.signature(for: tampered).derRepresentation)
            tampered[tampered.count - 2] = UInt8(ascii: "1")  // "null" → "nu1l"
            try await Self.pushSignature(fixture, repository, image: image, payload: tampered, signature: signature)
            #expect(try await refusal("v1")?.contains("verifies with none of the policy's keys") == true)

            // A good signature by tag: served. The other image, signed as a referrer (cosign's OCI 1.1 mode): served.
            try await Self.pushSignature(
                fixture, repository, image: image, payload: Self.payload(for: image),
                signature: Array(try trusted.signature(for: Self.payload(for: image)).derRepresentation))
            #expect(try await refusal("v1") == nil)
            try await blobs.open(layer, in: repository, by: alice).close()
            #expect(try await refusal("v2") != nil)
            try await Self.pushSignature(
                fixture, repository, image: other, payload: Self.payload(for: other),
                signature: Array(try trusted.signature(for: Self.payload(for: other)).derRepresentation), asReferrer: true)
            #expect(try await refusal("v2") == nil)
            // The signatures themselves are never refused (they are not images).
            _ = try await pulls.pull(.tag(Tag(CosignSignature.tag(for: image))!), in: repository, by: alice, accepting: { _ in true })

            // Audit mode serves an unsigned image and writes it down.
            let unsigned = try await fixture.pushImage(repository, tag: "v3")
            try await policies.set(.init(mode: .audit, keys: [.init(name: "ci", publicKey: trusted.publicKey.pemRepresentation)]), of: "signed", by: alice)
            #expect(try await refusal("v3") == nil)
            let audited = try await fixture.auditEvents(action: "pull.unsigned")
            #expect(audited.map(\.target) == [unsigned.description])
            #expect(try await fixture.auditEvents(action: "signature-policy.set").count == 2)
            #expect(try await policies.delete(of: "signed", by: alice))
        }
    }
}
