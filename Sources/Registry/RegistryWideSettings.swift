import Metadata
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

    private struct Cached<Value: Sendable>: Sendable {
        var value: Value
        var readAt: ContinuousClock.Instant
    }

    private let metadata: MetadataStore
    private let timeToLive: Duration
    private let settings = Mutex<[AccountSetting: Cached<String>]>([:])
    private let exclusions = Mutex<Cached<Set<String>>?>(nil)

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
