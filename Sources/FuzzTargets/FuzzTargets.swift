import AWSSigning
import Crypto
import Dispatch
import Foundation
import HTTPTypes
import Hummingbird
import JWTKit
import Metadata
import NIOCore

@testable import Access
@testable import ECR
@testable import Encryption
@testable import Lifecycle
@testable import OCI
@testable import Replication
@testable import S3BlobStore
@testable import Scanner
@testable import Server
@testable import Signatures

/// Every parser of outside input behind one entry point per target, for libFuzzer (the `Fuzz/`
/// package links these into one binary; `WHARF_FUZZ_TARGET` picks the target) and for the test
/// suite, which replays the committed corpora and every input that once crashed
/// (`Fuzz/corpus/<target>`, `Fuzz/regressions/<target>`). A target must never trap, whatever the
/// bytes: a trap is a crash of the whole server. Built in debug configurations only (it reaches
/// internal parsers through @testable imports).
public enum FuzzTargets {
    public static let all: [String: @Sendable ([UInt8]) -> Void] = [
        "names": names,
        "ranges": ranges,
        "headers": headers,
        "manifest": manifest,
        "ecr-json": ecrJSON,
        "sigv4": sigV4,
        "lifecycle": lifecycle,
        "iam-policy": iamPolicy,
        "token": token,
        "config": config,
        "layer": layer,
        "packages": packages,
        "osv": osv,
        "vex": vex,
        "signatures": signatures,
        "s3-responses": s3Responses,
        "envelope": envelope,
        "remote-registry": remoteRegistry,
    ]

    static func text(_ bytes: [UInt8]) -> String { String(decoding: bytes, as: UTF8.self) }

    /// Runs async parser code to completion: libFuzzer calls targets synchronously.
    static func blocking(_ body: @escaping @Sendable () async -> Void) {
        let done = DispatchSemaphore(value: 0)
        Task.detached {
            await body()
            done.signal()
        }
        done.wait()
    }

    /// References, repository names, tags, digests, image references, scopes, actions.
    static func names(_ bytes: [UInt8]) {
        let string = text(bytes)
        _ = RepositoryName(string)
        _ = Tag(string)
        _ = try? Reference(parsing: string)
        _ = try? Digest(parsing: string)
        _ = ImageReference(string)
        _ = AccessScope.parseList(string)
        _ = Action.parseList(string)
        _ = DistributionRoute.parse(path: string)
        _ = ClientNumber.parse(string, in: Int64.min...Int64.max)
    }

    /// `Range` against sizes at the edges, `Content-Range` of chunked uploads.
    static func ranges(_ bytes: [UInt8]) {
        let string = text(bytes)
        for size: Int64 in [0, 1, 10, 1 << 40, Int64.max] { _ = ByteRanges.resolve(string, size: size) }
        if let range = ByteRanges.parseChunkRange(string) { _ = range.length }
    }

    /// `Accept` negotiation and the `Authorization` header.
    static func headers(_ bytes: [UInt8]) {
        let string = text(bytes)
        let values = string.split(separator: "\n").map(String.init)
        for type in [MediaType.ociManifest, MediaType.dockerManifest, MediaType.ociIndex, "application/vnd.example+json"] {
            _ = DistributionAPI.accepts(values, mediaType: type)
        }
        var fields = HTTPFields()
        if let value = HTTPField.Name("Authorization").flatMap({ _ in string }), HTTPField.isValidValue(value) {
            fields[.authorization] = value
        }
        let request = Request(
            head: HTTPRequest(method: .get, scheme: "http", authority: "x", path: "/v2/", headerFields: fields), body: .init(buffer: ByteBuffer()))
        _ = RequestAuthentication.credentials(request)
        _ = TokenEndpoint.parseForm(string)
    }

    /// What another registry answers replication: challenges, upload ranges, and the stored
    /// replication configuration the rules come from.
    static func remoteRegistry(_ bytes: [UInt8]) {
        let string = text(bytes)
        _ = AuthChallenge.parse(string)
        _ = RemoteRegistry.uploadedBytes(range: string)
        if let rules = ReplicationRules(json: string) {
            _ = rules.targets(for: "team/app")
            _ = ReplicationDirectory(destinations: [], ownRegion: "us-east-1", ownRegistryID: "123456789012").plan(
                RegistryEvent(kind: .push, repository: "team/app", digest: "sha256:aa", actor: nil, occurredAt: 0),
                under: ReplicationPolicy(ecr: rules, rules: []))
        }
    }

    static func manifest(_ bytes: [UInt8]) {
        guard bytes.count <= ManifestParser.maximumSize else { return }
        for contentType in [nil, MediaType.ociManifest, MediaType.dockerManifestList] {
            _ = try? ManifestParser.parse(bytes, contentType: contentType)
        }
    }

