import OCI
import Testing

@testable import Lifecycle

private let day: Int64 = 86_400_000
private let now: Int64 = 1_800_000_000_000

private func image(_ name: String, _ tags: [String], daysAgo: Int64, pulledDaysAgo: Int64? = nil) -> LifecycleImage {
    LifecycleImage(digest: name, tags: tags, pushedAt: now - daysAgo * day, lastPulledAt: pulledDaysAgo.map { now - $0 * day })
}

private func expired(_ policy: String, _ images: [LifecycleImage]) throws -> [String] {
    LifecycleEvaluator.evaluate(try LifecyclePolicy(parsing: policy), images: images, now: now).map(\.image.digest)
}

private func rule(_ priority: Int, _ selection: String) -> String {
    #"{"rulePriority":\#(priority),"description":"Rule \#(priority)","selection":{\#(selection)},"action":{"type":"expire"}}"#
}

private func policy(_ rules: String...) -> String { #"{"rules":[\#(rules.joined(separator: ","))]}"# }

@Suite("Lifecycle policies: the ECR User Guide's worked examples")
struct ECRExampleTests {
    /// "Filtering on multiple rules", repository contents shared by examples A and B.
    let multipleRulesRepository = [
        image("A", ["beta-1", "prod-1"], daysAgo: 10),
        image("B", ["beta-2", "prod-2"], daysAgo: 9),
        image("C", ["beta-3"], daysAgo: 8),
    ]

    @Test("multiple rules, example A: prod first, then beta → A is expired")
    func multipleRulesA() throws {
        let text = policy(
            rule(1, #""tagStatus":"tagged","tagPrefixList":["prod"],"countType":"imageCountMoreThan","countNumber":1"#),
            rule(2, #""tagStatus":"tagged","tagPrefixList":["beta"],"countType":"imageCountMoreThan","countNumber":1"#)
        )
        #expect(try expired(text, multipleRulesRepository) == ["A"])
    }

    @Test("multiple rules, example B: beta first, then prod → A and B are expired")
    func multipleRulesB() throws {
        let text = policy(
            rule(1, #""tagStatus":"tagged","tagPrefixList":["beta"],"countType":"imageCountMoreThan","countNumber":1"#),
            rule(2, #""tagStatus":"tagged","tagPrefixList":["prod"],"countType":"imageCountMoreThan","countNumber":1"#)
        )
        #expect(try expired(text, multipleRulesRepository) == ["A", "B"])
    }

    @Test("multiple tags in one rule, example A: images must match all prefixes → C is expired")
    func multiTagA() throws {
        let repository = [
            image("A", ["alpha-1"], daysAgo: 12), image("B", ["beta-1"], daysAgo: 11), image("C", ["alpha-2", "beta-2"], daysAgo: 10),
            image("D", ["alpha-3"], daysAgo: 4), image("E", ["beta-3"], daysAgo: 3), image("F", ["alpha-4", "beta-4"], daysAgo: 2),
        ]
        let text = policy(rule(1, #""tagStatus":"tagged","tagPrefixList":["alpha","beta"],"countType":"sinceImagePushed","countNumber":5,"countUnit":"days""#))
        #expect(try expired(text, repository) == ["C"])
    }

    @Test("multiple tags in one rule, example B: tags are not exclusive → A and B are expired")
    func multiTagB() throws {
        let repository = [
            image("A", ["alpha-1", "beta-1", "gamma-1"], daysAgo: 10), image("B", ["alpha-2", "beta-2"], daysAgo: 9),
            image("C", ["alpha-3", "beta-3", "gamma-2"], daysAgo: 8),
        ]
        let text = policy(rule(1, #""tagStatus":"tagged","tagPrefixList":["alpha","beta"],"countType":"imageCountMoreThan","countNumber":1"#))
        #expect(try expired(text, repository) == ["A", "B"])
    }
}

@Suite("Lifecycle policies: evaluation edge cases")
struct EvaluationTests {
    @Test("imageCountMoreThan keeps the newest N; expiry is oldest first")
    func keepNewest() throws {
        let images = (1...7).map { image("i\($0)", ["v\($0)"], daysAgo: Int64(10 - $0)) }
        let result = try expired(policy(rule(1, #""tagStatus":"any","countType":"imageCountMoreThan","countNumber":3"#)), images)
        #expect(result == ["i1", "i2", "i3", "i4"])
    }

    @Test("untagged, tagged and any rules apply to the right images")
    func tagStatus() throws {
        let images = [image("u1", [], daysAgo: 30), image("u2", [], daysAgo: 1), image("t1", ["x"], daysAgo: 30)]
        #expect(try expired(policy(rule(1, #""tagStatus":"untagged","countType":"sinceImagePushed","countUnit":"days","countNumber":7"#)), images) == ["u1"])
        #expect(try expired(policy(rule(1, #""tagStatus":"any","countType":"sinceImagePushed","countUnit":"days","countNumber":7"#)), images) == ["t1", "u1"])
    }

    @Test("a lower-priority rule cannot expire what a higher-priority rule selected")
    func higherPriorityProtects() throws {
        // Rule 1 keeps all 'release' images (10 of them, keep 100); rule 2 would expire everything older than a day.
        let images = (1...3).map { image("r\($0)", ["release-\($0)"], daysAgo: 50) } + [image("old", ["dev-1"], daysAgo: 50)]
        let text = policy(
            rule(1, #""tagStatus":"tagged","tagPrefixList":["release"],"countType":"imageCountMoreThan","countNumber":100"#),
            rule(2, #""tagStatus":"any","countType":"sinceImagePushed","countUnit":"days","countNumber":1"#)
        )
        #expect(try expired(text, images) == ["old"])
    }

    @Test("an image is expired by exactly one rule: the highest-priority rule that marks it")
    func oneRulePerImage() throws {
        let images = [image("a", ["prod-1", "test-1"], daysAgo: 20), image("b", ["prod-2", "test-2"], daysAgo: 10), image("c", ["prod-3"], daysAgo: 1)]
        let text = policy(
            rule(1, #""tagStatus":"tagged","tagPrefixList":["test"],"countType":"sinceImagePushed","countUnit":"days","countNumber":5"#),
            rule(2, #""tagStatus":"tagged","tagPrefixList":["prod"],"countType":"imageCountMoreThan","countNumber":1"#)
        )
        let result = LifecycleEvaluator.evaluate(try LifecyclePolicy(parsing: text), images: images, now: now)
        #expect(result.map(\.image.digest) == ["a", "b"])
        #expect(result.allSatisfy { $0.rulePriority == 1 })
    }

    @Test("tag patterns: * wildcards, all patterns must match")
    func patterns() throws {
        let images = [image("a", ["prod-eu-1"], daysAgo: 9), image("b", ["prod-us-2"], daysAgo: 8), image("c", ["staging-eu"], daysAgo: 7)]
        #expect(
            try expired(
                policy(rule(1, #""tagStatus":"tagged","tagPatternList":["prod*eu*"],"countType":"sinceImagePushed","countUnit":"days","countNumber":1"#)),
                images) == ["a"])
        #expect(
            try expired(
                policy(rule(1, #""tagStatus":"tagged","tagPatternList":["*eu*","*-1"],"countType":"sinceImagePushed","countUnit":"days","countNumber":1"#)),
                images) == ["a"])
        #expect(WildcardPattern.matches("*", ""))
        #expect(WildcardPattern.matches("a*b*c", "aXXbYYc"))
        #expect(!WildcardPattern.matches("a*b*c", "aXXbYY"))
        #expect(WildcardPattern.matches("latest", "latest"))
        #expect(!WildcardPattern.matches("latest", "latest2"))
        #expect(WildcardPattern.matches("v*.*.*", "v1.2.3"))
    }

    @Test("sinceImagePulled uses the last pull, or the push when never pulled")
    func sincePulled() throws {
        let images = [
            image("pulled-recently", ["a"], daysAgo: 100, pulledDaysAgo: 2), image("pulled-long-ago", ["b"], daysAgo: 100, pulledDaysAgo: 60),
            image("never-pulled-old", ["c"], daysAgo: 90), image("never-pulled-new", ["d"], daysAgo: 3),
        ]
        #expect(
            try expired(policy(rule(1, #""tagStatus":"any","countType":"sinceImagePulled","countUnit":"days","countNumber":30"#)), images) == [
                "pulled-long-ago", "never-pulled-old",
            ])
    }
}

@Suite("Lifecycle policies: validation with precise messages")
struct ValidationTests {
    @Test(
        "valid policies parse",
        arguments: [
            policy(rule(1, #""tagStatus":"untagged","countType":"imageCountMoreThan","countNumber":1"#)),
            policy(
                rule(5, #""tagStatus":"tagged","tagPatternList":["*a*b*c*d"],"countType":"sinceImagePushed","countUnit":"days","countNumber":14"#),
                rule(9, #""tagStatus":"any","countType":"imageCountMoreThan","countNumber":100,"storageClass":"standard""#)),
        ])
    func valid(_ text: String) throws {
        _ = try LifecyclePolicy(parsing: text)
    }

    @Test(
        "invalid policies are refused, naming the problem",
        arguments: [
            ("not json", "not valid JSON"),
            ("[]", "JSON object"),
            (#"{"rules":[]}"#, "non-empty"),
            (#"{"rules":[],"extra":1}"#, "unknown field 'extra'"),
            (
                policy(
                    rule(1, #""tagStatus":"untagged","countType":"imageCountMoreThan","countNumber":1"#),
                    rule(1, #""tagStatus":"tagged","tagPrefixList":["x"],"countType":"imageCountMoreThan","countNumber":1"#)), "priorities must be unique"
            ),
            (
                policy(
                    rule(1, #""tagStatus":"any","countType":"imageCountMoreThan","countNumber":1"#),
                    rule(2, #""tagStatus":"tagged","tagPrefixList":["x"],"countType":"imageCountMoreThan","countNumber":1"#)),
                "must have the highest rulePriority"
            ),
            (policy(rule(1, #""tagStatus":"tagged","countType":"imageCountMoreThan","countNumber":1"#)), "needs a non-empty tagPrefixList or tagPatternList"),
            (
                policy(rule(1, #""tagStatus":"tagged","tagPrefixList":["a"],"tagPatternList":["b*"],"countType":"imageCountMoreThan","countNumber":1"#)),
                "not both"
            ),
            (
                policy(rule(1, #""tagStatus":"untagged","tagPrefixList":["a"],"countType":"imageCountMoreThan","countNumber":1"#)),
                "only allowed with tagStatus 'tagged'"
            ),
            (
                policy(rule(1, #""tagStatus":"tagged","tagPatternList":["a*b*c*d*e*"],"countType":"imageCountMoreThan","countNumber":1"#)),
                "at most 4 are allowed"
            ),
            (policy(rule(1, #""tagStatus":"untagged","countType":"imageCountMoreThan","countUnit":"days","countNumber":1"#)), "countUnit must not be set"),
            (policy(rule(1, #""tagStatus":"untagged","countType":"sinceImagePushed","countNumber":1"#)), "countUnit is required"),
            (policy(rule(1, #""tagStatus":"untagged","countType":"sinceImagePushed","countUnit":"hours","countNumber":1"#)), "must be 'days'"),
            (policy(rule(1, #""tagStatus":"untagged","countType":"imageCountMoreThan","countNumber":0"#)), "positive integer"),
            (
                policy(rule(1, #""tagStatus":"untagged","countType":"sinceImagePushed","countUnit":"days","countNumber":1000000000000000"#)),
                "no larger than 2147483647"
            ),
            (policy(rule(1, #""tagStatus":"untagged","countType":"imageCountMoreThan","countNumber":1.5"#)), "must be an integer"),
            (policy(rule(1, #""tagStatus":"untagged","countType":"imageCountMoreThan","countNumber":true"#)), "must be an integer"),
            (policy(rule(0, #""tagStatus":"untagged","countType":"imageCountMoreThan","countNumber":1"#)), "positive integer"),
            (policy(rule(1, #""tagStatus":"sometimes","countType":"imageCountMoreThan","countNumber":1"#)), "tagStatus is required"),
            (policy(rule(1, #""tagStatus":"untagged","countType":"sinceImageTransitioned","countUnit":"days","countNumber":1"#)), "not supported"),
            (
                policy(
                    rule(1, #""tagStatus":"untagged","countType":"imageCountMoreThan","countNumber":1"#),
                    rule(2, #""tagStatus":"untagged","countType":"sinceImagePushed","countUnit":"days","countNumber":1"#)), "only one rule may select untagged"
            ),
            (
                policy(
                    rule(1, #""tagStatus":"tagged","tagPrefixList":["a","b"],"countType":"imageCountMoreThan","countNumber":1"#),
                    rule(2, #""tagStatus":"tagged","tagPrefixList":["b","a"],"countType":"sinceImagePushed","countUnit":"days","countNumber":1"#)),
                "unique set of tag prefixes"
            ),
            (
                #"{"rules":[{"rulePriority":1,"selection":{"tagStatus":"untagged","countType":"imageCountMoreThan","countNumber":1},"action":{"type":"transition","targetStorageClass":"archive"}}]}"#,
                "'transition'"
            ),
            (#"{"rules":[{"rulePriority":1,"selection":{"tagStatus":"untagged","countType":"imageCountMoreThan","countNumber":1}}]}"#, "action is required"),
            (policy(rule(1, #""tagStatus":"tagged","tagPrefixList":[""],"countType":"imageCountMoreThan","countNumber":1"#)), "empty strings"),
        ])
    func invalid(_ text: String, _ mentions: String) {
        do {
            _ = try LifecyclePolicy(parsing: text)
            Issue.record("accepted: \(text)")
        } catch {
            #expect(error.message.contains(mentions), "'\(error.message)' should mention '\(mentions)'")
        }
    }
}

@Suite("Lifecycle evaluation never traps")
struct LifecycleBoundsTests {
    @Test("a rule of any number of days (a policy stored before countNumber was bounded) selects nothing instead of overflowing")
    func hugeDays() throws {
        let images = [image("old", ["v1"], daysAgo: 400), image("new", ["v2"], daysAgo: 1)]
        var stored = try LifecyclePolicy(parsing: policy(rule(1, #""tagStatus":"any","countType":"sinceImagePushed","countUnit":"days","countNumber":7"#)))
        stored.rules[0].count = .sincePushed(days: Int.max)
        #expect(LifecycleEvaluator.evaluate(stored, images: images, now: now).isEmpty)
        stored.rules[0].count = .sincePulled(days: Int.max)
        #expect(LifecycleEvaluator.evaluate(stored, images: images, now: now).isEmpty)
        // The largest countNumber the parser accepts still evaluates.
        let widest = try LifecyclePolicy(
            parsing: policy(rule(1, #""tagStatus":"any","countType":"sinceImagePushed","countUnit":"days","countNumber":2147483647"#)))
        #expect(LifecycleEvaluator.evaluate(widest, images: images, now: now).isEmpty)
    }
}
