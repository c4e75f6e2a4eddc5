import Foundation

/// A record's severity: from its CVSS v3 vector (base score computed here), else from the
/// source's own rating (`database_specific.severity`, GitHub's and others'). CVSS v4 vectors are
/// kept for display; without the v4 lookup tables their score is not computed.
public enum SeverityRating {
    public struct Rating: Sendable, Equatable {
        public var severity: Severity
        public var score: Double?
        public var vector: String?
    }

    public static func rate(_ record: OSVRecord) -> Rating {
        var best: Rating?
        for entry in record.severity ?? [] where entry.type == "CVSS_V3" {
            if let score = cvss3BaseScore(entry.score), best == nil || score > (best?.score ?? 0) {
                best = Rating(severity: Severity(score: score), score: score, vector: entry.score)
            }
        }
        if let best { return best }
        let vector = record.severity?.first?.score
        for object in [record.databaseSpecific] + (record.affected ?? []).flatMap({ [$0.ecosystemSpecific, $0.databaseSpecific] }) {
            if let word = object?.value(forKey: "severity") as? String, let severity = Severity(word: word) {
                return Rating(severity: severity, score: nil, vector: vector)
            }
        }
        return Rating(severity: .undefined, score: nil, vector: vector)
    }

    /// CVSS v3.0/v3.1 base score, per the specification's equations; nil for a malformed vector.
    public static func cvss3BaseScore(_ vector: String) -> Double? {
        var metrics: [String: String] = [:]
        let parts = vector.split(separator: "/")
        guard let first = parts.first, first.hasPrefix("CVSS:3") else { return nil }
        for part in parts.dropFirst() {
            let pair = part.split(separator: ":")
            guard pair.count == 2 else { return nil }
            metrics[String(pair[0])] = String(pair[1])
        }
        let changed = metrics["S"] == "C"
        guard metrics["S"] == "U" || changed,
            let av = ["N": 0.85, "A": 0.62, "L": 0.55, "P": 0.2][metrics["AV"] ?? ""],
            let ac = ["L": 0.77, "H": 0.44][metrics["AC"] ?? ""],
            let pr = (changed ? ["N": 0.85, "L": 0.68, "H": 0.5] : ["N": 0.85, "L": 0.62, "H": 0.27])[metrics["PR"] ?? ""],
            let ui = ["N": 0.85, "R": 0.62][metrics["UI"] ?? ""]
        else { return nil }
        let cia = ["H": 0.56, "L": 0.22, "N": 0.0]
        guard let c = cia[metrics["C"] ?? ""], let i = cia[metrics["I"] ?? ""], let a = cia[metrics["A"] ?? ""] else { return nil }
        let iss = 1 - (1 - c) * (1 - i) * (1 - a)
        let impact = changed ? 7.52 * (iss - 0.029) - 3.25 * pow(iss - 0.02, 15) : 6.42 * iss
        guard impact > 0 else { return 0 }
        let exploitability = 8.22 * av * ac * pr * ui
        return roundUp(changed ? min(1.08 * (impact + exploitability), 10) : min(impact + exploitability, 10))
    }

    /// CVSS 3.1's Roundup: the smallest one-decimal number at or above the input, computed in
    /// integers so that float noise (4.000000001) does not round up a whole step.
    static func roundUp(_ value: Double) -> Double {
        let scaled = Int((value * 100_000).rounded())
        return scaled % 10_000 == 0 ? Double(scaled) / 100_000 : (Double(scaled / 10_000) + 1) / 10
    }
}

extension JSONObject {
    /// A top-level value of the object.
    func value(forKey key: String) -> Any? {
        guard let data = json.data(using: .utf8), let object = try? JSONSerialization.jsonObject(with: data) as? [String: Any] else { return nil }
        return object[key]
    }
}
