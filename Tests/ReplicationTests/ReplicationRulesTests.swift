import Metadata
import OCI
import Replication
import Testing

@Suite("Replication rules and challenges")
struct ReplicationRulesTests {
    @Test("WWW-Authenticate challenges of Wharf, Distribution and Docker Hub parse; malformed ones are nil")
    func challenges() throws {
        let wharf = try #require(AuthChallenge.parse(#"Bearer realm="http://127.0.0.1:5000/auth/token",service="wharf",scope="repository:a/b:pull,push""#))
        #expect(wharf.scheme == "bearer" && wharf.realm == "http://127.0.0.1:5000/auth/token" && wharf.service == "wharf")
        #expect(wharf.scope == "repository:a/b:pull,push")
        let basic = try #require(AuthChallenge.parse(#"Basic realm="e2e""#))
        #expect(basic.scheme == "basic" && basic.realm == "e2e")
        let spaced = try #require(AuthChallenge.parse(#"  bearer  Realm = "x\"y" , error=insufficient_scope"#))
        #expect(spaced.realm == #"x"y"# && spaced.parameters["error"] == "insufficient_scope")
        // Only the first of several challenges is read.
        let first = try #require(AuthChallenge.parse(#"Bearer realm="r", Basic realm="b""#))
        #expect(first.scheme == "bearer" && first.realm == "r")
        #expect(AuthChallenge.parse(#"Bearer realm="unterminated"#) == nil)
        #expect(AuthChallenge.parse("") == nil)
        #expect(AuthChallenge.parse("Bearer realm=\"" + String(repeating: "a", count: 9000) + "\"") == nil)
        #expect(AuthChallenge.parse("Bearer " + (0..<40).map { "p\($0)=v" }.joined(separator: ",")) == nil)
        #expect(AuthChallenge.parse("Bé realm=x") == nil)
    }

    static let configuration = """
        {"rules":[
          {"destinations":[{"region":"eu-west-1","registryId":"123456789012"},{"region":"us-east-1","registryId":"123456789012"}],
           "repositoryFilters":[{"filter":"team","filterType":"PREFIX_MATCH"},{"filter":"prod/","filterType":"PREFIX_MATCH"}]},
          {"destinations":[{"region":"eu-west-1","registryId":"123456789012"},{"region":"sa-east-1","registryId":"123456789012"}]}
        ]}
        """

    @Test("rules pick destinations by prefix, each once; a target that is this registry is skipped; unknown regions are named")
    func rulesAndDirectory() throws {
        let rules = try #require(ReplicationRules(json: Self.configuration))
        #expect(rules.targets(for: "team/app").map(\.region) == ["eu-west-1", "us-east-1", "sa-east-1"])
        #expect(rules.targets(for: "other/app").map(\.region) == ["eu-west-1", "sa-east-1"])
        #expect(ReplicationRules(json: "[]") == nil && ReplicationRules(json: "{}") == nil)
        #expect(ReplicationRules(json: #"{"rules":[]}"#)?.isEmpty == true)

        let directory = ReplicationDirectory(
            destinations: [
                ReplicationDestination(name: "eu", region: "eu-west-1", registryID: nil, url: "http://127.0.0.1:1", credentials: .none),
                ReplicationDestination(name: "hub", region: nil, registryID: nil, url: "https://registry.example", credentials: .bearer("t")),
            ], ownRegion: "us-east-1", ownRegistryID: "123456789012")
        let push = RegistryEvent(kind: .push, repository: "team/app", digest: "sha256:aa", tag: "v1", actor: nil, occurredAt: 1)
        let policy = ReplicationPolicy(ecr: rules, rules: [])
        #expect(directory.plan(push, under: policy).map(\.destination) == ["eu", "unconfigured:sa-east-1:123456789012"])
        for kind in [RegistryEvent.Kind.delete, .scan, .alert] {
            #expect(directory.plan(RegistryEvent(kind: kind, repository: "team/app", digest: "sha256:aa", actor: nil, occurredAt: 1), under: policy).isEmpty)
        }
        var tagMove = push
        tagMove.kind = .tagMove
        #expect(directory.plan(tagMove, under: policy).count == 2)
        #expect(directory.target(ofDestination: "eu") == .init(region: "eu-west-1", registryID: "123456789012"))
        #expect(directory.target(ofDestination: "unconfigured:sa-east-1:123456789012") == .init(region: "sa-east-1", registryID: "123456789012"))
        #expect(directory.target(ofDestination: "hub") == nil && directory.target(ofDestination: "nothing") == nil)
        // Without a configured region no target is taken for the source itself.
        let regionless = ReplicationDirectory(destinations: [], ownRegion: nil, ownRegistryID: "123456789012")
        #expect(regionless.plan(push, under: policy).count == 3)
    }

