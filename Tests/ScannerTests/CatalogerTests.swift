import Foundation
import Testing

@testable import Scanner

/// OS detection and the dpkg/apk databases, on real files from `../shared/testdata`.
@Suite("OS detection and package databases")
struct CatalogerTests {
    func text(_ parts: String...) throws -> String {
        try String(contentsOf: parts.reduce(try TestData.url()) { $0.appendingPathComponent($1) }, encoding: .utf8)
    }

    @Test("every os-release sample names its distribution and version")
    func osRelease() throws {
        let folder = try TestData.url("os-release")
        let files = try FileManager.default.contentsOfDirectory(atPath: folder.path).filter { $0.hasSuffix(".os-release") }
        #expect(files.count == 55)
        for file in files {
            let os = try #require(OperatingSystem.parse(osRelease: try text("os-release", file)), "\(file)")
            let distribution = file.split(separator: "-").first.map(String.init) ?? ""
            switch distribution {
            case "alpine": #expect(os.id == "alpine", "\(file)")
            case "debian": #expect(os.id == "debian", "\(file)")
            case "ubuntu": #expect(os.id == "ubuntu", "\(file)")
            case "rhel": #expect(os.id == "rhel", "\(file)")
            default: break
            }
            // The version in the file name is the VERSION_ID (or its prefix).
            let parts = file.dropLast(".os-release".count).split(separator: "-")
            if parts.count >= 2, parts[1].first?.isNumber == true, distribution != "hummingbird" {
                #expect(os.versionID?.hasPrefix(String(parts[1])) == true, "\(file): \(os.versionID ?? "-")")
            }
        }
        let bookworm = try #require(OperatingSystem.parse(osRelease: try text("os-release", "debian-12.os-release")))
        #expect(bookworm.osvEcosystem == "Debian:12")
        let alpine = try #require(OperatingSystem.parse(osRelease: try text("os-release", "alpine-3.18.os-release")))
        #expect(alpine.osvEcosystem == "Alpine:v3.18")
    }

    @Test("the parser cases parse to exactly the fields listed")
    func parserCases() throws {
        let folder = try TestData.url("os-release", "parser-cases")
        let files = try FileManager.default.contentsOfDirectory(atPath: folder.path).filter { $0.hasSuffix(".txtar") }
        #expect(files.count == 11)
        for file in files {
            var sections: [String: String] = [:]
            var current: String?
            for line in try text("os-release", "parser-cases", file).split(separator: "\n", omittingEmptySubsequences: false) {
                if line.hasPrefix("-- "), line.hasSuffix(" --") {
                    current = String(line.dropFirst(3).dropLast(3))
                    sections[current!] = ""
                } else if let current {
                    sections[current, default: ""] += line + "\n"
                }
            }
            let expected = try JSONDecoder().decode([String: String].self, from: Data(try #require(sections["Parsed"]).utf8))
            #expect(OperatingSystem.fields(osRelease: try #require(sections["os-release"])) == expected, "\(file)")
        }
    }

    @Test("fallbacks: alpine-release, lsb-release, debian_version")
    func fallbacks() {
        #expect(OperatingSystem.detect { $0 == "etc/alpine-release" ? "3.19.1\n" : nil }?.osvEcosystem == "Alpine:v3.19")
        let ubuntu = OperatingSystem.detect { $0 == "etc/lsb-release" ? "DISTRIB_ID=Ubuntu\nDISTRIB_RELEASE=22.04\nDISTRIB_CODENAME=jammy\n" : nil }
        #expect(ubuntu?.osvEcosystem == "Ubuntu:22.04")
        #expect(OperatingSystem.detect { $0 == "etc/debian_version" ? "12.5\n" : nil }?.osvEcosystem == "Debian:12")
        #expect(OperatingSystem.detect { _ in nil } == nil)
    }

    @Test("dpkg status: installed packages with their source package and version")
    func dpkg() throws {
        let postgres = DpkgCataloger.packages(status: try text("dpkg", "claircore-postgresql.status"), location: "var/lib/dpkg/status")
        #expect(postgres.count == 3)
        let common = try #require(postgres.first { $0.sourceName == "postgresql-common" && $0.version == "11+200+deb10u5" })
        #expect(common.sourceVersion == "200+deb10u5")
        let trivy = DpkgCataloger.packages(status: try text("dpkg", "trivy-valid.status"), location: "var/lib/dpkg/status")
        #expect(trivy.count == 90)  // 91 stanzas; `git` is only config-files
        #expect(!trivy.contains { $0.name == "git" })
        #expect(trivy.filter { $0.version.contains(":") }.count >= 13)
        let keyring = DpkgCataloger.packages(status: try text("dpkg", "claircore-debian-only.status"), location: "var/lib/dpkg/status")
        #expect(keyring.map(\.name) == ["debian-archive-keyring"])
        #expect(keyring.first?.version == "2019.1")
    }

    @Test("apk installed database: name, version, origin")
    func apk() {
        let database = """
            C:Q1abc=
            P:musl
            V:1.2.4-r2
            A:x86_64
            o:musl
            T:the musl c library

            P:libcrypto3
            V:3.1.4-r1
            A:x86_64
            o:openssl

            """
        let packages = ApkCataloger.packages(installed: database, location: "lib/apk/db/installed")
        #expect(packages.map(\.name) == ["musl", "libcrypto3"])
        #expect(packages[1].sourceName == "openssl")
        #expect(packages[1].version == "3.1.4-r1")
    }
}
