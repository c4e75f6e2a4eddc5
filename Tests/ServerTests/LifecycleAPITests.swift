import BlobStore
import Foundation
import HTTPTypes
import HummingbirdTesting
import Lifecycle
import Metadata
import NIOCore
import OCI
import SQLKit
import Testing

@testable import Server

/// Helpers for pushing through an authenticated server.
struct Pusher {
    let client: any TestClientProtocol
    let auth = Secure.basic("admin", Secure.adminPassword)

    var json: HTTPFields { auth.merging(["Content-Type": "application/json"]) }

    @discardableResult
    func blob(_ content: String, to repository: String) async throws -> Digest {
        try await client.pushBlob(content, to: repository, auth: auth)
    }

    /// Pushes an image (config + one layer) and returns its digest and the PUT's response.
    @discardableResult
    func image(_ repository: String, tag: String?, layer: String, extra: String = "") async throws -> (digest: Digest, response: TestResponse) {
        let config = try await blob(#"{"layer":"\#(layer)"}"#, to: repository)
        let layerDigest = try await blob(layer, to: repository)
        let manifest =
            #"{"schemaVersion":2,"mediaType":"application/vnd.oci.image.manifest.v1+json","config":{"mediaType":"application/vnd.oci.image.config.v1+json","digest":"\#(config)","size":\#(#"{"layer":"\#(layer)"}"#.utf8.count)},"layers":[{"mediaType":"application/vnd.oci.image.layer.v1.tar","digest":"\#(layerDigest)","size":\#(layer.utf8.count)}]\#(extra)}"#
        let digest = Digest.of(Array(manifest.utf8))
        let response = try await client.request(
            .put, "/v2/\(repository)/manifests/\(tag ?? digest.description)",
            headers: auth.merging(["Content-Type": MediaType.ociManifest]), body: ByteBuffer(string: manifest))
        return (digest, response)
    }

    func api(_ method: HTTPRequest.Method, _ path: String, _ body: String? = nil) async throws -> TestResponse {
        try await client.request(method, "/api/v1\(path)", headers: body == nil ? auth : json, body: body.map { ByteBuffer(string: $0) })
    }
}

/// Moves a manifest's push time into the past, as if it had been pushed `days` ago.
func age(_ server: WharfServer, _ repository: String, _ digest: Digest, days: Double) async throws {
    let pushedAt = Timestamp.nowMillis() - Int64(days * 86_400_000)
    try await server.metadata.database.transaction { sql in
        try await sql.raw(
            """
            UPDATE manifests SET pushed_at = \(bind: pushedAt)
            WHERE digest = \(bind: digest.description) AND repository_id = (SELECT id FROM repositories WHERE name = \(bind: repository))
            """
        ).run()
    }
}

@Suite("Tag immutability")
struct ImmutabilityTests {
    @Test("IMMUTABLE refuses to move a tag with ECR's message; the same digest and new tags are fine")
    func immutable() async throws {
        try await Secure.withServer { client, _ in
            let push = Pusher(client: client)
            #expect(try await push.api(.put, "/repositories/team/app/settings", #"{"tagMutability":"IMMUTABLE"}"#).status == .ok)
            let (first, response) = try await push.image("team/app", tag: "v1", layer: "one")
            #expect(response.status == .created)
            #expect(try await push.image("team/app", tag: "v1", layer: "one").response.status == .created)  // same digest again
            let moved = try await push.image("team/app", tag: "v1", layer: "two").response
            #expect(moved.status == .forbidden)
            #expect(moved.errorCode == "DENIED")
            #expect(
                moved.text.contains(
                    "tag invalid: The image tag 'v1' already exists in the 'team/app' repository and cannot be overwritten because the repository is immutable."
                ))
            #expect(try await client.request(.get, "/v2/team/app/manifests/v1", headers: push.auth).header("Docker-Content-Digest") == first.description)
            #expect(try await push.image("team/app", tag: "v2", layer: "two").response.status == .created)
        }
    }

