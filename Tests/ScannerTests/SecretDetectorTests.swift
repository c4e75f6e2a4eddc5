import Foundation
import Testing

@testable import Scanner

/// Secret detection. Test secrets are assembled at run time from pieces so that this file itself
/// holds no token a scanner would flag.
@Suite("Secret detection")
struct SecretDetectorTests {
    static let awsKeyID = "AKIA" + "IOSFODNN7" + "EXAMPLE"
    static let awsSecret = "wJalrXUtnFEMI/K7MDENG/" + "bPxRfiCYEXAMPLEKEY"
    static let github = "ghp_" + String(repeating: "a1B2c3D4e5", count: 3) + "F6g7H8"
    static let gitlab = "glpat-" + "Xy3_kP9-qR2sT7vW1zA4"
    static let slack = "xoxb-" + "123456789012-1234567890123-" + "AbCdEfGhIjKlMnOpQrStUvWx"
    static let webhook = "https://hooks.slack.com/services/" + "T00000000/B00000000/" + "XXXXXXXXXXXXXXXXXXXXXXXX"
    static let privateKey = "-----BEGIN " + "RSA PRIVATE KEY-----"

    @Test("each rule finds its secret, and the finding never holds the whole of it")
    func rules() {
        let text = """
            export AWS_ACCESS_KEY_ID=\(Self.awsKeyID)
            aws_secret_access_key = \(Self.awsSecret)
            token: \(Self.github)
            GITLAB=\(Self.gitlab)
            slack = "\(Self.slack)"
            url: \(Self.webhook)
            \(Self.privateKey)
            DB_PASSWORD="Zk8#qW2!mN5@xL9$"
            db_password = "Zk8qW2mN5xL9pR4tV7"
            password = changeme
            password = "${DB_PASSWORD}"
            api_key: "aaaaaaaaaaaaaaaaaaaaaaaa"
            """
        let findings = SecretDetector.scan(content: Array(text.utf8), location: "/app/.env", layer: 2)
        #expect(
            findings.map(\.rule) == [
                "aws-access-key-id", "aws-secret-access-key", "github-token", "gitlab-token",
                "slack-token", "slack-webhook", "private-key", "generic-secret",
            ])
        #expect(findings.map(\.line) == [1, 2, 3, 4, 5, 6, 7, 9])
        for (finding, secret) in zip(findings, [Self.awsKeyID, Self.awsSecret, Self.github, Self.gitlab, Self.slack, Self.webhook]) {
            #expect(!finding.redacted.contains(secret))
            #expect(finding.redacted.contains("(\(secret.count) characters)"))
        }
        #expect(findings.allSatisfy { $0.location == "/app/.env" && $0.layer == 2 })
        #expect(findings.first?.severity == .critical)
    }

    @Test("lookalikes are not secrets")
    func negatives() {
        for text in [
            "AKIA" + "SHORT", "xAKIA" + "IOSFODNN7EXAMPLEX", "password = hunter2", "token = ${TOKEN}",
            "-----BEGIN PUBLIC KEY-----", "glpat-short", "secret: 'aaaaaaaaaaaaaaaaaaaaaaaaaaaa'",
        ] {
            #expect(SecretDetector.scan(text: text, location: "/x", layer: 0).isEmpty, "\(text)")
        }
        var binary: [UInt8] = [0, 1, 2]
        binary += Array(Self.awsKeyID.utf8)
        #expect(SecretDetector.scan(content: binary, location: "/bin/x", layer: 0).isEmpty)
    }

    @Test("the config's environment, labels and build history")
    func config() throws {
        let config: [String: Any] = [
            "architecture": "amd64", "os": "linux",
            "config": ["Env": ["PATH=/usr/bin", "GITHUB_TOKEN=\(Self.github)"], "Labels": ["deploy.key": Self.gitlab]],
            "history": [
                ["created_by": "/bin/sh -c #(nop) ENV X=1"],
                ["created_by": "/bin/sh -c export AWS_ACCESS_KEY_ID=\(Self.awsKeyID) && aws s3 cp s3://b/f ."],
            ],
        ]
        let findings = SecretDetector.scan(config: [UInt8](try JSONSerialization.data(withJSONObject: config)))
        #expect(
            Set(findings.map { "\($0.location) \($0.rule)" }) == [
                "config:Env github-token", "config:Labels gitlab-token", "config:history[1] aws-access-key-id",
            ])
        #expect(findings.count == 3)
    }

    @Test("in layers: small text files of every layer, deleted or not; documentation skipped")
    func layers() async throws {
        var base = TarBuilder()
        base.file("root/.aws/credentials", "[default]\naws_access_key_id = \(Self.awsKeyID)\naws_secret_access_key = \(Self.awsSecret)\n")
        base.file("usr/share/doc/tool/README", "example: \(Self.awsKeyID)\n")
        base.file("etc/os-release", "ID=alpine\n")
        var top = TarBuilder()
        top.file("root/.aws/.wh.credentials", "")
        top.file("app/config.yml", "slack_webhook: \(Self.webhook)\n")
        let inventory = try await Inventory.of(layers: [BufferChunks(base.archive), BufferChunks(top.archive)], detectSecrets: true)
        #expect(
            inventory.secrets.map { "\($0.layer ?? -1) \($0.location):\($0.line ?? 0) \($0.rule)" } == [
                "0 /root/.aws/credentials:2 aws-access-key-id",
                "0 /root/.aws/credentials:3 aws-secret-access-key",
                "1 /app/config.yml:1 slack-webhook",
            ])
        let without = try await Inventory.of(layers: [BufferChunks(base.archive)])
        #expect(without.secrets.isEmpty)
    }
}
