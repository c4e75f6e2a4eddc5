/// Python's ordering (PEP 440): `[N!]N(.N)*[{a|b|rc}N][.postN][.devN][+local]`, with the
/// spellings PEP 440 normalises (alpha, beta, c, pre, preview, rev, r, `-N` post-releases,
/// optional separators, a leading `v`). Strings that are not PEP 440 versions ("legacy"
/// versions) sort before every valid one, ordered as setuptools' old parser ordered them.
struct PEP440Version {
    struct Part {
        let letter: String
        let number: DecimalNumber
    }

    var legacy: [String]?
    var epoch = DecimalNumber.zero
    var release: [DecimalNumber] = []
    var pre: Part?
    var post: Part?
    var dev: Part?
    var local: [String] = []

    init(_ text: String) {
        let lowered = text.lowercased()
        if !parse(lowered) { legacy = Self.legacyParts(lowered) }
    }

    // MARK: Parsing

    private mutating func parse(_ text: String) -> Bool {
        var s = Scanner(Array(text.utf8))
        s.skipSpaces()
        _ = s.take("v")
        // Epoch: digits followed by `!`.
        let mark = s.position
        if let digits = s.digits(), s.take("!") {
            epoch = DecimalNumber(digits: digits)
        } else {
            s.position = mark
        }
        guard let first = s.digits() else { return false }
        release = [DecimalNumber(digits: first)]
        while true {
            let before = s.position
            guard s.take("."), let next = s.digits() else { s.position = before; break }
            release.append(DecimalNumber(digits: next))
        }
        // Pre-release: [-_.]? (a|b|c|rc|alpha|beta|pre|preview) [-_.]? N?
        do {
            let before = s.position
            _ = s.separator()
            if let letter = s.word(["alpha", "beta", "preview", "pre", "rc", "a", "b", "c"]) {
                let afterLetter = s.position
                _ = s.separator()
                if let n = s.digits() {
                    pre = Part(letter: Self.normalised(letter), number: DecimalNumber(digits: n))
                } else {
                    s.position = afterLetter
                    pre = Part(letter: Self.normalised(letter), number: .zero)
                }
            } else {
                s.position = before
            }
        }
        // Post-release: -N, or [-_.]? (post|rev|r) [-_.]? N?
        do {
            let before = s.position
            if s.take("-"), let n = s.digits() {
                post = Part(letter: "post", number: DecimalNumber(digits: n))
            } else {
                s.position = before
                _ = s.separator()
                if s.word(["post", "rev", "r"]) != nil {
                    let afterLetter = s.position
                    _ = s.separator()
                    if let n = s.digits() {
                        post = Part(letter: "post", number: DecimalNumber(digits: n))
                    } else {
                        s.position = afterLetter
                        post = Part(letter: "post", number: .zero)
                    }
                } else {
                    s.position = before
                }
            }
        }
        // Development release: [-_.]? dev [-_.]? N?
        do {
            let before = s.position
            _ = s.separator()
            if s.word(["dev"]) != nil {
                let afterLetter = s.position
                _ = s.separator()
                if let n = s.digits() {
                    dev = Part(letter: "dev", number: DecimalNumber(digits: n))
                } else {
                    s.position = afterLetter
                    dev = Part(letter: "dev", number: .zero)
                }
            } else {
                s.position = before
            }
        }
        // Local version: + [a-z0-9]+ ([-_.][a-z0-9]+)*
        if s.take("+") {
            var segments: [String] = []
            guard let first = s.alphanumerics() else { return false }
            segments.append(first)
            while true {
                let before = s.position
                guard s.separator(), let next = s.alphanumerics() else { s.position = before; break }
                segments.append(next)
            }
            local = segments
        }
        s.skipSpaces()
        return s.atEnd
    }

    private static func normalised(_ letter: String) -> String {
        switch letter {
        case "alpha": "a"
        case "beta": "b"
        case "c", "pre", "preview": "rc"
        default: letter
        }
    }

