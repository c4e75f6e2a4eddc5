import Foundation
import Logging
import SQLiteNIO

/// RPM's package database, as Fedora, RHEL and their rebuilds keep it: `rpmdb.sqlite` (rpm 4.16
/// and later, RHEL 9, Fedora 33+) or BerkeleyDB's hash file `Packages` (RHEL 7 and 8, CentOS),
/// under `/var/lib/rpm` or `/usr/lib/sysimage/rpm`. Both hold one rpm header per installed
/// package; the header gives name, epoch, version, release, architecture and source rpm.
public enum RpmCataloger {
    static let sqlitePaths: Set<String> = ["var/lib/rpm/rpmdb.sqlite", "usr/lib/sysimage/rpm/rpmdb.sqlite"]
    static let berkeleyPaths: Set<String> = ["var/lib/rpm/Packages", "usr/lib/sysimage/rpm/Packages"]

    public static func wants(_ path: String) -> Bool { sqlitePaths.contains(path) || berkeleyPaths.contains(path) }

    /// The packages of a database file's bytes (either format; told apart by content).
    public static func packages(database bytes: [UInt8], location: String) async throws -> [DetectedPackage] {
        let headers: [[UInt8]]
        if bytes.starts(with: Array("SQLite format 3\0".utf8)) {
            headers = try await sqliteHeaders(bytes)
        } else {
            headers = try BerkeleyHashFile(bytes).values()
        }
        return headers.compactMap { RpmHeader($0)?.package(location: location) }
    }

    /// SQLite reads files, not memory: the bytes go to a private temporary file for the query.
    static func sqliteHeaders(_ bytes: [UInt8]) async throws -> [[UInt8]] {
        let path = NSTemporaryDirectory() + "wharf-rpmdb-\(UUID().uuidString).sqlite"
        guard FileManager.default.createFile(atPath: path, contents: Data(bytes), attributes: [.posixPermissions: 0o600]) else {
            throw RpmDatabaseError("cannot write a temporary copy of rpmdb.sqlite")
        }
        defer { try? FileManager.default.removeItem(atPath: path) }
        let connection = try await SQLiteConnection.open(storage: .file(path: path), logger: Logger(label: "wharf.scanner.rpm"))
        do {
            let rows = try await connection.query("SELECT blob FROM Packages ORDER BY hnum")
            try await connection.close()
            return rows.compactMap { $0.column("blob")?.blob.map { Array($0.readableBytesView) } }
        } catch {
            try? await connection.close()
            throw RpmDatabaseError("rpmdb.sqlite has no readable Packages table: \(error)")
        }
    }
}

public struct RpmDatabaseError: Error, CustomStringConvertible {
    public let description: String
    init(_ description: String) { self.description = description }
}

/// An rpm header as the database stores it (without the lead and magic): entry count and data
/// size (big-endian), then the index entries (tag, type, offset, count), then the data store.
struct RpmHeader {
    enum Tag: Int32 {
        case name = 1000, version = 1001, release = 1002, epoch = 1003, arch = 1022, sourceRPM = 1044
    }

    private var strings: [Int32: String] = [:]
    private var integers: [Int32: Int32] = [:]

    init?(_ bytes: [UInt8]) {
        func int32(_ offset: Int) -> Int32? {
            guard offset >= 0, offset + 4 <= bytes.count else { return nil }
            return Int32(bitPattern: UInt32(bytes[offset]) << 24 | UInt32(bytes[offset + 1]) << 16 | UInt32(bytes[offset + 2]) << 8 | UInt32(bytes[offset + 3]))
        }
        guard let entries = int32(0), let dataLength = int32(4), entries > 0, entries < 100_000, dataLength >= 0 else { return nil }
        let dataStart = 8 + Int(entries) * 16
        guard dataStart + Int(dataLength) <= bytes.count else { return nil }
        let wanted = Set([Tag.name, .version, .release, .epoch, .arch, .sourceRPM].map(\.rawValue))
        for index in 0..<Int(entries) {
            let base = 8 + index * 16
            guard let tag = int32(base), let type = int32(base + 4), let offset = int32(base + 8), wanted.contains(tag),
                offset >= 0, Int(offset) < Int(dataLength)
            else { continue }
            let start = dataStart + Int(offset)
            switch type {
            case 6, 8, 9:  // STRING, STRING_ARRAY, I18NSTRING: NUL-terminated, the first one counts
                let end = bytes[start..<(dataStart + Int(dataLength))].firstIndex(of: 0) ?? (dataStart + Int(dataLength))
                strings[tag] = String(decoding: bytes[start..<end], as: UTF8.self)
            case 4:  // INT32
                if let value = int32(start) { integers[tag] = value }
            default:
                continue
            }
        }
        guard strings[Tag.name.rawValue] != nil else { return nil }
    }

    func package(location: String) -> DetectedPackage? {
        guard let name = strings[Tag.name.rawValue], let version = strings[Tag.version.rawValue],
            name != "gpg-pubkey"
        else { return nil }  // imported signing keys, not software
        var full = version
        if let release = strings[Tag.release.rawValue] { full += "-" + release }
        if let epoch = integers[Tag.epoch.rawValue], epoch > 0 { full = "\(epoch):" + full }
        let source = strings[Tag.sourceRPM.rawValue].flatMap(Self.sourceName)
        return DetectedPackage(
            kind: .rpm, name: name, version: full, sourceName: source ?? name,
            architecture: strings[Tag.arch.rawValue], location: location)
    }

