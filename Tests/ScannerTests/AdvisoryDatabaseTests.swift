import Foundation
import Testing
import ZIPFoundation

@testable import Scanner

@Suite("Advisory database and matching")
struct AdvisoryDatabaseTests {
    static func build(_ sources: [String], at path: String) async throws -> AdvisoryDatabase {
        let builder = try await AdvisoryDatabaseBuilder.create(at: path)
        for source in sources { try await AdvisorySources.importPath(source, into: builder) }
        try await builder.commit()
        return try await AdvisoryDatabase.open(path)
    }

    @Test("the test advisories import into an indexed file; withdrawn and unreadable records are left out")
    func importFolder() async throws {
        let directory = try TemporaryDirectory()
        let osv = try TestData.url("osv").path
        let builder = try await AdvisoryDatabaseBuilder.create(at: directory.path + "/osv.sqlite")
        let added = try await AdvisorySources.importPath(osv, into: builder)
        try await builder.commit()
        // 5,579 files: one is documented as invalid; the rest minus the withdrawn are imported.
        #expect(added + builder.skippedWithdrawn + builder.skippedUnreadable.count == 5_579)
        #expect(builder.skippedUnreadable.count == 1)
        // How fast is a benchmark figure (README, Scanning), not a test bound: a loaded machine
        // once took 71 s here.
        let database = try await AdvisoryDatabase.open(directory.path + "/osv.sqlite")
        let summary = try await database.summary()
        // Records with the same id in two files count once.
        #expect(summary.records <= added && summary.records > 5_400)
        #expect(Set(summary.ecosystems.keys) == ["PyPI", "Debian", "crates.io"])
        #expect(summary.sources == [osv])
        // No half-written file is left beside it.
        #expect(try FileManager.default.contentsOfDirectory(atPath: directory.path) == ["osv.sqlite"])
        try await database.close()
    }

    @Test("an import that fails leaves the previous database in place")
    func atomicSwap() async throws {
        let directory = try TemporaryDirectory()
        let path = directory.path + "/osv.sqlite"
        let first = try await Self.build([try TestData.url("osv", "crates.io").path], at: path)
        let before = try await first.summary()
        try await first.close()
        let builder = try await AdvisoryDatabaseBuilder.create(at: path)
        await #expect(throws: AdvisoryImportError.self) { try await AdvisorySources.importPath(directory.path + "/missing", into: builder) }
        await builder.discard()
        let reopened = try await AdvisoryDatabase.open(path)
        #expect(try await reopened.summary() == before)
        #expect(try FileManager.default.contentsOfDirectory(atPath: directory.path) == ["osv.sqlite"])
        try await reopened.close()
        await #expect(throws: AdvisoryImportError.self) { _ = try await AdvisoryDatabase.open(directory.path + "/none.sqlite") }
    }

    @Test("osv.dev-style zip files import like folders")
    func zipImport() async throws {
        let directory = try TemporaryDirectory()
        let zipPath = directory.path + "/all.zip"
        let archive = try Archive(url: URL(fileURLWithPath: zipPath), accessMode: .create)
        let folder = try TestData.url("osv", "crates.io")
        let names = try FileManager.default.contentsOfDirectory(atPath: folder.path).sorted().prefix(50)
        for name in names {
            try archive.addEntry(with: name, relativeTo: folder, compressionMethod: .deflate)
        }
        let database = try await Self.build([zipPath], at: directory.path + "/osv.sqlite")
        let summary = try await database.summary()
        #expect(summary.records > 40 && summary.records <= 50)
        #expect(summary.ecosystems.keys.sorted() == ["crates.io"])
        try await database.close()
    }

