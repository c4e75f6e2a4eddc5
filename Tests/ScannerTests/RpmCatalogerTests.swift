import Foundation
import Testing

@testable import Scanner

/// rpm databases written by the real tools: rpmbuild makes packages, rpm 4.18 installs them into an
/// rpmdb.sqlite, and BerkeleyDB's own db5.3_load writes the same headers into a hash `Packages`
/// file as RHEL 7 and 8 have it. `rpm -qa` is the oracle. scripts/install-deps.sh installs rpm and
/// db5.3-util; a missing tool fails the test.
@Suite("rpm databases", .serialized)
struct RpmCatalogerTests {
    static let specs = [
        // A source package with two binary packages, one with an epoch.
        """
        Name: openssl-demo
        Version: 3.0.7
        Release: 24.el9
        Epoch: 1
        Summary: demo
        License: Apache-2.0
        BuildArch: noarch
        %description
        demo
        %package libs
        Summary: demo libraries
        %description libs
        demo libraries
        %files
        %files libs
        """,
        """
        Name: tilde-demo
        Version: 1.0~rc1
        Release: 1
        Summary: demo
        License: MIT
        BuildArch: noarch
        %description
        demo
        %files
        """,
    ]

    /// Builds the packages and installs them into `root`'s rpmdb.sqlite; returns the oracle's lines.
    static func installedDatabase(in root: String) throws -> Set<String> {
        try #require(Shell.exists("rpmbuild") && Shell.exists("rpm"), "rpm and rpmbuild are missing: install rpm (scripts/install-deps.sh does)")
        for (index, spec) in specs.enumerated() {
            let path = "\(root)/top/SPECS/\(index).spec"
            try FileManager.default.createDirectory(atPath: "\(root)/top/SPECS", withIntermediateDirectories: true)
            try spec.write(toFile: path, atomically: true, encoding: .utf8)
            _ = try Shell.run("rpmbuild", ["--quiet", "--define", "_topdir \(root)/top", "-bb", path])
        }
        let rpms = try FileManager.default.contentsOfDirectory(atPath: "\(root)/top/RPMS/noarch").map { "\(root)/top/RPMS/noarch/\($0)" }
        #expect(rpms.count == 3)
        _ = try Shell.run("rpm", ["--root", "\(root)/image", "--dbpath", "/var/lib/rpm", "--initdb"])
        _ = try Shell.run("rpm", ["--root", "\(root)/image", "--dbpath", "/var/lib/rpm", "-i", "--justdb", "--nodeps", "--force-debian"] + rpms)
        let output = try Shell.run(
            "rpm",
            [
                "--root", "\(root)/image", "--dbpath", "/var/lib/rpm", "-qa", "--qf",
                "%{NAME} %|EPOCH?{%{EPOCH}:}:{}|%{VERSION}-%{RELEASE} %{SOURCERPM} %{ARCH}\\n",
            ])
        return Set(String(decoding: output, as: UTF8.self).split(separator: "\n").map(String.init))
    }

    static func describe(_ packages: [DetectedPackage]) -> Set<String> {
        Set(packages.map { "\($0.name) \($0.version) \($0.sourceName ?? "-") \($0.architecture ?? "-")" })
    }

    /// The oracle's lines with the source rpm's file name reduced to the source package's name.
    static func expected(_ oracle: Set<String>) -> Set<String> {
        Set(
            oracle.map { line in
                let fields = line.split(separator: " ").map(String.init)
                return "\(fields[0]) \(fields[1]) \(RpmHeader.sourceName(fields[2]) ?? "?") \(fields[3])"
            })
    }

