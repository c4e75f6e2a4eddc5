import Foundation
import HTTPTypes
import HummingbirdTesting
import NIOCore
import OCI
import Testing

@Suite("Distribution API: manifests, tags, referrers, catalog")
struct ManifestAPITests {
    @Test("PUT by tag, then GET and HEAD by tag and digest return the exact bytes")
    func putAndGet() async throws {
        try await Harness.withServer { client, _ in
            // Custom fields and odd whitespace must survive byte-for-byte.
            let (digest, bytes) = try await client.pushImage(
                to: "team/app", reference: "v1", layer: "layer-1",
                extraFields: ",\n  \"annotations\": {\"org.example\":\"x\"}, \"x-custom\": [1, {\"nested\": true}]   "
            )
            for reference in ["v1", digest.description] {
                let get = try await client.request(.get, "/v2/team/app/manifests/\(reference)", headers: [.accept: MediaType.ociManifest])
                #expect(get.status == .ok)
                #expect(Array(get.body.readableBytesView) == bytes)
                #expect(get.header("Content-Type") == MediaType.ociManifest)
                #expect(get.header("Docker-Content-Digest") == digest.description)
                let head = try await client.request(.head, "/v2/team/app/manifests/\(reference)")
                #expect(head.status == .ok)
                #expect(head.header("Content-Length") == String(bytes.count))
                #expect(head.header("Docker-Content-Digest") == digest.description)
                #expect(head.body.readableBytes == 0)
            }
            let notModified = try await client.request(.get, "/v2/team/app/manifests/v1", headers: [.ifNoneMatch: "\"\(digest)\""])
            #expect(notModified.status == .notModified)
            let missing = try await client.request(.get, "/v2/team/app/manifests/v2")
            #expect(missing.status == .notFound)
            #expect(missing.errorCode == "MANIFEST_UNKNOWN")
            #expect(try await client.request(.head, "/v2/team/app/manifests/v2").status == .notFound)
        }
    }

