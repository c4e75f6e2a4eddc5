import Hummingbird
import NIOCore

/// Per-request state shared by middleware and handlers.
public struct WharfRequestContext: RequestContext {
    public var coreContext: CoreRequestContextStorage
    /// The client's address, for logs (and later the audit log and throttling).
    public let remoteAddress: SocketAddress?

    public init(source: ApplicationRequestContextSource) {
        self.coreContext = .init(source: source)
        self.remoteAddress = source.channel.remoteAddress
    }
}
