import AsyncHTTPClient
import Foundation
import Logging
import NIOCore
import NIOPosix
import OCI
import Registry
import Scanner
import ServiceLifecycle
import Synchronization

/// Keeps the vulnerability database current, from either or both of:
/// - URLs (osv.dev's `<ecosystem>/all.zip`, Alpine secdb files, single OSV files), fetched on a
///   schedule with conditional requests; when one changed, the database is rebuilt from the
///   downloaded copies of all of them;
/// - an OCI artifact in this registry (`repo:tag`, see `AdvisoryArtifact`), which an air-gapped
///   site mirrors in; when its tag moves, the layer is installed.
/// A new database is checked (it must open and have the schema) and renamed over the old one, so
/// scans see either the old or the new file, never a partial one. The scan service notices the new
/// file and re-matches stored results.
public final class AdvisoryUpdater: Service, Sendable {
    public struct Settings: Sendable {
        public var databasePath: String
        public var urls: [String] = []
        public var interval: Duration = .seconds(86_400)
        /// `repository:tag` of a database artifact in this registry, installed when it moves.
        public var artifact: String?
        /// `repository:tag` this registry publishes its database to after each update from URLs,
        /// for other (offline) Wharfs to mirror.
        public var publish: String?
        public var artifactPollInterval: Duration = .seconds(10)

        public init(databasePath: String) { self.databasePath = databasePath }
    }

    /// What the management API shows about updates.
    public struct Status: Sendable, Codable, Equatable {
        public var lastCheckAt: String?
        public var lastUpdateAt: String?
        public var lastError: String?
        public var installedArtifact: String?
        public var publishedArtifact: String?
    }

    /// Per-URL validators of the copy downloaded last, kept beside the database.
    struct SourceState: Codable {
        var file: String
        var etag: String?
        var lastModified: String?
    }

    struct State: Codable {
        var sources: [String: SourceState] = [:]
        var artifactDigest: String?
        /// The database version last published (so a restart does not publish it again).
        var publishedVersion: String?
    }

    let settings: Settings
    let registry: Registry
    let logger: Logger
    private let currentStatus = Mutex(Status())

    public init(settings: Settings, registry: Registry, logger: Logger) {
        self.settings = settings
        self.registry = registry
        self.logger = logger
    }

    public var status: Status { currentStatus.withLock { $0 } }
    public var isConfigured: Bool { !settings.urls.isEmpty || settings.artifact != nil || settings.publish != nil }

    private var directory: String { (settings.databasePath as NSString).deletingLastPathComponent }
    private var sourcesDirectory: String { directory + "/sources" }
    private var statePath: String { settings.databasePath + ".update.json" }

    public func run() async throws {
        guard isConfigured else { return }
        try FileManager.default.createDirectory(atPath: sourcesDirectory, withIntermediateDirectories: true)
        await withGracefulShutdownHandler {
            await withDiscardingTaskGroup { group in
                if !settings.urls.isEmpty {
                    group.addTask {
                        while !Task.isCancelled, !Task.isShuttingDownGracefully {
                            await self.updateFromURLs()
                            try? await Task.sleep(for: self.settings.interval)
                        }
                    }
                }
                if settings.artifact != nil {
                    group.addTask {
                        while !Task.isCancelled, !Task.isShuttingDownGracefully {
                            await self.installArtifactIfMoved()
                            try? await Task.sleep(for: self.settings.artifactPollInterval)
                        }
                    }
                }
            }
        } onGracefulShutdown: {
        }
    }

    // MARK: URLs

    /// Fetches every URL (conditionally); rebuilds the database if any changed or none exists yet.
    public func updateFromURLs() async {
        var state = loadState()
        var changed = !FileManager.default.fileExists(atPath: settings.databasePath)
        var errors: [String] = []
        for (index, url) in settings.urls.enumerated() {
            do {
                if try await fetch(url, index: index, state: &state) { changed = true }
            } catch {
                errors.append("\(url): \(error)")
            }
        }
        saveState(state)
        let now = ISO8601DateFormatter().string(from: Date())
        // A failed download keeps its previous copy; the database is rebuilt only from complete copies.
        let files = settings.urls.compactMap { state.sources[$0].map { sourcesDirectory + "/" + $0.file } }
        if changed, files.count == settings.urls.count {
            do {
                let started = ContinuousClock.now
                let builder = try await AdvisoryDatabaseBuilder.create(at: settings.databasePath)
                do {
                    for (file, url) in zip(files, settings.urls) {
                        // A feed that parses to nothing (an error page, a truncated file) must not empty the database.
                        guard try await AdvisorySources.importPath(file, into: builder, source: url) > 0 else {
                            throw UpdateError("\(url) holds no OSV or secdb records; the previous database stays")
                        }
                    }
                    try await builder.commit()
                } catch {
                    await builder.discard()
                    throw error
                }
                currentStatus.withLock { $0.lastUpdateAt = now }
                logger.info(
                    "vulnerability database updated",
                    metadata: [
                        "records": "\(builder.imported)", "sources": "\(files.count)", "seconds": "\(ContinuousClock.now - started)",
                    ])
            } catch {
                errors.append("import: \(error)")
            }
        } else if changed {
            errors.append("not every source has been downloaded yet; the database was not rebuilt")
        }
        if settings.publish != nil {
            do { try await publishIfNew() } catch { errors.append("publish: \(error)") }
        }
        if !errors.isEmpty { logger.warning("vulnerability database update incomplete", metadata: ["errors": "\(errors)"]) }
        currentStatus.withLock {
            $0.lastCheckAt = now
            $0.lastError = errors.isEmpty ? nil : errors.joined(separator: "; ")
        }
    }

