import Foundation
import Testing

@testable import Scanner

/// VEX (issue 22): OpenVEX and CycloneDX VEX documents, written here from their specifications,
/// suppress exactly the findings they name, for exactly the products they name.
@Suite("VEX")
struct VEXTests {
    static let imageDigest = "sha256:" + String(repeating: "d", count: 64)
    static let otherDigest = "sha256:" + String(repeating: "e", count: 64)

    static func package(_ name: String, _ version: String, _ location: String) -> DetectedPackage {
        DetectedPackage(kind: .java, name: name, version: version, location: location)
    }

    static let inventory = ImageInventory(
        operatingSystem: nil,
        packages: [
            package("org.yaml:snakeyaml", "1.29", "/app/demo.jar!/BOOT-INF/lib/snakeyaml-1.29.jar"),
            package("org.yaml:snakeyaml", "1.26", "/opt/toolkit.jar"),
            package("org.springframework:spring-beans", "5.3.17", "/app/demo.jar!/BOOT-INF/lib/spring-beans-5.3.17.jar"),
            package("org.springframework:spring-webmvc", "5.3.17", "/app/demo.jar!/BOOT-INF/lib/spring-webmvc-5.3.17.jar"),
            package("org.apache.logging.log4j:log4j-core", "2.14.1", "/opt/log4j-core-2.14.1.jar"),
            package("org.apache.commons:commons-text", "1.9", "/opt/commons-text-1.9.jar"),
        ])

    static func finding(_ id: String, _ aliases: [String], _ package: DetectedPackage) -> Finding {
        Finding(
            id: id, aliases: aliases, summary: nil, packageName: package.name, packageKind: package.kind,
            installedVersion: package.version, fixedVersion: nil, severity: .critical, cvssScore: nil, cvssVector: nil,
            ecosystem: "Maven", location: package.location)
    }

    static let findings: [Finding] = {
        let p = inventory.packages
        return [
            finding("CVE-2022-1471", ["GHSA-mjmj-j48q-9wg2"], p[0]), finding("CVE-2022-1471", ["GHSA-mjmj-j48q-9wg2"], p[1]),
            finding("CVE-2022-22965", ["GHSA-36p3-wjmg-h94x"], p[2]), finding("CVE-2022-22965", ["GHSA-36p3-wjmg-h94x"], p[3]),
            finding("CVE-2021-44228", ["GHSA-jfh8-c2jp-5v3q"], p[4]), finding("CVE-2022-42889", ["GHSA-599f-7c49-w659"], p[5]),
        ]
    }()

    /// OpenVEX 0.2.0 (github.com/openvex/spec, OPENVEX-SPEC.md).
    static let openVEX = """
        {
          "@context": "https://openvex.dev/ns/v0.2.0",
          "@id": "https://example.com/vex/demo-1",
          "author": "Platform Security <security@example.com>",
          "timestamp": "2026-11-01T10:00:00Z",
          "version": 1,
          "statements": [
            {
              "vulnerability": {"name": "GHSA-mjmj-j48q-9wg2"},
              "products": [{"@id": "pkg:maven/org.yaml/snakeyaml@1.29"}],
              "status": "not_affected",
              "justification": "vulnerable_code_not_in_execute_path",
              "impact_statement": "demo never parses untrusted YAML"
            },
            {
              "vulnerability": {"@id": "https://nvd.nist.gov/vuln/detail/CVE-2022-22965", "name": "CVE-2022-22965"},
              "products": [
                {"@id": "pkg:oci/demo@\(imageDigest.replacingOccurrences(of: ":", with: "%3A"))?repository_url=registry.example.com/team/demo",
                 "subcomponents": [{"@id": "pkg:maven/org.springframework/spring-beans@5.3.17"}]}
              ],
              "status": "not_affected",
              "justification": "vulnerable_code_cannot_be_controlled_by_adversary"
            },
            {
              "vulnerability": {"name": "CVE-2021-44228"},
              "timestamp": "2026-11-02T10:00:00Z",
              "products": [{"@id": "pkg:maven/org.apache.logging.log4j/log4j-core"}],
              "status": "under_investigation"
            },
            {
              "vulnerability": {"name": "GHSA-jfh8-c2jp-5v3q"},
              "timestamp": "2026-11-03T10:00:00Z",
              "products": [{"@id": "pkg:maven/org.apache.logging.log4j/log4j-core@2.14.1"}],
              "status": "affected",
              "action_statement": "upgrade to 2.17.1"
            }
          ]
        }
        """

    /// CycloneDX 1.5 VEX: components by bom-ref, vulnerabilities with an analysis.
    static let cycloneDXVEX = """
        {
          "bomFormat": "CycloneDX", "specVersion": "1.5", "version": 1,
          "serialNumber": "urn:uuid:3e671687-395b-41f5-a30f-a58921a69b79",
          "components": [
            {"type": "library", "bom-ref": "commons-text", "name": "commons-text", "version": "1.9", "purl": "pkg:maven/org.apache.commons/commons-text@1.9"}
          ],
          "vulnerabilities": [
            {
              "id": "CVE-2022-42889",
              "references": [{"id": "GHSA-599f-7c49-w659", "source": {"name": "GitHub"}}],
              "analysis": {"state": "not_affected", "justification": "code_not_reachable", "detail": "StringSubstitutor is not used"},
              "affects": [{"ref": "urn:cdx:3e671687-395b-41f5-a30f-a58921a69b79/1#commons-text"}]
            },
            {
              "id": "CVE-2022-1471",
              "analysis": {"state": "resolved"},
              "affects": [{"ref": "pkg:maven/org.yaml/snakeyaml@1.26"}]
            },
            {"id": "CVE-2099-0001", "ratings": [{"severity": "high"}]}
          ]
        }
        """

