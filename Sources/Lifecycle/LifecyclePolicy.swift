import OCI

#if canImport(FoundationEssentials)
import FoundationEssentials
#else
import Foundation
#endif

/// A lifecycle policy in Amazon ECR's JSON language:
///
///     {"rules": [{"rulePriority": 1, "description": "…",
///                 "selection": {"tagStatus": "tagged", "tagPrefixList": ["prod"],
///                               "countType": "imageCountMoreThan", "countNumber": 5},
///                 "action": {"type": "expire"}}]}
///
/// Beyond ECR, `sinceImagePulled` works with `expire` (ECR allows it only with its archive tier).
public struct LifecyclePolicy: Sendable, Equatable {
    public enum TagStatus: String, Sendable, Codable {
        case tagged, untagged, any
    }

    public enum Count: Sendable, Equatable {
        /// Keep the newest `n` selected images; expire the rest.
        case moreThan(Int)
        /// Expire selected images pushed more than `days` ago.
        case sincePushed(days: Int)
        /// Expire selected images last pulled (or, never pulled, pushed) more than `days` ago.
        case sincePulled(days: Int)
    }

    public struct Rule: Sendable, Equatable {
        public var priority: Int
        public var description: String?
        public var tagStatus: TagStatus
        public var tagPrefixes: [String]
        public var tagPatterns: [String]
        public var count: Count

        /// Whether an image with these tags is selected by this rule's tag criteria.
        /// Several prefixes (or patterns) select only images that match every one of them, each
        /// by any of the image's tags.
        public func selects(tags: [String]) -> Bool {
            switch tagStatus {
            case .any: return true
            case .untagged: return tags.isEmpty
            case .tagged:
                guard !tags.isEmpty else { return false }
                if !tagPrefixes.isEmpty {
                    return tagPrefixes.allSatisfy { prefix in tags.contains { $0.hasPrefix(prefix) } }
                }
                return tagPatterns.allSatisfy { pattern in tags.contains { WildcardPattern.matches(pattern, $0) } }
            }
        }
    }

    /// Rules in priority order (lowest number first).
    public var rules: [Rule]

    /// ECR's limit on policy text.
    public static let maximumTextLength = 30_720
    public static let maximumWildcardsPerPattern = 4

    public struct ValidationError: Error, Sendable, Equatable, CustomStringConvertible {
        public let message: String
        public var description: String { message }
    }

    /// Parses and validates policy text, with a precise message for the first problem found.
    public init(parsing text: String) throws(ValidationError) {
        guard text.utf8.count <= Self.maximumTextLength else {
            throw ValidationError(message: "the lifecycle policy is longer than \(Self.maximumTextLength) characters")
        }
        guard let json = JSONValue.parse(text) else {
            throw ValidationError(message: "the lifecycle policy is not valid JSON")
        }
        guard let root = json.object else { throw ValidationError(message: "the lifecycle policy must be a JSON object with a 'rules' array") }
        try Self.checkKeys(root, allowed: ["rules"], at: "policy")
        guard let rawRules = root["rules"]?.array, !rawRules.isEmpty else {
            throw ValidationError(message: "'rules' must be a non-empty array")
        }
        var rules: [Rule] = []
        for (index, raw) in rawRules.enumerated() {
            rules.append(try Self.parseRule(raw, at: "rules[\(index)]"))
        }
        try Self.checkRuleSet(rules)
        self.rules = rules.sorted { $0.priority < $1.priority }
    }

    public init(rules: [Rule]) {
        self.rules = rules.sorted { $0.priority < $1.priority }
    }

