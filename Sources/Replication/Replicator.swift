import AsyncHTTPClient
import Foundation
import Logging
import Metadata
import OCI
import Registry
import ServiceLifecycle
import Synchronization

/// Copies pushed images to the replication destinations, on its own schedule: a push only wrote
/// its event, and the outbox fan-out turned it into one durable task per destination
/// (`plan`). Each pass takes what is due, a bounded number of images per destination at once; a
/// failed copy is retried with exponential backoff and jitter until `maximumAttempts`, then marked
/// FAILED with the reason. A crash loses nothing: unfinished tasks stay PENDING and run again, and
/// copying is idempotent (what the destination has is skipped). Tag moves of one repository reach
/// a destination in the order they happened, and a tag is set only if the source still has it on
/// the same image (a later task sets the newer one).
public final class Replicator: Service, Sendable {
    public struct Settings: Sendable {
        public var maximumAttempts = 20
        public var firstBackoff: Duration = .seconds(1)
        public var maximumBackoff: Duration = .seconds(300)
        /// How often the queue is looked at when nothing wakes the replicator.
        public var pollInterval: Duration = .seconds(1)
        /// Blobs up to this size go in one request; larger ones in resumable chunks of this size.
        public var chunkSize = 8 << 20
        /// Blobs of one image copied at once.
        public var parallelBlobs = 3
        /// Finished tasks are kept this long (each image's newest per destination always).
        public var keepFinished: Duration = .seconds(30 * 86_400)
        /// How often source and destinations are compared (`reconcile()`); nil: only when asked.
        public var reconcileInterval: Duration? = .seconds(3600)
        public init() {}
    }

    /// What became of one task, for the audit log and metrics.
    public struct Outcome: Sendable {
        public var task: ReplicationTask
        public var succeeded: Bool
        public var gaveUp: Bool
        public var error: String?
        public var bytes: Int64
        public var seconds: Double
    }

    public let directory: ReplicationDirectory
    let registry: Registry
    let settings: Settings
    let logger: Logger
    let onOutcome: @Sendable (Outcome) -> Void
    private let onlyWhenLeader: @Sendable () async -> Bool
    private let running = Mutex<[String: Set<Int64>]>([:])
    private let states: [String: DestinationState]
    private let wakeUp: AsyncStream<Void>.Continuation
    private let wakeUps: AsyncStream<Void>
    /// The rules as last read (refreshed by `planner()` at every fan-out pass).
    private let policy = Mutex<ReplicationPolicy>(.none)
    /// A client per configured destination while the replicator runs.
    let remotes = Mutex<[String: RemoteRegistry]?>(nil)
    private let reconciling = Atomic<Bool>(false)

    var metadata: MetadataStore { registry.metadata }

    public init(
        registry: Registry, directory: ReplicationDirectory, settings: Settings, logger: Logger,
        onOutcome: @escaping @Sendable (Outcome) -> Void = { _ in },
        onlyWhenLeader: @escaping @Sendable () async -> Bool = { true }
    ) {
        self.registry = registry
        self.directory = directory
        self.settings = settings
        self.logger = logger
        self.onOutcome = onOutcome
        self.onlyWhenLeader = onlyWhenLeader
        self.states = Dictionary(uniqueKeysWithValues: directory.destinations.map { ($0.name, DestinationState()) })
        (wakeUps, wakeUp) = AsyncStream.makeStream(of: Void.self, bufferingPolicy: .bufferingNewest(1))
    }

    /// Reads the current rules and returns what the outbox fan-out asks of each event: the
    /// destinations its image goes to. Called once per fan-out pass.
    public func planner() async throws -> @Sendable (RegistryEvent) -> [PlannedReplication] {
        // A failure stops the fan-out pass: it must not take events and plan nothing for them.
        let current = try await currentPolicy()
        policy.withLock { $0 = current }
        let directory = self.directory
        return { event in directory.plan(event, under: current) }
    }

    /// ECR's configuration and Wharf's rules as stored now.
    public func currentPolicy() async throws -> ReplicationPolicy {
        ReplicationPolicy(
            ecr: try await metadata.registrySetting(ReplicationRules.settingName).flatMap(ReplicationRules.init(json:)) ?? .none,
            rules: try await metadata.replicationRules())
    }

