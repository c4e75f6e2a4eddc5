import Logging
import Metadata
import OCI
import ServiceLifecycle

/// Keeps the manifest caches of several nodes over one PostgreSQL database coherent: every write
/// forgets what it changed here and announces it (NOTIFY) to the other nodes, which forget it too,
/// at once instead of after the cache's time to live. With SQLite there is one node and nothing is sent.
///
/// A message: the repository on the first line, then `t <tag>`, `m <digest>` or `*` (everything
/// of the repository) per line.
extension Registry {
    static let cacheChannel = "wharf_manifest_cache"
    /// Below PostgreSQL's 8,000-byte payload limit; a longer change is sent as `*`.
    static let maximumCachePayload = 7_900

    /// Forgets tags and manifests of `repository` on this node and on every other.
    func forget(tags: [String], manifests: [Digest] = [], in repository: String) async {
        for digest in manifests { cache.invalidate(manifest: digest, in: repository) }
        for tag in tags { cache.invalidate(tag: tag, in: repository) }
        guard metadata.database.isShared, !(tags.isEmpty && manifests.isEmpty) else { return }
        var payload = ([repository] + tags.map { "t \($0)" } + manifests.map { "m \($0)" }).joined(separator: "\n")
        if payload.utf8.count > Self.maximumCachePayload { payload = repository + "\n*" }
        await announce(payload)
    }

    /// Forgets everything of `repository` on this node and on every other.
    func forget(repository: String) async {
        cache.invalidate(repository: repository)
        guard metadata.database.isShared else { return }
        await announce(repository + "\n*")
    }

    private func announce(_ payload: String) async {
        do {
            try await metadata.database.notify(channel: Self.cacheChannel, payload: payload)
        } catch {
            // The write is committed; other nodes catch up when their entries expire.
            logger.warning("could not tell other nodes about a change; their caches catch up after cacheTTLSeconds", metadata: ["error": "\(error)"])
        }
    }

    /// Applies one announced change (nil: messages may have been missed, so everything is forgotten).
    func applyCacheChange(_ payload: String?) {
        guard let payload else {
            cache.invalidateAll()
            return
        }
        let lines = payload.split(separator: "\n", omittingEmptySubsequences: true)
        guard let repository = lines.first.map(String.init) else { return }
        for line in lines.dropFirst() {
            if line == "*" {
                cache.invalidate(repository: repository)
            } else if line.hasPrefix("t ") {
                cache.invalidate(tag: String(line.dropFirst(2)), in: repository)
            } else if line.hasPrefix("m "), let digest = Digest(line.dropFirst(2)) {
                cache.invalidate(manifest: digest, in: repository)
            } else {
                cache.invalidate(repository: repository)  // not understood: forget the repository, to be safe
            }
        }
    }
}

/// The service that hears other nodes' changes (on a database connection of its own).
public struct CacheChangeListener: Service {
    let registry: Registry

    public init(registry: Registry) { self.registry = registry }

    public func run() async throws {
        let registry = self.registry
        try? await cancelWhenGracefulShutdown {
            await registry.metadata.database.listen(channel: Registry.cacheChannel) { payload in
                registry.applyCacheChange(payload)
            }
        }
    }
}
