import Access
import BlobStore
import Foundation
import Logging
import Metadata
import NIOCore
import OCI
import Registry
import Scanning
import Signatures
import Testing
import UseCases

/// A registry on a fresh SQLite database and blob folder, with the audit log and pull gate the
/// front ends share. Real components throughout; nothing is mocked.
struct Fixture {
    let store: MetadataStore
    let registry: Registry
    let audit: AuditLog
    let gate: PullGate
    let signatures: SignatureGate
    let directory: URL

    static let logger: Logger = {
        var logger = Logger(label: "use-case-test")
        logger.logLevel = .critical
        return logger
    }()

    static func with<T>(_ body: (Fixture) async throws -> T) async throws -> T {
        let directory = FileManager.default.temporaryDirectory.appendingPathComponent("wharf-usecase-\(UUID().uuidString)")
        try FileManager.default.createDirectory(at: directory, withIntermediateDirectories: true)
        defer { try? FileManager.default.removeItem(at: directory) }
        let store = try await MetadataStore.open(url: "sqlite:\(directory.path)/wharf.db", logger: logger)
        let blobs = FileSystemBlobStore(root: directory.path + "/storage")
        try await blobs.prepare()
        var configuration = RegistryConfiguration()
        configuration.pullRecordInterval = .seconds(3600)  // flushed by hand below
        let registry = Registry(metadata: store, blobs: blobs, configuration: configuration, logger: logger)
        let fixture = Fixture(
            store: store, registry: registry, audit: AuditLog(database: store.database, logger: logger), gate: PullGate(metadata: store),
            signatures: SignatureGate(registry: registry), directory: directory)
        do {
            let result = try await body(fixture)
            await store.close()
            return result
        } catch {
            await store.close()
            throw error
        }
    }

