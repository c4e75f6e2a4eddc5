import Access
import Lifecycle
import Metadata
import OCI

/// Changing a repository's settings, for every front end: ECR's PutImageTagMutability,
/// PutImageScanningConfiguration, PutLifecyclePolicy and DeleteLifecyclePolicy, and `/api/v1`'s
/// settings and lifecycle-policy routes. Each change is validated, written and audited here,
/// so the audit log shows it whichever API made it.
///
/// Permission (administering the repository) is checked by the front end before this is called.
public struct RepositorySettingsChanges: Sendable {
    let metadata: MetadataStore
    /// Nil when authentication is off.
    let audit: AuditLog?

    public init(metadata: MetadataStore, audit: AuditLog?) {
        self.metadata = metadata
        self.audit = audit
    }

    /// What to do when the repository does not exist yet. ECR refuses (RepositoryNotFoundException);
    /// the management API lets an administrator configure a repository before its first push.
    public enum Missing: Sendable {
        case refuse
        case create
    }

    public func setTagMutability(
        _ policy: TagMutabilityPolicy, of repository: RepositoryName, by requester: Requester,
        ifMissing missing: Missing
    ) async throws -> RepositorySettings {
        try await requireExisting(repository, missing)
        let settings: RepositorySettings
        do {
            settings = try await metadata.updateSettings(of: repository) { $0.tagMutability = policy }
        } catch let error as MetadataError {
            throw UseCaseError.invalid(error.description)
        }
        record("repository.settings", repository, requester, detail: AuditDetail.object(["tagMutability": policy.mode.rawValue]))
        return settings
    }

    public func setScanOnPush(
        _ scanOnPush: Bool, of repository: RepositoryName, by requester: Requester,
        ifMissing missing: Missing
    ) async throws -> RepositorySettings {
        try await requireExisting(repository, missing)
        let settings = try await metadata.updateSettings(of: repository) { $0.scanOnPush = scanOnPush }
        record("repository.settings", repository, requester, detail: AuditDetail.object(["scanOnPush": String(scanOnPush)]))
        return settings
    }

    /// Stores `text` after checking it is a lifecycle policy this registry can evaluate.
    public func setLifecyclePolicy(
        _ text: String, of repository: RepositoryName, by requester: Requester,
        ifMissing missing: Missing
    ) async throws -> RepositorySettings {
        try await requireExisting(repository, missing)
        try Self.validateLifecyclePolicy(text)
        let settings = try await metadata.updateSettings(of: repository) { $0.lifecyclePolicy = text }
        record("lifecycle.policy.set", repository, requester)
        return settings
    }

    /// Removes the repository's own lifecycle policy; returns the text it had, nil when it had none
    /// (then nothing is written or audited).
    @discardableResult
    public func deleteLifecyclePolicy(of repository: RepositoryName, by requester: Requester, ifMissing missing: Missing) async throws -> String? {
        guard let record = try await metadata.repositoryRecord(repository) else {
            if missing == .refuse { throw UseCaseError.repositoryNotFound(repository.value) }
            return nil
        }
        guard let text = record.settings.lifecyclePolicy else { return nil }
        _ = try await metadata.updateSettings(of: repository) { $0.lifecyclePolicy = nil }
        self.record("lifecycle.policy.delete", repository, requester)
        return text
    }

    /// Throws `UseCaseError.invalidLifecyclePolicy` with the parser's reason.
    public static func validateLifecyclePolicy(_ text: String) throws {
        do {
            _ = try LifecyclePolicy(parsing: text)
        } catch {
            throw UseCaseError.invalidLifecyclePolicy("\(error)")
        }
    }

    private func requireExisting(_ repository: RepositoryName, _ missing: Missing) async throws {
        guard missing == .refuse else { return }
        guard try await metadata.repositoryRecord(repository) != nil else { throw UseCaseError.repositoryNotFound(repository.value) }
    }

    private func record(_ action: String, _ repository: RepositoryName, _ requester: Requester, detail: String? = nil) {
        audit?.record(
            AuditEvent(
                actor: requester.identity, action: action, namespace: String(repository.namespace),
                repository: repository.value, source: requester.source, detail: detail))
    }
}