    static func verdicts(_ findings: [Finding]) -> [String] {
        findings.map { "\($0.id) \($0.packageName)@\($0.installedVersion) \($0.vex?.status.rawValue ?? "-") \($0.isSuppressed)" }
    }

    @Test("OpenVEX: by alias, by package purl, by image with subcomponents; the latest statement decides")
    func openVEXStatements() throws {
        let statements = try VEXDocument.statements(from: Array(Self.openVEX.utf8), origin: "demo.vex.json")
        #expect(statements.count == 4)
        let applied = VEXApplication.apply(
            statements, to: Self.findings, inventory: Self.inventory, image: .init(digest: Self.imageDigest, repository: "team/demo"))
        #expect(
            Self.verdicts(applied) == [
                "CVE-2022-1471 org.yaml:snakeyaml@1.29 not_affected true",
                "CVE-2022-1471 org.yaml:snakeyaml@1.26 - false",
                "CVE-2022-22965 org.springframework:spring-beans@5.3.17 not_affected true",
                "CVE-2022-22965 org.springframework:spring-webmvc@5.3.17 - false",
                "CVE-2021-44228 org.apache.logging.log4j:log4j-core@2.14.1 affected false",
                "CVE-2022-42889 org.apache.commons:commons-text@1.9 - false",
            ])
        #expect(applied[0].vex?.statement == "demo never parses untrusted YAML")
        #expect(applied[0].vex?.justification == "vulnerable_code_not_in_execute_path")
        #expect(applied[0].vex?.source == "https://example.com/vex/demo-1 in demo.vex.json")
        #expect(applied[4].vex?.statement == "upgrade to 2.17.1")

        // The image statement covers only the image it names.
        let elsewhere = VEXApplication.apply(
            statements, to: Self.findings, inventory: Self.inventory, image: .init(digest: Self.otherDigest, repository: "team/demo"))
        #expect(elsewhere[2].vex == nil)
        #expect(elsewhere[0].isSuppressed)
    }

    @Test("CycloneDX VEX: affects by BOM-Link and by purl, states mapped, plain findings ignored")
    func cycloneDXStatements() throws {
        let statements = try VEXDocument.statements(from: Array(Self.cycloneDXVEX.utf8), origin: "namespace team")
        #expect(statements.count == 2)
        let applied = VEXApplication.apply(statements, to: Self.findings, inventory: Self.inventory, image: .init(digest: Self.imageDigest, repository: nil))
        #expect(
            Self.verdicts(applied) == [
                "CVE-2022-1471 org.yaml:snakeyaml@1.29 - false",
                "CVE-2022-1471 org.yaml:snakeyaml@1.26 fixed true",
                "CVE-2022-22965 org.springframework:spring-beans@5.3.17 - false",
                "CVE-2022-22965 org.springframework:spring-webmvc@5.3.17 - false",
                "CVE-2021-44228 org.apache.logging.log4j:log4j-core@2.14.1 - false",
                "CVE-2022-42889 org.apache.commons:commons-text@1.9 not_affected true",
            ])
        #expect(applied[5].vex?.justification == "code_not_reachable")
        #expect(applied[5].vex?.source == "urn:uuid:3e671687-395b-41f5-a30f-a58921a69b79 in namespace team")
    }

    @Test(
        "documents the specifications forbid are refused with the reason",
        arguments: [
            ("not json", "not a JSON object"),
            (#"{"statements": []}"#, "not an OpenVEX document"),
            (#"{"@context": "https://openvex.dev/ns/v0.2.0", "statements": [{"vulnerability": {"name": "CVE-1"}, "status": "bogus"}]}"#, "`status` must be"),
            (
                #"{"@context": "https://openvex.dev/ns/v0.2.0", "statements": [{"vulnerability": {"name": "CVE-1"}, "status": "not_affected"}]}"#,
                "needs a justification"
            ),
            (
                #"{"@context": "https://openvex.dev/ns/v0.2.0", "statements": [{"vulnerability": {"name": "CVE-1"}, "status": "not_affected", "justification": "trust_me"}]}"#,
                "unknown justification"
            ),
            (#"{"@context": "https://openvex.dev/ns/v0.2.0", "statements": [{"status": "fixed"}]}"#, "needs a name"),
            (#"{"bomFormat": "CycloneDX", "vulnerabilities": [{"id": "CVE-1", "analysis": {"state": "maybe"}}]}"#, "unknown analysis state"),
        ])
    func refused(document: String, reason: String) {
        let error = #expect(throws: VEXError.self) { _ = try VEXDocument.statements(from: Array(document.utf8), origin: "test") }
        #expect(error?.description.contains(reason) == true, "\(String(describing: error))")
    }

    @Test("purls: a statement's purl covers a package's when name and namespace agree, its version and qualifiers too")
    func purlCoverage() {
        let package = PackageURL("pkg:deb/debian/libc6@2.36-9%2Bdeb12u4?arch=amd64&distro=debian-12&upstream=glibc")
        #expect(package.version == "2.36-9+deb12u4" && package.namespace == "debian" && package.name == "libc6")
        #expect(PackageURL("pkg:deb/debian/libc6").covers(package))
        #expect(PackageURL("pkg:deb/debian/libc6@2.36-9+deb12u4?arch=amd64").covers(package))
        #expect(!PackageURL("pkg:deb/debian/libc6@2.36-9+deb12u4?arch=arm64").covers(package))
        #expect(!PackageURL("pkg:deb/ubuntu/libc6").covers(package))
        #expect(!PackageURL("not a purl").covers(package))
        #expect(PackageURL("pkg:npm/%40babel/core@7.1.0").namespace == "@babel")
    }
}
