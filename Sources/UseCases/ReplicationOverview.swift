import Access
import Metadata
import OCI
import Registry
import Replication

/// Where images have been copied and what is still on its way, for every front end: each
/// destination's queue and lag, recent tasks, one image's status per destination; and the two
/// things an operator does by hand (copy an image now, send failed copies back to the queue),
/// audited. Permission is the front end's: replication is the system administrators' business.
public struct ReplicationOverview: Sendable {
    let registry: Registry
    let replicator: Replicator
    let audit: AuditLog?

    public init(registry: Registry, replicator: Replicator, audit: AuditLog?) {
        self.registry = registry
        self.replicator = replicator
        self.audit = audit
    }

    var directory: ReplicationDirectory { replicator.directory }
    /// Something was queued by hand: start it now.
    func queued() { replicator.nudge() }

    var metadata: MetadataStore { registry.metadata }

    public struct Destination: Sendable {
        public var name: String
        public var region: String?
        public var registryID: String?
        /// Nil for a destination that ECR rules name but this node has no entry for.
        public var url: String?
        public var pending: Int
        public var failed: Int
        public var complete: Int
        /// How long the oldest waiting change has waited, in seconds (0: nothing waits).
        public var lagSeconds: Double
        public var lastCompletedAt: Int64?
    }

    /// Every configured destination with its queue, and any unconfigured one tasks name.
    public func destinations() async throws -> [Destination] {
        let queues = Dictionary(uniqueKeysWithValues: try await metadata.replicationQueues().map { ($0.destination, $0) })
        let now = Timestamp.nowMillis()
        var names = directory.destinations.map(\.name)
        names += queues.keys.filter { name in !names.contains(name) }.sorted()
        return names.map { name in
            let configured = directory.destination(named: name)
            let target = directory.target(ofDestination: name)
            let queue = queues[name]
            return Destination(
                name: name, region: configured?.region ?? target?.region, registryID: target?.registryID ?? configured?.registryID,
                url: configured?.url, pending: queue?.pending ?? 0, failed: queue?.failed ?? 0, complete: queue?.complete ?? 0,
                lagSeconds: queue?.oldestPendingCreatedAt.map { Double(max(0, now - $0)) / 1000 } ?? 0, lastCompletedAt: queue?.lastCompletedAt)
        }
    }

    public func tasks(destination: String?, status: ReplicationTask.Status?, limit: Int) async throws -> [ReplicationTask] {
        try await metadata.replicationTasks(destination: destination, status: status, limit: limit)
    }

    /// One image's status per destination (the newest task of each), by tag or digest.
    public func status(of reference: Reference, in repository: RepositoryName) async throws -> (digest: Digest, tasks: [ReplicationTask]) {
        let digest = try await registry.manifest(reference, in: repository, recordPull: false).digest
        return (digest, try await metadata.replicationStatus(repository: repository.value, digest: digest.description))
    }

    /// Queues a copy of one image (with its tag, when named by tag) to a configured destination now.
    public func replicate(_ reference: Reference, in repository: RepositoryName, to destination: String, by requester: Requester) async throws -> Digest {
        guard directory.destination(named: destination) != nil else {
            throw UseCaseError.invalid(
                "no replication destination named '\(destination)'; configured: \(directory.destinations.map(\.name).joined(separator: ", "))")
        }
        let digest = try await registry.manifest(reference, in: repository, recordPull: false).digest
        var tag: String?
        if case .tag(let name) = reference { tag = name.value }
        try await metadata.enqueueReplication(destination: destination, repository: repository.value, digest: digest.description, tag: tag)
        audit?.record(
            AuditEvent(
                actor: requester.identity, action: "replication.request", namespace: String(repository.namespace), repository: repository.value,
                target: digest.description, source: requester.source, detail: AuditDetail.object(["destination": destination, "tag": tag ?? ""])))
        queued()
        return digest
    }

    /// Compares every replicated repository with its destinations now and queues what differs;
    /// nil when a pass is running already.
    public func reconcile(by requester: Requester) async throws -> ReconcileReport? {
        let report = try await replicator.reconcileOnce()
        if let report {
            audit?.record(
                AuditEvent(
                    actor: requester.identity, action: "replication.reconcile", source: requester.source,
                    detail: AuditDetail.object(["checked": String(report.checked), "queued": String(report.queued)])))
        }
        return report
    }

    // MARK: Wharf's own rules

    public func rules() async throws -> [ReplicationRuleRecord] { try await metadata.replicationRules() }

    /// What a rule says, as the API takes it (the name comes from the path).
    public struct RuleDefinition: Sendable, Decodable {
        public var enabled: Bool?
        public var repositories: [String]
        public var tags: [String]?
        public var destinations: [String]
        public var trigger: String?
        public var scheduleSeconds: Int?
        public var propagateDeletes: Bool?
        public var destinationPrefix: String?
    }