    @Test("the Alpine images against their releases' secdb: nothing, then exactly the finding a test record adds")
    func alpine() async throws {
        let directory = try TemporaryDirectory()
        let secdb = try TestData.url("alpine-secdb").path
        let database = try await Self.build([secdb], at: directory.path + "/osv.sqlite")
        for (file, release) in [("alpine-310.tar.gz", "v3.10"), ("alpine-311.tar.gz", "v3.11")] {
            let image = try await LocalImage.open("docker-archive:" + (try TestData.url("images", file).path))
            defer { image.close() }
            let inventory = try await Inventory.of(layers: try image.layers.map { try $0.chunks() })
            #expect(inventory.operatingSystem?.osvEcosystem == "Alpine:\(release)")
            // Installed openssl/busybox/musl are at or above every fixed version (two are equal).
            #expect(try await VulnerabilityMatcher.match(inventory, database: database) == [])
        }
        try await database.close()

        // A record the test writes: musl fixed one release after the 3.10 image's.
        let extra = directory.path + "/extra.json"
        try Data(
            """
            {"id": "WHARF-TEST-1", "modified": "2026-01-01T00:00:00Z", "aliases": ["CVE-2099-0001"],
             "severity": [{"type": "CVSS_V3", "score": "CVSS:3.1/AV:N/AC:L/PR:N/UI:N/S:U/C:H/I:H/A:H"}],
             "affected": [{"package": {"ecosystem": "Alpine:v3.10", "name": "musl"},
                           "ranges": [{"type": "ECOSYSTEM", "events": [{"introduced": "0"}, {"fixed": "1.1.22-r4"}]}]}]}
            """.utf8
        ).write(to: URL(fileURLWithPath: extra))
        let withExtra = try await Self.build([secdb, extra], at: directory.path + "/osv2.sqlite")
        let image = try await LocalImage.open("docker-archive:" + (try TestData.url("images", "alpine-310.tar.gz").path))
        defer { image.close() }
        let inventory = try await Inventory.of(layers: try image.layers.map { try $0.chunks() })
        let findings = try await VulnerabilityMatcher.match(inventory, database: withExtra)
        // musl's origin is musl; musl-utils comes from it too: one finding per installed package.
        #expect(Set(findings.map(\.packageName)) == ["musl", "musl-utils"])
        #expect(findings.allSatisfy { $0.id == "CVE-2099-0001" && $0.aliases == ["WHARF-TEST-1"] })
        #expect(findings.allSatisfy { $0.fixedVersion == "1.1.22-r4" && $0.installedVersion == "1.1.22-r3" })
        #expect(findings.allSatisfy { $0.severity == .critical && $0.cvssScore == 9.8 })
        try await withExtra.close()
    }

