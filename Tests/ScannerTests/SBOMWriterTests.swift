import Foundation
import Testing

@testable import Scanner

/// SBOMs keep what the scan knows (issue 22): source packages, the layer each package came from,
/// every location of a library found twice.
@Suite("SBOM contents")
struct SBOMWriterTests {
    static func inventory() async throws -> ImageInventory {
        var base = TarBuilder()
        base.file("etc/os-release", "ID=debian\nVERSION_ID=\"12\"\n")
        base.file(
            "var/lib/dpkg/status",
            """
            Package: libc6
            Status: install ok installed
            Architecture: amd64
            Source: glibc
            Version: 2.36-9+deb12u4

            Package: libssl3
            Status: install ok installed
            Architecture: amd64
            Source: openssl (3.0.11-1~deb12u2)
            Version: 3.0.11-1~deb12u2+b1

            Package: bash
            Status: install ok installed
            Architecture: amd64
            Version: 5.2.15-2+b2

            """)
        var app = TarBuilder()
        let yaml = try LanguageCatalogerTests.jar([LanguageCatalogerTests.pom("org.yaml", "snakeyaml", "1.33")])
        app.add("app/lib/snakeyaml-1.33.jar", content: yaml)
        app.add("opt/copy/snakeyaml-1.33.jar", content: yaml)
        var files = ImageFiles(wanted: Inventory.wants)
        try await files.apply(layer: ArrayByteSource(base.archive))
        try await files.apply(layer: ArrayByteSource(app.archive))
        var inventory = await Inventory.of(files)
        inventory.layerDigests = ["sha256:" + String(repeating: "a", count: 64), "sha256:" + String(repeating: "b", count: 64)]
        return inventory
    }

    @Test("distribution purls name the source package, and its version when it differs")
    func upstream() async throws {
        let inventory = try await Self.inventory()
        let purls = Set(inventory.packages.map { SBOMWriter.purl($0, os: inventory.operatingSystem) })
        #expect(
            purls == [
                "pkg:deb/debian/libc6@2.36-9%2Bdeb12u4?arch=amd64&distro=debian-12&upstream=glibc",
                "pkg:deb/debian/libssl3@3.0.11-1~deb12u2%2Bb1?arch=amd64&distro=debian-12&upstream=openssl%403.0.11-1~deb12u2",
                "pkg:deb/debian/bash@5.2.15-2%2Bb2?arch=amd64&distro=debian-12",
                "pkg:maven/org.yaml/snakeyaml@1.33",
            ])
    }

    @Test("CycloneDX components carry source, layer and every occurrence, field by field with the inventory")
    func cycloneDX() async throws {
        let inventory = try await Self.inventory()
        let document = try #require(
            try JSONSerialization.jsonObject(with: Data(SBOMWriter.cycloneDX(inventory, subject: .init(name: "test")))) as? [String: Any])
        let components = try #require(document["components"] as? [[String: Any]]).filter { $0["type"] as? String == "library" }
        #expect(components.count == 4)
        for component in components {
            let properties = Dictionary(
                uniqueKeysWithValues: (component["properties"] as? [[String: String]] ?? []).map { ($0["name"]!, $0["value"]!) })
            let matching = inventory.packages.filter { SBOMWriter.purl($0, os: inventory.operatingSystem) == component["purl"] as? String }
            let package = try #require(matching.first)
            #expect(properties["wharf:source-package"] == package.sourceName)
            #expect(properties["wharf:source-version"] == package.sourceVersion)
            #expect(properties["wharf:layer-index"] == package.layer.map(String.init))
            #expect(properties["wharf:layer"] == package.layer.flatMap { inventory.layerDigests?[$0] })
            let occurrences = (component["evidence"] as? [String: Any])?["occurrences"] as? [[String: String]]
            #expect(occurrences?.map { $0["location"]! } == matching.map(\.location))
        }
        let yaml = try #require(components.first { $0["name"] as? String == "org.yaml:snakeyaml" })
        let occurrences = (yaml["evidence"] as? [String: Any])?["occurrences"] as? [[String: String]]
        #expect(occurrences?.map { $0["location"]! } == ["/app/lib/snakeyaml-1.33.jar", "/opt/copy/snakeyaml-1.33.jar"])
        let libc = try #require(inventory.packages.first { $0.name == "libc6" })
        #expect(libc.layer == 0 && libc.sourceName == "glibc")
        #expect(inventory.packages.first { $0.name == "org.yaml:snakeyaml" }?.layer == 1)
    }
}