    /// `openssl-3.0.7-24.el9.src.rpm` → `openssl`: drop the suffix, then release and version.
    static func sourceName(_ file: String) -> String? {
        var base = Substring(file)
        for suffix in [".src.rpm", ".nosrc.rpm"] where base.hasSuffix(suffix) { base = base.dropLast(suffix.count) }
        let parts = base.split(separator: "-", omittingEmptySubsequences: false)
        guard parts.count >= 3 else { return nil }
        return parts.dropLast(2).joined(separator: "-")
    }
}

/// Just enough of BerkeleyDB's hash access method to list a database's values: walk every hash
/// page, take the data item of each key/data pair, following overflow chains for large values.
/// Byte order comes from the meta page's magic; the file is never written.
struct BerkeleyHashFile {
    let bytes: [UInt8]
    let pageSize: Int
    let lastPage: Int
    let littleEndian: Bool

    static let hashMagic: UInt32 = 0x061561

    init(_ bytes: [UInt8]) throws {
        self.bytes = bytes
        guard bytes.count >= 512 else { throw RpmDatabaseError("the Packages file is too short for a BerkeleyDB database") }
        let little = UInt32(bytes[12]) | UInt32(bytes[13]) << 8 | UInt32(bytes[14]) << 16 | UInt32(bytes[15]) << 24
        let big = UInt32(bytes[12]) << 24 | UInt32(bytes[13]) << 16 | UInt32(bytes[14]) << 8 | UInt32(bytes[15])
        let isLittle: Bool
        if little == Self.hashMagic {
            isLittle = true
        } else if big == Self.hashMagic {
            isLittle = false
        } else {
            throw RpmDatabaseError("the Packages file is not a BerkeleyDB hash database")
        }
        func field(_ offset: Int) -> Int {
            let b = bytes[offset..<(offset + 4)].map(UInt32.init)
            return Int(isLittle ? b[0] | b[1] << 8 | b[2] << 16 | b[3] << 24 : b[0] << 24 | b[1] << 16 | b[2] << 8 | b[3])
        }
        littleEndian = isLittle
        pageSize = field(20)
        lastPage = field(32)
        guard [512, 1024, 2048, 4096, 8192, 16384, 32768, 65536].contains(pageSize), (lastPage + 1) * pageSize <= bytes.count else {
            throw RpmDatabaseError("the Packages file's page size or page count does not fit the file")
        }
    }

    private func u16(_ offset: Int) -> Int {
        littleEndian ? Int(bytes[offset]) | Int(bytes[offset + 1]) << 8 : Int(bytes[offset]) << 8 | Int(bytes[offset + 1])
    }

    private func u32(_ offset: Int) -> Int {
        let b = bytes[offset..<(offset + 4)].map(UInt32.init)
        return Int(littleEndian ? b[0] | b[1] << 8 | b[2] << 16 | b[3] << 24 : b[0] << 24 | b[1] << 16 | b[2] << 8 | b[3])
    }

    /// Every value (the data half of each pair) on the hash pages.
    func values() throws -> [[UInt8]] {
        let headerSize = 26
        var values: [[UInt8]] = []
        for page in 1...max(1, lastPage) where page <= lastPage {
            let base = page * pageSize
            let type = bytes[base + 25]
            guard type == 2 || type == 13 else { continue }  // P_HASH_UNSORTED, P_HASH
            let entries = u16(base + 20)
            guard headerSize + entries * 2 <= pageSize else { continue }
            var offsets: [Int] = []
            for index in 0..<entries { offsets.append(u16(base + headerSize + index * 2)) }
            for index in stride(from: 1, to: entries, by: 2) {  // even indexes are keys, odd ones their data
                let offset = offsets[index]
                guard offset > 0, offset < pageSize else { continue }
                let item = base + offset
                switch bytes[item] {
                case 1:  // H_KEYDATA: the bytes up to the previous item (items grow down from the page's end)
                    let end = base + offsets[index - 1]
                    guard end > item + 1, end <= base + pageSize else { continue }
                    values.append(Array(bytes[(item + 1)..<end]))
                case 3:  // H_OFFPAGE: first overflow page and total length
                    values.append(try overflow(from: u32(item + 4), length: u32(item + 8)))
                default:
                    continue  // duplicates do not occur in rpm's Packages
                }
            }
        }
        return values
    }

    private func overflow(from first: Int, length: Int) throws -> [UInt8] {
        var result: [UInt8] = []
        result.reserveCapacity(min(length, 64 << 20))
        var page = first
        var visited = Set<Int>()
        while page != 0, result.count < length {
            guard page <= lastPage, visited.insert(page).inserted else { throw RpmDatabaseError("a broken overflow chain in Packages") }
            let base = page * pageSize
            guard bytes[base + 25] == 7 else { throw RpmDatabaseError("an overflow chain in Packages leads to a page of another kind") }
            let used = u16(base + 22)  // hf_offset holds the bytes used on an overflow page
            guard 26 + used <= pageSize else { throw RpmDatabaseError("an overflow page in Packages claims more than a page") }
            result += bytes[(base + 26)..<(base + 26 + used)]
            page = u32(base + 16)  // next_pgno
        }
        guard result.count == length else { throw RpmDatabaseError("an overflow chain in Packages is shorter than its item says") }
        return result
    }
}
