import HTTPTypes
import NIOCore
import NIOHTTPTypes

/// Removes `X-Forwarded-*` and `Forwarded` headers from requests that do not come from a configured
/// proxy (`server.trustedProxies`), so everything after it may believe them. Without it, any
/// client could choose the realm of its own challenge (`X-Forwarded-Host`) and send the next
/// client's credentials wherever it liked.
final class ForwardedHeaderFilter: ChannelInboundHandler, RemovableChannelHandler {
    typealias InboundIn = HTTPRequestPart
    typealias InboundOut = HTTPRequestPart

    static let names: [HTTPField.Name] = [
        HTTPField.Name("X-Forwarded-Host")!, HTTPField.Name("X-Forwarded-Proto")!, HTTPField.Name("X-Forwarded-For")!,
        HTTPField.Name("X-Forwarded-Port")!, HTTPField.Name("Forwarded")!,
    ]

    private let trustedProxies: Set<String>
    private var trusted: Bool?

    init(trustedProxies: Set<String>) {
        self.trustedProxies = trustedProxies
    }

    func channelRead(context: ChannelHandlerContext, data: NIOAny) {
        guard case .head(var request) = unwrapInboundIn(data) else {
            context.fireChannelRead(data)
            return
        }
        let fromProxy =
            trusted
            ?? {
                let decided = context.channel.remoteAddress?.ipAddress.map(trustedProxies.contains) ?? false
                trusted = decided
                return decided
            }()
        if !fromProxy, Self.names.contains(where: { request.headerFields[$0] != nil }) {
            for name in Self.names { request.headerFields[name] = nil }
            context.fireChannelRead(wrapInboundOut(.head(request)))
            return
        }
        context.fireChannelRead(data)
    }
}
