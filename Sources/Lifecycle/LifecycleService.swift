import Logging
import Metadata
import Monitoring
import OCI
import Registry
import ServiceLifecycle

/// An image a policy would expire (preview) or did expire (apply).
public struct PlannedExpiry: Sendable, Equatable, Codable {
    public var repository: String
    public var digest: String
    public var tags: [String]
    public var pushedAt: Int64
    public var lastPulledAt: Int64?
    public var rulePriority: Int
    public var ruleDescription: String?
    /// Manifests deleted with it: its referrers (signatures, SBOMs). Empty in a preview.
    public var alsoDeleted: [String]
}

/// Applies lifecycle policies: on a schedule, on demand, or as a dry run. A repository's own
/// policy wins; otherwise the registry-wide policy whose scope matches the name most specifically
/// (the one with the most non-wildcard characters) applies.
public final class LifecycleService: Service, Sendable {
    public typealias ExpiryObserver = @Sendable (PlannedExpiry) -> Void

    private let registry: Registry
    private var metadata: MetadataStore { registry.metadata }
    private let interval: Duration
    private let logger: Logger
    private let onExpire: ExpiryObserver
    private let onlyWhenLeader: @Sendable () async -> Bool

    /// - Parameters:
    ///   - interval: how often every repository is evaluated (hourly by default).
    ///   - onExpire: told about every expiry (the audit log).
    ///   - onlyWhenLeader: whether this node should run the scheduled pass (one node at a time).
    public init(
        registry: Registry, interval: Duration = .seconds(3600), logger: Logger,
        onExpire: @escaping ExpiryObserver = { _ in }, onlyWhenLeader: @escaping @Sendable () async -> Bool = { true }
    ) {
        self.registry = registry
        self.interval = interval
        self.logger = logger
        self.onExpire = onExpire
        self.onlyWhenLeader = onlyWhenLeader
    }

    public enum PolicySource: Sendable, Equatable {
        case repository
        case registry(scope: String)
    }

    /// The policy that governs `repository`, if any.
    public func policy(for repository: RepositoryName) async throws -> (LifecyclePolicy, PolicySource)? {
        if let own = try await metadata.settings(of: repository).lifecyclePolicy {
            return (try LifecyclePolicy(parsing: own), .repository)
        }
        let matching = try await metadata.registryLifecyclePolicies().filter { WildcardPattern.matches($0.scope, repository.value) }
        guard let best = matching.max(by: { $0.scope.filter { $0 != "*" }.count < $1.scope.filter { $0 != "*" }.count }) else { return nil }
        return (try LifecyclePolicy(parsing: best.policy), .registry(scope: best.scope))
    }

    /// What `policyText` (or the repository's governing policy) would expire now. Changes nothing.
    public func preview(_ repository: RepositoryName, policyText: String? = nil, now: Int64 = Timestamp.nowMillis()) async throws -> [PlannedExpiry] {
        let policy: LifecyclePolicy
        if let policyText {
            policy = try LifecyclePolicy(parsing: policyText)
        } else if let (governing, _) = try await self.policy(for: repository) {
            policy = governing
        } else {
            return []
        }
        let candidates = try await metadata.lifecycleCandidates(in: repository)
        let images = candidates.map { LifecycleImage(digest: $0.digest.description, tags: $0.tags, pushedAt: $0.pushedAt, lastPulledAt: $0.lastPulledAt) }
        return LifecycleEvaluator.evaluate(policy, images: images, now: now).map { expiry in
            PlannedExpiry(
                repository: repository.value, digest: expiry.image.digest, tags: expiry.image.tags, pushedAt: expiry.image.pushedAt,
                lastPulledAt: expiry.image.lastPulledAt, rulePriority: expiry.rulePriority, ruleDescription: expiry.ruleDescription, alsoDeleted: [])
        }
    }

    /// Evaluates the governing policy and expires what it selects, with the images' referrers.
    public func apply(_ repository: RepositoryName, now: Int64 = Timestamp.nowMillis()) async throws -> [PlannedExpiry] {
        var applied: [PlannedExpiry] = []
        for var expiry in try await preview(repository, now: now) {
            guard let digest = Digest(expiry.digest) else { continue }
            let deleted = try await registry.expire(digest, in: repository)
            guard deleted.contains(digest) else { continue }  // someone deleted it meanwhile
            expiry.alsoDeleted = deleted.filter { $0 != digest }.map(\.description)
            onExpire(expiry)
            registry.metrics.recordLifecycleExpiration()
            applied.append(expiry)
        }
        if !applied.isEmpty {
            logger.info("lifecycle policy expired images", metadata: ["repository": "\(repository)", "count": "\(applied.count)"])
        }
        return applied
    }

    /// One pass over every repository a policy governs.
    public func applyAll(now: Int64 = Timestamp.nowMillis()) async throws -> [PlannedExpiry] {
        let registryWide = try await metadata.registryLifecyclePolicies()
        var all: [PlannedExpiry] = []
        for (name, own) in try await metadata.repositoriesWithOwnPolicies() {
            guard own != nil || registryWide.contains(where: { WildcardPattern.matches($0.scope, name) }),
                let repository = RepositoryName(name)
            else { continue }
            do {
                all += try await apply(repository, now: now)
            } catch {
                logger.error("lifecycle evaluation failed", metadata: ["repository": "\(name)", "error": "\(error)"])
            }
        }
        return all
    }

    public func run() async throws {
        while !Task.isShuttingDownGracefully && !Task.isCancelled {
            try? await cancelWhenGracefulShutdown { try await Task.sleep(for: self.interval) }
            guard !Task.isShuttingDownGracefully, await onlyWhenLeader() else { continue }
            _ = try? await applyAll()
        }
    }
}