    @Test("the PUT response: 201, Location, Docker-Content-Digest; a digest reference must match the bytes")
    func putResponse() async throws {
        try await Harness.withServer { client, _ in
            let config = try await client.pushBlob("{}", to: "team/app")
            let manifest =
                #"{"schemaVersion":2,"mediaType":"application/vnd.oci.image.manifest.v1+json","config":{"mediaType":"application/vnd.oci.image.config.v1+json","digest":"\#(config)","size":2},"layers":[]}"#
            let digest = Digest.of(Array(manifest.utf8))
            let put = try await client.request(
                .put, "/v2/team/app/manifests/\(digest)", headers: [.contentType: MediaType.ociManifest], body: ByteBuffer(string: manifest))
            #expect(put.status == .created)
            #expect(put.header("Location") == "/v2/team/app/manifests/\(digest)")
            #expect(put.header("Docker-Content-Digest") == digest.description)
            let other = Digest.of(Array("different".utf8))
            let mismatch = try await client.request(
                .put, "/v2/team/app/manifests/\(other)", headers: [.contentType: MediaType.ociManifest], body: ByteBuffer(string: manifest))
            #expect(mismatch.status == .badRequest)
            #expect(mismatch.errorCode == "DIGEST_INVALID")
            // sha512 manifests by digest.
            let digest512 = Digest.of(Array(manifest.utf8), algorithm: .sha512)
            #expect(
                try await client.request(
                    .put, "/v2/team/app/manifests/\(digest512)", headers: [.contentType: MediaType.ociManifest], body: ByteBuffer(string: manifest)
                ).status == .created)
            #expect(try await client.request(.get, "/v2/team/app/manifests/\(digest512)").header("Docker-Content-Digest") == digest512.description)
        }
    }

    @Test("validation errors: missing blobs, schema 1, bad JSON, bad tags, oversized manifests")
    func validation() async throws {
        try await Harness.withServer { client, _ in
            let absent = Digest.of(Array("absent".utf8))
            let missing =
                #"{"schemaVersion":2,"mediaType":"application/vnd.oci.image.manifest.v1+json","config":{"mediaType":"a/b","digest":"\#(absent)","size":6},"layers":[]}"#
            let response = try await client.request(
                .put, "/v2/team/app/manifests/v1", headers: [.contentType: MediaType.ociManifest], body: ByteBuffer(string: missing))
            #expect(response.status == .badRequest)
            #expect(response.errorCode == "MANIFEST_BLOB_UNKNOWN")
            #expect(response.text.contains(absent.description))

            let schema1 = #"{"schemaVersion":1,"name":"team/app","tag":"v1","fsLayers":[],"history":[]}"#
            let refused = try await client.request(
                .put, "/v2/team/app/manifests/v1", headers: [.contentType: MediaType.dockerSchema1Signed], body: ByteBuffer(string: schema1))
            #expect(refused.errorCode == "MANIFEST_INVALID")
            #expect(refused.text.contains("schema 1"))

            #expect(try await client.request(.put, "/v2/team/app/manifests/v1", body: ByteBuffer(string: "{not json")).errorCode == "MANIFEST_INVALID")
            #expect(try await client.request(.put, "/v2/team/app/manifests/-bad", body: ByteBuffer(string: "{}")).errorCode == "MANIFEST_INVALID")
            #expect(try await client.request(.put, "/v2/team/app/manifests/sha256:12", body: ByteBuffer(string: "{}")).errorCode == "DIGEST_INVALID")

            let huge = ByteBuffer(repeating: UInt8(ascii: " "), count: ManifestParser.maximumSize + 1)
            let tooLarge = try await client.request(.put, "/v2/team/app/manifests/big", headers: [.contentType: MediaType.ociManifest], body: huge)
            #expect(tooLarge.status == .contentTooLarge)
            // Exactly at the limit is accepted (padding whitespace is valid JSON).
            let config = try await client.pushBlob("c", to: "team/app")
            var atLimit =
                #"{"schemaVersion":2,"mediaType":"application/vnd.oci.image.manifest.v1+json","config":{"mediaType":"a/b","digest":"\#(config)","size":1},"layers":[]}"#
            atLimit += String(repeating: " ", count: ManifestParser.maximumSize - atLimit.utf8.count)
            #expect(
                try await client.request(.put, "/v2/team/app/manifests/big", headers: [.contentType: MediaType.ociManifest], body: ByteBuffer(string: atLimit))
                    .status == .created)
        }
    }

    @Test("Docker schema 2, manifests without mediaType (umoci), and Accept negotiation")
    func mediaTypes() async throws {
        try await Harness.withServer { client, _ in
            let (dockerDigest, _) = try await client.pushImage(to: "team/app", reference: "docker", layer: "d", mediaType: MediaType.dockerManifest)
            let docker = try await client.request(
                .get, "/v2/team/app/manifests/docker", headers: [.accept: "\(MediaType.dockerManifest), \(MediaType.dockerManifestList)"])
            #expect(docker.header("Content-Type") == MediaType.dockerManifest)
            #expect(docker.header("Docker-Content-Digest") == dockerDigest.description)

            let config = try await client.pushBlob("cfg", to: "team/app")
            let untyped = #"{"schemaVersion":2,"config":{"mediaType":"application/vnd.oci.image.config.v1+json","digest":"\#(config)","size":3},"layers":[]}"#
            #expect(
                try await client.request(
                    .put, "/v2/team/app/manifests/umoci", headers: [.contentType: MediaType.ociManifest], body: ByteBuffer(string: untyped)
                ).status == .created)
            #expect(try await client.request(.get, "/v2/team/app/manifests/umoci").header("Content-Type") == MediaType.ociManifest)

            // A client that lists only Docker types is not handed an OCI manifest.
            let refused = try await client.request(.get, "/v2/team/app/manifests/umoci", headers: [.accept: MediaType.dockerManifest])
            #expect(refused.status == .notFound)
            #expect(refused.errorCode == "MANIFEST_UNKNOWN")
            // Generic Accept values get whatever is stored.
            for accept in ["*/*", "application/json", "\(MediaType.dockerManifest); q=0.5, */*; q=0.1"] {
                #expect(try await client.request(.get, "/v2/team/app/manifests/umoci", headers: [.accept: accept]).status == .ok, "\(accept)")
            }
        }
    }

    @Test("image indexes: children must exist; nested indexes; sparse indexes when configured")
    func indexes() async throws {
        try await Harness.withServer { client, _ in
            let (amd64, amd64Bytes) = try await client.pushImage(to: "team/multi", reference: "amd64", layer: "amd64 layer")
            let (arm64, arm64Bytes) = try await client.pushImage(to: "team/multi", reference: "arm64", layer: "arm64 layer")
            func index(_ entries: [(Digest, Int, String)]) -> String {
                let manifests = entries.map { #"{"mediaType":"\#($0.2)","digest":"\#($0.0)","size":\#($0.1),"platform":{"architecture":"x","os":"linux"}}"# }
                return #"{"schemaVersion":2,"mediaType":"application/vnd.oci.image.index.v1+json","manifests":[\#(manifests.joined(separator: ","))]}"#
            }
            let inner = index([(amd64, amd64Bytes.count, MediaType.ociManifest), (arm64, arm64Bytes.count, MediaType.ociManifest)])
            let put = try await client.request(
                .put, "/v2/team/multi/manifests/latest", headers: [.contentType: MediaType.ociIndex], body: ByteBuffer(string: inner))
            #expect(put.status == .created)
            let innerDigest = Digest.of(Array(inner.utf8))
            let outer = index([(innerDigest, inner.utf8.count, MediaType.ociIndex)])
            #expect(
                try await client.request(.put, "/v2/team/multi/manifests/nested", headers: [.contentType: MediaType.ociIndex], body: ByteBuffer(string: outer))
                    .status == .created)

            let absent = Digest.of(Array("absent child".utf8))
            let sparse = index([(amd64, amd64Bytes.count, MediaType.ociManifest), (absent, 10, MediaType.ociManifest)])
            let refused = try await client.request(
                .put, "/v2/team/multi/manifests/sparse", headers: [.contentType: MediaType.ociIndex], body: ByteBuffer(string: sparse))
            #expect(refused.errorCode == "MANIFEST_BLOB_UNKNOWN")
            #expect(refused.text.contains(absent.description))
        }
        try await Harness.withServer(customize: { $0.allowSparseIndexes = true }) { client, _ in
            let absent = Digest.of(Array("absent child".utf8))
            let sparse =
                #"{"schemaVersion":2,"mediaType":"application/vnd.oci.image.index.v1+json","manifests":[{"mediaType":"application/vnd.oci.image.manifest.v1+json","digest":"\#(absent)","size":10}]}"#
            let response = try await client.request(
                .put, "/v2/team/multi/manifests/sparse", headers: [.contentType: MediaType.ociIndex], body: ByteBuffer(string: sparse))
            #expect(response.status == .created)
        }
    }

    @Test("PUT by digest with ?tag=a&tag=b tags in one call and reports OCI-Tag")
    func tagParameters() async throws {
        try await Harness.withServer { client, _ in
            let (manifest, digest) = try await client.configOnlyManifest(in: "team/app")
            let put = try await client.request(
                .put, "/v2/team/app/manifests/\(digest)?tag=a&tag=b", headers: [.contentType: MediaType.ociManifest], body: ByteBuffer(string: manifest))
            #expect(put.status == .created)
            #expect(put.headers[values: HTTPField.Name("OCI-Tag")!] == ["a", "b"])
            let tags = try await client.request(.get, "/v2/team/app/tags/list")
            #expect(tags.text == #"{"name":"team/app","tags":["a","b"]}"#)
            let bad = try await client.request(
                .put, "/v2/team/app/manifests/\(digest)?tag=ok&tag=.bad", headers: [.contentType: MediaType.ociManifest], body: ByteBuffer(string: manifest))
            #expect(bad.errorCode == "MANIFEST_INVALID")
        }
    }

    @Test("an artifact with the empty config is accepted even if the client never uploaded {}")
    func emptyConfigArtifact() async throws {
        try await Harness.withServer { client, _ in
            let layer = try await client.pushBlob("sbom content", to: "team/app")
            let artifact =
                #"{"schemaVersion":2,"mediaType":"application/vnd.oci.image.manifest.v1+json","artifactType":"application/spdx+json","config":{"mediaType":"application/vnd.oci.empty.v1+json","digest":"\#(EmptyJSON.sha256)","size":2,"data":"e30="},"layers":[{"mediaType":"application/spdx+json","digest":"\#(layer)","size":12}]}"#
            #expect(
                try await client.request(
                    .put, "/v2/team/app/manifests/sbom", headers: [.contentType: MediaType.ociManifest], body: ByteBuffer(string: artifact)
                ).status == .created)
            #expect(try await client.request(.get, "/v2/team/app/blobs/\(EmptyJSON.sha256)").text == "{}")
        }
    }

    @Test("referrers: recorded on push (OCI-Subject), listed with artifactType and annotations, filterable, before the subject exists")
    func referrers() async throws {
        try await Harness.withServer { client, _ in
            let subject = Digest.of(Array("the image that will come later".utf8))
            let layer = try await client.pushBlob("signature", to: "team/app")
            func artifact(_ type: String, _ note: String) -> String {
                #"{"schemaVersion":2,"mediaType":"application/vnd.oci.image.manifest.v1+json","artifactType":"\#(type)","config":{"mediaType":"application/vnd.oci.empty.v1+json","digest":"\#(EmptyJSON.sha256)","size":2},"layers":[{"mediaType":"application/octet-stream","digest":"\#(layer)","size":9}],"subject":{"mediaType":"application/vnd.oci.image.manifest.v1+json","digest":"\#(subject)","size":123},"annotations":{"note":"\#(note)"}}"#
            }
            let signature = artifact("application/vnd.dev.cosign.artifact.sig.v1+json", "sig")
            let put = try await client.request(
                .put, "/v2/team/app/manifests/\(Digest.of(Array(signature.utf8)))", headers: [.contentType: MediaType.ociManifest],
                body: ByteBuffer(string: signature))
            #expect(put.status == .created)
            #expect(put.header("OCI-Subject") == subject.description)
            let sbom = artifact("application/spdx+json", "sbom")
            _ = try await client.request(
                .put, "/v2/team/app/manifests/\(Digest.of(Array(sbom.utf8)))", headers: [.contentType: MediaType.ociManifest], body: ByteBuffer(string: sbom))

            let all = try await client.request(.get, "/v2/team/app/referrers/\(subject)")
            #expect(all.status == .ok)
            #expect(all.header("Content-Type") == MediaType.ociIndex)
            #expect(all.header("OCI-Filters-Applied") == nil)
            let index = try JSONDecoder().decode(Index.self, from: Data(all.body.readableBytesView))
            #expect(index.schemaVersion == 2)
            #expect(index.mediaType == MediaType.ociIndex)
            #expect(Set(index.manifests.map(\.artifactType)) == ["application/vnd.dev.cosign.artifact.sig.v1+json", "application/spdx+json"])
            let sig = try #require(index.manifests.first { $0.artifactType == "application/vnd.dev.cosign.artifact.sig.v1+json" })
            #expect(sig.annotations == ["note": "sig"])
            #expect(sig.digest == Digest.of(Array(signature.utf8)).description)
            #expect(sig.size == signature.utf8.count)
            #expect(sig.mediaType == MediaType.ociManifest)

            let filtered = try await client.request(.get, "/v2/team/app/referrers/\(subject)?artifactType=application/spdx%2Bjson")
            #expect(filtered.header("OCI-Filters-Applied") == "artifactType")
            let filteredIndex = try JSONDecoder().decode(Index.self, from: Data(filtered.body.readableBytesView))
            #expect(filteredIndex.manifests.map(\.artifactType) == ["application/spdx+json"])

            let none = try await client.request(.get, "/v2/nothing/here/referrers/\(subject)")
            #expect(none.status == .ok)
            #expect(try JSONDecoder().decode(Index.self, from: Data(none.body.readableBytesView)).manifests.isEmpty)
            #expect(try await client.request(.get, "/v2/team/app/referrers/sha256:bad").status == .badRequest)
        }
    }

    struct Index: Decodable {
        struct Entry: Decodable {
            let mediaType: String
            let digest: String
            let size: Int
            let artifactType: String?
            let annotations: [String: String]?
        }
        let schemaVersion: Int
        let mediaType: String
        let manifests: [Entry]
    }

    @Test("tag lists and the catalog: lexical order, n/last pagination, Link headers")
    func listings() async throws {
        try await Harness.withServer(customize: { $0.maximumPageSize = 4 }) { client, _ in
            let (manifest, digest) = try await client.configOnlyManifest(in: "team/app")
            let tags = ["v10", "v9", "latest", "Latest", "v1.0", "_x"]
            let query = tags.map { "tag=\($0)" }.joined(separator: "&")
            #expect(
                try await client.request(
                    .put, "/v2/team/app/manifests/\(digest)?\(query)", headers: [.contentType: MediaType.ociManifest], body: ByteBuffer(string: manifest)
                ).status == .created)
            let sorted = tags.sorted()

            let firstPage = try await client.request(.get, "/v2/team/app/tags/list?n=2")
            #expect(firstPage.text == #"{"name":"team/app","tags":["\#(sorted[0])","\#(sorted[1])"]}"#)
            #expect(firstPage.header("Link") == #"</v2/team/app/tags/list?n=2&last=\#(sorted[1])>; rel="next""#)
            let second = try await client.request(.get, "/v2/team/app/tags/list?n=2&last=\(sorted[1])")
            #expect(second.text.contains(#""tags":["\#(sorted[2])","\#(sorted[3])"]"#))
            // Without n the server's maximum page applies, with a Link to the rest.
            let unbounded = try await client.request(.get, "/v2/team/app/tags/list")
            #expect(unbounded.header("Link") != nil)
            let last = try await client.request(.get, "/v2/team/app/tags/list?n=4&last=\(sorted[3])")
            #expect(last.header("Link") == nil)
            #expect(last.text.contains(#""tags":["\#(sorted[4])","\#(sorted[5])"]"#))
            let zero = try await client.request(.get, "/v2/team/app/tags/list?n=0")
            #expect(zero.text == #"{"name":"team/app","tags":[]}"#)
            #expect(zero.header("Link") == nil)
            #expect(try await client.request(.get, "/v2/team/app/tags/list?n=-1").status == .badRequest)
            let unknown = try await client.request(.get, "/v2/no/such/tags/list")
            #expect(unknown.status == .notFound)
            #expect(unknown.errorCode == "NAME_UNKNOWN")

            // The listing follows every change at once (the whole list is cached in memory).
            #expect(
                try await client.request(
                    .put, "/v2/team/app/manifests/zz-new", headers: [.contentType: MediaType.ociManifest], body: ByteBuffer(string: manifest)
                ).status == .created)
            #expect(try await client.request(.delete, "/v2/team/app/manifests/v9").status == .accepted)
            let changed = try await client.request(.get, "/v2/team/app/tags/list?n=4&last=\(sorted[3])")
            #expect(changed.text == #"{"name":"team/app","tags":["v10","zz-new"]}"#)

            for name in ["b/x", "a/x"] { try await client.pushBlob("x", to: name) }
            let catalog = try await client.request(.get, "/v2/_catalog?n=2")
            #expect(catalog.text == #"{"repositories":["a/x","b/x"]}"#)
            #expect(catalog.header("Link") == #"</v2/_catalog?n=2&last=b%2Fx>; rel="next""#)
            #expect(try await client.request(.get, "/v2/_catalog?n=2&last=b%2Fx").text == #"{"repositories":["team/app"]}"#)
        }
    }

    @Test("without n a tag list of 10,500 comes in one response, as Distribution answers it; n still pages")
    func wholeTagListWithoutN() async throws {
        try await Harness.withServer { client, _ in
            let (manifest, digest) = try await client.configOnlyManifest(in: "team/many")
            let tags = (0..<10_500).map { "t\($0)" }
            for start in stride(from: 0, to: tags.count, by: 500) {
                let query = tags[start..<start + 500].map { "tag=\($0)" }.joined(separator: "&")
                #expect(
                    try await client.request(
                        .put, "/v2/team/many/manifests/\(digest)?\(query)", headers: [.contentType: MediaType.ociManifest], body: ByteBuffer(string: manifest)
                    ).status == .created)
            }
            struct TagList: Decodable { let tags: [String] }
            for _ in 0..<2 {  // uncached, then from the cached encoding
                let whole = try await client.request(.get, "/v2/team/many/tags/list")
                #expect(whole.header("Link") == nil)
                #expect(try JSONDecoder().decode(TagList.self, from: Data(whole.text.utf8)).tags == tags.sorted())
            }
            let paged = try await client.request(.get, "/v2/team/many/tags/list?n=10000")
            #expect(try JSONDecoder().decode(TagList.self, from: Data(paged.text.utf8)).tags.count == 10_000)
            #expect(paged.header("Link") == #"</v2/team/many/tags/list?n=10000&last=\#(tags.sorted()[9_999])>; rel="next""#)
        }
    }

    @Test("DELETE by tag removes the tag; by digest removes the manifest and all its tags")
    func deletes() async throws {
        try await Harness.withServer { client, _ in
            let (digest, _) = try await client.pushImage(to: "team/app", reference: "one", layer: "l")
            _ = try await client.pushImage(to: "team/app", reference: "two", layer: "l")
            #expect(try await client.request(.delete, "/v2/team/app/manifests/one").status == .accepted)
            #expect(try await client.request(.get, "/v2/team/app/manifests/one").status == .notFound)
            #expect(try await client.request(.get, "/v2/team/app/manifests/\(digest)").status == .ok)
            #expect(try await client.request(.get, "/v2/team/app/manifests/two").status == .ok)
            #expect(try await client.request(.delete, "/v2/team/app/manifests/\(digest)").status == .accepted)
            #expect(try await client.request(.get, "/v2/team/app/manifests/two").status == .notFound)
            #expect(try await client.request(.get, "/v2/team/app/manifests/\(digest)").status == .notFound)
            #expect(try await client.request(.delete, "/v2/team/app/manifests/\(digest)").errorCode == "MANIFEST_UNKNOWN")
            #expect(try await client.request(.delete, "/v2/team/app/manifests/nope").errorCode == "MANIFEST_UNKNOWN")
            #expect(try await client.request(.get, "/v2/team/app/tags/list").text == #"{"name":"team/app","tags":[]}"#)
        }
    }

    @Test("a moved tag is served fresh: the cache never answers with the old manifest")
    func tagMoveInvalidatesCache() async throws {
        try await Harness.withServer { client, _ in
            let (first, _) = try await client.pushImage(to: "team/app", reference: "latest", layer: "first")
            #expect(try await client.request(.get, "/v2/team/app/manifests/latest").header("Docker-Content-Digest") == first.description)
            let (second, _) = try await client.pushImage(to: "team/app", reference: "latest", layer: "second")
            #expect(try await client.request(.get, "/v2/team/app/manifests/latest").header("Docker-Content-Digest") == second.description)
            _ = try await client.request(.delete, "/v2/team/app/manifests/latest")
            #expect(try await client.request(.get, "/v2/team/app/manifests/latest").status == .notFound)
        }
    }
}
