import Metadata
import OCI
import Registry

/// The periodic comparison of source and destinations: every tag of every repository the rules
/// replicate, and the referrers of the images those tags name, are looked up at each configured
/// destination; what is missing or points elsewhere (a destination restored from an old backup,
/// a tag changed there by hand, images pushed before the rule existed) gets a copy queued. One
/// HEAD per tag and referrer per destination: the pass is bounded by what is stored, and runs on
/// the replicating node only.
public struct ReconcileReport: Sendable, Codable, Equatable {
    /// Tags and referrers compared.
    public var checked = 0
    /// Copies queued to repair a difference.
    public var queued = 0
    /// Destinations that could not be asked (their copies are left for the next pass), with why.
    public var unreachable: [String: String] = [:]
}

extension Replicator {
    static let manifestTypes = [MediaType.ociManifest, MediaType.ociIndex, MediaType.dockerManifest, MediaType.dockerManifestList]

    /// One pass over every replicated repository along its push-triggered routes (ECR's rules and
    /// Wharf's push rules), or along one rule's routes only (a manual or scheduled rule's run).
    /// Throws only when the rules or the catalog cannot be read.
    public func reconcile(rule: String? = nil) async throws -> ReconcileReport {
        guard let remotes = remotes.withLock({ $0 }) else {
            throw ReplicationUnavailable(reason: "the replicator is not running")
        }
        var policy = try await currentPolicy()
        if let rule {
            guard let only = policy.rules.first(where: { $0.name == rule }) else { throw ReplicationUnavailable(reason: "no replication rule named '\(rule)'") }
            var enabled = only
            enabled.enabled = true
            policy = ReplicationPolicy(ecr: .none, rules: [enabled])
        }
        var report = ReconcileReport()
        guard !policy.isEmpty else { return report }
        var last: String?
        while true {
            let repositories = try await registry.catalog(after: last, limit: 500)
            for repository in repositories {
                let routes = directory.routes(for: repository, under: policy, includingManual: rule != nil)
                    .filter { remotes[$0.destination] != nil && report.unreachable[$0.destination] == nil }
                for route in routes {
                    do {
                        try await reconcile(repository, along: route, with: remotes[route.destination]!, &report)
                    } catch {
                        report.unreachable[route.destination] = Self.describe(error)
                    }
                }
            }
            guard repositories.count == 500 else { break }
            last = repositories.last
        }
        if report.queued > 0 { nudge() }
        logger.info(
            "replication reconcile pass",
            metadata: [
                "rule": "\(rule ?? "*")", "checked": "\(report.checked)", "queued": "\(report.queued)",
                "unreachable": "\(report.unreachable.keys.sorted())",
            ])
        return report
    }

    private func reconcile(_ repository: String, along route: ReplicationRoute, with remote: RemoteRegistry, _ report: inout ReconcileReport) async throws {
        guard let name = RepositoryName(repository) else { return }
        let target = route.targetRepository ?? repository
        var last: String?
        while true {
            let page = try await metadata.taggedDigests(in: repository, after: last, limit: 500)
            for (tag, digestText) in page where route.includes(tag: tag) {
                guard let digest = Digest(digestText) else { continue }
                report.checked += 1
                if try await remote.manifestDigest(tag, in: target, accepting: Self.manifestTypes) != digest {
                    try await queue(route, repository, digest, tag: tag, &report)
                }
                for referrer in try await metadata.referrers(of: digest, in: name, artifactType: nil) {
                    report.checked += 1
                    if try await remote.manifestDigest(referrer.digest.description, in: target, accepting: Self.manifestTypes) == nil {
                        try await queue(route, repository, referrer.digest, tag: nil, &report)
                    }
                }
            }
            guard page.count == 500 else { return }
            last = page.last?.tag
        }
    }

    private func queue(_ route: ReplicationRoute, _ repository: String, _ digest: Digest, tag: String?, _ report: inout ReconcileReport) async throws {
        // A copy already waiting will repair it (and a pass while the destination is down adds no more).
        if try await metadata.replicationPending(destination: route.destination, repository: repository, digest: digest.description) { return }
        try await metadata.enqueueReplication(
            destination: route.destination, repository: repository, digest: digest.description, tag: tag, targetRepository: route.targetRepository)
        report.queued += 1
    }
}

public struct ReplicationUnavailable: Error, CustomStringConvertible {
    public var reason: String
    public var description: String { reason }
}