    /// setuptools' legacy parts: numbers zero-padded, words prefixed with `*`, trailing zeros and
    /// `final-` markers dropped before a word.
    static func legacyParts(_ text: String) -> [String] {
        var tokens: [String] = []
        var current = ""
        var currentIsDigit = false
        func flush() {
            if !current.isEmpty { tokens.append(current) }
            current = ""
        }
        for character in text {
            if character.isASCII && character.isNumber {
                if !currentIsDigit { flush() }
                currentIsDigit = true
                current.append(character)
            } else if ("a"..."z").contains(character) {
                if currentIsDigit { flush() }
                currentIsDigit = false
                current.append(character)
            } else {
                flush()
                if character == "." || character == "-" { tokens.append(String(character)) }
            }
        }
        flush()
        tokens.append("final")
        var parts: [String] = []
        for token in tokens where token != "." {
            var part: String
            switch token {
            case "pre", "preview", "rc": part = "c"
            case "-": part = "final-"
            case "dev": part = "@"
            default: part = token
            }
            if let first = part.first, first.isASCII && first.isNumber {
                part = part.count < 8 ? String(repeating: "0", count: 8 - part.count) + part : part
            } else {
                part = "*" + part
                if compareBytes(part, "*final") < 0 {
                    while parts.last == "*final-" { parts.removeLast() }
                }
                while parts.last == "00000000" { parts.removeLast() }
            }
            parts.append(part)
        }
        return parts
    }

    // MARK: Comparing

    func compare(_ other: PEP440Version) -> Int {
        switch (legacy, other.legacy) {
        case (nil, .some): return 1
        case (.some, nil): return -1
        case (let a?, let b?): return compareBytes(a.joined(), b.joined())
        case (nil, nil): break
        }
        let epochs = epoch.compare(other.epoch)
        if epochs != 0 { return epochs }
        let releases = compareComponents(release, other.release)
        if releases != 0 { return releases }
        let pres = comparePre(other)
        if pres != 0 { return pres }
        switch (post, other.post) {
        case (nil, .some): return -1
        case (.some, nil): return 1
        case (let a?, let b?):
            let difference = a.number.compare(b.number)
            if difference != 0 { return difference }
        default: break
        }
        switch (dev, other.dev) {
        case (nil, .some): return 1
        case (.some, nil): return -1
        case (let a?, let b?):
            let difference = a.number.compare(b.number)
            if difference != 0 { return difference }
        default: break
        }
        return compareLocal(other)
    }

    /// A development release of a final version (`1.0.dev0`) sorts before its pre-releases.
    private var devOnly: Bool { pre == nil && post == nil && dev != nil }

    private func comparePre(_ other: PEP440Version) -> Int {
        switch (devOnly, other.devOnly) {
        case (true, true): return 0
        case (true, false): return -1
        case (false, true): return 1
        default: break
        }
        switch (pre, other.pre) {
        case (nil, nil): return 0
        case (nil, .some): return 1
        case (.some, nil): return -1
        case (let a?, let b?):
            let x = a.letter.utf8.first!, y = b.letter.utf8.first!
            if x != y { return x < y ? -1 : 1 }
            return a.number.compare(b.number)
        }
    }

    private func compareLocal(_ other: PEP440Version) -> Int {
        for (a, b) in zip(local, other.local) {
            let x = DecimalNumber(a), y = DecimalNumber(b)
            let difference: Int
            switch (x, y) {
            case (let x?, let y?): difference = x.compare(y)
            case (nil, nil): difference = compareBytes(a, b)
            case (.some, nil): difference = 1
            case (nil, .some): difference = -1
            }
            if difference != 0 { return difference }
        }
        return local.count == other.local.count ? 0 : (local.count < other.local.count ? -1 : 1)
    }
}

/// A cursor over ASCII bytes for the hand-written version parsers.
struct Scanner {
    let bytes: [UInt8]
    var position = 0

    init(_ bytes: [UInt8]) { self.bytes = bytes }

    var atEnd: Bool { position == bytes.count }

    mutating func take(_ character: Character) -> Bool {
        guard position < bytes.count, bytes[position] == character.asciiValue else { return false }
        position += 1
        return true
    }

    mutating func skipSpaces() {
        while position < bytes.count, [9, 10, 11, 12, 13, 32].contains(bytes[position]) { position += 1 }
    }

    mutating func digits() -> ArraySlice<UInt8>? {
        let start = position
        while position < bytes.count, bytes[position].isASCIIDigit { position += 1 }
        return position > start ? bytes[start..<position] : nil
    }

    mutating func alphanumerics() -> String? {
        let start = position
        while position < bytes.count, bytes[position].isASCIIDigit || (bytes[position] >= 97 && bytes[position] <= 122) { position += 1 }
        return position > start ? String(decoding: bytes[start..<position], as: UTF8.self) : nil
    }

    /// One of `-`, `_`, `.`.
    mutating func separator() -> Bool { take("-") || take("_") || take(".") }

    /// The first of `words` (longest listed first) found here.
    mutating func word(_ words: [String]) -> String? {
        for word in words {
            let utf8 = Array(word.utf8)
            if position + utf8.count <= bytes.count, Array(bytes[position..<position + utf8.count]) == utf8 {
                position += utf8.count
                return word
            }
        }
        return nil
    }
}
