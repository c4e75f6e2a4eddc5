import Foundation
import Metadata
import OCI
import Testing

/// Repository creation templates on both engines: the longest matching prefix shapes a repository
/// that a push creates; explicit creates and other uses (`PULL_THROUGH_CACHE` only) are untouched.
@Suite("Repository creation templates", .timeLimit(.minutes(1)))
struct CreationTemplateTests {
    @Test("the longest matching prefix applies to repositories created implicitly", arguments: Engine.available)
    func longestPrefix(engine: Engine) async throws {
        try await TestDatabases.withStore(engine) { store in
            func template(_ prefix: String, _ mode: TagMutabilityPolicy.Mode, appliedFor: [String] = ["CREATE_ON_PUSH"]) -> RepositoryCreationTemplate {
                RepositoryCreationTemplate(
                    prefix: prefix, description: nil, appliedFor: appliedFor,
                    settings: RepositorySettings(tagMutability: TagMutabilityPolicy(mode: mode, exclusions: []), lifecyclePolicy: "\(prefix) policy"),
                    resourceTags: [["owner", prefix]], customRoleArn: nil)
            }
            _ = try await store.createCreationTemplate(template("ROOT", .immutable))
            _ = try await store.createCreationTemplate(template("team/", .mutable))
            _ = try await store.createCreationTemplate(template("team/special/", .immutable, appliedFor: ["REPLICATION"]))
            _ = try await store.createCreationTemplate(template("cache/", .immutable, appliedFor: ["PULL_THROUGH_CACHE"]))
            await #expect(throws: MetadataError.self) { _ = try await store.createCreationTemplate(template("team/", .mutable)) }

            // updateSettings creates the repository as a push would.
            for (name, prefix) in [("team/app", "team/"), ("team/special/x", "team/special/"), ("other/app", "ROOT"), ("cache/app", "ROOT")] {
                let repository = try #require(RepositoryName(name))
                let settings = try await store.updateSettings(of: repository) { _ in }
                #expect(settings.lifecyclePolicy == "\(prefix) policy", "\(name)")
            }
            let explicit = try await store.createRepository(try #require(RepositoryName("team/explicit")), settings: RepositorySettings(), labels: [])
            #expect(explicit.settings.lifecyclePolicy == nil)

            let changed = try await store.updateCreationTemplate("team/") { $0.settings.lifecyclePolicy = "changed" }
            #expect(changed?.settings.lifecyclePolicy == "changed" && changed?.createdAt ?? 0 > 0)
            #expect(try await store.deleteCreationTemplate("team/")?.prefix == "team/")
            #expect(try await store.deleteCreationTemplate("team/") == nil)
            #expect(try await store.creationTemplates().map(\.prefix) == ["ROOT", "cache/", "team/special/"])
        }
    }
}
