import Prometheus
import Synchronization

#if canImport(Glibc)
import Glibc
#endif

/// Every metric Wharf exports, in the Prometheus text format. Each family is declared once here with
/// its type, help text and label names: swift-prometheus stops the process when one name is
/// registered with two types or two help texts, so no other code names a metric.
///
/// Label values are bounded by construction: routes are a fixed list (`HTTPRoute`), methods and
/// status codes are normalised, and the only open-ended label (`namespace` on the storage gauges)
/// is set by the sampler from the database, never from a request.
public final class WharfMetrics: Sendable {
    public let registry: PrometheusCollectorRegistry
    /// When this Wharf started (Unix seconds), for uptime and restart detection.
    public let startTime: Double
    private let manifestCacheHits: Counter
    private let manifestCacheMisses: Counter
    private let requestBodyBytes: Counter
    private let responseBodyBytes: Counter

    public init(now: Double = WharfMetrics.unixSeconds()) {
        let registry = PrometheusCollectorRegistry()
        self.registry = registry
        startTime = now
        manifestCacheHits = Self.manifestCacheCounter(registry, "hit")
        manifestCacheMisses = Self.manifestCacheCounter(registry, "miss")
        requestBodyBytes = registry.makeCounter(name: "wharf_http_received_body_bytes_total", help: "Request body bytes received from clients.")
        responseBodyBytes = registry.makeCounter(name: "wharf_http_sent_body_bytes_total", help: "Response body bytes sent to clients.")
        var gauges: [HTTPRoute: Gauge] = [:]
        for route in HTTPRoute.allCases { gauges[route] = Self.inFlightGauge(registry, route) }
        inFlightGauges = gauges
        registry.makeGauge(name: "wharf_start_time_seconds", help: "Start time of this Wharf process since the Unix epoch, in seconds.")
            .set(now)
    }

    public static func unixSeconds() -> Double {
        var spec = timespec()
        clock_gettime(CLOCK_REALTIME, &spec)
        return Double(spec.tv_sec) + Double(spec.tv_nsec) / 1e9
    }

    /// The exposition, as `GET /metrics` returns it.
    public func exposition() -> [UInt8] { registry.emitToBuffer() }

    // MARK: HTTP

    /// Latency buckets for requests, from a cached manifest (under a millisecond) to a large layer.
    static let requestBuckets: [Duration] = [
        .milliseconds(1), .milliseconds(2.5), .milliseconds(5), .milliseconds(10), .milliseconds(25), .milliseconds(50),
        .milliseconds(100), .milliseconds(250), .milliseconds(500), .seconds(1), .seconds(2.5), .seconds(5), .seconds(10),
        .seconds(30), .seconds(60),
    ]

    /// One finished request: counted by route, method and status; its duration (until the last
    /// body byte was handed to the connection) observed by route and method.
    /// Series are registered on first use and then found in these tables: registering validates
    /// names and labels, which is too slow to repeat on every request.
    private struct RequestKey: Hashable {
        var route: HTTPRoute
        var method: String
        var status: Int
    }
    private struct RouteMethod: Hashable {
        var route: HTTPRoute
        var method: String
    }
    private let requestCounters = Mutex<[RequestKey: Counter]>([:])
    private let requestDurations = Mutex<[RouteMethod: DurationHistogram]>([:])
    private let inFlightGauges: [HTTPRoute: Gauge]

    /// A request arrived; `recordRequest` ends it.
    public func requestStarted(_ route: HTTPRoute) { inFlightGauges[route]!.increment() }

    /// A request was answered (its last body byte written, or writing failed).
    public func recordRequest(route: HTTPRoute, method: String, status: Int, duration: Duration) {
        inFlightGauges[route]!.decrement()
        let method = Self.boundedMethod(method)
        let status = (100...599).contains(status) ? status : 0
        let key = RequestKey(route: route, method: method, status: status)
        let counter = requestCounters.withLock { counters in
            if let counter = counters[key] { return counter }
            let counter = registry.makeCounter(
                name: "wharf_http_requests_total", labels: [("route", route.rawValue), ("method", method), ("code", status == 0 ? "other" : String(status))],
                help: "HTTP requests answered, by route, method and status code.")
            counters[key] = counter
            return counter
        }
        counter.increment()
        let pair = RouteMethod(route: route, method: method)
        let histogram = requestDurations.withLock { histograms in
            if let histogram = histograms[pair] { return histogram }
            let histogram = registry.makeDurationHistogram(
                name: "wharf_http_request_duration_seconds", labels: [("route", route.rawValue), ("method", method)],
                buckets: Self.requestBuckets, help: "Time from a request's arrival to its last response byte, by route and method.")
            histograms[pair] = histogram
            return histogram
        }
        histogram.record(duration)
    }

    public func recordReceivedBody(bytes: Int) { requestBodyBytes.increment(by: Int64(bytes)) }
    public func recordSentBody(bytes: Int) { responseBodyBytes.increment(by: Int64(bytes)) }