    @Test("PyPI, crates.io and Debian records: affected versions found, fixed ones not, aliases merged")
    func languageAndDebian() async throws {
        let directory = try TemporaryDirectory()
        let database = try await Self.build([try TestData.url("osv").path], at: directory.path + "/osv.sqlite")
        // Every PyPI record with a plain introduced/fixed range: the introduced version is found
        // (under its own id or an alias), the fixed version is not.
        let folder = try TestData.url("osv", "PyPI")
        var checked = 0
        for name in try FileManager.default.contentsOfDirectory(atPath: folder.path).sorted() where checked < 300 {
            let record = try JSONDecoder().decode(OSVRecord.self, from: Data(contentsOf: folder.appendingPathComponent(name)))
            guard !record.isWithdrawn, let affected = record.affected?.first, let package = affected.package,
                let range = affected.ranges?.first(where: { $0.type == "ECOSYSTEM" }), range.events.count == 2,
                let introduced = range.events[0].introduced, introduced != "0", let fixed = range.events[1].fixed
            else { continue }
            let inventory = ImageInventory(
                operatingSystem: nil,
                packages: [
                    DetectedPackage(kind: .python, name: package.name, version: introduced, location: "/site-packages")
                ])
            let findings = try await VulnerabilityMatcher.match(inventory, database: database)
            let identifiers = Set(findings.flatMap { [$0.id] + $0.aliases })
            #expect(identifiers.contains(record.id), "\(record.id): \(package.name) \(introduced)")
            let finding = findings.first { $0.id == record.id || $0.aliases.contains(record.id) }
            #expect(finding.map { $0.fixedVersion != nil } ?? false)
            // One finding per vulnerability: no two findings share an identifier.
            let all = findings.flatMap { [$0.id] + $0.aliases }
            #expect(all.count == Set(all).count)
            let patched = ImageInventory(
                operatingSystem: nil,
                packages: [
                    DetectedPackage(kind: .python, name: package.name, version: fixed, location: "/site-packages")
                ])
            let after = try await VulnerabilityMatcher.match(patched, database: database)
            #expect(!after.flatMap { [$0.id] + $0.aliases }.contains(record.id), "\(record.id) still reported at \(fixed)")
            checked += 1
        }
        #expect(checked > 100)

        // Debian: advisories name source packages; the release must match.
        let wheezy = OperatingSystem(id: "debian", versionID: "7")
        let exiv2 = DetectedPackage(
            kind: .dpkg, name: "libexiv2-12", version: "0.23-1+deb7u2", sourceName: "exiv2",
            sourceVersion: "0.23-1+deb7u2", location: "/var/lib/dpkg/status")
        let found = try await VulnerabilityMatcher.match(ImageInventory(operatingSystem: wheezy, packages: [exiv2]), database: database)
        let ela = try #require(found.first { $0.id == "ELA-10-1" })
        #expect(ela.fixedVersion == "0.23-1+deb7u3")
        #expect(ela.packageName == "libexiv2-12")
        var fixedExiv2 = exiv2
        fixedExiv2.sourceVersion = "0.23-1+deb7u3"
        let none = try await VulnerabilityMatcher.match(ImageInventory(operatingSystem: wheezy, packages: [fixedExiv2]), database: database)
        #expect(!none.contains { $0.id == "ELA-10-1" })
        let bookworm = OperatingSystem(id: "debian", versionID: "12")
        let otherRelease = try await VulnerabilityMatcher.match(ImageInventory(operatingSystem: bookworm, packages: [exiv2]), database: database)
        #expect(!otherRelease.contains { $0.id == "ELA-10-1" })
        try await database.close()
    }

    @Test(
        "CVSS v3 base scores and ratings",
        arguments: [
            ("CVSS:3.1/AV:N/AC:L/PR:N/UI:N/S:U/C:H/I:H/A:H", 9.8, Severity.critical),
            ("CVSS:3.1/AV:N/AC:L/PR:N/UI:N/S:C/C:H/I:H/A:H", 10.0, .critical),
            ("CVSS:3.1/AV:L/AC:L/PR:L/UI:N/S:U/C:H/I:N/A:N", 5.5, .medium),
            ("CVSS:3.0/AV:N/AC:H/PR:N/UI:R/S:U/C:L/I:N/A:N", 3.1, .low),
            ("CVSS:3.1/AV:N/AC:L/PR:L/UI:N/S:C/C:L/I:L/A:N", 6.4, .medium),
            ("CVSS:3.1/AV:N/AC:L/PR:N/UI:R/S:U/C:H/I:H/A:H", 8.8, .high),
            ("CVSS:3.1/AV:P/AC:H/PR:H/UI:R/S:U/C:N/I:N/A:N", 0.0, .informational),
        ])
    func cvss(vector: String, score: Double, severity: Severity) {
        #expect(SeverityRating.cvss3BaseScore(vector) == score)
        #expect(Severity(score: score) == severity)
        #expect(SeverityRating.cvss3BaseScore("CVSS:3.1/AV:X/AC:L") == nil)
    }

    @Test("secdb identifiers: several per line, notes, typos and placeholders")
    func secdbIdentifiers() {
        #expect(AlpineSecDB.identifiers("CVE-2016-6258 XSA-182") == ["CVE-2016-6258", "XSA-182"])
        #expect(AlpineSecDB.identifiers("CVE-2018-14881 (BGP)") == ["CVE-2018-14881"])
        #expect(AlpineSecDB.identifiers("CVE-????-?????  XSA-295") == ["XSA-295"])
        #expect(AlpineSecDB.identifiers("CVE_2019-2426") == ["CVE-2019-2426"])
        #expect(AlpineSecDB.identifiers("CVE-2019-19451.patch") == ["CVE-2019-19451"])
    }
}