    /// ECR request bodies through model validation, for an operation chosen by the first byte.
    static func ecrJSON(_ bytes: [UInt8]) {
        guard let first = bytes.first else { return }
        let operations = ECRModel.shared.operationNames.sorted()
        let operation = operations[Int(first) % operations.count]
        guard let input = try? JSONDecoder().decode(JSONValue.self, from: Data(bytes.dropFirst())) else { return }
        _ = try? ECRModel.shared.validate(input, operation: operation)
        _ = input.encoded()
    }

    /// SigV4 `Authorization` headers, canonical requests of hostile paths and queries, X-Amz-Date.
    static func sigV4(_ bytes: [UInt8]) {
        let parts = text(bytes).split(separator: "\n", maxSplits: 4, omittingEmptySubsequences: false).map(String.init)
        let header = parts.count > 0 ? parts[0] : ""
        let path = parts.count > 1 ? parts[1] : "/"
        let query = parts.count > 2 ? parts[2] : ""
        let date = parts.count > 3 ? parts[3] : ""
        if let authorization = SigV4.Authorization(header: header) { _ = authorization.signedHeaders }
        _ = SigV4.canonicalRequest(
            method: "POST", path: path, query: query, headers: [("Host", header), ("X-Amz-Date", date)],
            signedHeaders: ["host", "x-amz-date"], payloadHash: "")
        if let seconds = SigV4Verifier.parseAmzDate(date) { _ = SigV4Verifier.formatAmzDate(seconds) }
    }

    /// What an S3 server answers: listings, error documents, upload ids, dates, and endpoint settings.
    static func s3Responses(_ bytes: [UInt8]) {
        let data = Data(bytes)
        if let listing = S3Client.parseListing(data) { _ = listing.objects.map(\.size).reduce(0, &+) }
        if let root = XMLElement.parse(data) { _ = (root.value("Code"), root.value("UploadId"), root.value("ETag")) }
        let string = text(bytes)
        _ = ISODate.millis(string)
        _ = HTTPDate.millis(string)
        _ = S3Endpoint(string)?.hostHeader
    }

    /// Fixed keys: what the fuzzer changes is the stored bytes, as someone with write access to the
    /// bucket or the disk could.
    static let envelopeKeys = ObjectKeys(layers: [SymmetricKey(data: [UInt8](repeating: 7, count: 32))])
    static let dualKeys = ObjectKeys(layers: [SymmetricKey(data: [UInt8](repeating: 7, count: 32)), SymmetricKey(data: [UInt8](repeating: 9, count: 32))])

    /// Encrypted objects as stored (opened whole, in uneven chunks, and by range), stored key
    /// lists, encryption domains and KMS key ARNs from the database or a request.
    static func envelope(_ bytes: [UInt8]) {
        let cut = Int(bytes.first ?? 1) + 1
        for keys in [envelopeKeys, dualKeys] {
            var opener = EnvelopeOpener(keys: keys, expectedHeader: SegmentedEnvelope.header(layers: keys.layers.count))
            var start = 0
            while start < bytes.count {
                let end = min(bytes.count, start + cut)
                if (try? opener.feed(ByteBuffer(bytes: bytes[start..<end]))) == nil { break }
                start = end
            }
            _ = try? opener.finish()
            var middle = EnvelopeOpener(keys: keys, firstIndex: UInt64(cut), knownHeader: SegmentedEnvelope.header(layers: keys.layers.count))
            _ = try? middle.feed(ByteBuffer(bytes: bytes))
            for size in [Int64(0), Int64(bytes.count), Int64(cut) * 1000, Int64.max] {
                for range in [Int64(0)...Int64(0), Int64(cut)...Int64(cut * 2), Int64(-cut)...Int64(0), Int64(0)...Int64.max] {
                    _ = EnvelopeRange(plaintext: range, plaintextSize: size, layers: keys.layers.count, segmentSize: cut * 1024)
                }
            }
        }
        let string = text(bytes)
        _ = try? WrappedKeys.decode(string)
        _ = EncryptionDomain(identifier: string)?.objectKey(for: "sha256:" + String(repeating: "0", count: 64))
        _ = KMSKeyARN(string)
    }

    /// Lifecycle policies, parsed and evaluated (the days-to-milliseconds product once crashed).
    static func lifecycle(_ bytes: [UInt8]) {
        guard let policy = try? LifecyclePolicy(parsing: text(bytes)) else { return }
        let images = [
            LifecycleImage(digest: "a", tags: ["v1", "prod-1"], pushedAt: 0, lastPulledAt: nil),
            LifecycleImage(digest: "b", tags: [], pushedAt: 1_800_000_000_000, lastPulledAt: Int64.max),
            LifecycleImage(digest: "c", tags: ["latest"], pushedAt: Int64.min, lastPulledAt: Int64.min),
        ]
        for now in [Int64(0), 1_800_000_000_000, Int64.max, Int64.min] { _ = LifecycleEvaluator.evaluate(policy, images: images, now: now) }
    }

