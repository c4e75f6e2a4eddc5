/// The package ecosystems Wharf compares versions for, named as OSV names them. Each has its
/// own ordering; `compare` returns -1, 0 or +1 the way that ecosystem's tools sort.
public enum Ecosystem: String, Sendable, CaseIterable, Codable {
    case alpine = "Alpine"
    case debian = "Debian"
    case redHat = "Red Hat"
    case pypi = "PyPI"
    case npm = "npm"
    case go = "Go"
    case cratesIO = "crates.io"
    case hex = "Hex"
    case maven = "Maven"
    case nuget = "NuGet"
    case packagist = "Packagist"
    case pub = "Pub"
    case rubyGems = "RubyGems"
    case cran = "CRAN"
    case hackage = "Hackage"

    /// OSV ecosystem strings carry a release after a colon (`Debian:12`, `Alpine:v3.20`).
    public init?(osv: some StringProtocol) {
        let text = String(osv)
        let base = text.firstIndex(of: ":").map { String(text[..<$0]) } ?? text
        // Distributions derived from Red Hat use its ordering.
        let aliases = [
            "Rocky Linux": "Red Hat", "AlmaLinux": "Red Hat", "openEuler": "Red Hat", "SUSE": "Red Hat", "openSUSE": "Red Hat", "Mageia": "Red Hat",
            "Ubuntu": "Debian", "Chainguard": "Alpine", "Wolfi": "Alpine",
        ]
        self.init(rawValue: aliases[base] ?? base)
    }

    /// The release part of an OSV ecosystem string (`12` of `Debian:12`), if any.
    public static func release(ofOSV ecosystem: some StringProtocol) -> String? {
        let text = String(ecosystem)
        return text.firstIndex(of: ":").map { String(text[text.index(after: $0)...]) }
    }

    /// -1 when `a` sorts before `b`, 0 when they are the same version, +1 when after.
    public func compare(_ a: String, _ b: String) -> Int {
        switch self {
        case .alpine: AlpineVersion(a).compare(AlpineVersion(b))
        case .debian: DebianVersion(a).compare(DebianVersion(b))
        case .redHat: RPMVersion(a).compare(RPMVersion(b))
        case .pypi: PEP440Version(a).compare(PEP440Version(b))
        case .npm, .go, .cratesIO, .hex: SemanticVersion(a).compare(SemanticVersion(b))
        case .maven: MavenVersion(a).compare(MavenVersion(b))
        case .nuget: NuGetVersion(a).compare(NuGetVersion(b))
        case .packagist: PackagistVersion(a).compare(PackagistVersion(b))
        case .pub: PubVersion(a).compare(PubVersion(b))
        case .rubyGems: RubyGemsVersion(a).compare(RubyGemsVersion(b))
        case .cran: CRANVersion(a).compare(CRANVersion(b))
        case .hackage: HackageVersion(a).compare(HackageVersion(b))
        }
    }
}

/// An integer of any size written in decimal (versions hold numbers no machine integer fits).
struct DecimalNumber: Comparable, Sendable {
    let negative: Bool
    /// Digits without leading zeros; empty for zero.
    let magnitude: [UInt8]

    static let zero = DecimalNumber(negative: false, magnitude: [])

    private init(negative: Bool, magnitude: [UInt8]) {
        self.negative = negative && !magnitude.isEmpty
        self.magnitude = magnitude
    }

    /// Optional sign, then one or more ASCII digits; nothing else (like Go's `big.Int.SetString(s, 10)`).
    init?(_ text: some StringProtocol) {
        var bytes = Substring(text).utf8[...]
        var negative = false
        if let first = bytes.first, first == UInt8(ascii: "+") || first == UInt8(ascii: "-") {
            negative = first == UInt8(ascii: "-")
            bytes = bytes.dropFirst()
        }
        guard !bytes.isEmpty, bytes.allSatisfy({ $0 >= 48 && $0 <= 57 }) else { return nil }
        self.init(negative: negative, magnitude: Array(bytes.drop { $0 == 48 }))
    }

    /// Digits only (no sign), for parsers that have already split digits out.
    init(digits: some Sequence<UInt8>) {
        self.init(negative: false, magnitude: Array(digits.drop { $0 == 48 }))
    }

    static func < (a: DecimalNumber, b: DecimalNumber) -> Bool { a.compare(b) < 0 }

    func compare(_ other: DecimalNumber) -> Int {
        if negative != other.negative { return negative ? -1 : 1 }
        let magnitudes = Self.compareMagnitudes(magnitude, other.magnitude)
        return negative ? -magnitudes : magnitudes
    }

    private static func compareMagnitudes(_ a: [UInt8], _ b: [UInt8]) -> Int {
        if a.count != b.count { return a.count < b.count ? -1 : 1 }
        for (x, y) in zip(a, b) where x != y { return x < y ? -1 : 1 }
        return 0
    }

    var description: String { magnitude.isEmpty ? "0" : (negative ? "-" : "") + String(decoding: magnitude, as: UTF8.self) }
}

/// Byte-wise comparison, as Go's `strings.Compare`.
func compareBytes(_ a: some StringProtocol, _ b: some StringProtocol) -> Int {
    let x = a.utf8, y = b.utf8
    var i = x.startIndex, j = y.startIndex
    while i != x.endIndex, j != y.endIndex {
        if x[i] != y[j] { return x[i] < y[j] ? -1 : 1 }
        i = x.index(after: i)
        j = y.index(after: j)
    }
    if i == x.endIndex && j == y.endIndex { return 0 }
    return i == x.endIndex ? -1 : 1
}

/// Numeric components compared pairwise, the shorter list padded with zeros.
func compareComponents(_ a: [DecimalNumber], _ b: [DecimalNumber]) -> Int {
    for i in 0..<max(a.count, b.count) {
        let difference = (i < a.count ? a[i] : .zero).compare(i < b.count ? b[i] : .zero)
        if difference != 0 { return difference }
    }
    return 0
}

extension UInt8 {
    var isASCIIDigit: Bool { self >= 48 && self <= 57 }
    var isASCIILetter: Bool { (self >= 65 && self <= 90) || (self >= 97 && self <= 122) }
}
