import Foundation
import HTTPTypes
import Hummingbird
import HummingbirdTesting
import Logging
import Monitoring
import NIOCore
import OCI
import Synchronization
import Testing

@testable import Server

/// Metrics, probes and request ids (issue 19), on a real server: what a client can and cannot do
/// to the exposition, and the route label of every Distribution path.
@Suite("Monitoring")
struct MonitoringTests {
    @Test("the metrics route of a /v2 path names the same endpoint DistributionRoute parses")
    func routesAgree() {
        let cases: [(String, HTTPRoute)] = [
            ("/v2/", .v2Base), ("/v2", .v2Base), ("/v2/_catalog", .catalog), ("/v2/a/b/tags/list", .tags),
            ("/v2/a/manifests/latest", .manifest), ("/v2/a/manifests/b/manifests/v1", .manifest),
            ("/v2/a/blobs/sha256:00", .blob), ("/v2/a/blobs/uploads/", .blobUpload), ("/v2/a/blobs/uploads/123", .blobUpload),
            ("/v2/a/referrers/sha256:00", .referrers), ("/v2/a/unknown", .v2Other), ("/v2/blobs/uploads/x/y", .v2Other),
        ]
        for (path, route) in cases {
            #expect(DistributionRoute.metricRoute(path: path) == route, "\(path)")
            let parsed = DistributionRoute.parse(path: path)
            let expected: HTTPRoute? =
                switch parsed {
                case .base: .v2Base
                case .catalog: .catalog
                case .tags: .tags
                case .manifest: .manifest
                case .blob: .blob
                case .uploads, .upload: .blobUpload
                case .referrers: .referrers
                case nil: .v2Other
                }
            #expect(expected == route, "\(path) parses as \(String(describing: parsed))")
        }
        #expect(RequestObservation.route("/") == .ecr)
        #expect(RequestObservation.route("/auth/token") == .token)
        #expect(RequestObservation.route("/api/v1/users") == .management)
        #expect(RequestObservation.route("/ecr/layers/abc") == .ecrLayerDownload)
        #expect(RequestObservation.route("/whatever/../v2") == .other)
    }

    @Test("a client's request id is kept only when short and plain")
    func requestIDs() {
        #expect(RequestObservation.requestID("abc-123_X.y:z") == "abc-123_X.y:z")
        for hostile in [nil, "", "with space", String(repeating: "a", count: 129), "quote\"", "new\nline", "é"] {
            let id = RequestObservation.requestID(hostile)
            #expect(id != hostile && id.count == 36)
        }
    }

    @Test("methods and statuses a client invents do not become label values")
    func boundedLabels() {
        let metrics = WharfMetrics()
        metrics.requestStarted(.other)
        metrics.recordRequest(route: .other, method: "BREW", status: 999, duration: .milliseconds(3))
        metrics.requestStarted(.manifest)
        metrics.recordRequest(route: .manifest, method: "GET", status: 200, duration: .microseconds(300))
        let text = String(decoding: metrics.exposition(), as: UTF8.self)
        #expect(text.contains(#"wharf_http_requests_total{route="other",method="other",code="other"} 1"#))
        #expect(text.contains(#"wharf_http_requests_total{route="v2_manifest",method="GET",code="200"} 1"#))
        #expect(!text.contains("BREW") && !text.contains("999"))
        #expect(text.contains(#"wharf_http_requests_in_flight{route="v2_manifest"} 0"#))
    }

    @Test("namespaces that disappear leave the exposition")
    func namespaceSeries() {
        let metrics = WharfMetrics()
        metrics.setNamespaceUsage(["team": (10, 5), "gone": (1, 1)])
        #expect(String(decoding: metrics.exposition(), as: UTF8.self).contains(#"namespace="gone""#))
        metrics.setNamespaceUsage(["team": (10, 5)])
        let text = String(decoding: metrics.exposition(), as: UTF8.self)
        #expect(!text.contains(#"namespace="gone""#))
        #expect(text.contains(#"wharf_namespace_physical_bytes{namespace="team"} 5"#))
    }

