import Foundation
import Testing

@testable import Scanner

/// Go build info read from a real binary that Debian's Go toolchain (golang-go, which
/// scripts/install-deps.sh installs) builds here, offline: one dependency comes from a file-based
/// module proxy (so it has a real version and checksum), one from a local `replace`. `go version -m`
/// is the oracle for what the binary records.
@Suite("Go binaries", .serialized)
struct GoBinaryCatalogerTests {
    static func write(_ path: String, _ text: String) throws {
        try FileManager.default.createDirectory(atPath: (path as NSString).deletingLastPathComponent, withIntermediateDirectories: true)
        try text.write(toFile: path, atomically: true, encoding: .utf8)
    }

    /// Builds example.com/hello with its two dependencies; returns the binary's path.
    static func buildBinary(in root: String) throws -> String {
        try #require(Shell.exists("go"), "the Go toolchain is missing: install golang-go (scripts/install-deps.sh does)")
        try write("\(root)/greet/go.mod", "module example.com/greet\n\ngo 1.19\n")
        try write("\(root)/greet/greet.go", "package greet\n\nfunc Hello() string { return \"hello\" }\n")
        try write("\(root)/local/go.mod", "module example.com/local\n\ngo 1.19\n")
        try write("\(root)/local/local.go", "package local\n\nfunc Name() string { return \"local\" }\n")
        try write(
            "\(root)/hello/go.mod",
            """
            module example.com/hello

            go 1.19

            require (
            \texample.com/greet v1.4.2
            \texample.com/local v0.1.0
            )

            replace example.com/local => ../local

            """)
        try write(
            "\(root)/hello/main.go",
            """
            package main

            import (
            \t"fmt"
            \t"example.com/greet"
            \t"example.com/local"
            )

            func main() { fmt.Println(greet.Hello(), local.Name()) }

            """)
        // A module proxy is a folder of files: list, .info, .mod and a zip whose paths start with module@version/.
        let proxy = "\(root)/proxy/example.com/greet/@v"
        try write("\(proxy)/list", "v1.4.2\n")
        try write("\(proxy)/v1.4.2.info", #"{"Version":"v1.4.2","Time":"2024-01-01T00:00:00Z"}"#)
        try write("\(proxy)/v1.4.2.mod", "module example.com/greet\n\ngo 1.19\n")
        _ = try Shell.run(
            "python3",
            [
                "-c",
                """
                import sys, zipfile
                with zipfile.ZipFile(sys.argv[1], "w") as z:
                    for name in ("go.mod", "greet.go"):
                        z.write(sys.argv[2] + "/" + name, "example.com/greet@v1.4.2/" + name)
                """, "\(proxy)/v1.4.2.zip", "\(root)/greet",
            ])
        _ = try Shell.run(
            "env",
            [
                "GOPATH=\(root)/gopath", "GOCACHE=\(root)/cache", "GOPROXY=file://\(root)/proxy", "GOSUMDB=off", "GOFLAGS=-mod=mod",
                "GOTOOLCHAIN=local", "sh", "-c", "cd \(root)/hello && go build -o \(root)/hello-bin .",
            ])
        return "\(root)/hello-bin"
    }

    @Test("the build info of a real binary gives its modules, replacements and stdlib, as go version -m does")
    func realBinary() async throws {
        let directory = try TemporaryDirectory()
        let binary = try Self.buildBinary(in: directory.path)
        let bytes = Array(try Data(contentsOf: URL(fileURLWithPath: binary)))
        let oracle = String(decoding: try Shell.run("go", ["version", "-m", binary]), as: UTF8.self)
        let goVersion = try #require(oracle.split(separator: "\n").first?.split(separator: " ").last).dropFirst(2)
        #expect(oracle.contains("\tdep\texample.com/greet\tv1.4.2\th1:"))
        #expect(oracle.contains("\t=>\t../local\t(devel)"))

        // Whole, and fed in odd-sized chunks (the header may straddle any two).
        var whole = GoBinaryCataloger.Probe()
        let finished = whole.feed(bytes)
        #expect(finished)
        for size in [1 << 20, 65_537, 4093] {
            var probe = GoBinaryCataloger.Probe()
            var offset = 0
            while offset < bytes.count, !probe.feed(Array(bytes[offset..<min(offset + size, bytes.count)])) { offset += size }
            #expect(probe.result == whole.result, "chunks of \(size)")
        }
        let info = try #require(whole.result)
        #expect(info.goVersion == "go\(goVersion)")
        let found = Set(GoBinaryCataloger.packages(info, location: "/x").map { "\($0.name) \($0.version)" })
        #expect(found == ["stdlib \(goVersion)", "example.com/hello (devel)", "example.com/greet v1.4.2", "example.com/local (devel)"])

        // In an image: an executable in a layer, a non-Go ELF beside it, a script that contains the magic.
        var layer = TarBuilder()
        layer.add("usr/local/bin/hello", content: bytes, mode: 0o755)
        layer.add("usr/local/bin/hello-copy", content: bytes, mode: 0o755)
        layer.add("usr/bin/env", content: Array(try Data(contentsOf: URL(fileURLWithPath: "/usr/bin/env"))), mode: 0o755)
        layer.add("usr/bin/fake", content: Array("#!/bin/sh\n".utf8) + GoBinaryCataloger.magic + [UInt8](repeating: 8, count: 2000), mode: 0o755)
        var upper = TarBuilder()
        upper.add("usr/local/bin/.wh.hello-copy")
        var files = ImageFiles(wanted: Inventory.wants)
        try await files.apply(layer: ArrayByteSource(layer.archive))
        try await files.apply(layer: ArrayByteSource(upper.archive))
        #expect(files.goBinaries.keys.sorted() == ["usr/local/bin/hello"])
        let inventory = await Inventory.of(files)
        #expect(inventory.packages.allSatisfy { $0.kind == .go && $0.location == "/usr/local/bin/hello" })
        #expect(inventory.packages.count == 4)

        // Matching: a released dependency and stdlib match; modules built from a folder have no version to match.
        func record(_ id: String, _ name: String, fixed: String) throws -> OSVRecord {
            try JSONDecoder().decode(
                OSVRecord.self,
                from: Data(
                    """
                    {"id": "\(id)", "modified": "2026-01-01T00:00:00Z", "affected": [{"package": {"ecosystem": "Go", "name": "\(name)"},
                     "ranges": [{"type": "SEMVER", "events": [{"introduced": "0"}, {"fixed": "\(fixed)"}]}]}]}
                    """.utf8))
        }
        var findings: [String] = []
        for package in inventory.packages {
            guard let lookup = VulnerabilityMatcher.query(for: package, os: nil) else { continue }
            let records = [
                try record("GO-TEST-1", "example.com/greet", fixed: "1.5.0"), try record("GO-TEST-2", "stdlib", fixed: "99.0.0"),
                try record("GO-TEST-3", "example.com/local", fixed: "9.0.0"), try record("GO-TEST-4", "example.com/greet", fixed: "1.4.2"),
            ]
            findings += VulnerabilityMatcher.match(package: package, lookup: lookup, records: records).map {
                "\($0.id) \($0.packageName) \($0.fixedVersion ?? "-")"
            }
        }
        #expect(findings.sorted() == ["GO-TEST-1 example.com/greet 1.5.0", "GO-TEST-2 stdlib 99.0.0"])
    }

    @Test("headers that are not build info are passed over, and cut-off ones do not crash")
    func malformed() {
        let header = GoBinaryCataloger.magic + [8, 2] + [UInt8](repeating: 0, count: 16)
        let elf: [UInt8] = [0x7F, 0x45, 0x4C, 0x46] + [UInt8](repeating: 0, count: 60)
        // Pre-1.18 pointer format, a bad pointer size, a version that is not Go's, a huge length.
        for body in [
            GoBinaryCataloger.magic + [8, 0] + [UInt8](repeating: 0, count: 40),
            GoBinaryCataloger.magic + [3, 2] + [UInt8](repeating: 0, count: 40),
            header + [5] + Array("hello".utf8) + [0],
            header + [0xFF, 0xFF, 0xFF, 0xFF, 0x7F],
        ] {
            var probe = GoBinaryCataloger.Probe()
            _ = probe.feed(elf + body)
            #expect(probe.result == nil)
        }
        // A header that promises more than the file has: no result, no crash.
        var cut = GoBinaryCataloger.Probe()
        let cutFinished = cut.feed(elf + header + [8] + Array("go1.2".utf8))
        #expect(!cutFinished)
        #expect(cut.result == nil)
        // The real thing after a false start.
        let good = header + [8] + Array("go1.22.1".utf8) + [0]
        var probe = GoBinaryCataloger.Probe()
        let goodFinished = probe.feed(elf + GoBinaryCataloger.magic + [9, 9] + good)
        #expect(goodFinished)
        #expect(probe.result == GoBinaryCataloger.BuildInfo(goVersion: "go1.22.1", modules: ""))
        #expect(GoBinaryCataloger.packages(probe.result!, location: "/x").map(\.name) == ["stdlib"])
    }
}
