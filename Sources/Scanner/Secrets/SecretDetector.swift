import Foundation

/// A secret found in an image. The secret itself is never stored or shown: only a redacted form
/// (its first characters and its length) and where it is.
public struct SecretFinding: Sendable, Equatable, Codable, Hashable {
    public var rule: String
    public var title: String
    public var severity: Severity
    /// `/path/in/image` for layer files, `config:Env`, `config:history` or `config:Labels` for the config.
    public var location: String
    public var line: Int?
    /// Index of the layer holding the file (0 is the base); nil for the config.
    public var layer: Int?
    public var redacted: String
}

/// Finds credentials by pattern: AWS access keys, private keys, GitHub, GitLab and Slack tokens,
/// Slack webhooks, and generic high-entropy assignments (`password = "…"`). A cheap keyword pass
/// over the bytes decides whether a file is looked at line by line at all, so scanning every small
/// file of an image stays fast.
public enum SecretDetector {
    struct Rule: Sendable {
        let id: String
        let title: String
        let severity: Severity
        /// Byte strings one of which a line must contain before the pattern is tried.
        let keywords: [String]
        /// Finds the secret in a line; returns it.
        let match: @Sendable (Substring) -> Substring?
    }

    static func token(after prefix: String, in line: Substring, allowed: (Character) -> Bool, count: ClosedRange<Int>) -> Substring? {
        var search = line[...]
        while let range = search.range(of: prefix) {
            let rest = line[range.upperBound...]
            let body = rest.prefix { allowed($0) }
            if count.contains(body.count) {
                // The token must not run on into more token characters than allowed.
                return line[range.lowerBound..<body.endIndex]
            }
            search = line[range.upperBound...]
        }
        return nil
    }

    static func isAlphanumeric(_ c: Character) -> Bool { c.isASCII && (c.isLetter || c.isNumber) }
    static func isUpperOrDigit(_ c: Character) -> Bool { c.isASCII && (c.isUppercase || c.isNumber) }

    static let rules: [Rule] = [
        Rule(id: "aws-access-key-id", title: "AWS access key ID", severity: .critical, keywords: ["AKIA", "ASIA", "ABIA", "ACCA"]) { line in
            for prefix in ["AKIA", "ASIA", "ABIA", "ACCA"] {
                if let found = token(after: prefix, in: line, allowed: isUpperOrDigit, count: 16...16) {
                    let before = found.startIndex == line.startIndex ? nil : line[line.index(before: found.startIndex)]
                    if before.map({ !isUpperOrDigit($0) }) ?? true { return found }
                }
            }
            return nil
        },
        Rule(
            id: "aws-secret-access-key", title: "AWS secret access key", severity: .critical,
            keywords: ["aws_secret", "AWS_SECRET", "SecretAccessKey", "secret_access_key"]
        ) { line in
            guard let value = assignedValue(line, keys: ["aws_secret_access_key", "secretaccesskey", "aws_secret_key"]) else { return nil }
            return value.count == 40 && value.allSatisfy({ isAlphanumeric($0) || $0 == "/" || $0 == "+" || $0 == "=" }) ? value : nil
        },
        Rule(id: "private-key", title: "Private key", severity: .high, keywords: ["PRIVATE KEY"]) { line in
            guard let begin = line.range(of: "-----BEGIN "), let end = line.range(of: "PRIVATE KEY", range: begin.upperBound..<line.endIndex),
                line[begin.upperBound..<end.lowerBound].count <= 12
            else { return nil }
            return line[begin.lowerBound..<end.upperBound]
        },
        Rule(id: "github-token", title: "GitHub token", severity: .critical, keywords: ["ghp_", "gho_", "ghu_", "ghs_", "ghr_", "github_pat_"]) { line in
            for prefix in ["ghp_", "gho_", "ghu_", "ghs_", "ghr_"] {
                if let found = token(after: prefix, in: line, allowed: isAlphanumeric, count: 36...36) { return found }
            }
            return token(after: "github_pat_", in: line, allowed: { isAlphanumeric($0) || $0 == "_" }, count: 82...82)
        },
        Rule(id: "gitlab-token", title: "GitLab personal access token", severity: .critical, keywords: ["glpat-"]) { line in
            token(after: "glpat-", in: line, allowed: { isAlphanumeric($0) || $0 == "-" || $0 == "_" }, count: 20...20)
        },
        Rule(id: "slack-token", title: "Slack token", severity: .high, keywords: ["xoxb-", "xoxa-", "xoxp-", "xoxr-", "xoxs-"]) { line in
            for prefix in ["xoxb-", "xoxa-", "xoxp-", "xoxr-", "xoxs-"] {
                if let found = token(after: prefix, in: line, allowed: { isAlphanumeric($0) || $0 == "-" }, count: 10...255) { return found }
            }
            return nil
        },
        Rule(id: "slack-webhook", title: "Slack webhook URL", severity: .medium, keywords: ["hooks.slack.com/services/"]) { line in
            token(after: "https://hooks.slack.com/services/", in: line, allowed: { isAlphanumeric($0) || $0 == "/" }, count: 20...120)
        },
        Rule(
            id: "generic-secret", title: "Secret assigned in plain text", severity: .medium,
            keywords: [
                "password", "PASSWORD", "Password", "passwd", "secret", "SECRET", "Secret", "token", "TOKEN", "Token", "api_key", "API_KEY", "apikey", "ApiKey",
            ]
        ) { line in
            guard let value = assignedValue(line, keys: ["password", "passwd", "secret", "token", "api_key", "apikey", "client_secret", "private_key"]),
                value.count >= 16, value.count <= 256,
                // Credential characters only (code such as `&which('passwd')` is not a secret), letters and digits both.
                value.allSatisfy({ isAlphanumeric($0) || "-_./+=~!@#^*".contains($0) }),
                value.contains(where: \.isNumber), value.contains(where: \.isLetter),
                entropy(value) >= 3.5
            else { return nil }
            return value
        },
    ]