    @Test("exclusion filters: IMMUTABLE_WITH_EXCLUSION and MUTABLE_WITH_EXCLUSION")
    func exclusions() async throws {
        try await Secure.withServer { client, _ in
            let push = Pusher(client: client)
            #expect(
                try await push.api(
                    .put, "/repositories/team/app/settings", #"{"tagMutability":"IMMUTABLE_WITH_EXCLUSION","tagMutabilityExclusions":["latest","dev-*"]}"#
                ).status == .ok)
            for tag in ["latest", "dev-1", "v1"] { _ = try await push.image("team/app", tag: tag, layer: "a") }
            #expect(try await push.image("team/app", tag: "latest", layer: "b").response.status == .created)
            #expect(try await push.image("team/app", tag: "dev-1", layer: "b").response.status == .created)
            #expect(try await push.image("team/app", tag: "v1", layer: "b").response.status == .forbidden)

            #expect(
                try await push.api(
                    .put, "/repositories/team/app/settings", #"{"tagMutability":"MUTABLE_WITH_EXCLUSION","tagMutabilityExclusions":["release-*"]}"#
                ).status == .ok)
            for tag in ["release-1", "main"] { _ = try await push.image("team/app", tag: tag, layer: "a") }
            #expect(try await push.image("team/app", tag: "release-1", layer: "b").response.status == .forbidden)
            #expect(try await push.image("team/app", tag: "main", layer: "b").response.status == .created)

            let settings = try await push.api(.get, "/repositories/team/app/settings")
            #expect(settings.text.contains("MUTABLE_WITH_EXCLUSION"))
            for bad in [
                #"{"tagMutability":"IMMUTABLE","tagMutabilityExclusions":["x"]}"#, #"{"tagMutability":"IMMUTABLE_WITH_EXCLUSION"}"#,
                #"{"tagMutability":"SOMETIMES"}"#, #"{"tagMutability":"IMMUTABLE_WITH_EXCLUSION","tagMutabilityExclusions":["a b"]}"#,
            ] {
                #expect(try await push.api(.put, "/repositories/team/app/settings", bad).status == .badRequest, "\(bad)")
            }
        }
    }
}

