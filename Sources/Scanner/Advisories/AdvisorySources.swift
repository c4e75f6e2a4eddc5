import Foundation
import Yams
import ZIPFoundation

/// Reads advisories from what sites download or mirror: a folder of OSV JSON files (any depth),
/// a zip of them (osv.dev's `<ecosystem>/all.zip`), a single OSV file, or Alpine's secdb
/// (`v3.x/main.yaml` / `main.json`), which is converted to OSV on the way in.
public enum AdvisorySources {
    /// Imports `path`, whatever it is; returns how many records it added. `source` names it in
    /// the database's list of sources (default: the path).
    @discardableResult
    public static func importPath(_ path: String, into builder: AdvisoryDatabaseBuilder, source: String? = nil) async throws -> Int {
        let before = builder.imported
        var isDirectory: ObjCBool = false
        guard FileManager.default.fileExists(atPath: path, isDirectory: &isDirectory) else {
            throw AdvisoryImportError("\(path) does not exist")
        }
        if isDirectory.boolValue {
            try await importDirectory(path, into: builder)
        } else if path.hasSuffix(".zip") {
            try await importZip(path, into: builder)
        } else {
            guard let data = FileManager.default.contents(atPath: path) else { throw AdvisoryImportError("cannot read \(path)") }
            try await importFile(name: path, bytes: [UInt8](data), into: builder)
        }
        builder.addSource(source ?? path)
        return builder.imported - before
    }

    static func importDirectory(_ path: String, into builder: AdvisoryDatabaseBuilder) async throws {
        guard let walker = FileManager.default.enumerator(atPath: path) else { throw AdvisoryImportError("cannot list \(path)") }
        var files: [String] = []
        while let relative = walker.nextObject() as? String {
            if relative.hasSuffix(".json") || relative.hasSuffix(".yaml") || relative.hasSuffix(".yml") || relative.hasSuffix(".zip") {
                files.append(relative)
            }
        }
        for relative in files.sorted() {
            let full = (path as NSString).appendingPathComponent(relative)
            if relative.hasSuffix(".zip") {
                try await importZip(full, into: builder)
            } else if let data = FileManager.default.contents(atPath: full) {
                try await importFile(name: full, bytes: [UInt8](data), into: builder)
            }
        }
    }

    static func importZip(_ path: String, into builder: AdvisoryDatabaseBuilder) async throws {
        let archive: Archive
        do { archive = try Archive(url: URL(fileURLWithPath: path), accessMode: .read) } catch {
            throw AdvisoryImportError("\(path) is not a readable zip file: \(error)")
        }
        for entry in archive where entry.type == .file && entry.path.hasSuffix(".json") {
            // OSV records are small; a member claiming more than 16 MiB is not one.
            guard entry.uncompressedSize <= 16 << 20 else { continue }
            var bytes: [UInt8] = []
            bytes.reserveCapacity(Int(entry.uncompressedSize))
            _ = try archive.extract(entry, skipCRC32: false) { bytes += $0 }
            try await importFile(name: "\(path):\(entry.path)", bytes: bytes, into: builder)
        }
    }

    static func importFile(name: String, bytes: [UInt8], into builder: AdvisoryDatabaseBuilder) async throws {
        if name.hasSuffix(".yaml") || name.hasSuffix(".yml") {
            guard let text = String(bytes: bytes, encoding: .utf8) else { throw AdvisoryImportError("\(name) is not UTF-8") }
            let secdb: AlpineSecDB
            do { secdb = try YAMLDecoder().decode(AlpineSecDB.self, from: text) } catch {
                throw AdvisoryImportError("\(name) is not an Alpine secdb file: \(error)")
            }
            for record in secdb.osvRecords() { try await builder.add(record) }
            return
        }
        // A secdb JSON file has `distroversion` at the top; anything else is one OSV record.
        if bytes.count < 64 << 20, let secdb = try? JSONDecoder().decode(AlpineSecDB.self, from: Data(bytes)), !secdb.packages.isEmpty {
            for record in secdb.osvRecords() { try await builder.add(record) }
            return
        }
        try await builder.add(json: bytes, origin: name)
    }
}

/// Alpine's security database: per release and repository, each origin package's `secfixes`,
/// mapping the version that fixed them to the advisories it fixed.
struct AlpineSecDB: Decodable {
    struct Entry: Decodable {
        struct Package: Decodable {
            var name: String
            var secfixes: [String: [String]]?
        }
        var pkg: Package
    }

    var distroversion: String
    var reponame: String?
    var packages: [Entry]

    /// One OSV record per (package, advisory): affected from 0 up to the fixed version. The key
    /// `0` lists advisories that never affected Alpine's build, so they yield nothing.
    func osvRecords() -> [OSVRecord] {
        var records: [OSVRecord] = []
        let release = distroversion.hasPrefix("v") ? distroversion : "v" + distroversion
        for entry in packages {
            for (fixed, identifiers) in entry.pkg.secfixes ?? [:] where fixed != "0" {
                for identifier in Set(identifiers.flatMap(Self.identifiers)) {
                    var record = OSVRecord(id: "ALPINE-\(release)-\(entry.pkg.name)-\(identifier)")
                    record.aliases = [identifier]
                    record.modified = ""
                    record.summary = "\(identifier) in \(entry.pkg.name), fixed in \(fixed)"
                    var affected = OSVRecord.Affected(package: OSVRecord.Package(ecosystem: "Alpine:\(release)", name: entry.pkg.name))
                    affected.ranges = [OSVRecord.Range(type: "ECOSYSTEM", events: [.init(introduced: "0"), .init(fixed: fixed)])]
                    record.affected = [affected]
                    records.append(record)
                }
            }
        }
        return records.sorted { $0.id < $1.id }
    }

    /// The advisory ids in one secfixes string: `CVE-2016-6258 XSA-182`, `CVE-2018-14881 (BGP)`,
    /// and the typos the data holds (`CVE_2019-2426`, `CVE-2019-19451.patch`); placeholders dropped.
    static func identifiers(_ text: String) -> [String] {
        var result: [String] = []
        for token in text.split(whereSeparator: { $0 == " " || $0 == "\t" }) {
            if token.hasPrefix("(") { break }  // a note follows
            var id = String(token)
            if id.hasPrefix("CVE_") { id = "CVE-" + id.dropFirst(4) }
            if id.hasSuffix(".patch") { id = String(id.dropLast(6)) }
            let parts = id.split(separator: "-")
            guard parts.count >= 2, parts[0].allSatisfy({ $0.isUppercase }), parts[1].contains(where: \.isNumber),
                !id.contains("?")
            else { continue }
            result.append(id)
        }
        return result
    }
}