    private static func parseRule(_ raw: JSONValue, at path: String) throws(ValidationError) -> Rule {
        guard let rule = raw.object else { throw ValidationError(message: "\(path) must be an object") }
        try checkKeys(rule, allowed: ["rulePriority", "description", "selection", "action"], at: path)
        guard let priority = rule["rulePriority"]?.integer else {
            throw ValidationError(message: "\(path).rulePriority is required and must be an integer")
        }
        guard priority >= 1 else { throw ValidationError(message: "\(path).rulePriority must be a positive integer, not \(priority)") }
        var description: String?
        if let value = rule["description"] {
            guard let text = value.string else { throw ValidationError(message: "\(path).description must be a string") }
            description = text
        }
        guard let action = rule["action"]?.object else { throw ValidationError(message: "\(path).action is required") }
        try checkKeys(action, allowed: ["type", "targetStorageClass"], at: "\(path).action")
        switch action["type"]?.string {
        case "expire": break
        case "transition":
            throw ValidationError(message: "\(path).action.type 'transition' (ECR's archive tier) is not supported; use 'expire'")
        default:
            throw ValidationError(message: "\(path).action.type is required and must be 'expire'")
        }
        guard let selection = rule["selection"]?.object else { throw ValidationError(message: "\(path).selection is required") }
        let at = "\(path).selection"
        try checkKeys(selection, allowed: ["tagStatus", "tagPrefixList", "tagPatternList", "countType", "countUnit", "countNumber", "storageClass"], at: at)
        if let storage = selection["storageClass"] {
            guard storage.string == "standard" else {
                throw ValidationError(message: "\(at).storageClass must be 'standard' (the archive tier is not supported)")
            }
        }
        guard let statusText = selection["tagStatus"]?.string, let status = TagStatus(rawValue: statusText) else {
            throw ValidationError(message: "\(at).tagStatus is required and must be 'tagged', 'untagged' or 'any'")
        }
        let prefixes = try stringList(selection["tagPrefixList"], at: "\(at).tagPrefixList")
        let patterns = try stringList(selection["tagPatternList"], at: "\(at).tagPatternList")
        switch status {
        case .tagged:
            if prefixes != nil && patterns != nil {
                throw ValidationError(message: "\(at): specify tagPrefixList or tagPatternList, not both")
            }
            guard (prefixes?.isEmpty == false) || (patterns?.isEmpty == false) else {
                throw ValidationError(message: "\(at): tagStatus 'tagged' needs a non-empty tagPrefixList or tagPatternList")
            }
        case .untagged, .any:
            if prefixes != nil || patterns != nil {
                throw ValidationError(message: "\(at): tagPrefixList and tagPatternList are only allowed with tagStatus 'tagged'")
            }
        }
        for pattern in patterns ?? [] {
            let wildcards = pattern.filter { $0 == "*" }.count
            guard wildcards <= maximumWildcardsPerPattern else {
                throw ValidationError(
                    message: "\(at).tagPatternList: '\(pattern)' has \(wildcards) wildcards; at most \(maximumWildcardsPerPattern) are allowed")
            }
        }
        guard let countNumber = selection["countNumber"]?.integer else {
            throw ValidationError(message: "\(at).countNumber is required and must be an integer")
        }
        // ECR's countNumber is a 32-bit Integer; the bound also keeps days-to-milliseconds far from overflow.
        guard (1...Int(Int32.max)).contains(countNumber) else {
            throw ValidationError(message: "\(at).countNumber must be a positive integer no larger than \(Int32.max), not \(countNumber)")
        }
        let unit = selection["countUnit"]
        let count: Count
        switch selection["countType"]?.string {
        case "imageCountMoreThan":
            guard unit == nil else { throw ValidationError(message: "\(at).countUnit must not be set when countType is imageCountMoreThan") }
            count = .moreThan(countNumber)
        case let type? where type == "sinceImagePushed" || type == "sinceImagePulled":
            guard unit?.string == "days" else {
                throw ValidationError(message: "\(at).countUnit is required and must be 'days' when countType is \(type)")
            }
            count = type == "sinceImagePushed" ? .sincePushed(days: countNumber) : .sincePulled(days: countNumber)
        case "sinceImageTransitioned":
            throw ValidationError(message: "\(at).countType 'sinceImageTransitioned' (ECR's archive tier) is not supported")
        default:
            throw ValidationError(message: "\(at).countType is required and must be imageCountMoreThan, sinceImagePushed or sinceImagePulled")
        }
        return Rule(priority: priority, description: description, tagStatus: status, tagPrefixes: prefixes ?? [], tagPatterns: patterns ?? [], count: count)
    }

    /// Rules that only make sense together (ECR's evaluation rules).
    private static func checkRuleSet(_ rules: [Rule]) throws(ValidationError) {
        var priorities = Set<Int>()
        for rule in rules {
            guard priorities.insert(rule.priority).inserted else {
                throw ValidationError(message: "rulePriority \(rule.priority) is used by more than one rule; priorities must be unique")
            }
        }
        let highest = rules.map(\.priority).max() ?? 0
        for rule in rules where rule.tagStatus == .any && rule.priority != highest {
            throw ValidationError(
                message: "the rule with tagStatus 'any' (priority \(rule.priority)) must have the highest rulePriority (\(highest)) so it is evaluated last")
        }
        guard rules.filter({ $0.tagStatus == .any }).count <= 1 else {
            throw ValidationError(message: "only one rule may have tagStatus 'any'")
        }
        guard rules.filter({ $0.tagStatus == .untagged }).count <= 1 else {
            throw ValidationError(message: "only one rule may select untagged images")
        }
        var selections = Set<String>()
        for rule in rules where rule.tagStatus == .tagged {
            let key =
                (rule.tagPrefixes.isEmpty
                    ? "pattern:" + rule.tagPatterns.sorted().joined(separator: ",") : "prefix:" + rule.tagPrefixes.sorted().joined(separator: ","))
            guard selections.insert(key).inserted else {
                throw ValidationError(
                    message:
                        "two rules select the same tags (\(rule.tagPrefixes.isEmpty ? rule.tagPatterns : rule.tagPrefixes)); each rule needs a unique set of tag prefixes or patterns"
                )
            }
        }
    }

    private static func checkKeys(_ object: [String: JSONValue], allowed: Set<String>, at path: String) throws(ValidationError) {
        for key in object.keys where !allowed.contains(key) {
            throw ValidationError(message: "\(path): unknown field '\(key)' (allowed: \(allowed.sorted().joined(separator: ", ")))")
        }
    }

    private static func stringList(_ value: JSONValue?, at path: String) throws(ValidationError) -> [String]? {
        guard let value else { return nil }
        guard let list = value.array, list.allSatisfy({ $0.string != nil }) else { throw ValidationError(message: "\(path) must be a list of strings") }
        let strings = list.compactMap(\.string)
        guard strings.allSatisfy({ !$0.isEmpty }) else { throw ValidationError(message: "\(path) must not contain empty strings") }
        return strings
    }
}