    /// Something was queued: look at the queue now rather than at the next poll.
    public func nudge() { wakeUp.yield() }

    public func run() async throws {
        var configuration = HTTPClient.Configuration()
        configuration.timeout = .init(connect: .seconds(10), read: .seconds(120))
        configuration.connectionPool = .init(idleTimeout: .seconds(60), concurrentHTTP1ConnectionsPerHostSoftLimit: 32)
        // Registries redirect blob uploads' status and manifests rarely; never follow one off the registry.
        configuration.redirectConfiguration = .disallow
        let client = HTTPClient(eventLoopGroupProvider: .singleton, configuration: configuration)
        let ticker = Task {
            while !Task.isCancelled {
                try? await Task.sleep(for: settings.pollInterval)
                wakeUp.yield()
            }
        }
        let remotes = Dictionary(
            uniqueKeysWithValues: directory.destinations.map { ($0.name, RemoteRegistry(baseURL: $0.url, credentials: $0.credentials, http: client)) })
        self.remotes.withLock { $0 = remotes }
        var lastPrune = ContinuousClock.now
        var lastReconcile = ContinuousClock.now
        var scheduled: [String: ContinuousClock.Instant] = [:]
        await withDiscardingTaskGroup { group in
            await withGracefulShutdownHandler {
                for await _ in wakeUps where await onlyWhenLeader() {
                    if ContinuousClock.now - lastPrune > .seconds(3600) {
                        lastPrune = .now
                        let before = Timestamp.nowMillis() - Int64(settings.keepFinished.components.seconds) * 1000
                        try? await metadata.pruneReplicationTasks(finishedBefore: before)
                    }
                    if let interval = settings.reconcileInterval, ContinuousClock.now - lastReconcile > interval {
                        lastReconcile = .now
                        group.addTask { _ = try? await self.reconcileOnce() }
                    }
                    // Rules with a schedule run one interval after they are first seen, then every interval.
                    for rule in policy.withLock({ $0.rules }) where rule.enabled {
                        guard let seconds = rule.scheduleSeconds else { continue }
                        let due = scheduled[rule.name] ?? (ContinuousClock.now + .seconds(seconds))
                        if ContinuousClock.now >= due {
                            scheduled[rule.name] = .now + .seconds(seconds)
                            group.addTask { _ = try? await self.reconcile(rule: rule.name) }
                        } else {
                            scheduled[rule.name] = due
                        }
                    }
                    for task in await due() {
                        group.addTask {
                            await self.perform(task, remote: remotes[task.destination])
                            self.running.withLock { _ = $0[task.destination]?.remove(task.id) }
                            self.wakeUp.yield()
                        }
                    }
                }
            } onGracefulShutdown: {
                self.wakeUp.finish()
            }
            // Copies in flight stop here; their tasks stay PENDING and run again after the restart.
            group.cancelAll()
        }
        self.remotes.withLock { $0 = nil }
        ticker.cancel()
        try? await client.shutdown()
    }

    /// A reconcile pass unless one is running already (then nil).
    public func reconcileOnce() async throws -> ReconcileReport? {
        guard reconciling.compareExchange(expected: false, desired: true, ordering: .acquiring).exchanged else { return nil }
        defer { reconciling.store(false, ordering: .releasing) }
        return try await reconcile()
    }

    /// Tasks to start now, each destination filled up to its concurrency, marked running.
    func due() async -> [ReplicationTask] {
        let busy = running.withLock { $0.values.reduce(into: Set<Int64>()) { $0.formUnion($1) } }
        let candidates: [ReplicationTask]
        do {
            candidates = try await metadata.dueReplicationTasks(now: Timestamp.nowMillis(), limit: 256, running: busy)
        } catch {
            logger.warning("could not read the replication queue; retrying", metadata: ["error": "\(error)"])
            return []
        }
        return running.withLock { running in
            candidates.filter { task in
                let limit = directory.destination(named: task.destination)?.concurrency ?? 1
                guard running[task.destination, default: []].count < limit else { return false }
                running[task.destination, default: []].insert(task.id)
                return true
            }
        }
    }

