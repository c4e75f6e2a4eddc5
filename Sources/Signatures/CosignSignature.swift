import Foundation
import OCI

/// cosign's signature format, key-based: a manifest whose layers are "simple signing" payloads
/// (`application/vnd.dev.cosign.simplesigning.v1+json`) each carrying its base64 signature in the
/// `dev.cosignproject.cosign/signature` annotation. It is found under the tag `sha256-<hex>.sig`
/// next to the image (cosign's default) or as a referrer of the image with artifactType
/// `application/vnd.dev.cosign.artifact.sig.v1+json` (cosign's OCI 1.1 mode).
public enum CosignSignature {
    public static let payloadMediaType = "application/vnd.dev.cosign.simplesigning.v1+json"
    public static let signatureAnnotation = "dev.cosignproject.cosign/signature"
    public static let referrerArtifactType = "application/vnd.dev.cosign.artifact.sig.v1+json"
    /// Payloads are a few hundred bytes; anything far larger is not one.
    public static let maximumPayloadSize: Int64 = 64 << 10

    /// The tag cosign writes an image's signatures under: `sha256:<hex>` → `sha256-<hex>.sig`.
    public static func tag(for digest: Digest) -> String {
        digest.description.replacingOccurrences(of: ":", with: "-") + ".sig"
    }

    /// The image a `sha256-<hex>.sig` tag belongs to, or nil for any other tag.
    public static func subject(ofTag tag: String) -> Digest? {
        guard tag.hasSuffix(".sig"), let dash = tag.firstIndex(of: "-") else { return nil }
        return Digest(String(tag[..<dash]) + ":" + String(tag[tag.index(after: dash)...].dropLast(4)))
    }

    /// One payload layer and its signature, as found in a signature manifest.
    public struct Candidate: Sendable, Equatable {
        public var payload: Descriptor
        public var signature: [UInt8]?
        /// The signature manifest it came from, for the verdict.
        public var manifest: Digest
    }

    public static func candidates(in manifest: ParsedManifest, digest: Digest) -> [Candidate] {
        manifest.layers.filter { $0.mediaType == payloadMediaType }.map { layer in
            Candidate(
                payload: layer, signature: layer.annotations?[signatureAnnotation].flatMap { Data(base64Encoded: $0) }.map { [UInt8]($0) },
                manifest: digest)
        }
    }

    /// The image digest a simple signing payload vouches for (`critical.image.docker-manifest-digest`),
    /// after checking it is one (`critical.type`).
    public static func signedDigest(payload: [UInt8]) throws(SignatureError) -> Digest {
        guard let object = try? JSONSerialization.jsonObject(with: Data(payload)) as? [String: Any],
            let critical = object["critical"] as? [String: Any]
        else { throw SignatureError("the payload is not a simple signing document (no `critical` object)") }
        guard let type = critical["type"] as? String, type.lowercased() == "cosign container image signature" else {
            throw SignatureError("the payload's critical.type is not 'cosign container image signature'")
        }
        guard let text = (critical["image"] as? [String: Any])?["docker-manifest-digest"] as? String, let digest = Digest(text) else {
            throw SignatureError("the payload names no critical.image.docker-manifest-digest")
        }
        return digest
    }
}
