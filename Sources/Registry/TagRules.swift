import Foundation
import Metadata
import OCI

/// A namespace's deployment rules for tags ("don't use `latest` in production"): tags matching a
/// `deny` pattern are refused, and when `require` is given a tag must match one of its patterns.
/// Patterns are ECR's wildcards (`*`, matched in linear time: no client-written regex runs here)
/// or the word `semver` (`1.2.3`, `v1.2.3`, `1.2.3-rc.1`; tags cannot hold SemVer's `+build`).
/// Pushes by digest carry no tag and are never refused.
public struct TagRules: Codable, Sendable, Equatable {
    public var deny: [String]
    public var require: [String]

    public static let maximumPatterns = 50

    public init(deny: [String] = [], require: [String] = []) {
        self.deny = deny
        self.require = require
    }

    enum CodingKeys: String, CodingKey { case deny, require }

    public init(from decoder: any Decoder) throws {
        let container = try decoder.container(keyedBy: CodingKeys.self)
        deny = try container.decodeIfPresent([String].self, forKey: .deny) ?? []
        require = try container.decodeIfPresent([String].self, forKey: .require) ?? []
    }

    /// Checks what decoding cannot: rules that say something, patterns a tag could match.
    public func validate() throws(TagRulesError) {
        guard !deny.isEmpty || !require.isEmpty else {
            throw TagRulesError("the rules refuse nothing: give deny or require patterns, or delete the rules")
        }
        for (field, patterns) in [("deny", deny), ("require", require)] {
            guard patterns.count <= Self.maximumPatterns else { throw TagRulesError("\(field) has more than \(Self.maximumPatterns) patterns") }
            for pattern in patterns where pattern != "semver" {
                let allowed = pattern.utf8.allSatisfy {
                    ($0 >= 0x30 && $0 <= 0x39) || ($0 >= 0x41 && $0 <= 0x5A) || ($0 >= 0x61 && $0 <= 0x7A) || "._-*".utf8.contains($0)
                }
                guard !pattern.isEmpty, pattern.utf8.count <= Tag.maximumLength, allowed else {
                    throw TagRulesError(
                        "\(field) pattern '\(pattern)' is not a tag pattern: letters, digits, '.', '_', '-' and '*' wildcards, up to \(Tag.maximumLength) characters, or 'semver'"
                    )
                }
            }
        }
    }

    /// Why `tag` is refused, or nil when the rules allow it.
    public func refusal(of tag: String) -> String? {
        if let denied = deny.first(where: { Self.matches($0, tag) }) {
            return "'\(denied)' is denied"
        }
        if !require.isEmpty, !require.contains(where: { Self.matches($0, tag) }) {
            return "tags must match \(require.map { "'\($0)'" }.joined(separator: " or "))"
        }
        return nil
    }

    static func matches(_ pattern: String, _ tag: String) -> Bool {
        pattern == "semver" ? isSemVer(tag) : WildcardPattern.matches(pattern, tag)
    }

    /// `MAJOR.MINOR.PATCH` with an optional `v` and an optional `-prerelease` of dot-separated
    /// identifiers (SemVer 2.0.0, §2 and §9: numeric parts without leading zeros).
    static func isSemVer(_ tag: String) -> Bool {
        var text = Substring(tag)
        if text.first == "v" { text = text.dropFirst() }
        let (core, prerelease) =
            text.firstIndex(of: "-").map { (text[..<$0], Optional(text[text.index(after: $0)...])) } ?? (text, nil)
        let numbers = core.split(separator: ".", omittingEmptySubsequences: false)
        func number(_ part: Substring) -> Bool {
            !part.isEmpty && part.allSatisfy(\.isASCII) && part.allSatisfy(\.isNumber) && (part == "0" || part.first != "0")
        }
        guard numbers.count == 3, numbers.allSatisfy(number) else { return false }
        guard let prerelease else { return true }
        return prerelease.split(separator: ".", omittingEmptySubsequences: false).allSatisfy { identifier in
            !identifier.isEmpty && identifier.allSatisfy { $0.isASCII && ($0.isLetter || $0.isNumber || $0 == "-") }
                && (!identifier.allSatisfy(\.isNumber) || identifier == "0" || identifier.first != "0")
        }
    }
}

public struct TagRulesError: Error, CustomStringConvertible, Equatable {
    public let description: String
    public init(_ description: String) { self.description = description }
}

/// Namespaces' tag rules, stored as registry settings (`tag_rules:<namespace>`, removed with the
/// namespace) and cached for a few seconds, so a push costs no query.
public final class TagRuleBook: Sendable {
    static let settingPrefix = "tag_rules:"
    private let metadata: MetadataStore
    private let cache = TTLCache<String, TagRules?>(timeToLive: .seconds(5))

    public init(metadata: MetadataStore) { self.metadata = metadata }

    public func rules(for namespace: String) async throws -> TagRules? {
        if let cached = cache.get(namespace) { return cached }
        // A stored value that no longer decodes refuses nothing, and is reported by GET.
        let rules = try await metadata.registrySetting(Self.settingPrefix + namespace).flatMap {
            try? JSONDecoder().decode(TagRules.self, from: Data($0.utf8))
        }
        cache.set(namespace, rules)
        return rules
    }

    public func set(_ rules: TagRules, for namespace: String) async throws {
        try rules.validate()
        let encoder = JSONEncoder()
        encoder.outputFormatting = [.sortedKeys]
        try await metadata.putRegistrySetting(Self.settingPrefix + namespace, String(decoding: try encoder.encode(rules), as: UTF8.self))
        cache.set(namespace, rules)
    }

    @discardableResult
    public func delete(for namespace: String) async throws -> Bool {
        defer { cache.set(namespace, nil) }
        return try await metadata.deleteRegistrySetting(Self.settingPrefix + namespace)
    }

    public func forget(_ namespace: String) { cache.remove(namespace) }

    /// Throws `DENIED` naming the rule when a namespace's rules refuse one of `tags`.
    func check(_ tags: [Tag], in repository: RepositoryName) async throws {
        guard !tags.isEmpty else { return }
        let namespace = String(repository.namespace)
        guard let rules = try await rules(for: namespace) else { return }
        for tag in tags {
            if let reason = rules.refusal(of: tag.value) {
                throw RegistryError(.denied, "tag '\(tag.value)' is refused by the tag rules of namespace '\(namespace)': \(reason)")
            }
        }
    }
}
