import HTTPTypes
import NIOCore
import NIOHTTP1
import NIOHTTPTypes
import OCI

/// Answers a request the HTTP parser refused (headers over 80 KiB or 1,000 fields, bytes that are
/// not HTTP, a path with raw non-ASCII bytes) with the distribution spec's error JSON and closes the
/// connection. Without it the client got a 400 with an empty body and no reason.
final class MalformedRequestHandler: ChannelInboundHandler, RemovableChannelHandler {
    typealias InboundIn = HTTPRequestPart
    typealias OutboundOut = HTTPResponsePart

    private var answered = false

    func errorCaught(context: ChannelHandlerContext, error: any Error) {
        guard let parserError = error as? HTTPParserError else {
            context.fireErrorCaught(error)
            return
        }
        guard !answered else { return }
        answered = true
        let (status, message) = Self.describe(parserError)
        let body = #"{"errors":[{"code":"UNSUPPORTED","message":"# + JSONString.literal(message) + "}]}"
        let buffer = context.channel.allocator.buffer(string: body)
        var headers = HTTPFields()
        headers[.contentType] = "application/json; charset=utf-8"
        headers[.contentLength] = String(buffer.readableBytes)
        headers[.connection] = "close"
        context.write(wrapOutboundOut(.head(HTTPResponse(status: status, headerFields: headers))), promise: nil)
        context.write(wrapOutboundOut(.body(buffer)), promise: nil)
        context.writeAndFlush(wrapOutboundOut(.end(nil))).whenComplete { _ in context.close(promise: nil) }
    }

    static func describe(_ error: HTTPParserError) -> (HTTPResponse.Status, String) {
        switch error {
        case .headerOverflow:
            (
                .init(code: 431, reasonPhrase: "Request Header Fields Too Large"),
                "the request's headers are too large (at most 80 KiB and 1,000 fields)"
            )
        case .invalidURL, .invalidCharactersUsed:
            (.badRequest, "the request line or a header holds characters HTTP does not allow (paths must be ASCII; percent-encode the rest)")
        default:
            (.badRequest, "the request is not valid HTTP/1.1: \(error)")
        }
    }
}
