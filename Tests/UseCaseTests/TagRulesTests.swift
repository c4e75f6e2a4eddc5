import Foundation
import OCI
import Registry
import Testing
import UseCases

/// Deployment rules for tags (issue 17): deny patterns, required patterns, SemVer, enforced on
/// every push that names a tag, whichever front end makes it.
@Suite("Tag rules")
struct TagRulesTests {
    @Test("deny wins, require needs one match, semver is SemVer 2.0 without build metadata")
    func refusals() throws {
        let rules = TagRules(deny: ["latest", "dev-*"], require: ["semver", "release-*"])
        #expect(rules.refusal(of: "latest") == "'latest' is denied")
        #expect(rules.refusal(of: "dev-2026") == "'dev-*' is denied")
        #expect(rules.refusal(of: "nightly") == "tags must match 'semver' or 'release-*'")
        for allowed in ["1.2.3", "v1.2.3", "0.0.0", "1.2.3-rc.1", "1.2.3-alpha-2.0", "release-7"] {
            #expect(rules.refusal(of: allowed) == nil, "\(allowed)")
        }
        for refused in ["1.2", "1.2.3.4", "01.2.3", "1.02.3", "1.2.3-", "1.2.3-01", "1.2.3-a..b", "V1.2.3", "x1.2.3"] {
            #expect(rules.refusal(of: refused) != nil, "\(refused)")
        }
        #expect(throws: TagRulesError.self) { try TagRules().validate() }
        #expect(throws: TagRulesError.self) { try TagRules(deny: ["bad tag"]).validate() }
        #expect(throws: TagRulesError.self) { try TagRules(deny: ["(a+)+$"]).validate() }
        #expect(throws: TagRulesError.self) { try TagRules(require: Array(repeating: "x", count: 51)).validate() }
        try TagRules(deny: ["latest"]).validate()
    }

    @Test("a refused tag is DENIED before anything is stored; pushes by digest and other namespaces pass; changes are audited")
    func enforcedOnPush() async throws {
        try await Fixture.with { fixture in
            let changes = NamespaceTagRuleChanges(book: fixture.registry.tagRules, audit: fixture.audit)
            try await changes.set(TagRules(deny: ["latest"], require: ["semver"]), of: "prod", by: alice)
            let repository = RepositoryName("prod/api")!
            do {
                _ = try await fixture.pushImage(repository, tag: "latest")
                Issue.record("a push of 'latest' was accepted although the namespace denies it")
            } catch let error as RegistryError {
                #expect(error.code == .denied && error.status == 403)
                #expect(error.message == "tag 'latest' is refused by the tag rules of namespace 'prod': 'latest' is denied")
            }
            #expect((try await fixture.store.listTags(in: repository, after: nil, limit: 10) ?? []).isEmpty)
            _ = try await fixture.pushImage(repository, tag: "1.4.0")
            _ = try await fixture.pushImage(RepositoryName("dev/api")!, tag: "latest")
            await #expect(throws: UseCaseError.invalid("the rules refuse nothing: give deny or require patterns, or delete the rules")) {
                try await changes.set(TagRules(), of: "prod", by: alice)
            }
            #expect(try await changes.delete(of: "prod", by: alice))
            #expect(try await changes.delete(of: "prod", by: alice) == false)
            _ = try await fixture.pushImage(repository, tag: "latest")
            #expect(try await fixture.auditEvents(action: "tag-rules.set").count == 1)
            #expect(try await fixture.auditEvents(action: "tag-rules.delete").count == 1)
        }
    }
}
