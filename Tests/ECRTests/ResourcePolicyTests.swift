import Access
import Testing

@testable import ECR

/// IAM-style resource policies: what parses, and the verdicts (explicit Deny wins).
@Suite("Resource policies")
struct ResourcePolicyTests {
    let registry = "123456789012"
    let alice = "arn:aws:iam::123456789012:user/alice"
    let repository = "arn:aws:ecr:*:123456789012:repository/team/app"

    func policy(_ text: String) throws -> ResourcePolicy {
        try ResourcePolicy(parsing: text, registryID: registry, knownActions: ECRService.knownActions)
    }

    func invalid(_ text: String) -> String? {
        do {
            _ = try policy(text)
            return nil
        } catch {
            return "\(error)"
        }
    }

    @Test("Allow for a named principal; nothing for others")
    func allow() throws {
        let p = try policy(
            #"{"Version":"2012-10-17","Statement":[{"Sid":"pull","Effect":"Allow","Principal":{"AWS":["arn:aws:iam::123456789012:user/alice"]},"Action":["ecr:BatchGetImage","ecr:Describe*"]}]}"#
        )
        #expect(p.decision(principal: alice, action: "ecr:BatchGetImage", resource: repository) == .allow)
        #expect(p.decision(principal: alice, action: "ECR:describeimages", resource: repository) == .allow)
        #expect(p.decision(principal: alice, action: "ecr:PutImage", resource: repository) == .none)
        #expect(p.decision(principal: "arn:aws:iam::123456789012:user/bob", action: "ecr:BatchGetImage", resource: repository) == .none)
    }

    @Test("an explicit Deny wins over any Allow, in one policy or across two")
    func denyWins() throws {
        let both = try policy(
            #"{"Statement":[{"Effect":"Allow","Principal":"*","Action":"ecr:*"},{"Effect":"Deny","Principal":"*","Action":"ecr:BatchDelete*"}]}"#)
        #expect(both.decision(principal: alice, action: "ecr:BatchDeleteImage", resource: repository) == .deny)
        #expect(both.decision(principal: alice, action: "ecr:PutImage", resource: repository) == .allow)
        let allow = try policy(#"{"Statement":{"Effect":"Allow","Principal":{"AWS":"123456789012"},"Action":"*"}}"#)
        let deny = try policy(#"{"Statement":[{"Effect":"Deny","Principal":{"AWS":"arn:aws:iam::123456789012:user/alice"},"Action":"ecr:PutImage"}]}"#)
        #expect(ResourcePolicy.decision(of: [allow, deny], principal: alice, action: "ecr:PutImage", resource: repository) == .deny)
        #expect(ResourcePolicy.decision(of: [deny, allow], principal: alice, action: "ecr:PutImage", resource: repository) == .deny)
        #expect(ResourcePolicy.decision(of: [allow, deny], principal: alice, action: "ecr:BatchGetImage", resource: repository) == .allow)
    }

    @Test("'*' never allows anonymous callers, but its Deny applies to them")
    func anonymous() throws {
        let p = try policy(
            #"{"Statement":[{"Effect":"Allow","Principal":"*","Action":"ecr:BatchGetImage"},{"Effect":"Deny","Principal":"*","Action":"ecr:GetDownloadUrlForLayer"}]}"#
        )
        #expect(p.decision(principal: nil, action: "ecr:BatchGetImage", resource: repository) == .none)
        #expect(p.decision(principal: nil, action: "ecr:GetDownloadUrlForLayer", resource: repository) == .deny)
    }

    @Test("Resource patterns: the region does not matter, the name does")
    func resources() throws {
        let p = try policy(
            #"{"Statement":[{"Effect":"Deny","Principal":"*","Action":"ecr:*","Resource":"arn:aws:ecr:us-east-1:123456789012:repository/team/*"}]}"#)
        #expect(p.decision(principal: alice, action: "ecr:PutImage", resource: repository) == .deny)
        #expect(p.decision(principal: alice, action: "ecr:PutImage", resource: "arn:aws:ecr:*:123456789012:repository/other/app") == .none)
    }

    @Test("what is refused, with the reason")
    func refused() {
        #expect(invalid("not json")?.contains("not a JSON object") == true)
        #expect(invalid(#"{"Statement":[]}"#)?.contains("at least one statement") == true)
        #expect(invalid(#"{"Statement":[{"Effect":"Maybe","Principal":"*","Action":"ecr:*"}]}"#)?.contains("Effect") == true)
        #expect(invalid(#"{"Statement":[{"Effect":"Allow","Action":"ecr:*"}]}"#)?.contains("Principal") == true)
        #expect(invalid(#"{"Statement":[{"Effect":"Allow","Principal":"*","Action":"s3:GetObject"}]}"#)?.contains("not an ECR action") == true)
        #expect(invalid(#"{"Statement":[{"Effect":"Allow","Principal":"*","Action":"ecr:PutImag"}]}"#)?.contains("ecr:PutImag") == true)
        #expect(invalid(#"{"Statement":[{"Effect":"Allow","Principal":"*","Action":"ecr:*","Condition":{}}]}"#)?.contains("Condition") == true)
        #expect(invalid(#"{"Statement":[{"Effect":"Allow","NotPrincipal":"*","Action":"ecr:*"}]}"#)?.contains("NotPrincipal") == true)
        #expect(invalid(#"{"Version":"2020-01-01","Statement":[{"Effect":"Allow","Principal":"*","Action":"ecr:*"}]}"#)?.contains("Version") == true)
        #expect(
            invalid(#"{"Statement":[{"Effect":"Allow","Principal":{"Service":"ec2.amazonaws.com"},"Action":"ecr:*"}]}"#)?.contains("service principals") == true
        )
        #expect(
            invalid(
                #"{"Statement":[{"Sid":"a","Effect":"Allow","Principal":"*","Action":"ecr:*"},{"Sid":"a","Effect":"Deny","Principal":"*","Action":"ecr:*"}]}"#)?
                .contains("twice") == true)
    }

    @Test("principal ARNs of users and robots")
    func principals() {
        #expect(Identity(kind: .user, name: "alice", id: 1, isAdmin: false).principalARN(registryID: registry) == alice)
        #expect(Identity(kind: .robot, name: "robot$ci", id: 2, isAdmin: false).principalARN(registryID: registry) == "arn:aws:iam::123456789012:role/robot/ci")
        #expect(Identity.anonymous.principalARN(registryID: registry) == nil)
    }
}
