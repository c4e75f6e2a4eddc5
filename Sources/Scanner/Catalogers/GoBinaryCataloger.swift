/// Go executables: since Go 1.18 the linker writes the build's module list into the binary's
/// `.go.buildinfo` section (what `go version -m` prints): a 32-byte header starting with
/// `\xff Go buildinf:`, then the Go version and the module info as length-prefixed strings.
/// The main module, every dependency (after `replace` directives) and the standard library
/// (`stdlib`, at the toolchain's version) become packages.
///
/// Binaries are read as a stream, never kept whole: `Probe` looks for the header as chunks pass.
/// Binaries from Go before 1.18 point at their strings by address instead; they are skipped.
public enum GoBinaryCataloger {
    static let magic: [UInt8] = [0xFF] + Array(" Go buildinf:".utf8)
    /// Module info beyond this is not build info (the largest real lists are tens of KiB).
    static let maximumInfoSize = 1 << 20

    public struct BuildInfo: Sendable, Equatable {
        /// `go1.22.3`.
        public var goVersion: String
        /// The module info text, sentinels removed.
        public var modules: String
    }

    /// Feeds on a file's chunks in order and keeps at most the header's neighbourhood.
    public struct Probe: Sendable {
        private var window: [UInt8] = []
        /// Bytes of `window` already searched for the magic (it may end inside a partial match).
        private var searched = 0
        public private(set) var result: BuildInfo?
        public private(set) var isFinished = false
        private var isExecutable: Bool?

        public init() {}

        /// Takes the next chunk; returns true when nothing more is needed.
        public mutating func feed(_ chunk: [UInt8]) -> Bool {
            guard !isFinished else { return true }
            if isExecutable == nil {
                // ELF only: the images Wharf scans are Linux images.
                isExecutable = chunk.starts(with: [0x7F, 0x45, 0x4C, 0x46])
                if isExecutable == false { isFinished = true; return true }
            }
            window += chunk
            while true {
                guard let start = GoBinaryCataloger.find(GoBinaryCataloger.magic, in: window, from: searched) else {
                    // Keep only a tail that could begin the magic.
                    let keep = min(window.count, GoBinaryCataloger.magic.count - 1)
                    window.removeFirst(window.count - keep)
                    searched = 0
                    return false
                }
                switch GoBinaryCataloger.parse(window[start...]) {
                case .needMore:
                    if start > 0 { window.removeFirst(start) }
                    searched = 0
                    if window.count > GoBinaryCataloger.maximumInfoSize + 64 { isFinished = true; return true }
                    return false
                case .invalid:
                    // The bytes of the magic also sit in programs that read build info (as a constant): go on.
                    searched = start + 1
                case .found(let info):
                    result = info
                    isFinished = true
                    window = []
                    return true
                }
            }
        }
    }

    enum ParseOutcome: Equatable {
        case needMore
        case invalid
        case found(BuildInfo)
    }

    static func find(_ needle: [UInt8], in haystack: [UInt8], from: Int) -> Int? {
        guard haystack.count - from >= needle.count else { return nil }
        var index = from
        let first = needle[0]
        let last = haystack.count - needle.count
        return haystack.withUnsafeBufferPointer { buffer -> Int? in
            while index <= last {
                guard let hit = buffer[index...last].firstIndex(of: first) else { return nil }
                if buffer[hit..<(hit + needle.count)].elementsEqual(needle) { return hit }
                index = hit + 1
            }
            return nil
        }
    }

    /// Parses a header that starts at the slice's start.
    static func parse(_ bytes: ArraySlice<UInt8>) -> ParseOutcome {
        let base = bytes.startIndex
        guard bytes.count >= 32 else { return .needMore }
        let pointerSize = bytes[base + 14], flags = bytes[base + 15]
        guard pointerSize == 4 || pointerSize == 8 else { return .invalid }
        guard flags & 0x2 != 0 else { return .invalid }  // pre-1.18 pointer format
        var cursor = base + 32
        func string() -> Result<String, ParseFailure> {
            var length = 0, shift = 0
            while true {
                guard cursor < bytes.endIndex else { return .failure(.needMore) }
                let byte = bytes[cursor]
                cursor += 1
                length |= Int(byte & 0x7F) << shift
                if byte & 0x80 == 0 { break }
                shift += 7
                guard shift < 35 else { return .failure(.invalid) }
            }
            guard length <= GoBinaryCataloger.maximumInfoSize else { return .failure(.invalid) }
            guard bytes.endIndex - cursor >= length else { return .failure(.needMore) }
            defer { cursor += length }
            return .success(String(decoding: bytes[cursor..<(cursor + length)], as: UTF8.self))
        }
        let version: String, modules: String
        switch string() {
        case .success(let text): version = text
        case .failure(let failure): return failure == .needMore ? .needMore : .invalid
        }
        guard version.hasPrefix("go") || version.hasPrefix("devel") else { return .invalid }
        switch string() {
        case .success(let text): modules = text
        case .failure(let failure): return failure == .needMore ? .needMore : .invalid
        }
        // The module info is wrapped in 16-byte sentinels so the linker can find it.
        var info = modules
        if info.utf8.count >= 33, Array(info.utf8)[info.utf8.count - 17] == UInt8(ascii: "\n") {
            info = String(decoding: Array(info.utf8)[16..<(info.utf8.count - 16)], as: UTF8.self)
        }
        return .found(BuildInfo(goVersion: version, modules: info))
    }

    enum ParseFailure: Error { case needMore, invalid }

    /// The packages a binary's build info names.
    public static func packages(_ info: BuildInfo, location: String) -> [DetectedPackage] {
        var packages: [DetectedPackage] = []
        // `go1.22.3`, possibly with experiment suffixes (`go1.22.3 X:boringcrypto`); development builds have no release.
        let toolchain = info.goVersion.split(separator: " ").first.map(String.init) ?? info.goVersion
        if toolchain.hasPrefix("go") {
            packages.append(DetectedPackage(kind: .go, name: "stdlib", version: String(toolchain.dropFirst(2)), location: location))
        }
        var pending: DetectedPackage?
        func flush() {
            if let package = pending { packages.append(package) }
            pending = nil
        }
        for line in info.modules.split(separator: "\n") {
            let fields = line.split(separator: "\t", omittingEmptySubsequences: false).map(String.init)
            guard let kind = fields.first else { continue }
            switch kind {
            case "mod", "dep":
                flush()
                guard fields.count >= 3, !fields[1].isEmpty else { continue }
                pending = DetectedPackage(kind: .go, name: fields[1], version: fields[2].isEmpty ? "(devel)" : fields[2], location: location)
            case "=>":
                // A replace directive: a module version (`=> other v1.2.3 h1:…`) or a local directory (no version).
                guard fields.count >= 3, var package = pending else { continue }
                let isDirectory = fields[1].hasPrefix(".") || fields[1].hasPrefix("/")
                if isDirectory || fields[2].isEmpty || fields[2] == "(devel)" {
                    package.version = "(devel)"  // the code came from a local directory: the module keeps its name
                } else {
                    package.name = fields[1]
                    package.version = fields[2]
                }
                pending = package
            default:
                flush()
            }
        }
        flush()
        return packages
    }
}