    /// Pushes a one-layer image through the registry's own use-cases; returns its digest.
    func pushImage(_ repository: RepositoryName, tag: String) async throws -> Digest {
        let config = ByteBuffer(string: #"{"architecture":"amd64","os":"linux"}"#)
        let layer = ByteBuffer(string: "layer bytes of \(tag)")
        let configDigest = Digest.of(Array(config.readableBytesView)), layerDigest = Digest.of(Array(layer.readableBytesView))
        _ = try await registry.pushBlob([config].async, in: repository, digest: configDigest, length: Int64(config.readableBytes))
        _ = try await registry.pushBlob([layer].async, in: repository, digest: layerDigest, length: Int64(layer.readableBytes))
        let manifest = """
            {"schemaVersion":2,"mediaType":"\(MediaType.ociManifest)","config":{"mediaType":"application/vnd.oci.image.config.v1+json","digest":"\(configDigest)","size":\(config.readableBytes)},\
            "layers":[{"mediaType":"application/vnd.oci.image.layer.v1.tar","digest":"\(layerDigest)","size":\(layer.readableBytes)}]}
            """
        return try await registry.putManifest(ByteBuffer(string: manifest), contentType: MediaType.ociManifest, in: repository, reference: .tag(Tag(tag)!))
            .digest
    }

    func lastPulled(_ digest: Digest, in repository: RepositoryName) async throws -> Int64? {
        await registry.pulls.flush()
        return try await store.manifest(digest, in: repository)?.lastPulledAt
    }

    func auditEvents(action: String) async throws -> [AuditEvent] {
        await audit.flush()
        return try await audit.events(matching: AuditQuery(action: action))
    }
}

let alice = Requester(identity: Identity(kind: .user, name: "alice", id: 7, isAdmin: false), source: "192.0.2.1")

@Suite("Use-cases: one pull, one settings change, whichever front end asks")
struct UseCaseTests {
    @Test("a pull is counted and audited only once served: not when the Accept check refuses it, not for a HEAD")
    func pullCountsOnlyWhenServed() async throws {
        try await Fixture.with { fixture in
            let repository = RepositoryName("team/app")!
            let digest = try await fixture.pushImage(repository, tag: "v1")
            let pulls = ManifestPulls(registry: fixture.registry, pullGate: fixture.gate, authorizer: nil, audit: fixture.audit)

            await #expect(throws: ManifestPulls.Refusal.notAcceptable(mediaType: MediaType.ociManifest)) {
                _ = try await pulls.pull(.tag(Tag("v1")!), in: repository, by: alice, accepting: { $0 == MediaType.dockerManifest })
            }
            let described = try await pulls.pull(.tag(Tag("v1")!), in: repository, by: alice, accepting: { _ in true }, purpose: .describe)
            #expect(described.digest == digest)
            #expect(try await fixture.lastPulled(digest, in: repository) == nil)
            #expect(try await fixture.auditEvents(action: "pull").isEmpty)

            let served = try await pulls.pull(.tag(Tag("v1")!), in: repository, by: alice, accepting: { _ in true })
            #expect(served.digest == digest)
            #expect(try await fixture.lastPulled(digest, in: repository) != nil)
            let events = try await fixture.auditEvents(action: "pull")
            #expect(events.count == 1)
            #expect(events.first?.actor == "alice" && events.first?.source == "192.0.2.1" && events.first?.target == digest.description)
            #expect(events.first?.result == .success)

            await #expect(throws: RegistryError.self) {
                _ = try await pulls.pull(.tag(Tag("missing")!), in: repository, by: alice, accepting: { _ in true })
            }
        }
    }

    @Test("the pull gate (Scanning) refuses an unscanned image when the namespace asks: audited as denied, never counted")
    func gatedPullIsNoPull() async throws {
        try await Fixture.with { fixture in
            let repository = RepositoryName("locked/app")!
            let digest = try await fixture.pushImage(repository, tag: "v1")
            try await fixture.gate.setPolicy(PullPolicy(blockUnscanned: true), for: "locked")
            let pulls = ManifestPulls(registry: fixture.registry, pullGate: fixture.gate, authorizer: nil, audit: fixture.audit)

            do {
                _ = try await pulls.pull(.digest(digest), in: repository, by: alice, accepting: { _ in true })
                Issue.record("an unscanned image was served although the namespace blocks unscanned images")
            } catch ManifestPulls.Refusal.gated(let message, let detail) {
                #expect(message.contains("scan"), "the refusal says why: \(message)")
                #expect(!detail.isEmpty)
            }
            #expect(try await fixture.lastPulled(digest, in: repository) == nil)
            let denied = try await fixture.auditEvents(action: "pull")
            #expect(denied.count == 1 && denied.first?.result == .denied && denied.first?.actor == "alice")

            // A HEAD is not gated: clients may learn the manifest exists.
            _ = try await pulls.pull(.digest(digest), in: repository, by: alice, accepting: { _ in true }, purpose: .describe)
            // Another namespace has no policy: served and counted.
            let open = RepositoryName("open/app")!
            let other = try await fixture.pushImage(open, tag: "v1")
            _ = try await pulls.pull(.digest(other), in: open, by: alice, accepting: { _ in true })
            #expect(try await fixture.lastPulled(other, in: open) != nil)
        }
    }

    @Test("settings changes are validated, written and audited the same way for ECR (refuse missing) and /api/v1 (create)")
    func settingsChanges() async throws {
        try await Fixture.with { fixture in
            let changes = RepositorySettingsChanges(metadata: fixture.store, audit: fixture.audit)
            let missing = RepositoryName("team/missing")!
            await #expect(throws: UseCaseError.repositoryNotFound("team/missing")) {
                _ = try await changes.setTagMutability(TagMutabilityPolicy(mode: .immutable), of: missing, by: alice, ifMissing: .refuse)
            }
            #expect(try await fixture.store.repositoryRecord(missing) == nil, "a refused change creates nothing")

            let created = RepositoryName("team/configured")!
            let settings = try await changes.setTagMutability(TagMutabilityPolicy(mode: .immutable), of: created, by: alice, ifMissing: .create)
            #expect(settings.tagMutability.mode == .immutable)
            #expect(try await fixture.store.repositoryRecord(created)?.settings.tagMutability.mode == .immutable)
            #expect(try await changes.setScanOnPush(true, of: created, by: alice, ifMissing: .refuse).scanOnPush)

            await #expect(throws: UseCaseError.self) {
                _ = try await changes.setLifecyclePolicy(#"{"rules":[{"rulePriority":1}]}"#, of: created, by: alice, ifMissing: .refuse)
            }
            let policy =
                #"{"rules":[{"rulePriority":1,"selection":{"tagStatus":"untagged","countType":"sinceImagePushed","countUnit":"days","countNumber":14},"action":{"type":"expire"}}]}"#
            #expect(try await changes.setLifecyclePolicy(policy, of: created, by: alice, ifMissing: .refuse).lifecyclePolicy == policy)
            #expect(try await changes.deleteLifecyclePolicy(of: created, by: alice, ifMissing: .refuse) == policy)
            #expect(try await changes.deleteLifecyclePolicy(of: created, by: alice, ifMissing: .refuse) == nil, "nothing left to delete")

            let settingsEvents = try await fixture.auditEvents(action: "repository.settings")
            #expect(settingsEvents.count == 2)
            #expect(settingsEvents.allSatisfy { $0.actor == "alice" && $0.repository == "team/configured" && $0.namespace == "team" })
            #expect(settingsEvents.contains { $0.detail?.contains("IMMUTABLE") == true })
            #expect(try await fixture.auditEvents(action: "lifecycle.policy.set").count == 1)
            #expect(try await fixture.auditEvents(action: "lifecycle.policy.delete").count == 1, "a delete that found nothing is not audited")
        }
    }

    @Test("a scan request (ECR's StartImageScan or /api/v1) queues one job and is audited as scan.request, forced or not")
    func scanRequests() async throws {
        try await Fixture.with { fixture in
            let repository = RepositoryName("team/scanned")!
            let digest = try await fixture.pushImage(repository, tag: "v1")
            let service = ImageScanService(
                registry: fixture.registry, settings: ScanSettings(databasePath: fixture.directory.path + "/advisories.db"),
                logger: Fixture.logger)
            let requests = ScanRequests(scans: service, audit: fixture.audit)
            try await requests.request(digest, in: repository, by: alice)
            let record = try #require(try await fixture.store.scanRecord(digest))
            #expect(record.status == .pending && record.repository == repository.value)
            try await requests.request(digest, in: repository, force: true, by: alice)
            let events = try await fixture.auditEvents(action: "scan.request")
            #expect(events.count == 2)
            #expect(events.allSatisfy { $0.target == digest.description && $0.actor == "alice" && $0.namespace == "team" })
            #expect(events.filter { $0.detail?.contains("force") == true }.count == 1)

            // A failed scan is not re-queued within the rescan interval (issue 23, defect 15) unless forced.
            try await fixture.store.finishScan(digest.description, status: .failed, description: "layer bomb refused", result: nil)
            do {
                try await requests.request(digest, in: repository, by: alice)
                Issue.record("a failed scan was re-queued at once")
            } catch let refused as RescanRefused {
                #expect(refused.retryAfterSeconds >= 1 && refused.message.contains("layer bomb refused"))
            }
            #expect(try await fixture.store.scanRecord(digest)?.status == .failed)
            try await requests.request(digest, in: repository, force: true, by: alice)
            #expect(try await fixture.store.scanRecord(digest)?.status == .pending)
            #expect(try await fixture.auditEvents(action: "scan.request").count == 3, "a refused request is not audited as queued")
        }
    }

    @Test("a manifest push and delete, from /v2 or ECR, are committed and audited once each, with the digest")
    func manifestChanges() async throws {
        try await Fixture.with { fixture in
            let repository = RepositoryName("team/changed")!
            let first = try await fixture.pushImage(repository, tag: "base")  // its blobs, linked to the repository
            let content = try #require(try await fixture.store.manifest(first, in: repository)).content
            let changes = ManifestChanges(registry: fixture.registry, audit: fixture.audit)
            let pushed = try await changes.push(
                content, contentType: MediaType.ociManifest, in: repository, reference: .tag(Tag("v2")!),
                extraTags: [Tag("latest")!], by: alice)
            #expect(pushed.digest == first)
            #expect(try await fixture.store.resolveTag(Tag("latest")!, in: repository) == first)
            let pushes = try await fixture.auditEvents(action: "push")
            #expect(pushes.count == 1)
            #expect(pushes.first?.target == "v2" && pushes.first?.detail == #"{"digest":"\#(first)"}"#)

            try await changes.delete(.tag(Tag("latest")!), in: repository, by: alice)
            #expect(try await fixture.store.resolveTag(Tag("latest")!, in: repository) == nil)
            #expect(try await fixture.store.manifest(first, in: repository) != nil, "deleting a tag keeps the image")
            try await changes.delete(.digest(first), in: repository, by: alice)
            #expect(try await fixture.store.manifest(first, in: repository) == nil)
            await #expect(throws: RegistryError.self) { try await changes.delete(.digest(first), in: repository, by: alice) }
            let deletes = try await fixture.auditEvents(action: "delete")
            #expect(Set(deletes.compactMap(\.target)) == [first.description, "latest"] && deletes.count == 2, "a failed delete is not audited")
        }
    }

    @Test("the pull gate covers layers: a blob only refused images use is refused with them, served once one of them passes")
    func gatedBlobs() async throws {
        try await Fixture.with { fixture in
            let repository = RepositoryName("locked/layers")!
            let image = try await fixture.pushImage(repository, tag: "v1")
            let manifest = try #require(try await fixture.store.manifest(image, in: repository))
            let parsed = try ManifestParser.parse(Array(manifest.content.readableBytesView), contentType: manifest.mediaType)
            let layer = try #require(parsed.layers.first?.digest)
            let loose = ByteBuffer(string: "pushed, not yet in any image")
            let looseDigest = Digest.of(Array(loose.readableBytesView))
            _ = try await fixture.registry.pushBlob([loose].async, in: repository, digest: looseDigest, length: Int64(loose.readableBytes))
            let blobs = BlobPulls(registry: fixture.registry, pullGate: fixture.gate, authorizer: nil, audit: fixture.audit)

            // No policy: served.
            try await blobs.open(layer, in: repository, by: alice).close()
            try await fixture.gate.setPolicy(PullPolicy(blockUnscanned: true), for: "locked")
            for refused in [layer, try #require(parsed.config?.digest)] {
                do {
                    try await blobs.open(refused, in: repository, by: alice).close()
                    Issue.record("blob \(refused) of an unscanned image was served although the namespace blocks unscanned images")
                } catch ManifestPulls.Refusal.gated(let message, _) {
                    #expect(message.contains("has not been scanned"))
                }
            }
            let denied = try await fixture.auditEvents(action: "pull")
            #expect(denied.count == 2 && denied.allSatisfy { $0.result == .denied })
            try await blobs.open(looseDigest, in: repository, by: alice).close()  // no image uses it yet

            // Once the image's scan completes clean, its layers are served.
            try await fixture.store.enqueueScan(image, in: repository)
            try await fixture.store.finishScan(image.description, status: .complete, description: nil, result: nil)
            fixture.gate.forgetScans()
            try await blobs.open(layer, in: repository, by: alice).close()
        }
    }

    @Test("VEX documents (NamespaceScanPolicies) let the gate pass exactly the findings they suppress; changes and passes are audited")
    func vexThroughTheGate() async throws {
        try await Fixture.with { fixture in
            let repository = RepositoryName("vexed/app")!
            let image = try await fixture.pushImage(repository, tag: "v1")
            let result = """
                {"platforms":[{"manifestDigest":"\(image)","inventory":{"packages":[
                  {"kind":"java","name":"org.yaml:snakeyaml","version":"1.29","location":"/app.jar"}],"layers":1,"expandedBytes":0,"secrets":[]},
                  "findings":[{"id":"CVE-2022-1471","aliases":["GHSA-mjmj-j48q-9wg2"],"packageName":"org.yaml:snakeyaml","packageKind":"java",
                  "installedVersion":"1.29","severity":"CRITICAL","ecosystem":"Maven","location":"/app.jar"}]}],"scannedAt":"2026-12-07T00:00:00Z"}
                """
            try await fixture.store.enqueueScan(image, in: repository)
            try await fixture.store.finishScan(image.description, status: .complete, description: nil, result: result)
            let vex = VEXStore(registry: fixture.registry)
            let gate = PullGate(metadata: fixture.store, vex: vex)
            let policies = NamespaceScanPolicies(gate: gate, vex: vex, audit: fixture.audit)
            let pulls = ManifestPulls(registry: fixture.registry, pullGate: gate, authorizer: nil, audit: fixture.audit)
            try await policies.setPullPolicy(PullPolicy(severity: .high), of: "vexed", by: alice)
            func pull() async throws -> Bool {
                do {
                    _ = try await pulls.pull(.tag(Tag("v1")!), in: repository, by: alice, accepting: { _ in true })
                    return true
                } catch ManifestPulls.Refusal.gated { return false }
            }
            #expect(try await pull() == false)

            let openVEX = Array(
                """
                {"@context":"https://openvex.dev/ns/v0.2.0","@id":"https://example.com/vex/1","statements":[
                  {"vulnerability":{"name":"GHSA-mjmj-j48q-9wg2"},"products":[{"@id":"pkg:maven/org.yaml/snakeyaml@1.29"}],
                   "status":"not_affected","justification":"vulnerable_code_not_in_execute_path"}]}
                """.utf8)
            await #expect(throws: UseCaseError.invalid("OpenVEX statement 1: not_affected needs a justification or an impact_statement")) {
                _ = try await policies.putVEX(
                    Array(#"{"@context":"https://openvex.dev/ns/v0.2.0","statements":[{"vulnerability":{"name":"X"},"status":"not_affected"}]}"#.utf8),
                    named: "bad", in: "vexed", by: alice)
            }
            let stored = try await policies.putVEX(openVEX, named: "yaml", in: "vexed", by: alice)
            #expect(stored.statements == 1 && stored.updatedBy == "alice")
            #expect(try await pull() == true)
            let passed = try await fixture.auditEvents(action: "pull").filter { $0.result == .success && $0.detail != nil }
            #expect(passed.count == 1)
            #expect(passed.first?.detail?.contains(#""reason":"allowed-by-vex""#) == true)
            #expect(passed.first?.detail?.contains("https://example.com/vex/1") == true)
            #expect(try await fixture.auditEvents(action: "vex.set").map(\.target) == ["yaml"])

            // A statement for another version suppresses nothing.
            _ = try await policies.putVEX(
                Array(String(decoding: openVEX, as: UTF8.self).replacingOccurrences(of: "@1.29", with: "@1.30").utf8), named: "yaml", in: "vexed",
                by: alice)
            #expect(try await pull() == false)
            #expect(try await policies.deleteVEX(named: "yaml", in: "vexed", by: alice))
            #expect(try await policies.deleteVEX(named: "yaml", in: "vexed", by: alice) == false)
            #expect(try await fixture.auditEvents(action: "vex.delete").count == 1)
        }
    }
}
