/// RPM's ordering (rpmvercmp): `[epoch:]version[-release]`, each part compared by alternating
/// runs of digits (numerically) and letters (bytewise), other characters only separating them;
/// `~` sorts before everything (even the end) and `^` after the end but before anything else.
struct RPMVersion {
    let epoch: Substring
    let version: Substring
    let release: Substring

    init(_ text: String) {
        let full = Substring(text)
        var rest = full
        var epoch: Substring = "0"
        if let colon = full.firstIndex(of: ":"), full[..<colon].utf8.allSatisfy(\.isASCIIDigit) {
            epoch = full[..<colon].isEmpty ? "0" : full[..<colon]
            rest = full[full.index(after: colon)...]
        }
        if let dash = rest.firstIndex(of: "-") {
            version = rest[..<dash]
            release = rest[dash...]  // the dash stays: it only separates
        } else {
            version = rest
            release = ""
        }
        self.epoch = epoch
    }

    func compare(_ other: RPMVersion) -> Int {
        for (a, b) in [(epoch, other.epoch), (version, other.version), (release, other.release)] {
            let difference = Self.rpmvercmp(a, b)
            if difference != 0 { return difference }
        }
        return 0
    }

    static func rpmvercmp(_ a: Substring, _ b: Substring) -> Int {
        if a.isEmpty != b.isEmpty { return a.isEmpty ? -1 : 1 }
        let x = Array(a.utf8), y = Array(b.utf8)
        var i = 0, j = 0
        let tilde = UInt8(ascii: "~"), caret = UInt8(ascii: "^")
        func separator(_ c: UInt8) -> Bool { !c.isASCIIDigit && !c.isASCIILetter && c != tilde && c != caret }
        while true {
            while i < x.count, separator(x[i]) { i += 1 }
            while j < y.count, separator(y[j]) { j += 1 }
            let xTilde = i < x.count && x[i] == tilde, yTilde = j < y.count && y[j] == tilde
            if xTilde || yTilde {
                if xTilde && yTilde { i += 1; j += 1; continue }
                return xTilde ? -1 : 1
            }
            let xCaret = i < x.count && x[i] == caret, yCaret = j < y.count && y[j] == caret
            if xCaret || yCaret {
                if xCaret && yCaret { i += 1; j += 1; continue }
                if xCaret { return j == y.count ? 1 : -1 }
                return i == x.count ? -1 : 1
            }
            if i == x.count || j == y.count { break }
            let numeric = x[i].isASCIIDigit
            let run: (UInt8) -> Bool = numeric ? { $0.isASCIIDigit } : { $0.isASCIILetter }
            let xStart = i, yStart = j
            while i < x.count, run(x[i]) { i += 1 }
            while j < y.count, run(y[j]) { j += 1 }
            if j == yStart { return numeric ? 1 : -1 }
            var xs = x[xStart..<i], ys = y[yStart..<j]
            if numeric {
                xs = xs.drop { $0 == 48 }
                ys = ys.drop { $0 == 48 }
                if xs.count != ys.count { return xs.count < ys.count ? -1 : 1 }
            }
            if !xs.elementsEqual(ys) { return xs.lexicographicallyPrecedes(ys) ? -1 : 1 }
        }
        let xLeft = x.count - i, yLeft = y.count - j
        return xLeft == yLeft ? 0 : (xLeft < yLeft ? -1 : 1)
    }
}
