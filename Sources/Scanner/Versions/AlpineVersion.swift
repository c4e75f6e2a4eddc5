/// apk's ordering: `number{.number}{letter}{_suffix{number}}{~hash}{-r#}`. Suffixes sort
/// `alpha < beta < pre < rc < (none) < cvs < svn < git < hg < p`; after the first number, a
/// component with a leading zero compares as text (apk treats it as a fraction). Versions that
/// do not parse (anything left over) sort before those that do; two of them compare as text.
struct AlpineVersion {
    struct Number {
        let text: Substring
        let value: DecimalNumber
        let index: Int
    }

    struct Suffix {
        let weight: Int
        let number: DecimalNumber
    }

    let original: String
    var numbers: [Number] = []
    var letter: UInt8?
    var suffixes: [Suffix] = []
    var build = DecimalNumber.zero
    var remainder: Substring = ""
    var invalid = false

    static let suffixOrder = ["alpha", "beta", "pre", "rc", "", "cvs", "svn", "git", "hg"]  // then "p"
    /// A version without a suffix weighs the same as `cvs` in this ordering (kept for the vectors' sake).
    static let absentSuffix = Suffix(weight: 5, number: .zero)

    init(_ text: String) {
        original = text
        var rest = Substring(text)
        // Numbers: digits separated by dots.
        var numberEnd = rest.utf8.startIndex
        var sawDigit = false
        var scan = rest.utf8.startIndex
        while scan != rest.utf8.endIndex {
            let byte = rest.utf8[scan]
            if byte.isASCIIDigit { sawDigit = true; scan = rest.utf8.index(after: scan); numberEnd = scan; continue }
            if byte == UInt8(ascii: "."), sawDigit { scan = rest.utf8.index(after: scan); numberEnd = scan; sawDigit = false; continue }
            break
        }
        let numberText = rest[..<numberEnd]
        if !numberText.isEmpty {
            for (index, part) in numberText.split(separator: ".", omittingEmptySubsequences: false).enumerated() {
                numbers.append(Number(text: part, value: DecimalNumber(digits: part.utf8), index: index))
            }
            rest = rest[numberEnd...]
        }
        if let first = rest.utf8.first, first >= 97, first <= 122 {
            letter = first
            rest = rest.dropFirst()
        }
        // Suffixes: every `_name[digits]` in what is left, consumed while they are at the front.
        let names = ["alpha", "beta", "pre", "rc", "cvs", "svn", "git", "hg", "p"]
        var search = rest
        while let underscore = search.firstIndex(of: "_") {
            let after = search[search.index(after: underscore)...]
            guard let name = names.first(where: { after.hasPrefix($0) }) else {
                search = after
                continue
            }
            let digits = after.dropFirst(name.count).prefix { $0.isASCII && $0.isNumber }
            let weight = Self.suffixOrder.firstIndex(of: name) ?? Self.suffixOrder.count
            suffixes.append(Suffix(weight: weight, number: DecimalNumber(digits: digits.utf8)))
            let matchEnd = digits.endIndex
            if underscore == rest.startIndex { rest = rest[matchEnd...] }
            search = search[matchEnd...]
        }
        // A commit hash: `~` and lower-case hex digits.
        if rest.first == "~" {
            let hex = rest.dropFirst().prefix { ("0"..."9").contains($0) || ("a"..."f").contains($0) }
            if !hex.isEmpty { rest = rest[hex.endIndex...] }
        }
        // The build number: `-r` and digits; anything else left makes the version invalid.
        if !rest.isEmpty {
            if rest.hasPrefix("-r") {
                let digits = rest.dropFirst(2).prefix { $0.isASCII && $0.isNumber }
                build = DecimalNumber(digits: digits.utf8)
                rest = rest[digits.endIndex...]
            } else {
                invalid = true
            }
        }
        remainder = rest
    }

    func compare(_ other: AlpineVersion) -> Int {
        if invalid && other.invalid { return compareBytes(original, other.original) }
        for i in 0..<max(numbers.count, other.numbers.count) {
            let a = i < numbers.count ? numbers[i] : Number(text: "0", value: .zero, index: 0)
            let b = i < other.numbers.count ? other.numbers[i] : Number(text: "0", value: .zero, index: 0)
            let difference: Int
            if a.index != 0 && b.index != 0 && (a.text.hasPrefix("0") || b.text.hasPrefix("0")) {
                difference = compareBytes(a.text, b.text)
            } else {
                difference = a.value.compare(b.value)
            }
            if difference != 0 { return difference }
        }
        switch (letter, other.letter) {
        case (nil, .some): return -1
        case (.some, nil): return 1
        case (let a?, let b?) where a != b: return a < b ? -1 : 1
        default: break
        }
        for i in 0..<max(suffixes.count, other.suffixes.count) {
            let a = i < suffixes.count ? suffixes[i] : Self.absentSuffix
            let b = i < other.suffixes.count ? other.suffixes[i] : Self.absentSuffix
            if a.weight != b.weight { return a.weight < b.weight ? -1 : 1 }
            let difference = a.number.compare(b.number)
            if difference != 0 { return difference }
        }
        let builds = build.compare(other.build)
        if builds != 0 { return builds }
        if remainder.isEmpty != other.remainder.isEmpty { return remainder.isEmpty ? 1 : -1 }
        return 0
    }
}
