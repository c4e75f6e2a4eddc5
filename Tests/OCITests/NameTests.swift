import Testing

@testable import OCI

@Suite("Repository names, tags and references")
struct NameTests {
    @Test(
        "valid repository names",
        arguments: [
            "a", "library/alpine", "a/b/c/d", "my-app", "my--app", "my_app", "my__app", "my.app",
            "0", "a0.b1_c2-d3", "team/sub.team/app__x", String(repeating: "a", count: 255),
            "x/" + String(repeating: "b", count: 253),
        ])
    func validNames(_ name: String) {
        #expect(RepositoryName.isValid(name), "\(name) should be valid")
    }

    @Test(
        "invalid repository names",
        arguments: [
            "", "A", "Library/alpine", "-a", "a-", "a.", ".a", "a..b", "a._b", "a___b", "a/", "/a", "a//b",
            "a b", "a:b", "a@b", "café", "a/-b", "a/b_", String(repeating: "a", count: 256), "_catalog",
        ])
    func invalidNames(_ name: String) {
        #expect(!RepositoryName.isValid(name), "\(name) should be invalid")
    }

    @Test("namespace is the first path component")
    func namespace() {
        #expect(RepositoryName("team/app/web")?.namespace == "team")
        #expect(RepositoryName("solo")?.namespace == "solo")
    }

    @Test("valid tags", arguments: ["latest", "v1.2.3", "1.0", "_x", "A-b.C_d", String(repeating: "t", count: 128), "0"])
    func validTags(_ tag: String) {
        #expect(Tag.isValid(tag))
    }

    @Test("invalid tags", arguments: ["", ".x", "-x", "a/b", "a:b", "a b", "a+b", String(repeating: "t", count: 129), "ü"])
    func invalidTags(_ tag: String) {
        #expect(!Tag.isValid(tag))
    }

    @Test("references: a colon means digest")
    func references() throws {
        #expect(try Reference(parsing: "latest") == .tag(Tag("latest")!))
        let digest = "sha256:" + String(repeating: "0", count: 64)
        #expect(try Reference(parsing: digest) == .digest(Digest(digest)!))
        #expect(throws: Reference.ParseError.self) { try Reference(parsing: "sha256:short") }
        #expect(throws: Reference.ParseError.self) { try Reference(parsing: "-bad") }
    }

    @Test("media type base strips parameters and case")
    func mediaTypeBase() {
        #expect(MediaType.base(of: "application/vnd.oci.image.manifest.v1+json; charset=utf-8") == MediaType.ociManifest)
        #expect(MediaType.base(of: " Application/JSON ") == "application/json")
        #expect(MediaType.isNonDistributable("application/vnd.oci.image.layer.nondistributable.v1.tar+gzip"))
        #expect(MediaType.isNonDistributable(MediaType.dockerForeignLayer))
        #expect(!MediaType.isNonDistributable("application/vnd.oci.image.layer.v1.tar+gzip"))
    }
}

@Suite("Image references as Docker reads them")
struct ImageReferenceTests {
    @Test("hosts, Docker Hub's defaults, tags and digests")
    func parsing() throws {
        let digest = "sha256:" + String(repeating: "ab", count: 32)
        let cases: [(String, String, String, String)] = [
            ("alpine", "registry-1.docker.io", "library/alpine", "latest"),
            ("alpine:3.19", "registry-1.docker.io", "library/alpine", "3.19"),
            ("docker.io/bitnami/redis:7", "registry-1.docker.io", "bitnami/redis", "7"),
            ("index.docker.io/library/nginx", "registry-1.docker.io", "library/nginx", "latest"),
            ("team/app:1", "registry-1.docker.io", "team/app", "1"),
            ("127.0.0.1:5000/team/app:1.0", "127.0.0.1:5000", "team/app", "1.0"),
            ("localhost/app@\(digest)", "localhost", "app", digest),
            ("ghcr.io/org/tool/sub:v2", "ghcr.io", "org/tool/sub", "v2"),
        ]
        for (text, host, repository, reference) in cases {
            let parsed = try #require(ImageReference(text), "\(text)")
            #expect(parsed.host == host && parsed.repository == repository && parsed.reference == reference, "\(text)")
        }
        #expect(ImageReference("127.0.0.1:5000/a")!.isLoopback)
        #expect(ImageReference("localhost:5000/a")!.isLoopback)
        #expect(!ImageReference("ghcr.io/a")!.isLoopback)
        for bad in ["", "UPPER/case", "host.io/", "a:b:c", "docker://alpine", "app@sha256:short"] {
            #expect(ImageReference(bad) == nil, "\(bad)")
        }
    }
}

@Suite("JSON string literals")
struct JSONStringTests {
    @Test("plain strings pass through; quotes, backslashes and control characters are escaped")
    func escapes() {
        #expect(JSONString.literal("team/app") == #""team/app""#)
        #expect(JSONString.literal("a\"b\\c") == #""a\"b\\c""#)
        #expect(JSONString.literal("line\nfeed\r\ttab\u{1}") == #""line\nfeed\r\ttab\u0001""#)
        #expect(JSONString.literal("café ✓") == "\"café ✓\"")
    }
}