    @Test("Wharf's rules: repository and tag patterns, a name prefix, deletions when asked, manual rules only when run")
    func wharfRules() {
        let directory = ReplicationDirectory(destinations: [], ownRegion: nil, ownRegistryID: "123456789012")
        let mirror = ReplicationRuleRecord(
            name: "mirror", repositories: ["apps/*"], tags: ["v*", "stable"], destinations: ["eu"], propagateDeletes: true, destinationPrefix: "dr/")
        let plain = ReplicationRuleRecord(name: "plain", repositories: ["apps/web"], destinations: ["ap"])
        let manual = ReplicationRuleRecord(name: "manual", repositories: ["*"], destinations: ["far"], trigger: .manual)
        var disabled = ReplicationRuleRecord(name: "off", repositories: ["*"], destinations: ["off"])
        disabled.enabled = false
        let policy = ReplicationPolicy(ecr: .none, rules: [mirror, plain, manual, disabled])
        func plan(_ kind: RegistryEvent.Kind, _ repository: String, tag: String?) -> [PlannedReplication] {
            directory.plan(RegistryEvent(kind: kind, repository: repository, digest: "sha256:aa", tag: tag, actor: nil, occurredAt: 1), under: policy)
        }
        #expect(
            plan(.push, "apps/web", tag: "v1.2") == [
                PlannedReplication(destination: "eu", targetRepository: "dr/apps/web"), PlannedReplication(destination: "ap"),
            ])
        #expect(plan(.push, "apps/web", tag: "dev") == [PlannedReplication(destination: "ap")])
        #expect(plan(.tagMove, "apps/api", tag: "stable") == [PlannedReplication(destination: "eu", targetRepository: "dr/apps/api")])
        // A digest-only push (a referrer) goes only where no tag filter applies; it travels with its image otherwise.
        #expect(plan(.push, "apps/web", tag: nil) == [PlannedReplication(destination: "ap")])
        // Deletions follow only where asked: an image's, and a tag's that passes the filter.
        #expect(plan(.delete, "apps/web", tag: nil) == [PlannedReplication(destination: "eu", targetRepository: "dr/apps/web", action: .delete)])
        #expect(plan(.delete, "apps/web", tag: "v1") == [PlannedReplication(destination: "eu", targetRepository: "dr/apps/web", action: .delete)])
        #expect(plan(.delete, "apps/web", tag: "dev").isEmpty)
        #expect(plan(.push, "other/x", tag: "v1").isEmpty)
        // The manual rule is a route only when rules are run by hand.
        #expect(directory.routes(for: "other/x", under: policy, includingManual: true).map(\.destination) == ["far"])
        // Two routes to the same place merge: the wider tag filter wins.
        let both = ReplicationPolicy(
            ecr: .none, rules: [mirror, ReplicationRuleRecord(name: "all", repositories: ["apps/*"], destinations: ["eu"], destinationPrefix: "dr/")])
        #expect(
            directory.routes(for: "apps/web", under: both) == [
                ReplicationRoute(destination: "eu", targetRepository: "dr/apps/web", tags: [], propagateDeletes: true)
            ])
    }
}
