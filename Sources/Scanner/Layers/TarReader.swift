/// One entry of a tar archive, as `TarReader` hands it out.
public struct TarEntry: Sendable, Equatable {
    public enum Kind: Sendable, Equatable {
        case file
        case directory
        case symlink(target: String)
        case hardLink(target: String)
        case other
    }

    /// Normalised path: no leading `/` or `./`, no `.` components; nil when it would climb out
    /// of the root with `..` (such entries are skipped, never applied).
    public var path: String?
    /// The path exactly as the archive wrote it.
    public var rawPath: String
    public var kind: Kind
    public var size: Int64
    public var mode: UInt32
}

public enum TarError: Error, Sendable, Equatable, CustomStringConvertible {
    case truncated
    case badHeader(String)
    case limitExceeded(String)

    public var description: String {
        switch self {
        case .truncated: "the archive ends in the middle of an entry"
        case .badHeader(let why): "malformed tar header: \(why)"
        case .limitExceeded(let why): "refused: \(why)"
        }
    }
}

/// A streaming tar reader (ustar, GNU long names and PAX headers): entries come one at a time and
/// their contents are either read (up to a limit) or skipped, so an archive of any size passes
/// through bounded memory. Nothing is ever written to disk.
public struct TarReader<Source: ByteSource> {
    public private(set) var source: Source
    /// Bytes of the current entry's content not consumed yet (plus padding to 512).
    private var remaining: Int64 = 0
    private var padding: Int64 = 0
    private var globalPAX: [String: String] = [:]
    public private(set) var entries = 0
    public let maximumEntries: Int
    /// Bytes consumed from the source so far; after `next()`, the offset of the entry's content
    /// (how an uncompressed archive's members are read later without copying them out).
    public private(set) var offset: Int64 = 0

    public init(_ source: Source, maximumEntries: Int = 1_000_000) {
        self.source = source
        self.maximumEntries = maximumEntries
    }

    /// The next entry, or nil at the end of the archive. Skips what is left of the previous one.
    public mutating func next() async throws -> TarEntry? {
        try await source.skip(remaining)
        offset += remaining
        if padding > 0 {
            // Some writers (umoci) end a layer right after the last entry's content, without its
            // padding or the end-of-archive blocks; tar and containerd accept that, and so do we.
            do { try await source.skip(padding) } catch TarError.truncated { return nil }
            offset += padding
        }
        remaining = 0
        padding = 0
        var longName: String?
        var longLink: String?
        var pax: [String: String] = [:]
        while true {
            guard let block = try await source.read(512) else { return nil }
            offset += 512
            if block.allSatisfy({ $0 == 0 }) { return nil }  // end-of-archive marker
            guard try Self.checksumMatches(block) else { throw TarError.badHeader("checksum mismatch") }
            let type = block[156]
            var size = try Self.number(block[124..<136])
            if let paxSize = pax["size"].flatMap({ Int64($0) }) { size = paxSize }
            guard size >= 0 else { throw TarError.badHeader("negative size") }
            let padded = (512 - size % 512) % 512
            switch type {
            case UInt8(ascii: "L"), UInt8(ascii: "K"):
                guard size <= 64 * 1024, let data = try await source.read(Int(size)) else { throw TarError.badHeader("oversized long name") }
                try await source.skip(padded)
                offset += size + padded
                let text = Self.string(data[...])
                if type == UInt8(ascii: "L") { longName = text } else { longLink = text }
                continue
            case UInt8(ascii: "x"), UInt8(ascii: "g"):
                guard size <= 1024 * 1024, let data = try await source.read(Int(size)) else { throw TarError.badHeader("oversized PAX header") }
                try await source.skip(padded)
                offset += size + padded
                let records = Self.paxRecords(data)
                if type == UInt8(ascii: "g") { globalPAX.merge(records) { $1 } } else { pax.merge(records) { $1 } }
                continue
            default:
                break
            }
            entries += 1
            guard entries <= maximumEntries else { throw TarError.limitExceeded("more than \(maximumEntries) entries in one layer") }
            var name = Self.string(block[0..<100])
            let prefix = Self.string(block[345..<500])
            if block[257..<262].elementsEqual("ustar".utf8), !prefix.isEmpty { name = prefix + "/" + name }
            name = pax["path"] ?? globalPAX["path"] ?? longName ?? name
            let link = pax["linkpath"] ?? longLink ?? Self.string(block[157..<257])
            let kind: TarEntry.Kind
            switch type {
            case UInt8(ascii: "0"), 0, UInt8(ascii: "7"): kind = .file
            case UInt8(ascii: "5"): kind = .directory
            case UInt8(ascii: "2"): kind = .symlink(target: link)
            case UInt8(ascii: "1"): kind = .hardLink(target: link)
            default: kind = .other
            }
            let mode = UInt32(truncatingIfNeeded: (try? Self.number(block[100..<108])) ?? 0)
            remaining = (kind == .file || kind == .other) ? size : 0
            padding = (kind == .file || kind == .other) ? padded : 0
            if kind != .file && kind != .other && size > 0 {
                // Links and directories carry no content, but skip whatever an odd archive put there.
                remaining = size
                padding = padded
            }
            return TarEntry(path: Self.normalise(name), rawPath: name, kind: kind, size: kind == .file ? size : 0, mode: mode)
        }
    }