@Suite("Lifecycle policies over HTTP")
struct LifecycleAPITests {
    @Test("preview lists what would go and why; apply expires it; the audit log records each expiry")
    func previewAndApply() async throws {
        try await Secure.withServer { client, server in
            let push = Pusher(client: client)
            var digests: [Digest] = []
            for i in 1...6 {
                let (digest, _) = try await push.image("team/app", tag: "v\(i)", layer: "layer \(i)")
                try await age(server, "team/app", digest, days: Double(10 - i) - 0.5)  // 9.5, 8.5, … days: never on a day boundary
                digests.append(digest)
            }
            let policy =
                #"{"rules":[{"rulePriority":1,"description":"keep two releases","selection":{"tagStatus":"tagged","tagPrefixList":["v"],"countType":"imageCountMoreThan","countNumber":2},"action":{"type":"expire"}}]}"#
            let set = try await push.api(.put, "/repositories/team/app/lifecycle-policy", #"{"policy":\#(JSONString.literal(policy))}"#)
            #expect(set.status == .ok, "\(set.text)")
            #expect(set.text.contains(#""lifecyclePolicySource":"repository""#))

            let preview = try await push.api(.post, "/repositories/team/app/lifecycle-policy/preview")
            let planned = try JSONDecoder().decode([API.Expiry].self, from: Data(preview.body.readableBytesView))
            #expect(planned.map(\.tags) == [["v1"], ["v2"], ["v3"], ["v4"]])
            #expect(planned.allSatisfy { $0.rulePriority == 1 && $0.ruleDescription == "keep two releases" })
            #expect(try await client.request(.get, "/v2/team/app/manifests/v1", headers: push.auth).status == .ok)  // a preview changes nothing

            // A preview of another policy, without storing it.
            let other =
                #"{"rules":[{"rulePriority":1,"selection":{"tagStatus":"any","countType":"sinceImagePushed","countUnit":"days","countNumber":6},"action":{"type":"expire"}}]}"#
            let otherPreview = try await push.api(.post, "/repositories/team/app/lifecycle-policy/preview", #"{"policy":\#(JSONString.literal(other))}"#)
            #expect(
                try JSONDecoder().decode([API.Expiry].self, from: Data(otherPreview.body.readableBytesView)).map(\.tags) == [["v1"], ["v2"], ["v3"]],
                "\(otherPreview.text)")

            let applied = try await push.api(.post, "/repositories/team/app/lifecycle-policy/apply")
            #expect(try JSONDecoder().decode([API.Expiry].self, from: Data(applied.body.readableBytesView)).count == 4)
            for i in 1...4 { #expect(try await client.request(.get, "/v2/team/app/manifests/v\(i)", headers: push.auth).status == .notFound) }
            for i in 5...6 { #expect(try await client.request(.get, "/v2/team/app/manifests/v\(i)", headers: push.auth).status == .ok) }
            let audit = try await push.api(.get, "/audit?action=lifecycle.expire")
            let events = try JSONDecoder().decode([API.Event].self, from: Data(audit.body.readableBytesView))
            #expect(events.count == 4)
            #expect(events.allSatisfy { $0.detail?.contains(#""rule":"1""#) == true && $0.repository == "team/app" })
        }
    }

    @Test("referrers are expired with their subject; an index's children are never expired before the index")
    func referrersAndIndexes() async throws {
        try await Secure.withServer { client, server in
            let push = Pusher(client: client)
            let (subject, _) = try await push.image("team/app", tag: "old", layer: "subject")
            try await age(server, "team/app", subject, days: 30)
            let signature = try await push.image(
                "team/app", tag: nil, layer: "signature",
                extra: #","subject":{"mediaType":"application/vnd.oci.image.manifest.v1+json","digest":"\#(subject)","size":10}"#)
            try await age(server, "team/app", signature.digest, days: 30)

            // An index whose untagged children are old.
            let amd = try await push.image("team/app", tag: nil, layer: "amd64")
            let arm = try await push.image("team/app", tag: nil, layer: "arm64")
            for child in [amd.digest, arm.digest] { try await age(server, "team/app", child, days: 30) }
            let children = try await [amd.digest, arm.digest].asyncMap { digest in
                let size = try await client.request(.get, "/v2/team/app/manifests/\(digest)", headers: push.auth).body.readableBytes
                return #"{"mediaType":"application/vnd.oci.image.manifest.v1+json","digest":"\#(digest)","size":\#(size)}"#
            }
            let index = #"{"schemaVersion":2,"mediaType":"application/vnd.oci.image.index.v1+json","manifests":[\#(children.joined(separator: ","))]}"#
            #expect(
                try await client.request(
                    .put, "/v2/team/app/manifests/multi", headers: push.auth.merging(["Content-Type": MediaType.ociIndex]), body: ByteBuffer(string: index)
                ).status == .created)

            let policy =
                #"{"rules":[{"rulePriority":1,"selection":{"tagStatus":"untagged","countType":"sinceImagePushed","countUnit":"days","countNumber":7},"action":{"type":"expire"}},{"rulePriority":2,"selection":{"tagStatus":"tagged","tagPrefixList":["old"],"countType":"sinceImagePushed","countUnit":"days","countNumber":7},"action":{"type":"expire"}}]}"#
            _ = try await push.api(.put, "/repositories/team/app/lifecycle-policy", #"{"policy":\#(JSONString.literal(policy))}"#)
            let applied = try JSONDecoder().decode(
                [API.Expiry].self, from: Data(try await push.api(.post, "/repositories/team/app/lifecycle-policy/apply").body.readableBytesView))
            #expect(applied.map(\.digest) == [subject.description])
            #expect(applied.first?.alsoDeleted == [signature.digest.description])
            #expect(try await client.request(.get, "/v2/team/app/manifests/\(signature.digest)", headers: push.auth).status == .notFound)
            for child in [amd.digest, arm.digest] {
                #expect(try await client.request(.get, "/v2/team/app/manifests/\(child)", headers: push.auth).status == .ok)
            }
        }
    }

    @Test("registry-wide policies apply by scope; a repository's own policy wins; invalid policies get precise 400s")
    func registryWide() async throws {
        try await Secure.withServer { client, server in
            let push = Pusher(client: client)
            for repository in ["other/app", "team/app"] {
                let (digest, _) = try await push.image(repository, tag: "x1", layer: "one \(repository)")
                try await age(server, repository, digest, days: 40)
            }
            let wide =
                #"{"rules":[{"rulePriority":1,"selection":{"tagStatus":"any","countType":"sinceImagePushed","countUnit":"days","countNumber":30},"action":{"type":"expire"}}]}"#
            #expect(try await push.api(.put, "/lifecycle-policies", #"{"scope":"*","policy":\#(JSONString.literal(wide))}"#).status == .noContent)
            let keep =
                #"{"rules":[{"rulePriority":1,"selection":{"tagStatus":"any","countType":"sinceImagePushed","countUnit":"days","countNumber":365},"action":{"type":"expire"}}]}"#
            _ = try await push.api(.put, "/repositories/team/app/lifecycle-policy", #"{"policy":\#(JSONString.literal(keep))}"#)
            let settings = try await push.api(.get, "/repositories/other/app/settings")
            #expect(settings.text.contains(#""lifecyclePolicySource":"registry:*""#))
            let ran = try JSONDecoder().decode([API.Expiry].self, from: Data(try await push.api(.post, "/lifecycle/run").body.readableBytesView))
            #expect(ran.map(\.repository) == ["other/app"])

            let invalid = try await push.api(
                .put, "/repositories/team/app/lifecycle-policy",
                #"{"policy":"{\"rules\":[{\"rulePriority\":1,\"selection\":{\"tagStatus\":\"tagged\",\"countType\":\"imageCountMoreThan\",\"countNumber\":1},\"action\":{\"type\":\"expire\"}}]}"}"#
            )
            #expect(invalid.status == .badRequest)
            #expect(invalid.text.contains("needs a non-empty tagPrefixList or tagPatternList"))

            // Only namespace admins set a repository's policy.
            _ = try await push.api(.post, "/users", #"{"name":"dev","password":"dev-password-123"}"#)
            let dev = Secure.basic("dev", "dev-password-123").merging(["Content-Type": "application/json"])
            #expect(
                try await client.request(.put, "/api/v1/repositories/team/app/lifecycle-policy", headers: dev, body: ByteBuffer(string: #"{"policy":"{}"}"#))
                    .status == .forbidden)
        }
    }
}

@Suite("Garbage collection, quotas and fsck")
struct GarbageCollectionTests {
    @Test("collection reclaims blobs no manifest references, keeps shared ones, and honours dry runs and the grace window")
    func collect() async throws {
        try await Secure.withServer { client, server in
            let push = Pusher(client: client)
            let (digest, _) = try await push.image("team/app", tag: "v1", layer: String(repeating: "big layer ", count: 1000))
            let (kept, _) = try await push.image("team/kept", tag: "v1", layer: String(repeating: "big layer ", count: 1000))  // shares the layer
            let layer = Digest.of(Array(String(repeating: "big layer ", count: 1000).utf8))
            let config = Digest.of(Array(#"{"layer":"\#(String(repeating: "big layer ", count: 1000))"}"#.utf8))
            #expect(try await client.request(.delete, "/v2/team/app/manifests/\(digest)", headers: push.auth).status == .accepted)
            let lonely = try await push.blob("uploaded but never referenced", to: "team/lonely")

            // Default grace (one hour): nothing is old enough.
            let freshResponse = try await push.api(.post, "/gc")
            #expect(freshResponse.status == .ok, "\(freshResponse.text)")
            let fresh = try JSONDecoder().decode(GarbageCollectionReport.self, from: Data(freshResponse.body.readableBytesView))
            #expect(fresh.deletedBlobs == 0 && fresh.removedLinks == 0)

            let dryResponse = try await push.api(.post, "/gc?dryRun=true&graceSeconds=0")
            #expect(dryResponse.status == .ok, "\(dryResponse.text)")
            let dry = try JSONDecoder().decode(GarbageCollectionReport.self, from: Data(dryResponse.body.readableBytesView))
            #expect(dry.dryRun && dry.removedLinks >= 3)
            #expect(try await server.blobStore.size(of: lonely) != nil)

            let reportResponse = try await push.api(.post, "/gc?graceSeconds=0")
            #expect(reportResponse.status == .ok, "\(reportResponse.text)")
            let report = try JSONDecoder().decode(GarbageCollectionReport.self, from: Data(reportResponse.body.readableBytesView))
            #expect(report.deletedBlobs == 1)  // only the lonely blob: the config and layer are still used by team/kept
            #expect(report.reclaimedBytes == Int64("uploaded but never referenced".utf8.count))
            #expect(try await server.blobStore.size(of: lonely) == nil)
            #expect(try await server.blobStore.size(of: layer) != nil)
            #expect(try await client.request(.head, "/v2/team/app/blobs/\(layer)", headers: push.auth).status == .notFound)  // unlinked there
            #expect(try await client.request(.get, "/v2/team/kept/blobs/\(config)", headers: push.auth).status == .ok)

            // Deleting only the tag keeps the (now untagged) manifest and so its blobs.
            _ = try await client.request(.delete, "/v2/team/kept/manifests/v1", headers: push.auth)
            let untagged = try JSONDecoder().decode(
                GarbageCollectionReport.self, from: Data(try await push.api(.post, "/gc?graceSeconds=0").body.readableBytesView))
            #expect(untagged.deletedBlobs == 0)
            // Now the last user goes: everything is reclaimed, bytes included.
            _ = try await client.request(.delete, "/v2/team/kept/manifests/\(kept)", headers: push.auth)
            let second = try JSONDecoder().decode(
                GarbageCollectionReport.self, from: Data(try await push.api(.post, "/gc?graceSeconds=0").body.readableBytesView))
            #expect(second.deletedBlobs == 2)
            #expect(
                second.reclaimedBytes
                    == Int64(
                        String(repeating: "big layer ", count: 1000).utf8.count + #"{"layer":"\#(String(repeating: "big layer ", count: 1000))"}"#.utf8.count))
            #expect(try await server.blobStore.size(of: layer) == nil)
            let status = try await push.api(.get, "/gc")
            #expect(status.text.contains("\"recent\""))
            let consistency = try await ConsistencyChecker(metadata: server.metadata, blobs: server.blobStore).check()
            #expect(consistency.isClean, "\(consistency)")
        }
    }

    @Test("abandoned uploads and orphan files are cleaned; the trash is recovered after a crash")
    func uploadsOrphansTrash() async throws {
        try await Secure.withServer { client, server in
            let push = Pusher(client: client)
            let location = try #require(try await client.request(.post, "/v2/team/app/blobs/uploads/", headers: push.auth).header("Location"))
            _ = try await client.request(.patch, location, headers: push.auth, body: ByteBuffer(string: "partial"))
            let id = String(location.split(separator: "/").last!)
            try await server.metadata.database.transaction { sql in
                try await sql.raw("UPDATE upload_sessions SET updated_at = 0 WHERE id = \(bind: id)").run()
            }
            let orphan = Digest.of(Array("orphan bytes".utf8))
            try await server.blobStore.put(ByteBuffer(string: "orphan bytes"), as: orphan)
            try await Task.sleep(for: .milliseconds(20))
            let report = try JSONDecoder().decode(
                GarbageCollectionReport.self, from: Data(try await push.api(.post, "/gc?graceSeconds=0").body.readableBytesView))
            #expect(report.deletedUploads == 1)
            #expect(report.orphanFiles >= 1)
            #expect(try await server.blobStore.uploadSize(id) == nil)
            #expect(try await server.blobStore.size(of: orphan) == nil)

            // A crash between "row deleted" and "trash emptied" can leave a recorded blob in the trash.
            let recorded = try await push.blob("recorded blob", to: "team/app")
            #expect(try await server.blobStore.trash(recorded))
            #expect(try await server.blobStore.size(of: recorded) == nil)
            try await server.collector.recoverTrash()
            #expect(try await server.blobStore.size(of: recorded) != nil)
        }
    }

    @Test("namespace quotas: pushes beyond the limit are refused with usage and limit; shared blobs count once")
    func quotas() async throws {
        try await Secure.withServer { client, _ in
            let push = Pusher(client: client)
            _ = try await push.api(.post, "/namespaces", #"{"name":"small"}"#)
            #expect(try await push.api(.put, "/namespaces/small/quota", #"{"quotaBytes":100}"#).status == .ok)
            let sixty = String(repeating: "x", count: 60)
            try await push.blob(sixty, to: "small/a")
            try await push.blob(sixty, to: "small/b")  // the same blob again: no extra usage
            let refused = try await client.request(
                .post, "/v2/small/a/blobs/uploads/?digest=\(Digest.of(Array(String(repeating: "y", count: 60).utf8)))",
                headers: push.auth, body: ByteBuffer(string: String(repeating: "y", count: 60)))
            #expect(refused.status == .forbidden)
            #expect(refused.errorCode == "DENIED")
            #expect(refused.text.contains("60 bytes used") && refused.text.contains("limit of 100 bytes"))
            let usage = try JSONDecoder().decode(API.Usage.self, from: Data(try await push.api(.get, "/namespaces/small/usage").body.readableBytesView))
            #expect(usage.usageBytes == 60 && usage.quotaBytes == 100)
            #expect(try await push.api(.put, "/namespaces/small/quota", #"{"quotaBytes":null}"#).status == .ok)
            try await push.blob(String(repeating: "y", count: 60), to: "small/a")
        }
    }

    @Test("fsck finds missing, corrupt and orphan blobs and repairs the metadata")
    func fsck() async throws {
        try await Secure.withServer { client, server in
            let push = Pusher(client: client)
            let (_, _) = try await push.image("team/app", tag: "v1", layer: "layer to corrupt")
            let missing = try await push.blob("blob that will vanish", to: "team/app")
            let corrupt = Digest.of(Array("layer to corrupt".utf8))
            let checker = ConsistencyChecker(metadata: server.metadata, blobs: server.blobStore)
            #expect(try await checker.check().isClean)

            let root = try #require(server.blobStore as? FileSystemBlobStore).root
            func path(_ digest: Digest) -> String { "\(root)/blobs/sha256/\(digest.encoded.prefix(2))/\(digest.encoded)" }
            try Data("tampered!".utf8).write(to: URL(fileURLWithPath: path(corrupt)))
            try FileManager.default.removeItem(atPath: path(missing))
            let orphan = Digest.of(Array("stray".utf8))
            try await server.blobStore.put(ByteBuffer(string: "stray"), as: orphan)

            let report = try await checker.check()
            #expect(report.corruptBlobs == [corrupt.description])
            #expect(report.missingBlobs == [missing.description])
            #expect(report.orphanFiles == [orphan.description])
            #expect(report.sizeMismatches.count == 1)
            #expect(!report.isClean)

            let repaired = try await checker.check(repair: true)
            #expect(!repaired.repairs.isEmpty)
            let after = try await checker.check()
            #expect(after.missingBlobs.isEmpty && after.corruptBlobs.isEmpty && after.orphanFiles.isEmpty)
            // The manifest that used the corrupt layer is reported as dangling: its bytes are gone for good.
            #expect(after.danglingReferences.count == 1)
            #expect(try await client.request(.get, "/v2/team/app/blobs/\(corrupt)", headers: push.auth).status == .notFound)
        }
    }
}

extension Array {
    func asyncMap<T>(_ transform: (Element) async throws -> T) async rethrows -> [T] {
        var result: [T] = []
        for element in self { result.append(try await transform(element)) }
        return result
    }
}
