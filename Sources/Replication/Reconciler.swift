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

    /// One pass over every replicated repository. Throws only when the rules or the catalog cannot be read.
    public func reconcile() async throws -> ReconcileReport {
        guard let remotes = remotes.withLock({ $0 }) else {
            throw ReplicationUnavailable(reason: "the replicator is not running")
        }
        let rules = try await metadata.registrySetting(ReplicationRules.settingName).flatMap(ReplicationRules.init(json:)) ?? .none
        var report = ReconcileReport()
        guard !rules.isEmpty else { return report }
        var last: String?
        while true {
            let repositories = try await registry.catalog(after: last, limit: 500)
            for repository in repositories {
                let destinations = rules.targets(for: repository).compactMap(directory.destinationName(for:))
                    .filter { remotes[$0] != nil && report.unreachable[$0] == nil }
                for destination in destinations {
                    do {
                        try await reconcile(repository, with: remotes[destination]!, named: destination, &report)
                    } catch {
                        report.unreachable[destination] = Self.describe(error)
                    }
                }
            }
            guard repositories.count == 500 else { break }
            last = repositories.last
        }
        if report.queued > 0 { nudge() }
        logger.info(
            "replication reconcile pass",
            metadata: ["checked": "\(report.checked)", "queued": "\(report.queued)", "unreachable": "\(report.unreachable.keys.sorted())"])
        return report
    }

    private func reconcile(_ repository: String, with remote: RemoteRegistry, named destination: String, _ report: inout ReconcileReport) async throws {
        guard let name = RepositoryName(repository) else { return }
        var last: String?
        while true {
            let page = try await metadata.taggedDigests(in: repository, after: last, limit: 500)
            for (tag, digestText) in page {
                guard let digest = Digest(digestText) else { continue }
                report.checked += 1
                if try await remote.manifestDigest(tag, in: repository, accepting: Self.manifestTypes) != digest {
                    try await queue(destination, repository, digest, tag: tag, &report)
                }
                for referrer in try await metadata.referrers(of: digest, in: name, artifactType: nil) {
                    report.checked += 1
                    if try await remote.manifestDigest(referrer.digest.description, in: repository, accepting: Self.manifestTypes) == nil {
                        try await queue(destination, repository, referrer.digest, tag: nil, &report)
                    }
                }
            }
            guard page.count == 500 else { return }
            last = page.last?.tag
        }
    }

    private func queue(_ destination: String, _ repository: String, _ digest: Digest, tag: String?, _ report: inout ReconcileReport) async throws {
        // A copy already waiting will repair it (and a pass while the destination is down adds no more).
        if try await metadata.replicationPending(destination: destination, repository: repository, digest: digest.description) { return }
        try await metadata.enqueueReplication(destination: destination, repository: repository, digest: digest.description, tag: tag)
        report.queued += 1
    }
}

public struct ReplicationUnavailable: Error, CustomStringConvertible {
    public var reason: String
    public var description: String { reason }
}