    /// IAM-style resource policies, parsed and asked for a decision.
    static func iamPolicy(_ bytes: [UInt8]) {
        guard let policy = try? ResourcePolicy(parsing: text(bytes), registryID: "123456789012", knownActions: nil) else { return }
        _ = policy.decision(
            principal: "arn:aws:iam::123456789012:user/alice", action: "ecr:BatchGetImage",
            resource: "arn:aws:ecr:eu-west-1:123456789012:repository/team/app")
        _ = policy.decision(principal: nil, action: "ecr:PutImage", resource: "*")
    }

    static let tokenKeys: JWTKeyCollection = {
        let collection = JWTKeyCollection()
        let key = ES256PrivateKey()
        blocking { await collection.add(ecdsa: key, kid: "fuzz") }
        return collection
    }()

    /// Bearer tokens: JWT parsing and signature checks of the registry's claims.
    static func token(_ bytes: [UInt8]) {
        let string = text(bytes)
        blocking { _ = try? await tokenKeys.verify(string, as: TokenService.Claims.self) }
    }

    /// The YAML configuration file.
    static func config(_ bytes: [UInt8]) {
        var configuration = WharfConfiguration()
        try? configuration.apply(yaml: text(bytes), source: "fuzz")
    }

    /// A layer: compression detection, gzip/zstd expansion, tar, whiteouts, catalogers, secrets.
    static func layer(_ bytes: [UInt8]) {
        blocking {
            _ = try? await Inventory.of(layers: [BytesChunks(bytes: bytes)], config: bytes.count < 4096 ? bytes : nil, detectSecrets: true)
        }
    }

    /// Package databases and build metadata read out of images: dpkg status, apk installed, rpm
    /// (SQLite and BerkeleyDB), Go build info, Java archives, lock files, os-release.
    static func packages(_ bytes: [UInt8]) {
        let string = text(bytes)
        _ = DpkgCataloger.packages(status: string, location: "var/lib/dpkg/status")
        _ = ApkCataloger.packages(installed: string, location: "lib/apk/db/installed")
        _ = CargoLockCataloger.packages(lock: string, location: "Cargo.lock")
        _ = OperatingSystem.parse(osRelease: string)
        _ = OperatingSystem.parse(lsbRelease: string)
        _ = GoBinaryCataloger.parse(bytes[...])
        _ = JavaArchiveCataloger.packages(archive: bytes, location: "app.jar")
        _ = JarIdentity.identify(manifest: JarManifest(string), fileName: string)
        _ = PackageURL(string)
        blocking { _ = try? await RpmCataloger.packages(database: bytes, location: "var/lib/rpm/Packages") }
    }

    /// VEX documents (OpenVEX, CycloneDX VEX), applied to a finding of each kind of product.
    static func vex(_ bytes: [UInt8]) {
        guard let statements = try? VEXDocument.statements(from: bytes, origin: "fuzz") else { return }
        let package = DetectedPackage(kind: .java, name: "org.yaml:snakeyaml", version: "1.29", location: "/app.jar")
        let finding = Finding(
            id: "CVE-2022-1471", aliases: ["GHSA-mjmj-j48q-9wg2"], summary: nil, packageName: package.name, packageKind: .java,
            installedVersion: package.version, fixedVersion: nil, severity: .high, cvssScore: nil, cvssVector: nil, ecosystem: "Maven",
            location: package.location)
        _ = VEXApplication.apply(
            statements, to: [finding], inventory: ImageInventory(operatingSystem: nil, packages: [package]),
            image: .init(digest: "sha256:" + String(repeating: "0", count: 64), repository: "team/app"))
    }

    /// Signature material: PEM public keys (a namespace admin's policy), cosign simple signing
    /// payloads and signature tags (from pushers), and verification of arbitrary bytes.
    static func signatures(_ bytes: [UInt8]) {
        let string = text(bytes)
        if let key = try? VerificationKey(pem: string) { _ = key.isValid(signature: bytes, for: bytes) }
        _ = try? CosignSignature.signedDigest(payload: bytes)
        _ = CosignSignature.subject(ofTag: string)
        _ = try? JSONDecoder().decode(SignaturePolicy.self, from: Data(bytes)).verificationKeys()
    }

    /// OSV advisory records.
    static func osv(_ bytes: [UInt8]) {
        guard let record = try? JSONDecoder().decode(OSVRecord.self, from: Data(bytes)) else { return }
        _ = try? JSONEncoder().encode(record)
    }
}

/// A layer's bytes, handed out in chunks of 4 KiB as a network stream would.
struct BytesChunks: ChunkSource, Sendable {
    let bytes: [UInt8]
    var offset = 0

    init(bytes: [UInt8]) { self.bytes = bytes }

    mutating func nextChunk() async throws -> ByteBuffer? {
        guard offset < bytes.count else { return nil }
        let end = min(bytes.count, offset + 4096)
        defer { offset = end }
        return ByteBuffer(bytes: bytes[offset..<end])
    }
}
