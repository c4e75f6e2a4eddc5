import Access
import Foundation
import Scanner
import Scanning

/// Changing what a namespace's scan results mean, for every front end (the management API
/// today, the console next): the pull policy (which findings refuse a pull) and the VEX
/// documents (which findings do not count). Each change is validated, written, made visible to
/// the pull gate at once (its caches dropped) and audited here.
///
/// Permission (administering the namespace) is checked by the front end before this is called.
public struct NamespaceScanPolicies: Sendable {
    let gate: PullGate
    let vex: VEXStore
    /// Nil when authentication is off.
    let audit: AuditLog?

    public init(gate: PullGate, vex: VEXStore, audit: AuditLog?) {
        self.gate = gate
        self.vex = vex
        self.audit = audit
    }

    /// Stores the pull policy after checking it blocks something meaningful.
    public func setPullPolicy(_ policy: PullPolicy, of namespace: String, by requester: Requester) async throws {
        do {
            try await gate.setPolicy(policy, for: namespace)
        } catch let error as PullPolicyError {
            throw UseCaseError.invalid(error.description)
        }
        let text = String(decoding: try PullPolicy.encoder().encode(policy), as: UTF8.self)
        record("pull-policy.set", namespace, requester, detail: text)
    }

    /// Removes the pull policy; false (nothing audited) when there was none.
    public func deletePullPolicy(of namespace: String, by requester: Requester) async throws -> Bool {
        guard try await gate.deletePolicy(for: namespace) else { return false }
        record("pull-policy.delete", namespace, requester)
        return true
    }

    /// Stores or replaces a VEX document after reading every statement in it.
    public func putVEX(_ bytes: [UInt8], named name: String, in namespace: String, by requester: Requester) async throws -> VEXStore.NamespaceDocument {
        let stored: VEXStore.NamespaceDocument
        do {
            stored = try await vex.put(bytes, named: name, in: namespace, by: requester.identity.name)
        } catch let error as VEXError {
            throw UseCaseError.invalid(error.description)
        }
        gate.forgetScans()
        record("vex.set", namespace, requester, target: name, detail: AuditDetail.object(["statements": String(stored.statements)]))
        return stored
    }

    /// Removes a VEX document; false (nothing audited) when there was none of that name.
    public func deleteVEX(named name: String, in namespace: String, by requester: Requester) async throws -> Bool {
        guard try await vex.delete(named: name, in: namespace) else { return false }
        gate.forgetScans()
        record("vex.delete", namespace, requester, target: name)
        return true
    }

    private func record(_ action: String, _ namespace: String, _ requester: Requester, target: String? = nil, detail: String? = nil) {
        audit?.record(AuditEvent(actor: requester.identity, action: action, namespace: namespace, target: target, source: requester.source, detail: detail))
    }
}
