/// Versions shaped like Semantic Versioning: numeric components separated by dots, then a
/// "build" string starting at the first other character (`-beta.1+sha`). `maximumComponents`
/// cuts the numeric part; extra components move to the end of the build string.
struct SemverLike {
    var components: [DecimalNumber] = []
    var build = ""

    init(_ text: String, maximumComponents: Int?) {
        var line = Substring(text)
        if line.hasPrefix("v") { line = line.dropFirst() }
        var current = ""
        var foundBuild = false
        for character in line {
            if foundBuild {
                current.append(character)
                continue
            }
            if character.isASCII && character.isNumber {
                current.append(character)
                continue
            }
            if !current.isEmpty {
                components.append(DecimalNumber(current) ?? .zero)
                current = ""
            }
            if character == "." { continue }
            foundBuild = true
            current = String(character)
        }
        if !foundBuild && !current.isEmpty {
            components.append(DecimalNumber(current) ?? .zero)
            current = ""
        }
        build = foundBuild ? current : ""
        if let maximumComponents, components.count > maximumComponents {
            for extra in components[maximumComponents...] { build += "." + extra.description }
            components = Array(components[..<maximumComponents])
        }
    }

    /// SemVer 2 §11 precedence of pre-release identifiers; build metadata (`+…`) is ignored.
    static func comparePrerelease(_ a: String, _ b: String) -> Int {
        var x = Substring(a.split(separator: "+", maxSplits: 1, omittingEmptySubsequences: false).first ?? "")
        var y = Substring(b.split(separator: "+", maxSplits: 1, omittingEmptySubsequences: false).first ?? "")
        if x.hasPrefix("-") { x = x.dropFirst() }
        if y.hasPrefix("-") { y = y.dropFirst() }
        if x.isEmpty != y.isEmpty { return x.isEmpty ? 1 : -1 }
        let xs = x.split(separator: ".", omittingEmptySubsequences: false), ys = y.split(separator: ".", omittingEmptySubsequences: false)
        for (p, q) in zip(xs, ys) {
            let difference: Int
            switch (DecimalNumber(p), DecimalNumber(q)) {
            case (let m?, let n?): difference = m.compare(n)
            case (nil, nil): difference = compareBytes(p, q)
            case (.some, nil): difference = -1
            case (nil, .some): difference = 1
            }
            if difference != 0 { return difference }
        }
        return xs.count == ys.count ? 0 : (xs.count < ys.count ? -1 : 1)
    }
}

/// npm, Go, crates.io and Hex: SemVer 2 precedence.
struct SemanticVersion {
    let version: SemverLike

    init(_ text: String) { version = SemverLike(text, maximumComponents: 3) }

    func compare(_ other: SemanticVersion) -> Int {
        let components = compareComponents(version.components, other.version.components)
        if components != 0 { return components }
        return SemverLike.comparePrerelease(version.build, other.version.build)
    }
}

/// NuGet: up to four numeric components; pre-release labels compare case-insensitively.
struct NuGetVersion {
    let version: SemverLike

    init(_ text: String) { version = SemverLike(text, maximumComponents: 4) }

    func compare(_ other: NuGetVersion) -> Int {
        let components = compareComponents(version.components, other.version.components)
        if components != 0 { return components }
        return SemverLike.comparePrerelease(version.build.lowercased(), other.version.build.lowercased())
    }
}

/// Pub (Dart): SemVer, except that build metadata breaks ties (compared as text).
struct PubVersion {
    let version: SemverLike

    init(_ text: String) { version = SemverLike(text, maximumComponents: 3) }

    func compare(_ other: PubVersion) -> Int {
        let components = compareComponents(version.components, other.version.components)
        if components != 0 { return components }
        let prerelease = SemverLike.comparePrerelease(version.build, other.version.build)
        if prerelease != 0 { return prerelease }
        func metadata(_ build: String) -> Substring {
            guard let plus = build.firstIndex(of: "+") else { return "" }
            return build[build.index(after: plus)...]
        }
        return compareBytes(metadata(version.build), metadata(other.version.build))
    }
}

/// Hackage (Haskell's PVP): any number of numeric components; more components sort later.
struct HackageVersion {
    let version: SemverLike

    init(_ text: String) { version = SemverLike(text, maximumComponents: nil) }

    func compare(_ other: HackageVersion) -> Int {
        let components = compareComponents(version.components, other.version.components)
        if components != 0 { return components }
        let rest = SemverLike.comparePrerelease(version.build.lowercased(), other.version.build.lowercased())
        if rest != 0 { return rest }
        let a = version.components.count, b = other.version.components.count
        return a == b ? 0 : (a < b ? -1 : 1)
    }
}

/// CRAN (R): integers separated by `.` or `-`; more components sort later.
struct CRANVersion {
    let components: [DecimalNumber]

