import HTTPTypes
import Monitoring
import NIOCore
import NIOHTTPTypes

/// Answers `Expect: 100-continue` with an interim `100 Continue`, so clients that ask first (curl
/// for bodies over 1 MiB, .NET, some proxies) send the body at once instead of waiting a second
/// for a reply that never comes. Requests that will be refused are refused after the body, as before.
/// Inbound only: responses do not pass through it.
///
/// It also counts request body bytes for the metrics, since every request part passes here: a
/// handler of its own would be set up and torn down with every connection, which is most of the
/// work of a short-connection request.
final class ExpectContinueHandler: ChannelInboundHandler, RemovableChannelHandler {
    typealias InboundIn = HTTPRequestPart
    typealias InboundOut = HTTPRequestPart

    private let metrics: WharfMetrics?

    init(metrics: WharfMetrics? = nil) { self.metrics = metrics }

    func channelRead(context: ChannelHandlerContext, data: NIOAny) {
        switch unwrapInboundIn(data) {
        case .head(let request):
            if let expect = request.headerFields[.expect], expect.utf8.count == 12, expect.lowercased() == "100-continue" {
                context.writeAndFlush(NIOAny(HTTPResponsePart.head(HTTPResponse(status: .continue))), promise: nil)
            }
        case .body(let buffer):
            metrics?.recordReceivedBody(bytes: buffer.readableBytes)
        case .end:
            break
        }
        context.fireChannelRead(data)
    }
}
