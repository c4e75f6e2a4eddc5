import Foundation
import Testing

@testable import Scanner

/// Every assertion of every vector file in `../shared/testdata/versions`, both ways round.
@Suite("Version ordering vectors")
struct VersionOrderingTests {
    static let files: [(file: String, ecosystem: Ecosystem)] = [
        ("alpine-versions.txt", .alpine), ("alpine-versions-generated.txt", .alpine),
        ("cran-versions.txt", .cran), ("cran-versions-generated.txt", .cran),
        ("debian-versions.txt", .debian), ("debian-versions-generated.txt", .debian),
        ("hackage-versions.txt", .hackage),
        ("maven-versions.txt", .maven), ("maven-versions-generated.txt", .maven),
        ("nuget-versions.txt", .nuget),
        ("packagist-versions.txt", .packagist), ("packagist-versions-generated.txt", .packagist),
        ("pub-versions.txt", .pub),
        ("pypi-versions.txt", .pypi), ("pypi-versions-generated.txt", .pypi),
        ("redhat-versions.txt", .redHat),
        ("rubygems-versions.txt", .rubyGems), ("rubygems-versions-generated.txt", .rubyGems),
        ("semver-versions.txt", .npm), ("semver-versions.txt", .go), ("semver-versions.txt", .cratesIO),
    ]

    @Test("every vector file in the folder is covered")
    func coverage() throws {
        let folder = try TestData.url("versions")
        let present = Set(try FileManager.default.contentsOfDirectory(atPath: folder.path).filter { $0.hasSuffix(".txt") })
        #expect(present == Set(Self.files.map(\.file)))
    }

    @Test("assertions hold both ways", arguments: files)
    func vectors(_ entry: (file: String, ecosystem: Ecosystem)) throws {
        let text = try String(contentsOf: try TestData.url("versions", entry.file), encoding: .utf8)
        var checked = 0
        var failures: [String] = []
        for line in text.split(separator: "\n", omittingEmptySubsequences: false) {
            if line.isEmpty || line.hasPrefix("# ") || line.hasPrefix("// ") { continue }
            let parts = line.split(separator: " ", omittingEmptySubsequences: false)
            guard parts.count == 3, let expected = ["<": -1, "=": 0, ">": 1][String(parts[1])] else {
                failures.append("unreadable line: \(line)")
                continue
            }
            let a = String(parts[0]), b = String(parts[2])
            let forward = entry.ecosystem.compare(a, b), backward = entry.ecosystem.compare(b, a)
            if forward != expected || backward != -expected {
                failures.append("\(line): got \(forward) and \(backward) the other way")
            }
            checked += 1
        }
        #expect(checked > 0)
        #expect(
            failures.isEmpty,
            "\(entry.ecosystem.rawValue) \(entry.file): \(failures.count) of \(checked) failed, first: \(failures.prefix(15).joined(separator: "; "))")
    }
}
