import Access
import OCI
import Registry
import Scanning
import Signatures

/// Pulling a manifest, end to end, for every front end: `/v2`'s GET and HEAD and ECR's
/// BatchGetImage. The steps run in one order everywhere: resolve the reference, check the
/// client accepts the media type, ask the namespace's pull gate, and only then count the pull
/// (the last-pull time `sinceImagePulled` lifecycle rules read) and write it to the audit log.
/// A pull refused at any step is no pull.
///
/// Permission to pull the repository at all is checked by the front end before this is called
/// (bearer-token scopes on `/v2`, IAM policies on ECR).
public struct ManifestPulls: Sendable {
    let registry: Registry
    let pullGate: PullGate?
    /// Nil when authentication is off: nobody bypasses the gate and nothing is audited.
    let authorizer: Authorizer?
    let audit: AuditLog?
    /// Namespaces' signature policies (signed-only pulls), judged after the pull gate.
    let signatureGate: SignatureGate?

    public init(registry: Registry, pullGate: PullGate?, authorizer: Authorizer?, audit: AuditLog?, signatureGate: SignatureGate? = nil) {
        self.registry = registry
        self.pullGate = pullGate
        self.authorizer = authorizer
        self.audit = audit
        self.signatureGate = signatureGate
    }

    /// Why a manifest that exists was not served.
    public enum Refusal: Error, Equatable {
        /// The client's accepted media types do not include the manifest's; Wharf never converts.
        case notAcceptable(mediaType: String)
        /// The namespace's pull policy refuses the image (its scan found too much, or none exists yet).
        case gated(message: String, detail: String)
    }

    /// What the caller intends: a GET serves the bytes (gated, counted, audited); a HEAD only
    /// tells whether the manifest exists and what it is.
    public enum Purpose: Sendable {
        case serve
        case describe
    }

    /// The manifest `reference` names, if `requester` may have it now. Throws `RegistryError`
    /// (unknown manifest, invalid reference) or a `Refusal`.
    public func pull(
        _ reference: Reference, in repository: RepositoryName, by requester: Requester,
        accepting accepts: (String) -> Bool, purpose: Purpose = .serve
    ) async throws -> ServedManifest {
        let manifest = try await registry.manifest(reference, in: repository, recordPull: false)
        guard accepts(manifest.mediaType) else { throw Refusal.notAcceptable(mediaType: manifest.mediaType) }
        guard purpose == .serve else { return manifest }
        let content = Array(manifest.content.readableBytesView)
        let verdict = try await pullGate?.verdict(repository: repository, digest: manifest.digest, mediaType: manifest.mediaType, content: content)
        let signatures = try await signatureGate?.verdict(repository: repository, digest: manifest.digest, mediaType: manifest.mediaType, content: content)
        for case .some(let (message, detail)) in [verdict?.refusal, signatures?.refusal] {
            guard try await !(authorizer?.bypassesPullGate(requester.identity, on: repository) ?? false) else { break }
            audit?.record(
                AuditEvent(
                    actor: requester.identity, action: "pull", namespace: String(repository.namespace), repository: repository.value,
                    target: manifest.digest.description, result: .denied, source: requester.source, detail: detail))
            throw Refusal.gated(message: message, detail: detail)
        }
        if case .allowAudited(let detail) = signatures {
            // An audit-mode signature policy: served, and written down as a pull it would refuse.
            audit?.record(
                AuditEvent(
                    actor: requester.identity, action: "pull.unsigned", namespace: String(repository.namespace), repository: repository.value,
                    target: manifest.digest.description, result: .success, source: requester.source, detail: detail))
        }
        if try await !excludedFromPullTimes(requester) { registry.recordPull(manifest.digest, in: repository) }
        if case .allowByVEX(let detail) = verdict {
            // A pull the gate would refuse but for VEX statements: the audit log says which.
            audit?.record(
                AuditEvent(
                    actor: requester.identity, action: "pull", namespace: String(repository.namespace), repository: repository.value,
                    target: manifest.digest.description, result: .success, source: requester.source, detail: detail))
        } else {
            audit?.recordPull(
                by: requester.identity, repository: repository.value, namespace: String(repository.namespace),
                digest: manifest.digest.description, source: requester.source)
        }
        return manifest
    }
}

extension ManifestPulls {
    /// Pulls by principals on the registry's pull time update exclusion list (scanners,
    /// replicators) are served and audited but leave the image's last-pull time alone.
    func excludedFromPullTimes(_ requester: Requester) async throws -> Bool {
        guard let registryID = authorizer?.policies.registryID, let arn = requester.identity.principalARN(registryID: registryID) else { return false }
        return try await registry.settings.excludesFromPullTimes(arn)
    }
}

extension PullGate.Verdict {
    var refusal: (message: String, detail: String)? {
        if case .deny(let message, let detail) = self { return (message, detail) }
        return nil
    }
}

extension SignatureGate.Verdict {
    var refusal: (message: String, detail: String)? {
        if case .deny(let message, let detail) = self { return (message, detail) }
        return nil
    }
}