    /// The value of `key = value`, `key: value`, `KEY=value` or `"key": "value"` for a key whose
    /// lowercased name ends with one of `keys`; quotes stripped.
    static func assignedValue(_ line: Substring, keys: [String]) -> Substring? {
        guard let separator = line.firstIndex(where: { $0 == "=" || $0 == ":" }) else { return nil }
        let key = String(line[..<separator]).trimmingCharacters(in: "\"' \t").lowercased().replacingOccurrences(of: "-", with: "_")
        guard !key.isEmpty, keys.contains(where: { key.hasSuffix($0) }), key.count <= 64 else { return nil }
        var value = line[line.index(after: separator)...].drop { $0 == " " || $0 == "\t" || $0 == "=" }
        if let quote = value.first, quote == "\"" || quote == "'" {
            value = value.dropFirst()
            guard let close = value.firstIndex(of: quote) else { return nil }
            value = value[..<close]
        } else {
            value = value.prefix { $0 != " " && $0 != "\t" && $0 != "," && $0 != ";" && $0 != "#" }
        }
        return value.isEmpty ? nil : value
    }

    /// Shannon entropy in bits per character: random tokens score above 3.5, words and placeholders below.
    static func entropy(_ text: Substring) -> Double {
        var counts: [Character: Int] = [:]
        for character in text { counts[character, default: 0] += 1 }
        let total = Double(text.count)
        return counts.values.reduce(0) { sum, count in
            let p = Double(count) / total
            return sum - p * log2(p)
        }
    }

    /// Keywords by first byte, so the cheap pass reads each byte once whatever the number of rules.
    static let keywordsByFirstByte: [[[UInt8]]] = {
        var table = [[[UInt8]]](repeating: [], count: 256)
        for keyword in Set(rules.flatMap(\.keywords)) {
            let bytes = Array(keyword.utf8)
            table[Int(bytes[0])].append(bytes)
        }
        return table
    }()

    /// Whether the bytes contain any keyword (the cheap pass before line-by-line matching).
    static func mayContainSecret(_ bytes: [UInt8]) -> Bool {
        bytes.withUnsafeBufferPointer { mayContainSecret($0, from: 0, to: $0.count) }
    }

