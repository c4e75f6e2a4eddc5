import Access
import AsyncHTTPClient
import Foundation
import Logging
import Metadata
import Monitoring
import NIOCore
import OCI
import ServiceLifecycle
import Synchronization

/// Delivers events to webhooks (and hands replication its tasks), on its own schedule: a push only wrote its event to the outbox, so
/// a slow or dead receiver never slows a push. Each pass moves events from the outbox into
/// per-webhook deliveries (one transaction), then sends what is due, at most one delivery per
/// webhook and repository at a time, so each repository's events arrive in order. A failed attempt
/// (an answer other than 2xx, a refused connection, a timeout) is retried with exponential backoff
/// and jitter until `maximumAttempts`, then marked FAILED; the delivery log keeps every outcome and
/// a delivery can be sent again by hand.
public final class WebhookDispatcher: Service, Sendable {
    public struct Settings: Sendable {
        /// Attempts before a delivery is given up as FAILED.
        public var maximumAttempts = 12
        /// The first retry waits this long; each further one twice as long, up to `maximumBackoff`.
        public var firstBackoff: Duration = .seconds(1)
        public var maximumBackoff: Duration = .seconds(3600)
        /// How long a receiver has to answer.
        public var timeout: Duration = .seconds(10)
        /// How often the outbox and the due deliveries are looked at when nothing wakes the dispatcher.
        public var pollInterval: Duration = .seconds(1)
        /// Deliveries sent at once.
        public var concurrency = 8
        /// This registry's address as clients use it (`host:port`), for target URLs in bodies.
        public var registryAddress = "localhost"
        public init() {}
    }

    let metadata: MetadataStore
    let sealer: SecretSealer
    let settings: Settings
    let metrics: WharfMetrics
    let logger: Logger
    private let wakeUp: AsyncStream<Void>.Continuation
    private let wakeUps: AsyncStream<Void>
    /// Webhooks as last read, refreshed every pass (a change on any node shows within a second).
    private let webhooks = Mutex<[Int64: WebhookRecord]>([:])

    /// Whether this node sends now (one node of a cluster at a time; asked before every batch).
    private let onlyWhenLeader: @Sendable () async -> Bool

    /// Replication's part of the fan-out: read once per pass, it names the destinations each
    /// event's image goes to (their tasks are written with the event's deliveries); `queued` is
    /// told when a pass wrote any.
    public struct ReplicationHook: Sendable {
        public var planner: @Sendable () async throws -> (@Sendable (RegistryEvent) -> [PlannedReplication])
        public var queued: @Sendable () -> Void
        public init(
            planner: @escaping @Sendable () async throws -> (@Sendable (RegistryEvent) -> [PlannedReplication]), queued: @escaping @Sendable () -> Void
        ) {
            self.planner = planner
            self.queued = queued
        }
    }
    let replication: ReplicationHook?

    public init(
        metadata: MetadataStore, sealer: SecretSealer, settings: Settings, metrics: WharfMetrics, logger: Logger,
        replication: ReplicationHook? = nil, onlyWhenLeader: @escaping @Sendable () async -> Bool = { true }
    ) {
        self.replication = replication
        self.onlyWhenLeader = onlyWhenLeader
        self.metadata = metadata
        self.sealer = sealer
        self.settings = settings
        self.metrics = metrics
        self.logger = logger
        (wakeUps, wakeUp) = AsyncStream.makeStream(of: Void.self, bufferingPolicy: .bufferingNewest(1))
    }

    public func run() async throws {
        // Made here, not at init, so a dispatcher that never runs leaves no client to shut down.
        var configuration = HTTPClient.Configuration()
        configuration.redirectConfiguration = .disallow  // a receiver must not bounce signed bodies elsewhere
        configuration.timeout = .init(connect: .seconds(5), read: .seconds(Int64(settings.timeout.components.seconds)))
        let client = HTTPClient(eventLoopGroupProvider: .singleton, configuration: configuration)
        let ticker = Task {
            while !Task.isCancelled {
                try? await Task.sleep(for: settings.pollInterval)
                wakeUp.yield()
            }
        }
        // A commit of this process that wrote events is fanned out at once (replication lag).
        let listener = Task {
            for await _ in metadata.database.outboxAppended.signals { wakeUp.yield() }
        }
        defer {
            ticker.cancel()
            listener.cancel()
        }
        await withGracefulShutdownHandler {
            for await _ in wakeUps where await onlyWhenLeader() {
                await pass(client)
            }
        } onGracefulShutdown: {
            self.wakeUp.finish()
        }
        try? await client.shutdown()
    }

