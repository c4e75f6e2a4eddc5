import Foundation
import Metadata
import OCI
import Synchronization

/// Registry-wide settings read on hot paths (every mount, every counted pull), cached here and
/// re-read after `timeToLive` so a change on another node takes effect within it; a change on this
/// node takes effect at once.
public final class RegistryWideSettings: Sendable {
    /// ECR's account settings Wharf acts on, with the values it accepts.
    public enum AccountSetting: String, Sendable, CaseIterable {
        /// Cross-repository blob mounts (`ENABLED`, the default, or `DISABLED`: a mount request
        /// starts an ordinary upload instead, as the Distribution spec allows).
        case blobMounting = "BLOB_MOUNTING"
        /// Which actions the registry policy governs; Wharf's registry policy always covers every
        /// ECR action, which is ECR's `V2`.
        case registryPolicyScope = "REGISTRY_POLICY_SCOPE"
        /// The basic scanner: Wharf's own, in-process, which ECR calls `AWS_NATIVE`.
        case basicScanTypeVersion = "BASIC_SCAN_TYPE_VERSION"

        public var allowedValues: [String] {
            switch self {
            case .blobMounting: ["ENABLED", "DISABLED"]
            case .registryPolicyScope: ["V2"]
            case .basicScanTypeVersion: ["AWS_NATIVE"]
            }
        }

        public var defaultValue: String { allowedValues[0] }
        var storageName: String { "account_setting:\(rawValue)" }
    }

    /// Principals in ECR's ARN form whose pulls leave last-pull times alone.
    public static let maximumPullTimeExclusions = 100

    struct Cached<Value: Sendable>: Sendable {
        var value: Value
        var readAt: ContinuousClock.Instant
    }

    let metadata: MetadataStore
    let timeToLive: Duration
    private let settings = Mutex<[AccountSetting: Cached<String>]>([:])
    private let exclusions = Mutex<Cached<Set<String>>?>(nil)
    let scanning = Mutex<Cached<RegistryScanningConfiguration>?>(nil)

    init(metadata: MetadataStore, timeToLive: Duration = .seconds(5)) {
        self.metadata = metadata
        self.timeToLive = timeToLive
    }

    public func value(of setting: AccountSetting) async throws -> String {
        let now = ContinuousClock.now
        if let cached = settings.withLock({ $0[setting] }), now - cached.readAt < timeToLive { return cached.value }
        let value = try await metadata.registrySetting(setting.storageName) ?? setting.defaultValue
        settings.withLock { $0[setting] = Cached(value: value, readAt: now) }
        return value
    }

    /// Stores a value the caller has checked against `allowedValues`.
    public func set(_ setting: AccountSetting, to value: String) async throws {
        try await metadata.putRegistrySetting(setting.storageName, value)
        settings.withLock { $0[setting] = nil }
    }

    public func blobMountingEnabled() async throws -> Bool { try await value(of: .blobMounting) == "ENABLED" }

    /// Whether pulls by this principal leave last-pull times alone.
    public func excludesFromPullTimes(_ principalARN: String) async throws -> Bool {
        let now = ContinuousClock.now
        if let cached = exclusions.withLock({ $0 }), now - cached.readAt < timeToLive { return cached.value.contains(principalARN) }
        let current = Set(try await metadata.pullTimeExclusions().map(\.principalARN))
        exclusions.withLock { $0 = Cached(value: current, readAt: now) }
        return current.contains(principalARN)
    }

    public func pullTimeExclusions() async throws -> [MetadataStore.PullTimeExclusion] { try await metadata.pullTimeExclusions() }

    public func addPullTimeExclusion(_ principalARN: String) async throws -> MetadataStore.PullTimeExclusionChange {
        defer { exclusions.withLock { $0 = nil } }
        return try await metadata.addPullTimeExclusion(principalARN, limit: Self.maximumPullTimeExclusions)
    }

    public func removePullTimeExclusion(_ principalARN: String) async throws -> Bool {
        defer { exclusions.withLock { $0 = nil } }
        return try await metadata.removePullTimeExclusion(principalARN)
    }
}

