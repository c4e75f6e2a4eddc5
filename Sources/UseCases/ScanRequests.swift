import Access
import OCI
import Scanning

/// Asking for a vulnerability and secret scan of an image, for every front end: ECR's
/// StartImageScan and `/api/v1`'s `POST …/scan`. Queues the scan (or refuses a rescan that would
/// find the same, as `RescanRefused`) and audits the request as `scan.request` either way it came.
///
/// Permission (push, or administration for `force`) is checked by the front end first.
public struct ScanRequests: Sendable {
    let scans: ImageScanService
    /// Nil when authentication is off.
    let audit: AuditLog?

    public init(scans: ImageScanService, audit: AuditLog?) {
        self.scans = scans
        self.audit = audit
    }

    /// Queues a scan of `digest` as stored in `repository`. `force` skips the rescan limit.
    public func request(_ digest: Digest, in repository: RepositoryName, force: Bool = false, by requester: Requester) async throws {
        try await scans.enqueue(digest, in: repository, force: force)
        audit?.record(
            AuditEvent(
                actor: requester.identity, action: "scan.request", namespace: String(repository.namespace),
                repository: repository.value, target: digest.description, source: requester.source,
                detail: force ? AuditDetail.object(["force": "true"]) : nil))
    }
}
