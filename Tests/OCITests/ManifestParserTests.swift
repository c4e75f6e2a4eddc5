import Foundation
import Testing

@testable import OCI

/// Builds manifest JSON for tests.
enum Fixture {
    static let layerDigest = Digest.of(Array("layer".utf8))
    static let configDigest = Digest.of(Array("config".utf8))

    static func descriptor(_ mediaType: String, _ digest: Digest, _ size: Int, extra: String = "") -> String {
        #"{"mediaType":"\#(mediaType)","digest":"\#(digest)","size":\#(size)\#(extra)}"#
    }

    static func image(mediaType: String? = MediaType.ociManifest, config: String? = nil, layers: [String]? = nil, extra: String = "") -> [UInt8] {
        var fields: [String] = [#""schemaVersion":2"#]
        if let mediaType { fields.append(#""mediaType":"\#(mediaType)""#) }
        fields.append(#""config":"# + (config ?? descriptor("application/vnd.oci.image.config.v1+json", configDigest, 6)))
        fields.append(#""layers":["# + (layers ?? [descriptor("application/vnd.oci.image.layer.v1.tar+gzip", layerDigest, 5)]).joined(separator: ",") + "]")
        if !extra.isEmpty { fields.append(extra) }
        return Array(("{" + fields.joined(separator: ",") + "}").utf8)
    }
}

@Suite("Manifest parsing and validation")
struct ManifestParserTests {
    @Test("an OCI image manifest: type, config, layers, required blobs")
    func ociImage() throws {
        let parsed = try ManifestParser.parse(Fixture.image(), contentType: MediaType.ociManifest)
        #expect(parsed.mediaType == MediaType.ociManifest)
        #expect(parsed.kind == .image)
        #expect(parsed.requiredBlobs.map(\.digest) == [Fixture.configDigest, Fixture.layerDigest])
        #expect(parsed.referrerArtifactType == "application/vnd.oci.image.config.v1+json")
    }

    @Test("a Docker schema 2 manifest")
    func dockerSchema2() throws {
        let bytes = Fixture.image(
            mediaType: MediaType.dockerManifest,
            config: Fixture.descriptor("application/vnd.docker.container.image.v1+json", Fixture.configDigest, 6))
        let parsed = try ManifestParser.parse(bytes, contentType: MediaType.dockerManifest)
        #expect(parsed.mediaType == MediaType.dockerManifest)
        #expect(parsed.kind == .image)
    }

    @Test("without a mediaType field the Content-Type decides (umoci writes such manifests)")
    func mediaTypeFromContentType() throws {
        let parsed = try ManifestParser.parse(Fixture.image(mediaType: nil), contentType: "application/vnd.oci.image.manifest.v1+json; charset=utf-8")
        #expect(parsed.mediaType == MediaType.ociManifest)
    }

    @Test("without mediaType or a manifest Content-Type the structure decides")
    func inferred() throws {
        #expect(try ManifestParser.parse(Fixture.image(mediaType: nil), contentType: "application/json").mediaType == MediaType.ociManifest)
        let index = Array(#"{"schemaVersion":2,"manifests":[]}"#.utf8)
        #expect(try ManifestParser.parse(index, contentType: nil).mediaType == MediaType.ociIndex)
    }

    @Test("a Content-Type that names another manifest type than the body is refused")
    func contentTypeMismatch() {
        #expect(throws: RegistryError.self) {
            try ManifestParser.parse(Fixture.image(), contentType: MediaType.dockerManifest)
        }
    }

    @Test("Docker schema 1 is refused with a clear MANIFEST_INVALID")
    func schema1() {
        let schema1 = Array(
            #"{"schemaVersion":1,"name":"a","tag":"b","architecture":"amd64","fsLayers":[{"blobSum":"sha256:\#(String(repeating: "a", count: 64))"}],"history":[]}"#
                .utf8)
        for contentType in [nil, MediaType.dockerSchema1Signed] {
            do {
                _ = try ManifestParser.parse(schema1, contentType: contentType)
                Issue.record("schema 1 accepted")
            } catch {
                #expect(error.code == .manifestInvalid)
                #expect(error.message.contains("schema 1"))
            }
        }
    }

    @Test("an artifact manifest: artifactType, empty config, no layers")
    func artifact() throws {
        let bytes = Fixture.image(
            config: Fixture.descriptor(MediaType.ociEmpty, EmptyJSON.sha256, 2),
            layers: [],
            extra:
                #""artifactType":"application/vnd.example.sbom.v1","subject":\#(Fixture.descriptor(MediaType.ociManifest, Fixture.layerDigest, 10)),"annotations":{"a":"b"}"#
        )
        let parsed = try ManifestParser.parse(bytes, contentType: MediaType.ociManifest)
        #expect(parsed.referrerArtifactType == "application/vnd.example.sbom.v1")
        #expect(parsed.subject?.digest == Fixture.layerDigest)
        #expect(parsed.annotations == ["a": "b"])
        #expect(parsed.requiredBlobs.map(\.digest) == [EmptyJSON.sha256])
    }

    @Test("non-distributable layers are not required to be in the registry")
    func nonDistributable() throws {
        let foreign = Fixture.descriptor(
            "application/vnd.oci.image.layer.nondistributable.v1.tar+gzip", Digest.of([1]), 1, extra: #","urls":["https://example.com/l"]"#)
        let parsed = try ManifestParser.parse(Fixture.image(layers: [foreign]), contentType: nil)
        #expect(parsed.requiredBlobs.map(\.digest) == [Fixture.configDigest])
    }

    @Test("an index with nested indexes and platforms")
    func index() throws {
        let child = Fixture.descriptor(
            MediaType.ociManifest, Fixture.layerDigest, 100, extra: #","platform":{"architecture":"arm64","os":"linux","variant":"v8"}"#)
        let nested = Fixture.descriptor(MediaType.ociIndex, Fixture.configDigest, 50)
        let bytes = Array(#"{"schemaVersion":2,"mediaType":"\#(MediaType.ociIndex)","manifests":[\#(child),\#(nested)]}"#.utf8)
        let parsed = try ManifestParser.parse(bytes, contentType: MediaType.ociIndex)
        #expect(parsed.kind == .index)
        #expect(parsed.manifests.count == 2)
        #expect(parsed.manifests[0].platform?.variant == "v8")
        #expect(parsed.requiredBlobs.isEmpty)
        #expect(parsed.referrerArtifactType == nil)
    }

    @Test("embedded data must match its descriptor")
    func dataField() throws {
        let good = Fixture.descriptor("application/vnd.oci.image.config.v1+json", Digest.of(Array("config".utf8)), 6, extra: #","data":"Y29uZmln""#)
        _ = try ManifestParser.parse(Fixture.image(config: good), contentType: nil)
        let bad = Fixture.descriptor("application/vnd.oci.image.config.v1+json", Digest.of(Array("other!".utf8)), 6, extra: #","data":"Y29uZmln""#)
        #expect(throws: RegistryError.self) { try ManifestParser.parse(Fixture.image(config: bad), contentType: nil) }
    }

    @Test(
        "invalid documents are refused as MANIFEST_INVALID with a precise message",
        arguments: [
            ("not json", "valid"),
            (#"[1,2]"#, "valid"),
            (#"{"schemaVersion":2,"mediaType":"application/vnd.oci.image.manifest.v1+json","layers":[]}"#, "config"),
            (
                #"{"schemaVersion":3,"mediaType":"application/vnd.oci.image.manifest.v1+json","config":{"mediaType":"a","digest":"sha256:\#(String(repeating: "a", count: 64))","size":1},"layers":[]}"#,
                "schemaVersion"
            ),
            (
                #"{"schemaVersion":2,"mediaType":"application/vnd.oci.image.manifest.v1+json","config":{"mediaType":"a","digest":"sha256:nothex","size":1},"layers":[]}"#,
                "config.digest"
            ),
            (
                #"{"schemaVersion":2,"mediaType":"application/vnd.oci.image.manifest.v1+json","config":{"mediaType":"a","digest":"sha256:\#(String(repeating: "a", count: 64))","size":-1},"layers":[]}"#,
                "size"
            ),
            (
                #"{"schemaVersion":2,"mediaType":"application/vnd.oci.image.manifest.v1+json","config":{"digest":"sha256:\#(String(repeating: "a", count: 64))","size":1},"layers":[]}"#,
                "mediaType"
            ),
            (#"{"schemaVersion":2,"mediaType":"application/vnd.oci.image.index.v1+json"}"#, "manifests"),
            (#"{"schemaVersion":2,"mediaType":"application/x-unknown"}"#, "not supported"),
            (#"{"schemaVersion":2,"mediaType":"application/vnd.oci.artifact.manifest.v1+json"}"#, "dropped"),
            (
                #"{"schemaVersion":2,"mediaType":"application/vnd.oci.image.manifest.v1+json","config":{"mediaType":"a","digest":"sha256:\#(String(repeating: "a", count: 64))","size":1},"layers":[],"annotations":{"a":1}}"#,
                "annotations"
            ),
        ])
    func invalid(_ json: String, _ mentions: String) {
        do {
            _ = try ManifestParser.parse(Array(json.utf8), contentType: nil)
            Issue.record("accepted \(json)")
        } catch {
            #expect(error.code == .manifestInvalid)
            #expect(error.message.contains(mentions), "'\(error.message)' should mention '\(mentions)'")
        }
    }
}