/// ECR's registry scanning configuration (`PutRegistryScanningConfiguration`): the scan type and up
/// to two rules, each a scan frequency for the repositories its WILDCARD filters match. When it
/// has rules they decide which pushes are scanned, and repositories' own `scanOnPush` is ignored,
/// as ECR does; without rules the repositories' settings apply.
public struct RegistryScanningConfiguration: Sendable, Equatable, Codable {
    public struct Filter: Sendable, Equatable, Codable {
        public var filter: String
        public var filterType: String
        public init(filter: String, filterType: String = "WILDCARD") {
            self.filter = filter
            self.filterType = filterType
        }
    }

    public struct Rule: Sendable, Equatable, Codable {
        public var scanFrequency: String
        public var repositoryFilters: [Filter]
        public init(scanFrequency: String, repositoryFilters: [Filter]) {
            self.scanFrequency = scanFrequency
            self.repositoryFilters = repositoryFilters
        }
    }

    public var scanType: String
    public var rules: [Rule]

    public init(scanType: String = "BASIC", rules: [Rule] = []) {
        self.scanType = scanType
        self.rules = rules
    }

    static let settingName = "registry_scanning_configuration"

    /// The frequencies each scan type allows (ECR: basic scanning is on push or by hand; enhanced
    /// scanning is on push or continuous). Wharf's one scanner serves both.
    public static let frequencies: [String: Set<String>] = ["BASIC": ["SCAN_ON_PUSH", "MANUAL"], "ENHANCED": ["SCAN_ON_PUSH", "CONTINUOUS_SCAN"]]

    /// The rule that applies to a repository and its matching filters: continuous scanning wins
    /// over scanning on push, which wins over manual (ECR's precedence). Nil when none matches.
    public func rule(for repository: String) -> (frequency: String, filters: [Filter])? {
        var best: (frequency: String, filters: [Filter])?
        let rank = ["MANUAL": 0, "SCAN_ON_PUSH": 1, "CONTINUOUS_SCAN": 2]
        for rule in rules {
            let matching = rule.repositoryFilters.filter { $0.filterType == "WILDCARD" && WildcardPattern.matches($0.filter, repository) }
            guard !matching.isEmpty else { continue }
            if best == nil || rank[rule.scanFrequency, default: 0] > rank[best!.frequency, default: 0] { best = (rule.scanFrequency, matching) }
        }
        return best
    }

    /// Whether a push into `repository` is scanned, given the repository's own `scanOnPush`.
    public func scansOnPush(_ repository: String, repositorySetting: Bool) -> Bool {
        guard !rules.isEmpty else { return repositorySetting }
        guard let frequency = rule(for: repository)?.frequency else { return false }
        return frequency == "SCAN_ON_PUSH" || frequency == "CONTINUOUS_SCAN"
    }
}

extension RegistryWideSettings {
    public func scanningConfiguration() async throws -> RegistryScanningConfiguration {
        guard let text = try await metadata.registrySetting(RegistryScanningConfiguration.settingName),
            let stored = try? JSONDecoder().decode(RegistryScanningConfiguration.self, from: Data(text.utf8))
        else { return RegistryScanningConfiguration() }
        return stored
    }

    /// Stores a configuration the caller has validated.
    public func setScanningConfiguration(_ configuration: RegistryScanningConfiguration) async throws {
        let encoder = JSONEncoder()
        encoder.outputFormatting = .sortedKeys
        try await metadata.putRegistrySetting(RegistryScanningConfiguration.settingName, String(decoding: try encoder.encode(configuration), as: UTF8.self))
        scanning.withLock { $0 = nil }
    }

    /// Whether a push into `repository` is scanned (cached for `timeToLive`, like the account settings).
    public func scansOnPush(_ repository: String, repositorySetting: Bool) async throws -> Bool {
        let now = ContinuousClock.now
        let configuration: RegistryScanningConfiguration
        if let cached = scanning.withLock({ $0 }), now - cached.readAt < timeToLive {
            configuration = cached.value
        } else {
            configuration = try await scanningConfiguration()
            scanning.withLock { $0 = Cached(value: configuration, readAt: now) }
        }
        return configuration.scansOnPush(repository, repositorySetting: repositorySetting)
    }
}
