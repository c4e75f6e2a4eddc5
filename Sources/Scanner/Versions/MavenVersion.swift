/// Maven's ordering (ComparableVersion): tokens split at `.`, `-` and digit/letter changes, each
/// remembering its separator; trailing "null" tokens (0, "", final, ga, release) trimmed per
/// hyphen group; the shorter version padded with nulls; qualifiers ranked
/// `alpha < beta < milestone < rc = cr < snapshot < (release) < sp < other words (alphabetical)`.
struct MavenVersion {
    struct Token: Equatable {
        let prefix: String
        let value: String
        var isNull = false

        static func == (a: Token, b: Token) -> Bool { a.prefix == b.prefix && a.value == b.value }

        var isNumber: Bool { DecimalNumber(value) != nil }

        /// ".qualifier" < "-qualifier" < "-number" < ".number"
        var separatorOrder: Int {
            switch (isNumber, prefix) {
            case (true, "-"): 2
            case (true, "."): 3
            case (false, "-"): 1
            default: 0
            }
        }

        static let keywords = ["alpha", "beta", "milestone", "rc", "snapshot", "", "sp"]

        func precedes(_ other: Token) -> Bool {
            guard prefix == other.prefix else { return separatorOrder < other.separatorOrder }
            let x = DecimalNumber(value), y = DecimalNumber(other.value)
            if let x, let y { return x < y }
            if x != nil && !isNull { return false }
            if y != nil && !other.isNull { return true }
            let left = Self.keywords.firstIndex(of: value) ?? Self.keywords.count
            let right = Self.keywords.firstIndex(of: other.value) ?? Self.keywords.count
            if left == Self.keywords.count && right == Self.keywords.count { return compareBytes(value, other.value) < 0 }
            return left < right
        }

        /// The null a shorter version is padded with, shaped after the other version's token.
        static func null(like token: Token) -> Token {
            if token.prefix == "-" { return Token(prefix: "-", value: "", isNull: true) }
            // `sp` is the one qualifier after the empty value; padding must sort below it.
            return Token(prefix: ".", value: token.value == "sp" ? "" : "0", isNull: true)
        }
    }

    let tokens: [Token]

    init(_ text: String) {
        var tokens: [Token] = []
        // Split at '.' and '-', keeping each separator as the next token's prefix.
        var pieces: [(prefix: String, text: [UInt8])] = []
        var current: [UInt8] = []
        var prefix = ""
        for byte in text.utf8 {
            if byte == UInt8(ascii: ".") || byte == UInt8(ascii: "-") {
                pieces.append((prefix, current))
                prefix = byte == UInt8(ascii: ".") ? "." : "-"
                current = []
            } else {
                current.append(byte)
            }
        }
        pieces.append((prefix, current))
        for (piecePrefix, piece) in pieces {
            // Boundaries between digits and non-digits split a piece further (hyphen-prefixed).
            var boundaries: [Int] = []
            for i in piece.indices.dropFirst() where piece[i - 1].isASCIIDigit != piece[i].isASCIIDigit { boundaries.append(i) }
            boundaries.append(piece.count)
            var start = 0
            for (j, end) in boundaries.enumerated() {
                var value = String(decoding: piece[start..<end], as: UTF8.self).lowercased()
                if value.isEmpty { value = "0" }
                if value == "cr" { value = "rc" }
                if value == "ga" || value == "final" || value == "release" { value = "" }
                if end != piece.count {
                    switch value {
                    case "a": value = "alpha"
                    case "b": value = "beta"
                    case "m": value = "milestone"
                    default: break
                    }
                }
                if let number = DecimalNumber(value) { value = number.description }
                tokens.append(Token(prefix: j > 0 ? "-" : piecePrefix, value: value))
                start = end
            }
        }
        // Trim trailing nulls, then repeat at each remaining hyphen from the end.
        var i = tokens.count - 1
        while i > 0 {
            if ["0", "", "final", "ga"].contains(tokens[i].value) {
                tokens.remove(at: i)
                i -= 1
                continue
            }
            while i >= 0 && tokens[i].prefix != "-" { i -= 1 }
            i -= 1
        }
        self.tokens = tokens
    }

    func compare(_ other: MavenVersion) -> Int {
        if tokens == other.tokens { return 0 }
        return precedes(other) ? -1 : 1
    }

    private func precedes(_ other: MavenVersion) -> Bool {
        for i in 0..<max(tokens.count, other.tokens.count) {
            let left = i < tokens.count ? tokens[i] : Token.null(like: other.tokens[i])
            let right = i < other.tokens.count ? other.tokens[i] : Token.null(like: tokens[i])
            if left == right { continue }
            return left.precedes(right)
        }
        return false
    }
}
