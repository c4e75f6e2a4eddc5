import HTTPTypes
import Monitoring
import NIOCore
import NIOHTTPTypes

/// Counts request and response body bytes as they pass the connection: uploads in, downloads
/// out. Sits with the other additional handlers, after HTTP decoding, so headers are not counted
/// and a body is counted once whichever route handles it.
final class BodyByteCounter: ChannelDuplexHandler, RemovableChannelHandler {
    typealias InboundIn = HTTPRequestPart
    typealias InboundOut = HTTPRequestPart
    typealias OutboundIn = HTTPResponsePart
    typealias OutboundOut = HTTPResponsePart

    private let metrics: WharfMetrics

    init(metrics: WharfMetrics) { self.metrics = metrics }

    func channelRead(context: ChannelHandlerContext, data: NIOAny) {
        if case .body(let buffer) = unwrapInboundIn(data) { metrics.recordReceivedBody(bytes: buffer.readableBytes) }
        context.fireChannelRead(data)
    }

    func write(context: ChannelHandlerContext, data: NIOAny, promise: EventLoopPromise<Void>?) {
        if case .body(let buffer) = unwrapOutboundIn(data) { metrics.recordSentBody(bytes: buffer.readableBytes) }
        context.write(data, promise: promise)
    }
}
