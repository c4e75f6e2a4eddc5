import Foundation
import Testing

@testable import Scanner

/// OSV range evaluation on hand-made ranges and on the real advisories of `../shared/testdata/osv`.
@Suite("OSV matching")
struct OSVMatchingTests {
    /// The records of one test-data folder that decode; the ones that do not are returned by name.
    static func records(_ ecosystem: String) throws -> (records: [OSVRecord], undecodable: [String]) {
        let folder = try TestData.url("osv", ecosystem)
        let decoder = JSONDecoder()
        var records: [OSVRecord] = [], undecodable: [String] = []
        for name in try FileManager.default.contentsOfDirectory(atPath: folder.path).filter({ $0.hasSuffix(".json") }).sorted() {
            if let record = try? decoder.decode(OSVRecord.self, from: Data(contentsOf: folder.appendingPathComponent(name))) {
                records.append(record)
            } else {
                undecodable.append(name)
            }
        }
        return (records, undecodable)
    }

    func range(_ events: [OSVRecord.Event], type: String = "ECOSYSTEM") -> OSVRecord.Range { OSVRecord.Range(type: type, events: events) }

    @Test("introduced, fixed, last_affected and limit events")
    func events() {
        let semver = Ecosystem.npm
        let simple = range([.init(introduced: "1.0.0"), .init(fixed: "1.2.0")])
        #expect(!AffectedVersions.contains("0.9.0", in: simple, ecosystem: semver))
        #expect(AffectedVersions.contains("1.0.0", in: simple, ecosystem: semver))
        #expect(AffectedVersions.contains("1.2.0-rc.1", in: simple, ecosystem: semver))
        #expect(!AffectedVersions.contains("1.2.0", in: simple, ecosystem: semver))
        // Two spans, events out of order in the record.
        let two = range([.init(fixed: "2.5.1"), .init(introduced: "2.0.0"), .init(fixed: "1.4.3"), .init(introduced: "0")])
        for (version, expected) in [("0.1.0", true), ("1.4.2", true), ("1.4.3", false), ("1.9.9", false), ("2.0.0", true), ("2.5.1", false)] {
            #expect(AffectedVersions.contains(version, in: two, ecosystem: semver) == expected, "\(version)")
        }
        // Overlapping spans, as some records list them (PYSEC-2021-114): 2.11.6 is inside [2.11, 2.11.7).
        let overlapping = range([.init(introduced: "2.11"), .init(fixed: "2.11.7"), .init(introduced: "0"), .init(fixed: "2.11.6")])
        #expect(AffectedVersions.contains("2.11.6", in: overlapping, ecosystem: .pypi))
        #expect(AffectedVersions.contains("1.0", in: overlapping, ecosystem: .pypi))
        #expect(!AffectedVersions.contains("2.11.7", in: overlapping, ecosystem: .pypi))
        let last = range([.init(introduced: "0"), .init(lastAffected: "3.1.0")])
        #expect(AffectedVersions.contains("3.1.0", in: last, ecosystem: semver))
        #expect(!AffectedVersions.contains("3.1.1", in: last, ecosystem: semver))
        let limited = range([.init(introduced: "0"), .init(limit: "2.0.0")])
        #expect(AffectedVersions.contains("1.9.0", in: limited, ecosystem: semver))
        #expect(!AffectedVersions.contains("2.0.0", in: limited, ecosystem: semver))
        // Debian ordering: a fix with an epoch, and a tilde pre-release before it.
        let debian = range([.init(introduced: "0"), .init(fixed: "1:2.4-1+deb12u1")])
        #expect(AffectedVersions.contains("1:2.4-1", in: debian, ecosystem: .debian))
        #expect(AffectedVersions.contains("1:2.4-1+deb12u1~pre1", in: debian, ecosystem: .debian))
        #expect(!AffectedVersions.contains("1:2.4-1+deb12u1", in: debian, ecosystem: .debian))
        #expect(!AffectedVersions.contains("2:1.0-1", in: debian, ecosystem: .debian))
        #expect(AffectedVersions.contains("2.9-1", in: debian, ecosystem: .debian))  // epoch 0 < 1
    }