    func perform(_ task: ReplicationTask, remote: RemoteRegistry?) async {
        let started = ContinuousClock.now
        var bytes: Int64 = 0
        let result: Result<Void, any Error>
        if let remote, let state = states[task.destination] {
            let copier = ImageCopier(registry: registry, remote: remote, state: state, chunkSize: settings.chunkSize, parallelBlobs: settings.parallelBlobs)
            do {
                try await copy(task, with: copier)
                result = .success(())
            } catch {
                result = .failure(error)
            }
            bytes = copier.copied.load(ordering: .relaxed)
        } else {
            result = .failure(Permanent(reason: Self.unconfiguredReason(task.destination, directory)))
        }
        if Task.isCancelled { return }  // shutting down: the task stays PENDING for the next start
        let seconds = Double((ContinuousClock.now - started).components.attoseconds) / 1e18 + Double((ContinuousClock.now - started).components.seconds)
        let outcome: MetadataStore.ReplicationOutcome
        var report = Outcome(task: task, succeeded: false, gaveUp: false, error: nil, bytes: bytes, seconds: seconds)
        switch result {
        case .success:
            outcome = .complete(bytes: bytes)
            report.succeeded = true
        case .failure(let error):
            let reason = (error as? Permanent)?.reason ?? Self.describe(error)
            report.error = reason
            if error is Permanent || task.attempts + 1 >= settings.maximumAttempts {
                outcome = .failed(error: reason)
                report.gaveUp = true
            } else {
                outcome = .retry(at: Timestamp.nowMillis() + Self.backoffMillis(attempt: task.attempts + 1, settings), error: reason)
            }
            logger.info(
                "replication attempt failed",
                metadata: [
                    "destination": "\(task.destination)", "repository": "\(task.repository)", "digest": "\(task.digest)",
                    "attempt": "\(task.attempts + 1)", "error": "\(reason)",
                ])
        }
        do {
            try await metadata.recordReplicationAttempt(task.id, outcome)
        } catch {
            logger.warning("could not record a replication attempt", metadata: ["task": "\(task.id)", "error": "\(error)"])
        }
        onOutcome(report)
    }

    /// The copy itself: the image, then the tag if the source still has it on this image. A
    /// deletion removes the tag (or, without one, the image) at the destination.
    func copy(_ task: ReplicationTask, with copier: ImageCopier) async throws {
        guard let repository = RepositoryName(task.repository), let digest = Digest(task.digest), RepositoryName(task.destinationRepository) != nil
        else {
            throw Permanent(reason: "the task names no valid repository and digest")
        }
        if task.action == .delete {
            try await copier.remote.deleteManifest(task.tag ?? digest.description, in: task.destinationRepository)
            return
        }
        do {
            _ = try await registry.manifest(.digest(digest), in: repository, recordPull: false)
        } catch let error as RegistryError where error.code == .manifestUnknown || error.code == .nameUnknown {
            throw Permanent(reason: "the image was deleted at the source before it was replicated")
        }
        // The tag goes along only while the source still has it on this image: a later task of the
        // same tag (run after this one) sets the newer image.
        var tag: String?
        if let name = task.tag, let parsed = Tag(name),
            (try? await registry.manifest(.tag(parsed), in: repository, recordPull: false))?.digest == digest
        {
            tag = name
        }
        try await copier.copyManifest(digest, from: repository, to: task.destinationRepository, tag: tag)
    }

    struct Permanent: Error {
        var reason: String
    }

    static func unconfiguredReason(_ destination: String, _ directory: ReplicationDirectory) -> String {
        if let target = directory.target(ofDestination: destination) {
            return "no replication destination is configured for region \(target.region), registry \(target.registryID): add it under replication.destinations"
        }
        return "no replication destination named \(destination) is configured on this node"
    }

    static func describe(_ error: any Error) -> String {
        if let error = error as? RemoteRegistryError { return error.description }
        if let error = error as? HTTPClientError { return "connection to the destination failed: \(error)" }
        return "\(error)"
    }

    static func backoffMillis(attempt: Int, _ settings: Settings) -> Int64 {
        RetryBackoff(first: settings.firstBackoff, maximum: settings.maximumBackoff).millis(afterAttempt: attempt)
    }
}
