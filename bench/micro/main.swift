// Micro-benchmarks of Wharf's hot paths, with google/swift-benchmark:
//
//     swift run -c release wharf-microbench                 # all
//     swift run -c release wharf-microbench --filter token  # some
//
// Digesting bounds every push; manifest parsing and validation run on every manifest push;
// reference parsing and token verification run on every authenticated request.

import Access
import Benchmark
import Dispatch
import Logging
import Metadata
import NIOCore
import OCI
import Synchronization

#if canImport(FoundationEssentials)
import FoundationEssentials
#else
import Foundation
#endif

/// Runs async set-up code from this synchronous entry point (benchmark closures are synchronous).
func blocking<T: Sendable>(_ work: @escaping @Sendable () async throws -> T) -> T {
    let result = Mutex<Result<T, any Error>?>(nil)
    let done = DispatchSemaphore(value: 0)
    Task {
        let outcome: Result<T, any Error>
        do { outcome = .success(try await work()) } catch { outcome = .failure(error) }
        result.withLock { $0 = outcome }
        done.signal()
    }
    done.wait()
    return try! result.withLock { $0! }.get()
}

// MARK: Digesting

let mebibyte = ByteBuffer(bytes: (0..<(1 << 20)).map { UInt8(truncatingIfNeeded: $0 &* 31) })

benchmark("sha256 of 1 MiB (streaming hasher)") {
    var hasher = DigestHasher(.sha256)
    hasher.update(mebibyte)
    _ = hasher.finalize()
}

benchmark("sha512 of 1 MiB (streaming hasher)") {
    var hasher = DigestHasher(.sha512)
    hasher.update(mebibyte)
    _ = hasher.finalize()
}

// MARK: Manifests

func descriptor(_ mediaType: String, _ seed: String, size: Int) -> String {
    #"{"mediaType":"\#(mediaType)","digest":"\#(Digest.of(Array(seed.utf8)))","size":\#(size)}"#
}

let imageManifest = Array(
    """
    {"schemaVersion":2,"mediaType":"application/vnd.oci.image.manifest.v1+json",
     "config":\(descriptor("application/vnd.oci.image.config.v1+json", "config", size: 1470)),
     "layers":[\((0..<8).map { descriptor("application/vnd.oci.image.layer.v1.tar+gzip", "layer\($0)", size: 1_000_000 + $0) }.joined(separator: ","))],
     "annotations":{"org.opencontainers.image.created":"2026-11-28T00:00:00Z"}}
    """.utf8)

let imageIndex = Array(
    """
    {"schemaVersion":2,"mediaType":"application/vnd.oci.image.index.v1+json","manifests":[\((0..<6).map { i in
        #"{"mediaType":"application/vnd.oci.image.manifest.v1+json","digest":"\#(Digest.of(Array("m\(i)".utf8)))","size":1234,"platform":{"architecture":"arch\#(i)","os":"linux"}}"#
    }.joined(separator: ","))]}
    """.utf8)

benchmark("parse and validate an image manifest (8 layers)") {
    _ = try ManifestParser.parse(imageManifest, contentType: nil)
}

benchmark("parse and validate an image index (6 platforms)") {
    _ = try ManifestParser.parse(imageIndex, contentType: nil)
}

benchmark("digest of a manifest's exact bytes") {
    _ = Digest.of(imageManifest)
}

// MARK: Request parsing

benchmark("repository name, tag and digest reference parsing") {
    _ = RepositoryName("team/platform/api-server")
    _ = try Reference(parsing: "v1.2.3-alpine")
    _ = try Reference(parsing: "sha256:0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef")
}

// MARK: Tokens

let tokenSetup: (TokenService, [String]) = blocking {
    let directory = FileManager.default.temporaryDirectory.appendingPathComponent("wharf-microbench-\(ProcessInfo.processInfo.processIdentifier)")
    try FileManager.default.createDirectory(at: directory, withIntermediateDirectories: true)
    var logger = Logger(label: "microbench")
    logger.logLevel = .error
    let metadata = try await MetadataStore.open(url: "sqlite:\(directory.path)/wharf.db", logger: logger)
    let service = TokenService(store: AccessStore(database: metadata.database, sealer: SecretSealer.withRandomKey()), settings: .init(), logger: logger)
    try await service.start()
    let identity = Identity(kind: .user, name: "alice", id: 1, isAdmin: false)
    var tokens: [String] = []
    for _ in 0..<2200 {
        tokens.append(try await service.issue(to: identity, access: [AccessScope(type: "repository", name: "team/app", actions: ["pull"])]).token)
    }
    return (service, tokens)
}
let tokenCursor = Mutex(0)

benchmark("verify a bearer token (ES256 signature, first sight)", settings: Iterations(2000), WarmupIterations(100)) {
    let index = tokenCursor.withLock { cursor in
        defer { cursor += 1 }
        return cursor
    }
    let (service, tokens) = tokenSetup
    let token = tokens[index % tokens.count]
    _ = blocking { try await service.verify(token) }
}

benchmark("async hop from the benchmark thread (baseline for the token rows)") {
    _ = blocking { 0 }
}

benchmark("verify a bearer token (seen before: cached)") {
    let (service, tokens) = tokenSetup
    let token = tokens[0]
    _ = blocking { try await service.verify(token) }
}

Benchmark.main()
