import Foundation
import Testing

@testable import Scanner

/// Version ordering checked against the real implementations, not only against the vectors:
/// dpkg itself (`dpkg --compare-versions`), APT's library (python3-apt), rpm's own `rpm.vercmp`,
/// and Python's `packaging`. Every pair of the vector files is asked of both Wharf and the oracle.
/// scripts/install-deps.sh installs python3-apt and rpm; a missing oracle fails the test.
@Suite("Version ordering against native oracles", .serialized)
struct NativeOracleTests {
    /// Pairs of versions from the vector files of one ecosystem.
    static func pairs(_ files: [String]) throws -> [(String, String)] {
        var pairs: [(String, String)] = []
        for file in files {
            let text = try String(contentsOf: try TestData.url("versions", file), encoding: .utf8)
            for line in text.split(separator: "\n") where !line.hasPrefix("# ") && !line.hasPrefix("// ") {
                let parts = line.split(separator: " ")
                if parts.count == 3 { pairs.append((String(parts[0]), String(parts[2]))) }
            }
        }
        return pairs
    }

    /// Runs `tool` once over all pairs (one `a b` per line on stdin) and reads one sign per line.
    static func oracle(_ tool: String, _ arguments: [String], pairs: [(String, String)]) throws -> [Int?] {
        let input = pairs.map { "\($0.0) \($0.1)\n" }.joined()
        let output = String(decoding: try Shell.run(tool, arguments, input: Array(input.utf8)), as: UTF8.self)
        let lines = output.split(separator: "\n", omittingEmptySubsequences: false).prefix(pairs.count)
        #expect(lines.count == pairs.count, "\(tool) answered \(lines.count) of \(pairs.count) pairs")
        return lines.map { line in Int(line).map { $0.signum() } }
    }

    static func compare(_ ecosystem: Ecosystem, _ pairs: [(String, String)], _ answers: [Int?], oracle: String) -> Int {
        var disagreements: [String] = []
        var asked = 0
        for ((a, b), answer) in zip(pairs, answers) {
            guard let answer else { continue }  // the oracle refused the input (not a version it accepts)
            asked += 1
            let ours = ecosystem.compare(a, b)
            if ours != answer { disagreements.append("\(a) vs \(b): Wharf \(ours), \(oracle) \(answer)") }
        }
        #expect(disagreements.isEmpty, "\(disagreements.count) disagreements with \(oracle), first: \(disagreements.prefix(10).joined(separator: "; "))")
        return asked
    }

    @Test("Debian: python3-apt's apt_pkg.version_compare on every vector pair")
    func pythonApt() throws {
        let pairs = try Self.pairs(["debian-versions.txt", "debian-versions-generated.txt"])
        let script = """
            import sys, apt_pkg
            apt_pkg.init_system()
            for line in sys.stdin:
                a, b = line.split()
                print(apt_pkg.version_compare(a, b))
            """
        // Debian's own Python, where python3-apt lives (not a pyenv one first on PATH).
        let answers = try Self.oracle("/usr/bin/python3", ["-c", script], pairs: pairs)
        #expect(Self.compare(.debian, pairs, answers, oracle: "apt_pkg") == pairs.count)
    }

    @Test("Debian: dpkg --compare-versions itself on the hand-written pairs and a sample of the generated")
    func dpkg() throws {
        let all = try Self.pairs(["debian-versions-generated.txt"])
        let pairs = try Self.pairs(["debian-versions.txt"]) + stride(from: 0, to: all.count, by: 20).map { all[$0] }
        let script = #"""
            while read -r a b; do
              if dpkg --compare-versions "$a" lt "$b"; then echo -1
              elif dpkg --compare-versions "$a" eq "$b"; then echo 0
              else echo 1; fi
            done
            """#
        let answers = try Self.oracle("bash", ["-c", script], pairs: pairs)
        #expect(Self.compare(.debian, pairs, answers, oracle: "dpkg") == pairs.count)
    }

    @Test("Red Hat: rpm's own rpm.vercmp (rpmvercmp, with ~ and ^) on every vector pair")
    func rpm() throws {
        let pairs = try Self.pairs(["redhat-versions.txt"])
        let directory = try TemporaryDirectory()
        let list = directory.path + "/pairs"
        try pairs.map { "\($0.0) \($0.1)\n" }.joined().write(toFile: list, atomically: true, encoding: .utf8)
        let lua = "%{lua: for line in io.lines('\(list)') do local a, b = line:match('^(%S+) (%S+)$'); print(rpm.vercmp(a, b) .. '\\n') end}"
        let output = String(decoding: try Shell.run("rpm", ["--eval", lua]), as: UTF8.self)
        let answers = output.split(separator: "\n").map { Int($0).map { $0.signum() } }
        #expect(answers.count == pairs.count)
        #expect(Self.compare(.redHat, pairs, answers, oracle: "rpm.vercmp") == pairs.count)
    }

    @Test("PyPI: packaging.version on every vector pair it accepts (PEP 440)")
    func packaging() throws {
        let pairs = try Self.pairs(["pypi-versions.txt", "pypi-versions-generated.txt"])
        let script = """
            import sys
            from packaging.version import Version, InvalidVersion
            for line in sys.stdin:
                a, b = line.split()
                try:
                    x, y = Version(a), Version(b)
                except InvalidVersion:
                    print("")
                    continue
                print(-1 if x < y else (0 if x == y else 1))
            """
        let answers = try Self.oracle("python3", ["-c", script], pairs: pairs)
        let asked = Self.compare(.pypi, pairs, answers, oracle: "packaging")
        // Legacy (non-PEP 440) versions are outside packaging's domain; most pairs are inside it.
        #expect(asked > pairs.count * 9 / 10)
    }
}