    /// Downloads `url` unless the copy is current; true when a new copy arrived.
    private func fetch(_ url: String, index: Int, state: inout State) async throws -> Bool {
        var request = HTTPClientRequest(url: url)
        let previous = state.sources[url]
        if let previous, FileManager.default.fileExists(atPath: sourcesDirectory + "/" + previous.file) {
            if let etag = previous.etag { request.headers.add(name: "If-None-Match", value: etag) }
            if let lastModified = previous.lastModified { request.headers.add(name: "If-Modified-Since", value: lastModified) }
        }
        let response = try await HTTPClient.shared.execute(request, timeout: .seconds(1800))
        if response.status == .notModified { return false }
        guard response.status == .ok else { throw UpdateError("HTTP \(response.status.code)") }
        // Importers tell formats by name: keep the URL's file name (all.zip, main.yaml, X.json).
        let name = URL(string: url)?.lastPathComponent.filter { $0.isLetter || $0.isNumber || "._-".contains($0) } ?? "source"
        let file = "\(index)-\(name.isEmpty ? "source" : name)"
        let staging = sourcesDirectory + "/.incoming-\(UUID().uuidString)"
        guard FileManager.default.createFile(atPath: staging, contents: nil), let output = FileHandle(forWritingAtPath: staging) else {
            throw UpdateError("cannot write into \(sourcesDirectory)")
        }
        do {
            for try await buffer in response.body {
                try output.write(contentsOf: Data(buffer.readableBytesView))
            }
            try output.close()
            guard rename(staging, sourcesDirectory + "/" + file) == 0 else { throw UpdateError("cannot store the download") }
        } catch {
            try? output.close()
            try? FileManager.default.removeItem(atPath: staging)
            throw error
        }
        state.sources[url] = SourceState(
            file: file, etag: response.headers.first(name: "ETag"),
            lastModified: response.headers.first(name: "Last-Modified"))
        return true
    }

    // MARK: OCI artifact

    /// Pushes the current database into this registry as an artifact (`settings.publish`), unless
    /// that version is there already.
    public func publishIfNew() async throws {
        guard let publish = settings.publish, let colon = publish.lastIndex(of: ":"),
            let repository = RepositoryName(String(publish[..<colon])), let tag = Tag(String(publish[publish.index(after: colon)...])),
            FileManager.default.fileExists(atPath: settings.databasePath)
        else { return }
        var state = loadState()
        // A copy, so the file pushed is the file hashed even if an update replaces the database meanwhile.
        let snapshot = settings.databasePath + ".publish-\(UUID().uuidString.prefix(8))"
        let source = settings.databasePath
        // Hundreds of MiB for a full database: copied on the I/O pool, not on a concurrency thread.
        try await NIOThreadPool.singleton.runIfActive { try FileManager.default.copyItem(atPath: source, toPath: snapshot) }
        defer { try? FileManager.default.removeItem(atPath: snapshot) }
        let database = try await AdvisoryDatabase.open(snapshot)
        let summary: AdvisoryDatabase.Summary
        do {
            summary = try await database.summary()
            try await database.close()
        } catch {
            try? await database.close()
            throw error
        }
        guard let version = summary.version, version != state.publishedVersion else { return }
        var hasher = DigestHasher()
        var size = 0
        for try await chunk in FileChunkSequence(path: snapshot) {
            hasher.update(chunk)
            size += chunk.readableBytes
        }
        let digest = hasher.finalize()
        _ = try await registry.pushBlob(FileChunkSequence(path: snapshot), in: repository, digest: digest, length: Int64(size))
        let manifest = try AdvisoryArtifact.manifest(layerDigest: digest.description, size: size, summary: summary)
        _ = try await registry.putManifest(ByteBuffer(bytes: Array(manifest)), contentType: MediaType.ociManifest, in: repository, reference: .tag(tag))
        state = loadState()
        state.publishedVersion = version
        saveState(state)
        currentStatus.withLock { $0.publishedArtifact = "\(publish) (version \(version))" }
        logger.info("vulnerability database published", metadata: ["artifact": "\(publish)", "version": "\(version)", "bytes": "\(size)"])
    }

