import Access
import Foundation
import Signatures

/// Changing a namespace's signature policy (signed-only pulls), for every front end: validated
/// (every key must parse), written, in force at once, and audited with the key names.
///
/// Permission (administering the namespace) is checked by the front end before this is called.
public struct NamespaceSignaturePolicies: Sendable {
    let gate: SignatureGate
    /// Nil when authentication is off.
    let audit: AuditLog?

    public init(gate: SignatureGate, audit: AuditLog?) {
        self.gate = gate
        self.audit = audit
    }

    public func set(_ policy: SignaturePolicy, of namespace: String, by requester: Requester) async throws {
        do {
            try await gate.setPolicy(policy, for: namespace)
        } catch let error as SignatureError {
            throw UseCaseError.invalid(error.description)
        }
        let detail = AuditDetail.object(["mode": policy.mode.rawValue, "keys": policy.keys.map(\.name).joined(separator: ",")])
        audit?.record(AuditEvent(actor: requester.identity, action: "signature-policy.set", namespace: namespace, source: requester.source, detail: detail))
    }

    /// False (nothing audited) when the namespace had none.
    public func delete(of namespace: String, by requester: Requester) async throws -> Bool {
        guard try await gate.deletePolicy(for: namespace) else { return false }
        audit?.record(AuditEvent(actor: requester.identity, action: "signature-policy.delete", namespace: namespace, source: requester.source))
        return true
    }
}
