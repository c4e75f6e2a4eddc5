import Metadata
import OCI

/// Another registry this Wharf copies images to: another Wharf (another region) or any registry
/// that speaks the Distribution API. Configured under `replication.destinations`.
public struct ReplicationDestination: Sendable, Equatable {
    /// How tasks, status and the management API name it.
    public var name: String
    /// The region it serves: ECR replication rules pick destinations by region and registry id.
    public var region: String?
    /// Its registry id (12 digits); nil means this registry's own id (another region of the same account).
    public var registryID: String?
    /// `https://host:port`, no path.
    public var url: String
    public var credentials: RemoteCredentials
    /// Images copied to it at once.
    public var concurrency: Int

    public init(
        name: String, region: String?, registryID: String?, url: String, credentials: RemoteCredentials, concurrency: Int = 4
    ) {
        self.name = name
        self.region = region
        self.registryID = registryID
        self.url = url
        self.credentials = credentials
        self.concurrency = concurrency
    }
}

/// ECR's replication configuration (what `PutReplicationConfiguration` stored) as rules that name
/// destinations for a repository: every rule whose `repositoryFilters` match (PREFIX_MATCH; a rule
/// without filters matches every repository) contributes its destinations.
public struct ReplicationRules: Sendable, Equatable {
    /// The registry setting that holds the configuration, as ECR's `replicationConfiguration` JSON.
    public static let settingName = "replication_configuration"

    public struct Target: Sendable, Hashable {
        public var region: String
        public var registryID: String
        public init(region: String, registryID: String) {
            self.region = region
            self.registryID = registryID
        }
    }

    struct Rule: Sendable, Equatable {
        var targets: [Target]
        var prefixes: [String]
    }

    var rules: [Rule]

    public static let none = ReplicationRules(rules: [])

    init(rules: [Rule]) { self.rules = rules }

    /// Parses the stored JSON; nil when it is not a replication configuration.
    public init?(json: String) {
        guard let value = JSONValue.parse(json), let rules = value["rules"]?.array else { return nil }
        self.rules = rules.map { rule in
            Rule(
                targets: (rule["destinations"]?.array ?? []).compactMap { destination in
                    guard let region = destination["region"]?.string, let registryID = destination["registryId"]?.string else { return nil }
                    return Target(region: region, registryID: registryID)
                },
                prefixes: (rule["repositoryFilters"]?.array ?? []).compactMap { filter in
                    filter["filterType"]?.string == "PREFIX_MATCH" ? filter["filter"]?.string : nil
                })
        }
    }

    public var isEmpty: Bool { rules.allSatisfy { $0.targets.isEmpty } }

    /// Where `repository` replicates to, each target once, in the configuration's order.
    public func targets(for repository: String) -> [Target] {
        var seen = Set<Target>()
        return rules.filter { rule in rule.prefixes.isEmpty || rule.prefixes.contains { repository.hasPrefix($0) } }
            .flatMap(\.targets).filter { seen.insert($0).inserted }
    }
}

/// The destinations this node knows, and how ECR's (region, registry id) targets map onto them.
public struct ReplicationDirectory: Sendable {
    public let destinations: [ReplicationDestination]
    /// This registry's region (nil: not configured) and id: a target naming both is the source itself.
    public let ownRegion: String?
    public let ownRegistryID: String

    public init(destinations: [ReplicationDestination], ownRegion: String?, ownRegistryID: String) {
        self.destinations = destinations
        self.ownRegion = ownRegion
        self.ownRegistryID = ownRegistryID
    }

    public func destination(named name: String) -> ReplicationDestination? { destinations.first { $0.name == name } }

    /// The destination a target means, as a task names it: a configured destination's name, or
    /// `unconfigured:<region>:<registryId>` (such tasks fail with the reason, visibly).
    public func destinationName(for target: ReplicationRules.Target) -> String? {
        if target.region == ownRegion, target.registryID == ownRegistryID { return nil }
        if let match = destinations.first(where: { $0.region == target.region && ($0.registryID ?? ownRegistryID) == target.registryID }) {
            return match.name
        }
        return "\(Self.unconfiguredPrefix)\(target.region):\(target.registryID)"
    }

    static let unconfiguredPrefix = "unconfigured:"

