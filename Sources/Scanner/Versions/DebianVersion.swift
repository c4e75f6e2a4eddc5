/// dpkg's ordering (deb-version(7)): `[epoch:]upstream[-revision]`. Epochs compare as numbers;
/// upstream and revision alternate runs of non-digits (compared character by character, `~`
/// before everything, even the end, and letters before other characters) and runs of digits
/// (compared as numbers). A version without a revision has revision `0`.
struct DebianVersion {
    let epoch: DecimalNumber
    let upstream: Substring
    let revision: Substring

    init(_ text: String) {
        var rest = text.trimmingASCIIWhitespace()
        var epoch = DecimalNumber.zero
        if let colon = rest.firstIndex(of: ":") {
            epoch = DecimalNumber(rest[..<colon]) ?? .zero
            rest = rest[rest.index(after: colon)...]
        }
        if let dash = rest.lastIndex(of: "-") {
            upstream = rest[..<dash]
            revision = rest[rest.index(after: dash)...]
        } else {
            upstream = rest
            revision = "0"
        }
        self.epoch = epoch
    }

    func compare(_ other: DebianVersion) -> Int {
        let epochs = epoch.compare(other.epoch)
        if epochs != 0 { return epochs }
        let upstreams = Self.compareParts(upstream, other.upstream)
        if upstreams != 0 { return upstreams }
        return Self.compareParts(revision, other.revision)
    }

    /// Sort weight of one character of a non-digit run; nil is the end of the run.
    private static func weight(_ byte: UInt8?) -> Int {
        guard let byte else { return 2 }
        if byte == UInt8(ascii: "~") { return 1 }
        return byte.isASCIILetter ? Int(byte) : Int(byte) + 122
    }

    static func compareParts(_ a: Substring, _ b: Substring) -> Int {
        var x = a.utf8[...], y = b.utf8[...]
        while !x.isEmpty || !y.isEmpty {
            let xText = x.prefix { !$0.isASCIIDigit }, yText = y.prefix { !$0.isASCIIDigit }
            x = x.dropFirst(xText.count)
            y = y.dropFirst(yText.count)
            if !xText.elementsEqual(yText) {
                let xs = Array(xText), ys = Array(yText)
                for i in 0..<max(xs.count, ys.count) {
                    let difference = weight(i < xs.count ? xs[i] : nil) - weight(i < ys.count ? ys[i] : nil)
                    if difference != 0 { return difference < 0 ? -1 : 1 }
                }
            }
            let xDigits = x.prefix { $0.isASCIIDigit }, yDigits = y.prefix { $0.isASCIIDigit }
            x = x.dropFirst(xDigits.count)
            y = y.dropFirst(yDigits.count)
            let numbers = DecimalNumber(digits: xDigits).compare(DecimalNumber(digits: yDigits))
            if numbers != 0 { return numbers }
        }
        return 0
    }
}

extension StringProtocol {
    func trimmingASCIIWhitespace() -> Substring {
        let isSpace: (Character) -> Bool = { $0 == " " || $0 == "\t" || $0 == "\n" || $0 == "\r" }
        let text = Substring(self)
        guard let start = text.firstIndex(where: { !isSpace($0) }), let end = text.lastIndex(where: { !isSpace($0) }) else { return "" }
        return text[start...end]
    }
}