    /// One pass: fan out the outbox, then send everything due.
    public func pass(_ client: HTTPClient) async {
        do {
            let current = try await metadata.webhooks()
            webhooks.withLock { $0 = Dictionary(uniqueKeysWithValues: current.map { ($0.id, $0) }) }
            let address = settings.registryAddress
            let replicate: @Sendable (RegistryEvent) -> [PlannedReplication] = if let replication { try await replication.planner() } else { { _ in [] } }
            let queued = Atomic<Bool>(false)
            while try await metadata.fanOutEvents(
                limit: 200, plan: { event in Self.plan(event, webhooks: current, registry: address) },
                replicate: { event in
                    let destinations = replicate(event)
                    if !destinations.isEmpty { queued.store(true, ordering: .relaxed) }
                    return destinations
                }) > 0
            {}
            if queued.load(ordering: .relaxed) { replication?.queued() }
            // The lease is renewed before each batch, so a long run of slow receivers keeps it.
            while !Task.isShuttingDownGracefully, await onlyWhenLeader() {
                let due = try await metadata.dueDeliveries(now: Timestamp.nowMillis(), limit: settings.concurrency * 4)
                guard !due.isEmpty else { break }
                await withTaskGroup(of: Void.self) { group in
                    var running = 0
                    for delivery in due {
                        if running == settings.concurrency {
                            await group.next()
                            running -= 1
                        }
                        group.addTask { await self.attempt(delivery, client) }
                        running += 1
                    }
                }
            }
        } catch {
            logger.warning("webhook dispatch failed; retrying", metadata: ["error": "\(error)"])
        }
    }

    /// The deliveries one event makes: every enabled webhook of its namespace (or of the whole
    /// registry) whose filter names its kind.
    static func plan(_ event: RegistryEvent, webhooks: [WebhookRecord], registry: String) -> [MetadataStore.PlannedDelivery] {
        webhooks.compactMap { webhook in
            guard webhook.enabled, webhook.namespace == nil || webhook.namespace == event.namespace,
                webhook.events.contains(where: { WebhookEventFilter(rawValue: $0)?.matches(event, minimumSeverity: webhook.minimumSeverity) == true }),
                let format = WebhookFormat(rawValue: webhook.format)
            else { return nil }
            return MetadataStore.PlannedDelivery(webhookID: webhook.id, body: WebhookPayloads.body(for: event, format: format, registry: registry))
        }
    }

    func attempt(_ delivery: WebhookDelivery, _ client: HTTPClient) async {
        guard let webhook = webhooks.withLock({ $0[delivery.webhookID] }) else { return }
        let format = WebhookFormat(rawValue: webhook.format) ?? .distribution
        var status: Int?
        var failure: String?
        do {
            let secret = try sealer.open(webhook.sealedSecret)
            var request = HTTPClientRequest(url: webhook.url)
            request.method = .POST
            request.headers.add(name: "Content-Type", value: format.contentType)
            request.headers.add(name: "User-Agent", value: "Wharf-Webhooks/1")
            request.headers.add(name: "X-Wharf-Delivery", value: String(delivery.id))
            request.headers.add(name: "X-Wharf-Event", value: delivery.eventKind)
            request.headers.add(
                name: WebhookSignature.header, value: WebhookSignature.value(body: delivery.body, secret: secret, timestamp: Timestamp.nowMillis() / 1000))
            request.body = .bytes(ByteBuffer(string: delivery.body))
            let response = try await client.execute(request, timeout: .seconds(Int64(settings.timeout.components.seconds)))
            status = Int(response.status.code)
            _ = try? await response.body.collect(upTo: 64 * 1024)  // drain, so the connection can be reused
            if !(200..<300).contains(Int(response.status.code)) { failure = "the receiver answered \(response.status.code)" }
        } catch {
            failure = "\(error)"
        }
        let delivered = failure == nil
        let attempts = delivery.attempts + 1
        let retryAt: Int64? =
            delivered || attempts >= settings.maximumAttempts ? nil : Timestamp.nowMillis() + Self.backoffMillis(attempt: attempts, settings)
        metrics.recordWebhookDelivery(succeeded: delivered, gaveUp: !delivered && retryAt == nil)
        do {
            try await metadata.recordDeliveryAttempt(delivery.id, delivered: delivered, status: status, error: failure, retryAt: retryAt)
        } catch {
            logger.warning("could not record a webhook delivery", metadata: ["delivery": "\(delivery.id)", "error": "\(error)"])
        }
        if !delivered {
            logger.info(
                "webhook delivery failed",
                metadata: ["webhook": "\(webhook.id)", "delivery": "\(delivery.id)", "attempt": "\(attempts)", "error": "\(failure ?? "")"])
        }
    }

    static func backoffMillis(attempt: Int, _ settings: Settings) -> Int64 {
        RetryBackoff(first: settings.firstBackoff, maximum: settings.maximumBackoff).millis(afterAttempt: attempt)
    }
}
