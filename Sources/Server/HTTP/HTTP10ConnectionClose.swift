import NIOCore
import NIOHTTP1
import NIOHTTPTypesHTTP1

/// Closes HTTP/1.0 connections after their response, as RFC 9112 §9.3 requires when the request
/// did not ask for keep-alive. Hummingbird converts requests to HTTPTypes, which carry no version,
/// and keeps a connection open unless it sees `Connection: close`: an HTTP/1.0 client (ApacheBench,
/// load-balancer health checks, monitoring probes) then waits for a close that comes only after the
/// idle timeout, holding a connection slot meanwhile. This handler, registered with the other
/// additional handlers, places `VersionAwareClose` before the HTTPTypes conversion, where the version
/// is still known, and marks such requests `Connection: close`.
final class HTTP10ConnectionClose: ChannelInboundHandler, RemovableChannelHandler {
    typealias InboundIn = NIOAny

    func handlerAdded(context: ChannelHandlerContext) {
        let pipeline = context.pipeline.syncOperations
        guard let codec = try? pipeline.handler(type: HTTP1ToHTTPServerCodec.self) else { return }
        try? pipeline.addHandler(VersionAwareClose(), position: .before(codec))
    }

    func channelRead(context: ChannelHandlerContext, data: NIOAny) {
        context.fireChannelRead(data)
    }

    /// Sees NIO's request heads, version included.
    final class VersionAwareClose: ChannelInboundHandler, RemovableChannelHandler {
        typealias InboundIn = HTTPServerRequestPart
        typealias InboundOut = HTTPServerRequestPart

        func channelRead(context: ChannelHandlerContext, data: NIOAny) {
            guard case .head(var head) = unwrapInboundIn(data), head.version.major == 1, head.version.minor == 0, !head.isKeepAlive else {
                context.fireChannelRead(data)
                return
            }
            head.headers.replaceOrAdd(name: "Connection", value: "close")
            context.fireChannelRead(wrapInboundOut(.head(head)))
        }
    }
}
