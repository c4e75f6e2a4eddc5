import Access
import BlobStore
import OCI
import Registry
import Scanning
import Signatures

/// Pulling a blob, for every front end: `/v2`'s blob GET and ECR's GetDownloadUrlForLayer. In a
/// namespace with a pull policy, a layer or config is served only if at least one image of the
/// repository that uses it passes the gate: refusing an image's manifest while serving its layers
/// to anyone who knows their digests would gate nothing. A blob no image uses yet (just pushed) is
/// served; HEAD requests are not gated, as for manifests.
///
/// Permission to pull the repository is checked by the front end first.
public struct BlobPulls: Sendable {
    let registry: Registry
    let pullGate: PullGate?
    /// Nil when authentication is off: nobody bypasses the gate and nothing is audited.
    let authorizer: Authorizer?
    let audit: AuditLog?
    /// How many of the newest images using the blob are judged before it is refused.
    static let imagesJudged = 200

    /// Namespaces' signature policies: an image must pass both gates for its blobs to be served.
    let signatureGate: SignatureGate?

    public init(registry: Registry, pullGate: PullGate?, authorizer: Authorizer?, audit: AuditLog?, signatureGate: SignatureGate? = nil) {
        self.registry = registry
        self.pullGate = pullGate
        self.authorizer = authorizer
        self.audit = audit
        self.signatureGate = signatureGate
    }

    /// Throws `ManifestPulls.Refusal.gated` when every image using the blob is refused.
    public func checkGate(_ digest: Digest, in repository: RepositoryName, by requester: Requester) async throws {
        let namespace = String(repository.namespace)
        let scanPolicy = try await pullGate?.policy(for: namespace)
        let signaturePolicy = try await signatureGate?.policy(for: namespace)
        guard scanPolicy != nil || signaturePolicy?.mode == .enforce else { return }
        let images = try await registry.metadata.manifests(using: digest, in: repository, limit: Self.imagesJudged)
        guard !images.isEmpty else { return }
        var refusal: (message: String, detail: String)?
        for image in images {
            let content = Array(try await registry.openManifest(image.content, sealedWith: image.sealedWith, in: repository).readableBytesView)
            let scans = try await pullGate?.verdict(repository: repository, digest: image.digest, mediaType: image.mediaType, content: content)
            let signatures = try await signatureGate?.verdict(repository: repository, digest: image.digest, mediaType: image.mediaType, content: content)
            guard let refused = scans?.refusal ?? signatures?.refusal else { return }  // this image passes both gates
            refusal = refusal ?? refused
        }
        guard let refusal, try await !(authorizer?.bypassesPullGate(requester.identity, on: repository) ?? false) else { return }
        audit?.record(
            AuditEvent(
                actor: requester.identity, action: "pull", namespace: String(repository.namespace), repository: repository.value,
                target: digest.description, result: .denied, source: requester.source, detail: refusal.detail))
        throw ManifestPulls.Refusal.gated(
            message: "blob \(digest) belongs only to images the pull gate refuses: \(refusal.message)", detail: refusal.detail)
    }

    /// The blob opened for streaming, once the gate allows it.
    public func open(_ digest: Digest, in repository: RepositoryName, by requester: Requester) async throws -> any BlobReader {
        try await checkGate(digest, in: repository, by: requester)
        return try await registry.openBlob(digest, in: repository)
    }
}
