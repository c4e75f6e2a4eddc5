import CLinux
import Logging
import NIOCore
import Synchronization

#if canImport(Glibc)
import Glibc
#endif

/// Bounds the connections one source address may hold open, so one client cannot exhaust the
/// file descriptors (20,000 connections with unfinished headers once made every other request
/// time out), and hands memory back to the system once a flood of connections has drained.
///
/// Stalled connections are closed by the HTTP channel's idle timeout (`server.idleTimeoutSeconds`):
/// a request whose headers or body stop arriving, and a kept-alive connection with no request.
final class ConnectionLimiter: Sendable {
    let maximumPerSource: Int
    private let logger: Logger
    private struct State {
        var perSource: [String: Int] = [:]
        var total = 0
        /// The most connections open at once since memory was last handed back.
        var peak = 0
        var refusedSinceLog = 0
    }
    private let state = Mutex(State())

    init(maximumPerSource: Int, logger: Logger) {
        self.maximumPerSource = maximumPerSource
        self.logger = logger
    }

    var openConnections: Int { state.withLock { $0.total } }

    /// Counts a new connection; false when its source already holds the maximum.
    func admit(_ source: String) -> Bool {
        let refused: Int? = state.withLock { state in
            let current = state.perSource[source, default: 0]
            guard current < maximumPerSource else {
                state.refusedSinceLog += 1
                // One log line per 1,000 refusals: a flood must not become a flood of logs too.
                if state.refusedSinceLog == 1 || state.refusedSinceLog % 1000 == 0 { return state.refusedSinceLog }
                return 0
            }
            state.perSource[source] = current + 1
            state.total += 1
            state.peak = max(state.peak, state.total)
            return nil
        }
        if let refused {
            if refused > 0 {
                logger.warning(
                    "connection refused: too many open connections from one address",
                    metadata: [
                        "source": "\(source)", "limit": "\(maximumPerSource)", "refusedSoFar": "\(refused)",
                    ])
            }
            return false
        }
        return true
    }

    func release(_ source: String) {
        let trim: Bool = state.withLock { state in
            let remaining = state.perSource[source, default: 1] - 1
            state.perSource[source] = remaining > 0 ? remaining : nil
            state.total -= 1
            // After a burst of at least 1,000 connections has drained to a tenth, the buffers they
            // used sit in malloc's free lists: return them (RSS stayed at 347 MB after such a flood).
            guard state.peak >= 1000, state.total <= state.peak / 10 else { return false }
            state.peak = state.total
            return true
        }
        if trim { _ = wharf_release_free_memory() }
    }

    /// Lifts the soft limit on open files to the hard limit: the per-source bound, not the
    /// default soft limit of 1,024, should decide how many clients Wharf serves at once.
    static func raiseOpenFileLimit(logger: Logger) {
        #if canImport(Glibc)
        var limit = rlimit()
        guard getrlimit(__rlimit_resource_t(RLIMIT_NOFILE.rawValue), &limit) == 0, limit.rlim_cur < limit.rlim_max else { return }
        let before = limit.rlim_cur
        limit.rlim_cur = limit.rlim_max
        if setrlimit(__rlimit_resource_t(RLIMIT_NOFILE.rawValue), &limit) == 0 {
            logger.debug("raised the open-file limit", metadata: ["from": "\(before)", "to": "\(limit.rlim_max)"])
        }
        #endif
    }

    /// The per-connection handler that admits the connection or closes it at once.
    func handler() -> Handler { Handler(limiter: self) }

    final class Handler: ChannelInboundHandler, RemovableChannelHandler {
        typealias InboundIn = NIOAny
        private let limiter: ConnectionLimiter
        private var source: String?

        init(limiter: ConnectionLimiter) {
            self.limiter = limiter
        }

        func handlerAdded(context: ChannelHandlerContext) {
            let address = context.channel.remoteAddress?.ipAddress ?? "unknown"
            if limiter.admit(address) {
                source = address
            } else {
                context.close(promise: nil)
            }
        }

        func handlerRemoved(context: ChannelHandlerContext) {
            if let source {
                limiter.release(source)
                self.source = nil
            }
        }
    }
}
