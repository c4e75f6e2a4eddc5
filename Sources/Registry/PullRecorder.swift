import Logging
import Metadata
import OCI
import ServiceLifecycle
import Synchronization

/// Remembers when manifests were last pulled and writes them to the database in batches, so a
/// pull never waits on a write. Lifecycle rules such as `sinceImagePulled` read these times.
public final class PullRecorder: Service, Sendable {
    private struct Key: Hashable {
        let repository: String
        let digest: Digest
    }

    private let pending = Mutex<[Key: Int64]>([:])
    /// Blob bytes served per repository since the last flush.
    private let egress = Mutex<[String: Int64]>([:])
    private let metadata: MetadataStore
    private let interval: Duration
    private let logger: Logger

    init(metadata: MetadataStore, interval: Duration, logger: Logger) {
        self.metadata = metadata
        self.interval = interval
        self.logger = logger
    }

    func record(_ digest: Digest, in repository: String) {
        let now = Timestamp.nowMillis()
        pending.withLock { $0[Key(repository: repository, digest: digest)] = now }
    }

    /// Counts blob bytes sent to a client (the storage report's egress).
    public func recordEgress(_ bytes: Int64, in repository: String) {
        guard bytes > 0 else { return }
        egress.withLock { $0[repository, default: 0] += bytes }
    }

    /// Writes everything recorded so far.
    public func flush() async {
        let served = egress.withLock { egress -> [String: Int64] in
            let batch = egress
            egress.removeAll(keepingCapacity: true)
            return batch
        }
        do {
            try await metadata.addEgress(served, day: MetadataStore.day(Timestamp.nowMillis()))
        } catch {
            logger.warning("could not record egress; will retry", metadata: ["error": "\(error)"])
            egress.withLock { egress in for (repository, bytes) in served { egress[repository, default: 0] += bytes } }
        }
        let batch = pending.withLock { pending -> [Key: Int64] in
            let batch = pending
            pending.removeAll(keepingCapacity: true)
            return batch
        }
        guard !batch.isEmpty else { return }
        do {
            try await metadata.recordPulls(batch.map { (repository: $0.key.repository, digest: $0.key.digest, at: $0.value) })
        } catch {
            logger.warning("could not record pull times; will retry", metadata: ["error": "\(error)", "count": "\(batch.count)"])
            pending.withLock { pending in
                for (key, time) in batch where (pending[key] ?? 0) < time { pending[key] = time }
            }
        }
    }

    public func run() async throws {
        // Flush on the interval; on shutdown, flush once more so no pull time is lost.
        while !Task.isShuttingDownGracefully && !Task.isCancelled {
            try? await gracefulShutdownAwareSleep(for: interval)
            await flush()
        }
        await flush()
    }

    private func gracefulShutdownAwareSleep(for duration: Duration) async throws {
        try await cancelWhenGracefulShutdown {
            try await Task.sleep(for: duration)
        }
    }
}