    /// Creates or replaces the rule `name`, validated; takes effect from the next push.
    public func putRule(named name: String, _ definition: RuleDefinition, by requester: Requester) async throws -> ReplicationRuleRecord {
        let rule = try Self.validated(name: name, definition, destinations: Set(directory.destinations.map(\.name)))
        let stored = try await metadata.putReplicationRule(rule)
        audit?.record(
            AuditEvent(
                actor: requester.identity, action: "replication.rule.put", target: name, source: requester.source,
                detail: AuditDetail.object([
                    "repositories": rule.repositories.joined(separator: " "), "tags": rule.tags.joined(separator: " "),
                    "destinations": rule.destinations.joined(separator: " "), "trigger": rule.trigger.rawValue,
                    "propagateDeletes": String(rule.propagateDeletes), "enabled": String(rule.enabled),
                ])))
        return stored
    }

    public func deleteRule(named name: String, by requester: Requester) async throws -> Bool {
        guard try await metadata.deleteReplicationRule(named: name) else { return false }
        audit?.record(AuditEvent(actor: requester.identity, action: "replication.rule.delete", target: name, source: requester.source))
        return true
    }

    /// Runs a rule now (whatever its trigger): its repositories are compared with its destinations
    /// and what differs is queued.
    public func runRule(named name: String, by requester: Requester) async throws -> ReconcileReport {
        guard try await metadata.replicationRules().contains(where: { $0.name == name }) else {
            throw UseCaseError.invalid("no replication rule named '\(name)'")
        }
        let report = try await replicator.reconcile(rule: name)
        audit?.record(
            AuditEvent(
                actor: requester.identity, action: "replication.rule.run", target: name, source: requester.source,
                detail: AuditDetail.object(["checked": String(report.checked), "queued": String(report.queued)])))
        return report
    }

    static func validated(name: String, _ definition: RuleDefinition, destinations known: Set<String>) throws -> ReplicationRuleRecord {
        func allowed(_ text: String, extra: String) -> Bool {
            text.allSatisfy { $0.isASCII && ($0.isLowercase || $0.isNumber || extra.contains($0)) }
        }
        guard (1...64).contains(name.count), allowed(name, extra: "._-") else {
            throw UseCaseError.invalid("a rule's name is 1 to 64 of a-z, 0-9, '.', '_' and '-'")
        }
        guard (1...20).contains(definition.repositories.count),
            definition.repositories.allSatisfy({ (1...256).contains($0.count) && allowed($0, extra: "._-/*") })
        else {
            throw UseCaseError.invalid("repositories: 1 to 20 patterns of repository names, '*' matching any run of characters (e.g. team/*)")
        }
        let tags = definition.tags ?? []
        guard tags.count <= 20,
            tags.allSatisfy({ (1...128).contains($0.count) && $0.allSatisfy { $0.isASCII && ($0.isLetter || $0.isNumber || "._-*".contains($0)) } })
        else { throw UseCaseError.invalid("tags: up to 20 tag patterns, '*' matching any run of characters (e.g. v*); none: every tag") }
        guard (1...25).contains(definition.destinations.count), Set(definition.destinations).count == definition.destinations.count else {
            throw UseCaseError.invalid("destinations: 1 to 25 destination names, each once")
        }
        for destination in definition.destinations where !known.contains(destination) {
            throw UseCaseError.invalid(
                "no replication destination named '\(destination)' is configured (replication.destinations): \(known.sorted().joined(separator: ", "))")
        }
        let trigger = definition.trigger.map { ReplicationRuleRecord.Trigger(rawValue: $0) } ?? .push
        guard let trigger else { throw UseCaseError.invalid("trigger must be push or manual") }
        if let seconds = definition.scheduleSeconds, !(60...604_800).contains(seconds) {
            throw UseCaseError.invalid("scheduleSeconds must be 60 to 604800 (or left out)")
        }
        let prefix = definition.destinationPrefix ?? ""
        guard prefix.count <= 128, prefix.isEmpty || RepositoryName(prefix + "a/b") != nil else {
            throw UseCaseError.invalid("destinationPrefix must make valid repository names when put before them (e.g. mirror/)")
        }
        return ReplicationRuleRecord(
            name: name, enabled: definition.enabled ?? true, repositories: definition.repositories, tags: tags, destinations: definition.destinations,
            trigger: trigger, scheduleSeconds: definition.scheduleSeconds, propagateDeletes: definition.propagateDeletes ?? false,
            destinationPrefix: prefix)
    }

    /// Sends every FAILED copy (of one destination, or all) back to the queue from its first attempt.
    public func retryFailed(destination: String?, by requester: Requester) async throws -> Int {
        let count = try await metadata.retryFailedReplications(destination: destination)
        audit?.record(
            AuditEvent(
                actor: requester.identity, action: "replication.retry", target: destination ?? "*", source: requester.source,
                detail: AuditDetail.object(["tasks": String(count)])))
        if count > 0 { queued() }
        return count
    }
}
