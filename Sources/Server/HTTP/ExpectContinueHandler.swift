import HTTPTypes
import NIOCore
import NIOHTTPTypes

/// Answers `Expect: 100-continue` with an interim `100 Continue`, so clients that ask first (curl
/// for bodies over 1 MiB, .NET, some proxies) send the body at once instead of waiting a second
/// for a reply that never comes. Requests that will be refused are refused after the body, as before.
/// Inbound only: responses do not pass through it.
final class ExpectContinueHandler: ChannelInboundHandler, RemovableChannelHandler {
    typealias InboundIn = HTTPRequestPart
    typealias InboundOut = HTTPRequestPart

    func channelRead(context: ChannelHandlerContext, data: NIOAny) {
        if case .head(let request) = unwrapInboundIn(data),
            let expect = request.headerFields[.expect], expect.utf8.count == 12, expect.lowercased() == "100-continue"
        {
            context.writeAndFlush(NIOAny(HTTPResponsePart.head(HTTPResponse(status: .continue))), promise: nil)
        }
        context.fireChannelRead(data)
    }
}