    /// Requests being answered now (an upload's PATCH stays in flight while its body streams).
    private static func inFlightGauge(_ registry: PrometheusCollectorRegistry, _ route: HTTPRoute) -> Gauge {
        registry.makeGauge(
            name: "wharf_http_requests_in_flight", labels: [("route", route.rawValue)],
            help: "HTTP requests being answered now, by route; v2_blob_upload counts uploads streaming.")
    }

    /// Methods outside HTTP's registered set are counted as `other`, so a client cannot mint label values.
    static func boundedMethod(_ method: String) -> String {
        switch method {
        case "GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS": method
        default: "other"
        }
    }

    // MARK: Authentication

    /// A credential was checked: `scheme` is basic, bearer, sigv4 or token (the token endpoint).
    public func recordAuthentication(scheme: AuthenticationScheme, succeeded: Bool) {
        registry.makeCounter(
            name: "wharf_auth_attempts_total", labels: [("scheme", scheme.rawValue), ("result", succeeded ? "success" : "failure")],
            help: "Credentials checked, by scheme and result."
        ).increment()
    }

    public enum AuthenticationScheme: String, Sendable, CaseIterable {
        case basic, bearer, sigv4
    }

    // MARK: Registry

    /// Called on every manifest pull: the two series are made once, so counting is one atomic add.
    public func recordManifestCache(hit: Bool) {
        (hit ? manifestCacheHits : manifestCacheMisses).increment()
    }

    private static func manifestCacheCounter(_ registry: PrometheusCollectorRegistry, _ result: String) -> Counter {
        registry.makeCounter(
            name: "wharf_manifest_cache_requests_total", labels: [("result", result)],
            help: "Manifest lookups by tag or digest, by whether the in-memory cache answered.")
    }

    // MARK: Garbage collection and lifecycle

    static let jobBuckets: [Duration] = [
        .milliseconds(10), .milliseconds(100), .milliseconds(500), .seconds(1), .seconds(5), .seconds(15), .seconds(60), .seconds(300),
        .seconds(900), .seconds(3600),
    ]

    /// One garbage-collection run that changed storage (dry runs are not counted as reclaiming).
    public func recordGarbageCollection(
        failed: Bool, dryRun: Bool, deletedBlobs: Int, deletedManifests: Int, deletedUploads: Int, reclaimedBytes: Int64, duration: Duration
    ) {
        registry.makeCounter(
            name: "wharf_gc_runs_total", labels: [("result", failed ? "failed" : "ok"), ("dry_run", dryRun ? "true" : "false")],
            help: "Garbage-collection runs, by result and whether they were dry runs."
        ).increment()
        registry.makeDurationHistogram(
            name: "wharf_gc_duration_seconds", buckets: Self.jobBuckets, help: "Duration of garbage-collection runs."
        ).record(duration)
        guard !dryRun else { return }
        let objects = [("blob", deletedBlobs), ("manifest", deletedManifests), ("upload", deletedUploads)]
        for (kind, count) in objects {
            registry.makeCounter(
                name: "wharf_gc_deleted_objects_total", labels: [("kind", kind)],
                help: "Objects garbage collection deleted, by kind (blob, manifest, upload)."
            ).increment(by: Int64(max(0, count)))
        }
        registry.makeCounter(name: "wharf_gc_reclaimed_bytes_total", help: "Blob bytes garbage collection deleted.")
            .increment(by: max(0, reclaimedBytes))
    }

    /// Images a lifecycle policy expired (dry-run previews are not counted).
    public func recordLifecycleExpiration() {
        registry.makeCounter(name: "wharf_lifecycle_expired_images_total", help: "Images lifecycle policies expired.").increment()
    }

    // MARK: Scanning

    static let scanBuckets: [Duration] = [
        .milliseconds(100), .milliseconds(500), .seconds(1), .seconds(2.5), .seconds(5), .seconds(10), .seconds(30), .seconds(60),
        .seconds(120), .seconds(300), .seconds(900),
    ]

    /// One finished scan, with the findings it reported per severity (VEX-suppressed ones excluded).
    public func recordScan(failed: Bool, duration: Duration, findingsBySeverity: [String: Int] = [:]) {
        registry.makeDurationHistogram(
            name: "wharf_scan_duration_seconds", labels: [("result", failed ? "failed" : "ok")], buckets: Self.scanBuckets,
            help: "Duration of image scans, by result."
        ).record(duration)
        for severity in Self.severities {
            registry.makeCounter(
                name: "wharf_scan_findings_total", labels: [("severity", severity)],
                help: "Vulnerability findings reported by completed scans, by severity."
            ).increment(by: Int64(findingsBySeverity[severity] ?? 0))
        }
    }

    /// The severities scans report (ECR's words): a fixed set, so the label stays bounded.
    static let severities = ["CRITICAL", "HIGH", "MEDIUM", "LOW", "INFORMATIONAL", "UNDEFINED"]

    // MARK: Webhooks

