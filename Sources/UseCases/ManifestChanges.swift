import Access
import NIOCore
import OCI
import Registry
import Scanning
import Signatures

/// Pushing and deleting manifests, for every front end: `/v2`'s `PUT` and `DELETE
/// …/manifests/<reference>`, ECR's PutImage and BatchDeleteImage. The registry validates and
/// commits; this adds what follows every commit, once: the audit event (`push` with the digest,
/// `delete`), and is where the coming replication and webhook events attach.
///
/// Permission (push, delete) is checked by the front end first.
public struct ManifestChanges: Sendable {
    let registry: Registry
    /// Nil when authentication is off.
    let audit: AuditLog?
    /// Told when referrers come and go: a VEX document attached to an image changes its verdict.
    let pullGate: PullGate?
    /// Told when signatures come and go (a `sha256-<hex>.sig` tag or a referrer).
    let signatureGate: SignatureGate?

    public init(registry: Registry, audit: AuditLog?, pullGate: PullGate? = nil, signatureGate: SignatureGate? = nil) {
        self.registry = registry
        self.audit = audit
        self.pullGate = pullGate
        self.signatureGate = signatureGate
    }

    /// Stores `content` under `reference` (a tag, or its own digest) plus `extraTags`.
    public func push(
        _ content: ByteBuffer, contentType: String?, in repository: RepositoryName, reference: Reference,
        extraTags: [Tag] = [], by requester: Requester
    ) async throws -> PushedManifest {
        let pushed = try await registry.putManifest(
            content, contentType: contentType, in: repository, reference: reference, extraTags: extraTags, actor: requester.actorName)
        if let subject = pushed.subject {
            pullGate?.referrersChanged(of: subject, in: repository)
            signatureGate?.signaturesChanged(of: subject, in: repository)
        }
        for tag in pushed.tags {
            if let signed = CosignSignature.subject(ofTag: tag) { signatureGate?.signaturesChanged(of: signed, in: repository) }
        }
        record("push", repository, reference, requester, detail: AuditDetail.object(["digest": pushed.digest.description]))
        return pushed
    }

    /// A digest removes the manifest and every tag on it; a tag removes that tag only.
    public func delete(_ reference: Reference, in repository: RepositoryName, by requester: Requester) async throws {
        try await registry.deleteManifest(reference, in: repository, actor: requester.actorName)
        // Which image a deleted referrer was attached to is no longer known: judge every image afresh.
        pullGate?.referrersChanged(of: nil, in: repository)
        signatureGate?.signaturesChanged(of: nil, in: repository)
        record("delete", repository, reference, requester)
    }

    private func record(_ action: String, _ repository: RepositoryName, _ reference: Reference, _ requester: Requester, detail: String? = nil) {
        audit?.record(
            AuditEvent(
                actor: requester.identity, action: action, namespace: String(repository.namespace), repository: repository.value,
                target: reference.description, source: requester.source, detail: detail))
    }
}
