import Access
import HTTPTypes
import Hummingbird
import Logging
import Monitoring
import NIOCore

#if canImport(FoundationEssentials)
import FoundationEssentials
#else
import Foundation
#endif

/// First in every request's path: gives the request its id (`X-Request-Id`, the client's when it
/// sends a usable one) for the response and the log, and, when metrics are on, counts it by route,
/// method and status and times it until its last body byte is handed to the connection.
struct RequestObservation: RouterMiddleware {
    typealias Context = WharfRequestContext
    let metrics: WharfMetrics?

    func handle(_ request: Request, context: Context, next: (Request, Context) async throws -> Response) async throws -> Response {
        var context = context
        let id = Self.requestID(request.headers[.requestID])
        context.logger[metadataKey: "hb.request.id"] = .string(id)
        guard let metrics else {
            var response = try await Self.respond(request, context: context, next: next)
            response.headers[.requestID] = id
            Self.log(request, status: response.status.code, context: context)
            return response
        }
        let started = ContinuousClock.now
        let route = Self.route(request.uri.path)
        let method = request.method.rawValue
        metrics.requestStarted(route)
        var response: Response
        do {
            response = try await Self.respond(request, context: context, next: next)
        } catch {
            metrics.recordRequest(route: route, method: method, status: 500, duration: ContinuousClock.now - started)
            throw error
        }
        response.headers[.requestID] = id
        let status = response.status.code
        Self.log(request, status: status, context: context)
        let body = response.body
        // A body of known, small size (manifests, JSON, errors; nearly always an in-memory buffer)
        // is left alone and counted now: wrapping it would turn Hummingbird's single write of
        // head, body and end into three, which cost 7 % of manifest GETs a second. Larger or
        // streamed bodies (layers) are counted once their last byte is written, or writing failed.
        if let length = body.contentLength, length <= Self.countedAtOnce {
            metrics.recordSentBody(bytes: length)
            metrics.recordRequest(route: route, method: method, status: status, duration: ContinuousClock.now - started)
            return response
        }
        response.body = ResponseBody(contentLength: body.contentLength) { writer in
            defer { metrics.recordRequest(route: route, method: method, status: status, duration: ContinuousClock.now - started) }
            try await body.write(CountingWriter(inner: writer, metrics: metrics))
        }
        return response
    }

    /// Bodies up to this size are counted when the response is made rather than as they are written.
    static let countedAtOnce = 1 << 20

    /// One line per request at debug level, and a warning for a server error, carrying the request
    /// id; the path of a layer download is left out (it is the credential).
    static func log(_ request: Request, status: Int, context: Context) {
        let level: Logger.Level = status >= 500 ? .warning : .debug
        guard context.logger.logLevel <= level else { return }
        let path = request.uri.path.hasPrefix("/ecr/layers/") ? "/ecr/layers/…" : request.uri.path
        context.logger.log(
            level: level, "request answered",
            metadata: ["method": "\(request.method.rawValue)", "path": "\(path)", "status": "\(status)", "client": "\(context.sourceAddress ?? "?")"])
    }

    /// Passes a response body on, counting its bytes.
    struct CountingWriter: ResponseBodyWriter {
        var inner: any ResponseBodyWriter
        let metrics: WharfMetrics

        mutating func write(_ buffer: ByteBuffer) async throws {
            metrics.recordSentBody(bytes: buffer.readableBytes)
            try await inner.write(buffer)
        }

        consuming func finish(_ trailingHeaders: HTTPFields?) async throws {
            try await inner.finish(trailingHeaders)
        }
    }

    /// Runs the rest of the chain; an error that knows its HTTP response becomes that response, so it
    /// too carries the request id.
    private static func respond(_ request: Request, context: Context, next: (Request, Context) async throws -> Response) async throws -> Response {
        do {
            // The id travels with the request's task: audit events made while answering record it.
            return try await RequestTrace.$requestID.withValue(context.logger[metadataKey: "hb.request.id"].map { "\($0)" }) {
                try await next(request, context)
            }
        } catch let error as any HTTPResponseError {
            return try error.response(from: request, context: context)
        }
    }

    /// The client's id when it is short and plain (it is echoed and logged), else a new one.
    static func requestID(_ offered: String?) -> String {
        if let offered, (1...128).contains(offered.utf8.count),
            offered.utf8.allSatisfy({ byte in
                (48...57).contains(byte) || (65...90).contains(byte) || (97...122).contains(byte) || byte == 45 || byte == 46 || byte == 95
                    || byte == 58
            })
        {
            return offered
        }
        return UUID().uuidString.lowercased()
    }

    /// The route label of a path: a fixed set of values whatever the client sends.
    static func route(_ path: String) -> HTTPRoute {
        if path == "/v2" || path.hasPrefix("/v2/") { return DistributionRoute.metricRoute(path: path) }
        if path == "/" { return .ecr }
        if path == "/auth/token" { return .token }
        if path.hasPrefix("/api/") { return .management }
        if path == "/metrics" { return .metrics }
        if path == "/healthz" || path == "/readyz" { return .health }
        if path.hasPrefix("/ecr/layers/") { return .ecrLayerDownload }
        return .other
    }
}