    /// One delivery attempt: delivered, failed (to be retried) or failed for good.
    public func recordWebhookDelivery(succeeded: Bool, gaveUp: Bool) {
        registry.makeCounter(
            name: "wharf_webhook_deliveries_total", labels: [("result", succeeded ? "delivered" : gaveUp ? "failed" : "retrying")],
            help: "Webhook delivery attempts, by outcome (delivered, retrying, failed after the last attempt)."
        ).increment()
    }

    // MARK: Replication

    /// One copy attempt to a destination: copied, failed (to be retried) or failed for good, and the bytes it sent.
    public func recordReplication(succeeded: Bool, gaveUp: Bool, bytes: Int64) {
        registry.makeCounter(
            name: "wharf_replication_attempts_total", labels: [("result", succeeded ? "copied" : gaveUp ? "failed" : "retrying")],
            help: "Replication copy attempts, by outcome (copied, retrying, failed after the last attempt)."
        ).increment()
        registry.makeCounter(name: "wharf_replication_bytes_total", help: "Bytes sent to replication destinations.").increment(by: bytes)
    }

    /// Each destination's queue (destinations are configured, so the label stays bounded): images
    /// waiting, images given up, and the age of the oldest waiting change (the lag).
    public func setReplicationQueues(_ queues: [(destination: String, pending: Int, failed: Int, lagSeconds: Double)]) {
        for queue in queues {
            let labels = [("destination", queue.destination)]
            registry.makeGauge(name: "wharf_replication_pending", labels: labels, help: "Images waiting to be copied to a destination.")
                .set(Int64(queue.pending))
            registry.makeGauge(name: "wharf_replication_failed", labels: labels, help: "Images whose copy to a destination failed for good.")
                .set(Int64(queue.failed))
            registry.makeGauge(
                name: "wharf_replication_lag_seconds", labels: labels,
                help: "How long ago the oldest change still waiting for a destination was committed (0: none waiting)."
            ).set(queue.lagSeconds)
        }
    }

    // MARK: Sampled figures (set by `MetricsSampler` from the database and the disk)

    /// Whole-registry counts, from the database.
    public func setStorageCounts(blobs: Int64, blobBytes: Int64, repositories: Int64, manifests: Int64, uploadSessions: Int64, scanQueue: Int64) {
        gauge("wharf_storage_blobs", "Blobs stored (unique content).").set(blobs)
        gauge("wharf_storage_blob_bytes", "Bytes of unique blobs stored: what the disk holds.").set(blobBytes)
        gauge("wharf_repositories", "Repositories.").set(repositories)
        gauge("wharf_manifests", "Manifests stored, across repositories.").set(manifests)
        gauge("wharf_upload_sessions", "Upload sessions open (started, not yet finished or abandoned).").set(uploadSessions)
        gauge("wharf_scan_queue_depth", "Images waiting to be scanned.").set(scanQueue)
    }

    /// Bytes per namespace; namespaces missing from `usage` (deleted since the last sampling) leave the exposition.
    public func setNamespaceUsage(_ usage: [String: (logicalBytes: Int64, physicalBytes: Int64)]) {
        let gone = namespaces.withLock { known -> [String] in
            let current = Set(usage.keys)
            let gone = known.subtracting(current)
            known = current
            return Array(gone)
        }
        for namespace in gone {
            registry.unregisterGauge(logicalGauge(namespace))
            registry.unregisterGauge(physicalGauge(namespace))
        }
        for (namespace, bytes) in usage {
            logicalGauge(namespace).set(bytes.logicalBytes)
            physicalGauge(namespace).set(bytes.physicalBytes)
        }
    }

    public func setDisk(freeBytes: Int64, totalBytes: Int64) {
        gauge("wharf_storage_free_bytes", "Free bytes on the volume holding blobs.").set(freeBytes)
        gauge("wharf_storage_volume_bytes", "Size of the volume holding blobs.").set(totalBytes)
    }

    /// Seconds since the vulnerability database was last replaced; nil (none installed) sets -1.
    public func setAdvisoryDatabaseAge(seconds: Double?) {
        gauge("wharf_scan_database_age_seconds", "Seconds since the vulnerability database was last replaced; -1 when none is installed.")
            .set(seconds ?? -1)
    }

    /// Seconds the last sampling of the database took, so slow samples show before they matter.
    public func setSampleDuration(_ duration: Duration) {
        gauge("wharf_metrics_sample_duration_seconds", "How long the last sampling of storage figures took.")
            .set(Double(duration.components.seconds) + Double(duration.components.attoseconds) / 1e18)
    }

    private let namespaces = Mutex<Set<String>>([])

    private func gauge(_ name: String, _ help: String) -> Gauge { registry.makeGauge(name: name, help: help) }

    private func logicalGauge(_ namespace: String) -> Gauge {
        registry.makeGauge(
            name: "wharf_namespace_logical_bytes", labels: [("namespace", namespace)],
            help: "What the images of a namespace add up to, counting a layer once per manifest that uses it.")
    }

    private func physicalGauge(_ namespace: String) -> Gauge {
        registry.makeGauge(
            name: "wharf_namespace_physical_bytes", labels: [("namespace", namespace)],
            help: "Bytes of the distinct blobs a namespace's repositories hold (what its quota counts).")
    }
}
