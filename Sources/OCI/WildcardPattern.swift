/// ECR's tag patterns: `*` matches any run of characters (including none); everything else is literal.
public enum WildcardPattern {
    public static func matches(_ pattern: String, _ value: String) -> Bool {
        let p = Array(pattern.utf8), v = Array(value.utf8)
        var pi = 0, vi = 0
        var star = -1, mark = 0
        while vi < v.count {
            if pi < p.count, p[pi] != UInt8(ascii: "*"), p[pi] == v[vi] {
                pi += 1; vi += 1
            } else if pi < p.count, p[pi] == UInt8(ascii: "*") {
                star = pi; mark = vi; pi += 1
            } else if star >= 0 {
                pi = star + 1; mark += 1; vi = mark
            } else {
                return false
            }
        }
        while pi < p.count, p[pi] == UInt8(ascii: "*") { pi += 1 }
        return pi == p.count
    }
}
