import Access
import Foundation
import Registry

/// Changing a namespace's tag rules (which tags pushes may write), for every front end: validated,
/// written, in force on this node at once, and audited.
///
/// Permission (administering the namespace) is checked by the front end before this is called.
public struct NamespaceTagRuleChanges: Sendable {
    let book: TagRuleBook
    /// Nil when authentication is off.
    let audit: AuditLog?

    public init(book: TagRuleBook, audit: AuditLog?) {
        self.book = book
        self.audit = audit
    }

    public func set(_ rules: TagRules, of namespace: String, by requester: Requester) async throws {
        do {
            try await book.set(rules, for: namespace)
        } catch let error as TagRulesError {
            throw UseCaseError.invalid(error.description)
        }
        let encoder = JSONEncoder()
        encoder.outputFormatting = [.sortedKeys]
        let text = String(decoding: try encoder.encode(rules), as: UTF8.self)
        audit?.record(AuditEvent(actor: requester.identity, action: "tag-rules.set", namespace: namespace, source: requester.source, detail: text))
    }

    /// False (nothing audited) when the namespace had no rules.
    public func delete(of namespace: String, by requester: Requester) async throws -> Bool {
        guard try await book.delete(for: namespace) else { return false }
        audit?.record(AuditEvent(actor: requester.identity, action: "tag-rules.delete", namespace: namespace, source: requester.source))
        return true
    }
}