    static func mayContainSecret(_ buffer: UnsafeBufferPointer<UInt8>, from start: Int, to end: Int) -> Bool {
        let table = keywordsByFirstByte
        var index = start
        while index < end {
            let candidates = table[Int(buffer[index])]
            if !candidates.isEmpty {
                for keyword in candidates where index + keyword.count <= end {
                    var offset = 1
                    while offset < keyword.count && buffer[index + offset] == keyword[offset] { offset += 1 }
                    if offset == keyword.count { return true }
                }
            }
            index += 1
        }
        return false
    }

    /// Secrets in a file's content (text files only: a NUL byte in the first 8 KiB means binary).
    /// Lines are tested for keywords as bytes; only the few that have one become strings.
    public static func scan(content: [UInt8], location: String, layer: Int?) -> [SecretFinding] {
        guard !content.prefix(8192).contains(0) else { return [] }
        var findings: [SecretFinding] = []
        content.withUnsafeBufferPointer { buffer in
            guard mayContainSecret(buffer, from: 0, to: buffer.count) else { return }
            var lineNumber = 0
            var start = 0
            while start <= buffer.count {
                var end = start
                while end < buffer.count && buffer[end] != 0x0A { end += 1 }
                lineNumber += 1
                if end - start <= 4096, mayContainSecret(buffer, from: start, to: end) {
                    let line = String(decoding: UnsafeBufferPointer(rebasing: buffer[start..<end]), as: UTF8.self)
                    findings += scan(text: line, location: location, layer: layer).map { finding in
                        var finding = finding
                        finding.line = lineNumber
                        return finding
                    }
                }
                start = end + 1
            }
        }
        return findings
    }

    public static func scan(text: String, location: String, layer: Int?) -> [SecretFinding] {
        var findings: [SecretFinding] = []
        var lineNumber = 0
        for line in text.split(separator: "\n", omittingEmptySubsequences: false) {
            lineNumber += 1
            guard line.count <= 4096 else { continue }
            for rule in rules where rule.keywords.contains(where: { line.contains($0) }) {
                if let secret = rule.match(line) {
                    findings.append(
                        SecretFinding(
                            rule: rule.id, title: rule.title, severity: rule.severity, location: location,
                            line: lineNumber, layer: layer, redacted: redact(secret)))
                    break  // one finding per line: the most specific rule comes first
                }
            }
        }
        return findings
    }

    /// The image config: environment variables, build history (`RUN` lines), labels.
    public static func scan(config bytes: [UInt8]) -> [SecretFinding] {
        guard let object = try? JSONSerialization.jsonObject(with: Data(bytes)) as? [String: Any] else { return [] }
        var findings: [SecretFinding] = []
        let config = object["config"] as? [String: Any] ?? [:]
        for variable in config["Env"] as? [String] ?? [] {
            findings += scan(text: variable, location: "config:Env", layer: nil).map {
                var f = $0; f.line = nil; return f
            }
        }
        for (key, value) in config["Labels"] as? [String: String] ?? [:] {
            findings += scan(text: "\(key)=\(value)", location: "config:Labels", layer: nil).map {
                var f = $0; f.line = nil; return f
            }
        }
        for (index, entry) in (object["history"] as? [[String: Any]] ?? []).enumerated() {
            if let command = entry["created_by"] as? String {
                // Build commands chain assignments with spaces and `&&`: look at each word too.
                let pieces = [command] + command.split(separator: " ").map(String.init)
                var seen = Set<String>()
                for piece in pieces {
                    for finding in scan(text: piece, location: "config:history[\(index)]", layer: nil) where seen.insert(finding.redacted).inserted {
                        var finding = finding
                        finding.line = nil
                        findings.append(finding)
                    }
                }
            }
        }
        return findings
    }

    /// `AKIA****************(20 characters)`: enough to recognise which secret, never enough to use it.
    static func redact(_ secret: Substring) -> String {
        let shown = secret.hasPrefix("-----BEGIN") ? secret.count : min(4, secret.count / 4)
        if shown == secret.count { return String(secret) }
        return String(secret.prefix(shown)) + String(repeating: "*", count: min(16, secret.count - shown)) + " (\(secret.count) characters)"
    }
}
