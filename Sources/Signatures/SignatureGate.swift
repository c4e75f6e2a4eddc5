import Foundation
import Metadata
import NIOCore
import OCI
import Registry

/// Enforces namespaces' signature policies on pulls of container images (indexes are judged
/// platform by platform; signatures, SBOMs and other artifacts always pass). Verdicts are
/// computed once per image and kept until a signature of it is pushed or deleted, or the policy
/// changes, so the pull path costs a dictionary lookup.
public final class SignatureGate: Sendable {
    public enum Verdict: Sendable, Equatable {
        case allow
        /// An audit-mode policy would refuse the image: it is served and the detail audited.
        case allowAudited(detail: String)
        case deny(message: String, detail: String)
    }

    /// What the signatures of one image come to under one policy.
    public enum ImageVerdict: Sendable, Equatable, Codable {
        case verified(key: String, signature: String)
        case unverified(reason: String)
    }

    static let settingPrefix = "signature_policy:"
    let registry: Registry
    private let policies = TTLCache<String, SignaturePolicy?>(timeToLive: .seconds(5))
    private let verdicts = TTLCache<String, ImageVerdict>(timeToLive: .seconds(600))

    public init(registry: Registry) { self.registry = registry }

    public func policy(for namespace: String) async throws -> SignaturePolicy? {
        if let cached = policies.get(namespace) { return cached }
        let policy = try await registry.metadata.registrySetting(Self.settingPrefix + namespace).flatMap {
            try? JSONDecoder().decode(SignaturePolicy.self, from: Data($0.utf8))
        }
        policies.set(namespace, policy)
        return policy
    }

    public func setPolicy(_ policy: SignaturePolicy, for namespace: String) async throws {
        _ = try policy.verificationKeys()
        let encoder = JSONEncoder()
        encoder.outputFormatting = [.sortedKeys, .withoutEscapingSlashes]
        try await registry.metadata.putRegistrySetting(Self.settingPrefix + namespace, String(decoding: try encoder.encode(policy), as: UTF8.self))
        policies.set(namespace, policy)
        verdicts.removeAll()
    }

    @discardableResult
    public func deletePolicy(for namespace: String) async throws -> Bool {
        defer {
            policies.set(namespace, nil)
            verdicts.removeAll()
        }
        return try await registry.metadata.deleteRegistrySetting(Self.settingPrefix + namespace)
    }

    public func forget(namespace: String) {
        policies.remove(namespace)
        verdicts.removeAll()
    }

    /// A signature of `subject` (of any image when nil) was pushed or deleted.
    public func signaturesChanged(of subject: Digest?, in repository: RepositoryName) {
        if let subject { verdicts.remove("\(repository.value)@\(subject)") } else { verdicts.removeAll() }
    }

    /// The verdict on pulling `manifest` from `repository`.
    public func verdict(repository: RepositoryName, digest: Digest, mediaType: String, content: [UInt8]) async throws -> Verdict {
        let namespace = String(repository.namespace)
        guard let policy = try await policy(for: namespace) else { return .allow }
        guard MediaType.imageManifests.contains(mediaType), let manifest = try? ManifestParser.parse(content, contentType: mediaType),
            manifest.isRunnableImage
        else { return .allow }
        let judged = try await imageVerdict(digest, in: repository, policy: policy)
        guard case .unverified(let reason) = judged else { return .allow }
        let detail = Self.detail(namespace: namespace, mode: policy.mode, reason: reason)
        switch policy.mode {
        case .audit: return .allowAudited(detail: detail)
        case .enforce:
            return .deny(
                message: "\(repository)@\(digest) has no signature the signature policy of namespace '\(namespace)' accepts: \(reason)",
                detail: detail)
        }
    }

    /// The image's signatures judged under `policy` (cached).
    public func imageVerdict(_ digest: Digest, in repository: RepositoryName, policy: SignaturePolicy) async throws -> ImageVerdict {
        let key = "\(repository.value)@\(digest)"
        if let cached = verdicts.get(key) { return cached }
        let verdict = try await judge(digest, in: repository, keys: policy.verificationKeys())
        verdicts.set(key, verdict)
        return verdict
    }

    func judge(_ digest: Digest, in repository: RepositoryName, keys: [(name: String, key: VerificationKey)]) async throws -> ImageVerdict {
        var manifests: [Digest] = []
        if let tag = Tag(CosignSignature.tag(for: digest)),
            let tagged = try? await registry.manifest(.tag(tag), in: repository, recordPull: false)
        {
            manifests.append(tagged.digest)
        }
        manifests += try await registry.referrers(of: digest, in: repository, artifactType: CosignSignature.referrerArtifactType).map(\.digest)
        guard !manifests.isEmpty else {
            return .unverified(reason: "no cosign signature is attached (no \(CosignSignature.tag(for: digest)) tag, no signature referrer)")
        }
        var reasons: [String] = []
        for signatureDigest in manifests.prefix(20) {
            let stored = try await registry.manifest(.digest(signatureDigest), in: repository, recordPull: false)
            guard let parsed = try? ManifestParser.parse(Array(stored.content.readableBytesView), contentType: stored.mediaType) else {
                reasons.append("\(signatureDigest) is not a manifest")
                continue
            }
            for candidate in CosignSignature.candidates(in: parsed, digest: signatureDigest).prefix(50) {
                guard let signature = candidate.signature else {
                    reasons.append("a payload of \(signatureDigest) has no readable signature annotation")
                    continue
                }
                guard candidate.payload.size <= CosignSignature.maximumPayloadSize,
                    let payload = try? await read(candidate.payload.digest, in: repository, size: candidate.payload.size)
                else {
                    reasons.append("a payload of \(signatureDigest) is missing or too large")
                    continue
                }
                guard let key = keys.first(where: { $0.key.isValid(signature: signature, for: payload) }) else {
                    reasons.append("a signature in \(signatureDigest) verifies with none of the policy's keys")
                    continue
                }
                // Verified bytes, so what they say can be believed: they must name this image.
                do {
                    let signed = try CosignSignature.signedDigest(payload: payload)
                    guard signed == digest else {
                        reasons.append("a signature by '\(key.name)' in \(signatureDigest) is for \(signed), not this image")
                        continue
                    }
                } catch {
                    reasons.append("a signature by '\(key.name)' in \(signatureDigest): \(error.description)")
                    continue
                }
                return .verified(key: key.name, signature: signatureDigest.description)
            }
        }
        return .unverified(reason: reasons.isEmpty ? "the signature manifests hold no simple signing payload" : reasons.joined(separator: "; "))
    }

    private func read(_ digest: Digest, in repository: RepositoryName, size: Int64) async throws -> [UInt8] {
        let reader = try await registry.openBlob(digest, in: repository)
        var bytes: [UInt8] = []
        try await reader.stream(range: nil) { chunk in
            guard bytes.count + chunk.readableBytes <= Int(CosignSignature.maximumPayloadSize) else { throw SignatureError("payload too large") }
            bytes += chunk.readableBytesView
        }
        return bytes
    }

    static func detail(namespace: String, mode: SignaturePolicy.Mode, reason: String) -> String {
        struct Detail: Encodable {
            var policy: String
            var mode: String
            var reason: String
        }
        let encoder = JSONEncoder()
        encoder.outputFormatting = [.sortedKeys, .withoutEscapingSlashes]
        let detail = Detail(policy: "signature:\(namespace)", mode: mode.rawValue, reason: reason)
        return String(decoding: (try? encoder.encode(detail)) ?? Data(), as: UTF8.self)
    }
}