    @Test("explicit versions, and GIT ranges that name commits")
    func versionsAndGit() {
        var affected = OSVRecord.Affected(
            package: .init(ecosystem: "PyPI", name: "demo"),
            ranges: [
                OSVRecord.Range(type: "GIT", events: [.init(introduced: "0"), .init(fixed: "abcdef")])
            ], versions: ["1.0", "1.1"])
        #expect(AffectedVersions.contains("1.0.0", in: affected, ecosystem: .pypi))  // 1.0 == 1.0.0 in PEP 440
        #expect(!AffectedVersions.contains("1.2", in: affected, ecosystem: .pypi))
        affected.versions = nil
        #expect(!AffectedVersions.contains("1.0", in: affected, ecosystem: .pypi))
    }

    @Test("every record of the test data decodes; withdrawn ones are flagged")
    func decoding() throws {
        var total = 0, withdrawn = 0
        var undecodable: [String] = []
        for ecosystem in ["Debian", "PyPI", "crates.io"] {
            let (records, bad) = try Self.records(ecosystem)
            undecodable += bad
            total += records.count + bad.count
            withdrawn += records.filter(\.isWithdrawn).count
            for record in records {
                for affected in record.affected ?? [] {
                    #expect(affected.package.flatMap { Ecosystem(osv: $0.ecosystem) } != nil, "\(record.id): \(affected.package?.ecosystem ?? "-")")
                }
            }
        }
        #expect(total == 5579)
        #expect(withdrawn == 13 + 10)
        // The one record the test data documents as not matching the schema (`ranges` is an object).
        #expect(undecodable.count == 1, "\(undecodable)")
    }

    @Test("PyPI: every version a record lists is inside its ranges")
    func pypiVersionsAgreeWithRanges() throws {
        var checked = 0
        var disagreements: [String] = []
        for record in try Self.records("PyPI").records where !record.isWithdrawn {
            for affected in record.affected ?? [] {
                guard let versions = affected.versions, let ranges = affected.ranges, ranges.contains(where: { $0.type == "ECOSYSTEM" }) else { continue }
                var rangesOnly = affected
                rangesOnly.versions = nil
                for version in versions {
                    checked += 1
                    if !AffectedVersions.contains(version, in: rangesOnly, ecosystem: .pypi) {
                        disagreements.append("\(record.id) \(version)")
                    }
                }
            }
        }
        #expect(checked > 50_000)
        // Records whose `versions` list contradicts their own ranges under PEP 440 (checked with
        // Python's `packaging`): 23.9.0 is the fixed version of PYSEC-2023-177, and the 3.2/4.2
        // pre-releases of PYSEC-2023-61 sort before the `introduced` 3.2 and 4.2. Matching still
        // reports them, since a listed version is affected whatever the ranges say.
        let known: Set = [
            "PYSEC-2023-177 23.9.0", "PYSEC-2023-177 23.9.0.post1", "PYSEC-2023-61 3.2a1", "PYSEC-2023-61 3.2b1",
            "PYSEC-2023-61 3.2rc1", "PYSEC-2023-61 4.2a1", "PYSEC-2023-61 4.2b1", "PYSEC-2023-61 4.2rc1",
        ]
        #expect(Set(disagreements) == known, "\(disagreements.count) of \(checked): \(disagreements.prefix(20))")
    }

    @Test("crates.io and Debian: an introduced version is affected, its fixed version is not")
    func boundaries() throws {
        var checked = 0
        for (folder, ecosystem) in [("crates.io", Ecosystem.cratesIO), ("Debian", .debian)] {
            for record in try Self.records(folder).records where !record.isWithdrawn {
                for affected in record.affected ?? [] {
                    for range in affected.ranges ?? [] where range.type != "GIT" {
                        for event in range.events {
                            if let fixed = event.fixed {
                                #expect(!AffectedVersions.contains(fixed, in: range, ecosystem: ecosystem), "\(record.id) fixed \(fixed)")
                                checked += 1
                            }
                            // An `introduced` with a `fixed` at the same version opens an empty span.
                            if let introduced = event.introduced, introduced != "0",
                                !range.events.contains(where: { $0.fixed.map { ecosystem.compare($0, introduced) == 0 } ?? false })
                            {
                                #expect(AffectedVersions.contains(introduced, in: range, ecosystem: ecosystem), "\(record.id) introduced \(introduced)")
                                checked += 1
                            }
                        }
                    }
                }
            }
        }
        #expect(checked > 2_000)
    }
}