    init(_ text: String) {
        components = String(text.map { $0 == "-" ? "." : $0 }).split(separator: ".", omittingEmptySubsequences: false).compactMap { DecimalNumber($0) }
    }

    func compare(_ other: CRANVersion) -> Int {
        let difference = compareComponents(components, other.components)
        if difference != 0 { return difference }
        return components.count == other.components.count ? 0 : (components.count < other.components.count ? -1 : 1)
    }
}

/// RubyGems (`Gem::Version`): segments split at dots and at every digit/letter change; trailing
/// zeros of the numeric part and of the rest are ignored; a number sorts after a word.
struct RubyGemsVersion {
    let segments: [Substring]

    init(_ text: String) {
        var canonical = ""
        var checkPrevious = false
        var previousWasDigit = true
        for character in text {
            if character == "." {
                checkPrevious = false
                canonical.append(".")
                continue
            }
            let isDigit = character.isASCII && character.isNumber
            if checkPrevious && previousWasDigit != isDigit { canonical.append(".") }
            canonical.append(character)
            previousWasDigit = isDigit
            checkPrevious = true
        }
        let all = Substring(canonical).split(separator: ".", omittingEmptySubsequences: false)
        var numbers: [Substring] = [], rest: [Substring] = []
        for segment in all {
            if !rest.isEmpty || DecimalNumber(segment) == nil { rest.append(segment) } else { numbers.append(segment) }
        }
        func withoutTrailingZeros(_ segments: [Substring]) -> [Substring] {
            var result = segments
            while result.last == "0" { result.removeLast() }
            return result
        }
        segments = withoutTrailingZeros(numbers) + withoutTrailingZeros(rest)
    }

    func compare(_ other: RubyGemsVersion) -> Int {
        for i in 0..<max(segments.count, other.segments.count) {
            let a = i < segments.count ? segments[i] : "0", b = i < other.segments.count ? other.segments[i] : "0"
            switch (DecimalNumber(a), DecimalNumber(b)) {
            case (let x?, let y?):
                let difference = x.compare(y)
                if difference != 0 { return difference }
            case (nil, nil):
                let difference = compareBytes(a, b)
                if difference != 0 { return difference }
            case (.some, nil): return 1
            case (nil, .some): return -1
            }
        }
        return 0
    }
}

/// Packagist (Composer, PHP's `version_compare`): separators normalised to dots, dots inserted
/// between digits and letters; words rank `dev < alpha < beta < RC < (number) < patch`.
struct PackagistVersion {
    let components: [Substring]

    init(_ text: String) {
        var value = Substring(text)
        if value.hasPrefix("v") { value = value.dropFirst() }
        if value.hasPrefix("V") { value = value.dropFirst() }
        var canonical: [UInt8] = []
        var previous: UInt8?
        for var byte in value.utf8 {
            if byte == UInt8(ascii: "-") || byte == UInt8(ascii: "_") || byte == UInt8(ascii: "+") { byte = UInt8(ascii: ".") }
            let dot = UInt8(ascii: ".")
            if let previous, previous != dot, byte != dot, previous.isASCIIDigit != byte.isASCIIDigit { canonical.append(dot) }
            canonical.append(byte)
            previous = byte
        }
        components = Substring(String(decoding: canonical, as: UTF8.self)).split(separator: ".", omittingEmptySubsequences: false)
    }

    static func weight(_ word: Substring) -> Int {
        if word.hasPrefix("RC") { return 3 }
        for (index, special) in ["dev", "a", "b", "rc", "#", "p"].enumerated() where word.hasPrefix(special) { return index }
        return 0
    }

    static func compareWords(_ a: Substring, _ b: Substring) -> Int {
        let x = weight(a), y = weight(b)
        return x == y ? 0 : (x < y ? -1 : 1)
    }

    static func compare(_ a: ArraySlice<Substring>, _ b: ArraySlice<Substring>) -> Int {
        for (p, q) in zip(a, b) {
            let difference: Int
            switch (DecimalNumber(p), DecimalNumber(q)) {
            case (let x?, let y?): difference = x.compare(y)
            case (nil, nil): difference = compareWords(p, q)
            case (.some, nil): difference = compareWords("#", q)
            case (nil, .some): difference = compareWords(p, "#")
            }
            if difference != 0 { return difference }
        }
        if a.count > b.count {
            let next = a[a.startIndex + b.count]
            if Int(next) != nil { return 1 }
            return compare(a.dropFirst(b.count), ["#"])
        }
        if a.count < b.count {
            let next = b[b.startIndex + a.count]
            if Int(next) != nil { return -1 }
            return compare(["#"], b.dropFirst(a.count))
        }
        return 0
    }

    func compare(_ other: PackagistVersion) -> Int { Self.compare(components[...], other.components[...]) }
}