    /// Installs the artifact's database when its tag points at a manifest not installed yet.
    public func installArtifactIfMoved() async {
        guard let artifact = settings.artifact, let colon = artifact.lastIndex(of: ":"),
            let repository = RepositoryName(String(artifact[..<colon])), let tag = Tag(String(artifact[artifact.index(after: colon)...]))
        else { return }
        var state = loadState()
        do {
            let served: ServedManifest
            do {
                served = try await registry.manifest(.tag(tag), in: repository, recordPull: false)
            } catch {
                return  // not pushed (yet): nothing to install
            }
            guard served.digest.description != state.artifactDigest else { return }
            let manifest = try ManifestParser.parse(Array(served.content.readableBytesView), contentType: served.mediaType)
            guard let layer = manifest.layers.first(where: { $0.mediaType == AdvisoryArtifact.layerMediaType }) else {
                throw UpdateError("\(artifact) is not a Wharf advisory database (no \(AdvisoryArtifact.layerMediaType) layer)")
            }
            let staging = settings.databasePath + ".artifact-\(UUID().uuidString.prefix(8))"
            do {
                guard FileManager.default.createFile(atPath: staging, contents: nil), let output = FileHandle(forWritingAtPath: staging) else {
                    throw UpdateError("cannot write next to \(settings.databasePath)")
                }
                var hasher = DigestHasher(layer.digest.algorithm)
                let reader = try await registry.openBlob(layer.digest, in: repository)
                try await reader.stream(range: nil) { buffer in
                    hasher.update(buffer)
                    try output.write(contentsOf: Data(buffer.readableBytesView))
                }
                try output.close()
                guard hasher.finalize() == layer.digest else { throw UpdateError("the layer's content does not match its digest") }
                // Only a database that opens and answers is installed.
                let candidate = try await AdvisoryDatabase.open(staging)
                let summary = try await candidate.summary()
                try await candidate.close()
                guard rename(staging, settings.databasePath) == 0 else { throw UpdateError("cannot install the database") }
                state.artifactDigest = served.digest.description
                saveState(state)
                let now = ISO8601DateFormatter().string(from: Date())
                currentStatus.withLock {
                    $0.lastCheckAt = now
                    $0.lastUpdateAt = now
                    $0.lastError = nil
                    $0.installedArtifact = "\(artifact)@\(served.digest)"
                }
                logger.info(
                    "vulnerability database installed from artifact",
                    metadata: [
                        "artifact": "\(artifact)@\(served.digest)", "records": "\(summary.records)",
                    ])
            } catch {
                try? FileManager.default.removeItem(atPath: staging)
                throw error
            }
        } catch {
            // Remember the refused digest so it is not fetched again every poll; a new push retries.
            state.artifactDigest = (try? await registry.manifest(.tag(tag), in: repository, recordPull: false))?.digest.description
            saveState(state)
            logger.warning("vulnerability database artifact refused", metadata: ["artifact": "\(artifact)", "error": "\(error)"])
            currentStatus.withLock {
                $0.lastCheckAt = ISO8601DateFormatter().string(from: Date())
                $0.lastError = "\(artifact): \(error)"
            }
        }
    }

    // MARK: State

    private func loadState() -> State {
        guard let data = FileManager.default.contents(atPath: statePath), let state = try? JSONDecoder().decode(State.self, from: data) else {
            return State()
        }
        return state
    }

    private func saveState(_ state: State) {
        guard let data = try? JSONEncoder().encode(state) else { return }
        let staging = statePath + ".new"
        if FileManager.default.createFile(atPath: staging, contents: data) { _ = rename(staging, statePath) }
    }
}

struct UpdateError: Error, CustomStringConvertible {
    let description: String
    init(_ description: String) { self.description = description }
}

/// A file read in 1 MiB buffers, as an upload body.
struct FileChunkSequence: AsyncSequence, Sendable {
    typealias Element = ByteBuffer
    let path: String

    struct AsyncIterator: AsyncIteratorProtocol {
        let handle: FileHandle?
        mutating func next() async throws -> ByteBuffer? {
            guard let handle, let data = try handle.read(upToCount: 1 << 20), !data.isEmpty else {
                try? handle?.close()
                return nil
            }
            return ByteBuffer(bytes: data)
        }
    }

    func makeAsyncIterator() -> AsyncIterator { AsyncIterator(handle: FileHandle(forReadingAtPath: path)) }
}