    @Test("a pull is counted under its route, with the manifest cache's answer, and carries a request id")
    func countedPull() async throws {
        try await Harness.withServer { client, server in
            let (manifest, _) = try await client.configOnlyManifest(in: "mon/app")
            let put = try await client.request(
                .put, "/v2/mon/app/manifests/v1", headers: [.contentType: MediaType.ociManifest], body: ByteBuffer(string: manifest))
            #expect(put.status == .created)
            for _ in 0..<3 {
                let get = try await client.request(
                    .get, "/v2/mon/app/manifests/v1", headers: [.accept: MediaType.ociManifest, HTTPField.Name("X-Request-Id")!: "pull-1"])
                #expect(get.status == .ok && get.headers[HTTPField.Name("X-Request-Id")!] == "pull-1")
            }
            let missing = try await client.request(.get, "/no/such/path")
            #expect(missing.status == .notFound && missing.headers[HTTPField.Name("X-Request-Id")!]?.count == 36)
            let metrics = try await client.request(.get, "/metrics")  // authentication is off in this harness
            let text = String(buffer: metrics.body)
            #expect(text.contains(#"wharf_http_requests_total{route="v2_manifest",method="GET",code="200"} 3"#))
            #expect(text.contains(#"wharf_http_requests_total{route="other",method="GET",code="404"} 1"#))
            // The first pull may fill the cache; the later ones are answered from it.
            let hits = text.split(separator: "\n").first { $0.hasPrefix(#"wharf_manifest_cache_requests_total{result="hit"} "#) }
            #expect((hits?.split(separator: " ").last.flatMap { Int($0) } ?? 0) >= 2)
            #expect(text.contains("wharf_http_received_body_bytes_total"))
            _ = server
        }
    }

    @Test("metrics settings: YAML keys, bounds, and a token file only its owner can read")
    func configuration() throws {
        var configuration = WharfConfiguration()
        try configuration.apply(yaml: "metrics:\n  enabled: true\n  listen: 127.0.0.1:9100\n  sampleIntervalSeconds: 5\n", source: "test")
        #expect(configuration.metricsListen == "127.0.0.1:9100" && configuration.metricsSampleIntervalSeconds == 5)
        #expect(throws: ConfigurationError.self) { try configuration.apply(yaml: "metrics:\n  sampleIntervalSeconds: 0\n", source: "test") }
        var same = WharfConfiguration()
        #expect(throws: ConfigurationError.self) { try same.apply(yaml: "metrics:\n  listen: 127.0.0.1:5000\n", source: "test") }
        var short = WharfConfiguration()
        #expect(throws: ConfigurationError.self) { try short.apply(environment: ["WHARF_METRICS_TOKEN": "short"]) }

        let directory = try Harness.temporaryDirectory()
        defer { try? FileManager.default.removeItem(at: directory) }
        let file = directory.appendingPathComponent("token")
        try "a-metrics-token-of-some-length\n".write(to: file, atomically: true, encoding: .utf8)
        var withFile = WharfConfiguration()
        withFile.metricsTokenFile = file.path
        try FileManager.default.setAttributes([.posixPermissions: 0o644], ofItemAtPath: file.path)
        #expect(throws: ConfigurationError.self) { try withFile.loadMetricsToken() }
        try FileManager.default.setAttributes([.posixPermissions: 0o600], ofItemAtPath: file.path)
        #expect(try withFile.loadMetricsToken() == "a-metrics-token-of-some-length")
        withFile.metricsToken = "from-the-environment-1234"
        #expect(try withFile.loadMetricsToken() == "from-the-environment-1234")
    }

    @Test("JSON log lines: one object per line, escaped, the request id named requestId")
    func jsonLogLines() throws {
        let lines = Mutex<[String]>([])
        var handler = JSONLogHandler(label: "wharf") { line in lines.withLock { $0.append(line) } }
        handler[metadataKey: "hb.request.id"] = "req-1"
        handler[metadataKey: "message"] = "shadowing a fixed key"
        var logger = Logger(label: "wharf") { _ in handler }
        logger.logLevel = .debug
        logger.info("quote \" backslash \\ newline \n tab \t bell \u{7} é", metadata: ["repository": "team/app"])
        logger.trace("below the level")
        let written = lines.withLock { $0 }
        #expect(written.count == 1 && written[0].hasSuffix("}\n") && written[0].filter { $0 == "\n" }.count == 1)
        let object = try #require(try JSONSerialization.jsonObject(with: Data(written[0].utf8)) as? [String: String])
        #expect(object["message"] == "quote \" backslash \\ newline \n tab \t bell \u{7} é")
        #expect(object["requestId"] == "req-1" && object["hb.request.id"] == nil)
        #expect(object["metadata.message"] == "shadowing a fixed key")
        #expect(object["level"] == "info" && object["logger"] == "wharf" && object["repository"] == "team/app")
        #expect(object["time"]?.count == 24 && object["time"]?.hasSuffix("Z") == true)
    }
}
