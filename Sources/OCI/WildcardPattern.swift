/// Wildcard matching. ECR's tag patterns: `*` matches any run of characters (including none) and
/// everything else is literal. IAM patterns (actions, ARNs) also have `?` for one character.
public enum WildcardPattern {
    public static func matches(_ pattern: String, _ value: String) -> Bool {
        match(Array(pattern.utf8), Array(value.utf8), questionMark: false)
    }

    public static func matchesIAM(_ pattern: String, _ value: String) -> Bool {
        match(Array(pattern.utf8), Array(value.utf8), questionMark: true)
    }

    private static func match(_ p: [UInt8], _ v: [UInt8], questionMark: Bool) -> Bool {
        let star = UInt8(ascii: "*"), question = UInt8(ascii: "?")
        var pi = 0, vi = 0
        var lastStar = -1, mark = 0
        while vi < v.count {
            if pi < p.count, p[pi] != star, p[pi] == v[vi] || (questionMark && p[pi] == question) {
                pi += 1; vi += 1
            } else if pi < p.count, p[pi] == star {
                lastStar = pi; mark = vi; pi += 1
            } else if lastStar >= 0 {
                pi = lastStar + 1; mark += 1; vi = mark
            } else {
                return false
            }
        }
        while pi < p.count, p[pi] == star { pi += 1 }
        return pi == p.count
    }
}