    /// The region and registry id a task's destination stands for (what ECR reports), if it has them.
    public func target(ofDestination name: String) -> ReplicationRules.Target? {
        if name.hasPrefix(Self.unconfiguredPrefix) {
            let parts = name.dropFirst(Self.unconfiguredPrefix.count).split(separator: ":")
            return parts.count == 2 ? .init(region: String(parts[0]), registryID: String(parts[1])) : nil
        }
        guard let destination = destination(named: name), let region = destination.region else { return nil }
        return .init(region: region, registryID: destination.registryID ?? ownRegistryID)
    }

    /// Where a repository's images go: ECR's targets (every tag, no deletions) and the enabled
    /// Wharf rules whose patterns match (push-triggered ones only, unless `manual` rules are wanted),
    /// each (destination, name there) once.
    public func routes(for repository: String, under policy: ReplicationPolicy, includingManual: Bool = false) -> [ReplicationRoute] {
        var routes = policy.ecr.targets(for: repository).compactMap(destinationName(for:)).map {
            ReplicationRoute(destination: $0, targetRepository: nil, tags: [], propagateDeletes: false)
        }
        for rule in policy.rules where rule.enabled && (includingManual || rule.trigger == .push) && rule.matches(repository: repository) {
            routes += rule.destinations.map {
                ReplicationRoute(
                    destination: $0, targetRepository: rule.destinationPrefix.isEmpty ? nil : rule.destinationPrefix + repository, tags: rule.tags,
                    propagateDeletes: rule.propagateDeletes)
            }
        }
        // One route per (destination, name there); tag filters of duplicates widen, deletions add up.
        var merged: [ReplicationRoute] = []
        for route in routes {
            if let index = merged.firstIndex(where: { $0.destination == route.destination && $0.targetRepository == route.targetRepository }) {
                merged[index].tags = merged[index].tags.isEmpty || route.tags.isEmpty ? [] : merged[index].tags + route.tags
                merged[index].propagateDeletes = merged[index].propagateDeletes || route.propagateDeletes
            } else {
                merged.append(route)
            }
        }
        return merged
    }

    /// The tasks an event makes under `policy`: pushes and tag moves are copied along every route
    /// whose tag filter they pass (images pushed by digest only along routes without one), and
    /// deletions are repeated along the routes that propagate them (ECR's never do).
    public func plan(_ event: RegistryEvent, under policy: ReplicationPolicy) -> [PlannedReplication] {
        guard event.digest != nil, !policy.isEmpty else { return [] }
        let action: ReplicationAction
        switch event.kind {
        case .push, .tagMove: action = .copy
        case .delete: action = .delete
        case .scan, .alert: return []
        }
        return routes(for: event.repository, under: policy).compactMap { route in
            if action == .delete, !route.propagateDeletes { return nil }
            if !route.tags.isEmpty {
                if let tag = event.tag {
                    guard route.tags.contains(where: { WildcardPattern.matches($0, tag) }) else { return nil }
                } else if action == .copy {
                    return nil  // a digest-only push (a referrer): it travels with its tagged image instead
                }
            }
            return PlannedReplication(destination: route.destination, targetRepository: route.targetRepository, action: action)
        }
    }
}

/// Everything that decides replication: ECR's configuration and Wharf's own rules.
public struct ReplicationPolicy: Sendable, Equatable {
    public var ecr: ReplicationRules
    public var rules: [ReplicationRuleRecord]
    public init(ecr: ReplicationRules, rules: [ReplicationRuleRecord]) {
        self.ecr = ecr
        self.rules = rules
    }
    public static let none = ReplicationPolicy(ecr: .none, rules: [])
    public var isEmpty: Bool { ecr.isEmpty && !rules.contains(where: \.enabled) }
}

/// One way a repository's images leave: to a destination, under a name there, for some tags.
public struct ReplicationRoute: Sendable, Equatable {
    public var destination: String
    /// Nil: the same name as at the source.
    public var targetRepository: String?
    /// Wildcard patterns; empty: every tag and digest-only pushes.
    public var tags: [String]
    public var propagateDeletes: Bool

    public init(destination: String, targetRepository: String?, tags: [String], propagateDeletes: Bool) {
        self.destination = destination
        self.targetRepository = targetRepository
        self.tags = tags
        self.propagateDeletes = propagateDeletes
    }

    public func includes(tag: String) -> Bool { tags.isEmpty || tags.contains { WildcardPattern.matches($0, tag) } }
}

extension ReplicationRuleRecord {
    public func matches(repository: String) -> Bool { repositories.contains { WildcardPattern.matches($0, repository) } }
}