    @Test("rpmdb.sqlite and a BerkeleyDB Packages file give exactly what rpm -qa lists")
    func bothFormats() async throws {
        let directory = try TemporaryDirectory()
        let oracle = try Self.installedDatabase(in: directory.path)
        #expect(
            oracle.contains("openssl-demo-libs 1:3.0.7-24.el9 openssl-demo-1:3.0.7-24.el9.src.rpm noarch")
                || oracle.contains("openssl-demo-libs 1:3.0.7-24.el9 openssl-demo-3.0.7-24.el9.src.rpm noarch"), "\(oracle)")
        let sqlite = Array(try Data(contentsOf: URL(fileURLWithPath: "\(directory.path)/image/var/lib/rpm/rpmdb.sqlite")))
        let fromSQLite = try await RpmCataloger.packages(database: sqlite, location: "/var/lib/rpm/rpmdb.sqlite")
        #expect(Self.describe(fromSQLite) == Self.expected(oracle))
        #expect(Self.describe(fromSQLite).contains("openssl-demo-libs 1:3.0.7-24.el9 openssl-demo noarch"))
        #expect(fromSQLite.allSatisfy { $0.kind == .rpm })
        let libs = try #require(fromSQLite.first { $0.name == "openssl-demo-libs" })
        #expect(
            SBOMWriter.purl(libs, os: OperatingSystem(id: "rocky", versionID: "9.3"))
                == "pkg:rpm/rocky/openssl-demo-libs@3.0.7-24.el9?arch=noarch&distro=rocky-9.3&epoch=1&upstream=openssl-demo")

        // The same headers in BerkeleyDB hash files: small pages (every header on overflow pages)
        // and large ones (headers inline on the hash page).
        try #require(Shell.exists("db5.3_load"), "db5.3_load is missing: install db5.3-util (scripts/install-deps.sh does)")
        for pageSize in [512, 65536] {
            let dump = "\(directory.path)/packages-\(pageSize).dump"
            _ = try Shell.run(
                "python3",
                [
                    "-c",
                    """
                    import sqlite3, struct, sys
                    rows = sqlite3.connect(sys.argv[1]).execute("SELECT hnum, blob FROM Packages ORDER BY hnum").fetchall()
                    with open(sys.argv[2], "w") as out:
                        out.write("VERSION=3\\nformat=bytevalue\\ntype=hash\\ndb_pagesize=" + sys.argv[3] + "\\nHEADER=END\\n")
                        for hnum, blob in rows:
                            out.write(" " + struct.pack("<I", hnum).hex() + "\\n " + bytes(blob).hex() + "\\n")
                        out.write("DATA=END\\n")
                    """, "\(directory.path)/image/var/lib/rpm/rpmdb.sqlite", dump, String(pageSize),
                ])
            let packagesFile = "\(directory.path)/Packages-\(pageSize)"
            _ = try Shell.run("db5.3_load", ["-f", dump, packagesFile])
            let bytes = Array(try Data(contentsOf: URL(fileURLWithPath: packagesFile)))
            let fromBerkeley = try await RpmCataloger.packages(database: bytes, location: "/var/lib/rpm/Packages")
            #expect(Self.describe(fromBerkeley) == Self.expected(oracle), "page size \(pageSize)")
        }

        // In an image, with matching: Rocky Linux advisories name the source package.
        var layer = TarBuilder()
        layer.file("etc/os-release", "ID=\"rocky\"\nVERSION_ID=\"9.3\"\n")
        layer.add("var/lib/rpm/rpmdb.sqlite", content: sqlite)
        var files = ImageFiles(wanted: Inventory.wants)
        try await files.apply(layer: ArrayByteSource(layer.archive))
        let inventory = await Inventory.of(files)
        #expect(Self.describe(inventory.packages) == Self.expected(oracle))
        let record = try JSONDecoder().decode(
            OSVRecord.self,
            from: Data(
                """
                {"id": "RLSA-2099:0001", "modified": "2026-01-01T00:00:00Z", "aliases": ["CVE-2099-1111"],
                 "affected": [{"package": {"ecosystem": "Rocky Linux:9", "name": "openssl-demo"},
                               "ranges": [{"type": "ECOSYSTEM", "events": [{"introduced": "0"}, {"fixed": "1:3.0.7-25.el9"}]}]}]}
                """.utf8))
        var findings: [String] = []
        for package in inventory.packages {
            guard let lookup = VulnerabilityMatcher.query(for: package, os: inventory.operatingSystem) else { continue }
            findings += VulnerabilityMatcher.match(package: package, lookup: lookup, records: [record]).map {
                "\($0.id) \($0.packageName) \($0.fixedVersion ?? "-")"
            }
        }
        #expect(findings.sorted() == ["CVE-2099-1111 openssl-demo 1:3.0.7-25.el9", "CVE-2099-1111 openssl-demo-libs 1:3.0.7-25.el9"])
    }

    @Test("damaged databases are refused with a reason, never a crash")
    func damaged() async throws {
        await #expect(throws: RpmDatabaseError.self) { _ = try await RpmCataloger.packages(database: [UInt8](repeating: 7, count: 4096), location: "/x") }
        await #expect(throws: RpmDatabaseError.self) {
            _ = try await RpmCataloger.packages(database: Array("SQLite format 3\0".utf8) + [UInt8](repeating: 0, count: 200), location: "/x")
        }
        // A hash meta page whose page count runs past the file.
        var meta = [UInt8](repeating: 0, count: 4096)
        meta[12] = 0x61; meta[13] = 0x15; meta[14] = 0x06  // magic, little-endian
        meta[21] = 0x10  // page size 4096
        meta[32] = 9  // last page 9
        await #expect(throws: RpmDatabaseError.self) { _ = try await RpmCataloger.packages(database: meta, location: "/x") }
        #expect(RpmHeader([0, 0, 0, 1, 0, 0, 0, 0]) == nil)
        #expect(RpmHeader.sourceName("openssl-3.0.7-24.el9.src.rpm") == "openssl")
        #expect(RpmHeader.sourceName("python-urllib3-1.26.5-3.el9.src.rpm") == "python-urllib3")
        #expect(RpmHeader.sourceName("junk") == nil)
    }
}