    /// The current entry's content, if it is at most `limit` bytes (else nil, and it is skipped).
    public mutating func readContent(limit: Int) async throws -> [UInt8]? {
        guard remaining <= Int64(limit) else { return nil }
        guard let data = try await source.read(Int(remaining)) else { throw TarError.truncated }
        offset += remaining
        remaining = 0
        return data
    }

    /// The next piece of the current entry's content, at most `maximum` bytes; nil once it is all read.
    public mutating func readChunk(maximum: Int) async throws -> [UInt8]? {
        guard remaining > 0 else { return nil }
        let count = Int(min(remaining, Int64(maximum)))
        guard let data = try await source.read(count) else { throw TarError.truncated }
        offset += Int64(count)
        remaining -= Int64(count)
        return data
    }

    // MARK: Header fields

    static func string(_ bytes: ArraySlice<UInt8>) -> String {
        String(decoding: bytes.prefix { $0 != 0 }, as: UTF8.self)
    }

    /// Octal (space/NUL terminated), or GNU base-256 when the first byte's high bit is set.
    static func number(_ field: ArraySlice<UInt8>) throws -> Int64 {
        guard let first = field.first else { return 0 }
        if first & 0x80 != 0 {
            var value: Int64 = Int64(first & 0x3F)
            for byte in field.dropFirst() {
                guard value < (Int64.max >> 8) else { throw TarError.badHeader("number too large") }
                value = value << 8 | Int64(byte)
            }
            return (first & 0x40) != 0 ? -value : value
        }
        var value: Int64 = 0
        for byte in field {
            if byte == 0 || byte == 0x20 { if value > 0 { break } else { continue } }
            guard byte >= 0x30, byte <= 0x37 else { throw TarError.badHeader("not an octal number") }
            guard value < (Int64.max >> 3) else { throw TarError.badHeader("number too large") }
            value = value * 8 + Int64(byte - 0x30)
        }
        return value
    }

    static func checksumMatches(_ block: [UInt8]) throws -> Bool {
        let stored = try number(block[148..<156])
        var sum: Int64 = 0
        for (index, byte) in block.enumerated() { sum += (148..<156).contains(index) ? 0x20 : Int64(byte) }
        return stored == sum
    }

    /// PAX records: `<length> <key>=<value>\n`.
    static func paxRecords(_ data: [UInt8]) -> [String: String] {
        var records: [String: String] = [:]
        var index = 0
        while index < data.count {
            var length = 0, cursor = index
            while cursor < data.count, data[cursor] != 0x20 {
                guard data[cursor] >= 0x30, data[cursor] <= 0x39 else { return records }
                length = length * 10 + Int(data[cursor] - 0x30)
                cursor += 1
            }
            guard length > 0, index + length <= data.count, cursor < index + length else { return records }
            let record = data[(cursor + 1)..<(index + length - 1)]
            if let equals = record.firstIndex(of: UInt8(ascii: "=")) {
                records[String(decoding: record[..<equals], as: UTF8.self)] = String(decoding: record[(equals + 1)...], as: UTF8.self)
            }
            index += length
        }
        return records
    }

    /// `./usr//bin/../lib/x` → `usr/lib/x`; nil for paths that climb above the root.
    static func normalise(_ path: String) -> String? {
        var parts: [Substring] = []
        for component in path.split(separator: "/", omittingEmptySubsequences: true) {
            switch component {
            case ".": continue
            case "..":
                guard !parts.isEmpty else { return nil }
                parts.removeLast()
            default: parts.append(component)
            }
        }
        return parts.isEmpty ? nil : parts.joined(separator: "/")
    }
}

/// Where a tar reader gets bytes from: decompressed layer data, pulled in pieces.
public protocol ByteSource {
    /// Exactly `count` bytes, or nil at a clean end of data before the first byte; throws when the
    /// data ends in the middle.
    mutating func read(_ count: Int) async throws -> [UInt8]?
    mutating func skip(_ count: Int64) async throws
}

/// A byte source over an in-memory array (tests, small layers).
public struct ArrayByteSource: ByteSource {
    private let bytes: [UInt8]
    private var offset = 0

    public init(_ bytes: [UInt8]) { self.bytes = bytes }

    public mutating func read(_ count: Int) async throws -> [UInt8]? {
        if offset == bytes.count && count > 0 { return nil }
        guard offset + count <= bytes.count else { throw TarError.truncated }
        defer { offset += count }
        return Array(bytes[offset..<offset + count])
    }

    public mutating func skip(_ count: Int64) async throws {
        guard offset + Int(count) <= bytes.count else { throw TarError.truncated }
        offset += Int(count)
    }
}
