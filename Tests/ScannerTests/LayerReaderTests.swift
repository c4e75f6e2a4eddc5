import Testing

@testable import Scanner

/// Builds ustar archives in memory, as image layers are.
struct TarBuilder {
    var bytes: [UInt8] = []

    private static func field(_ text: String, _ length: Int) -> [UInt8] {
        var field = Array(text.utf8.prefix(length))
        field += [UInt8](repeating: 0, count: length - field.count)
        return field
    }

    private static func octal(_ value: Int, _ length: Int) -> [UInt8] {
        let digits = String(value, radix: 8)
        return field(String(repeating: "0", count: max(0, length - 1 - digits.count)) + digits, length)
    }

    mutating func add(_ path: String, type: Character = "0", content: [UInt8] = [], link: String = "", mode: Int = 0o644) {
        var header = Self.field(path, 100) + Self.octal(mode, 8) + Self.octal(0, 8) + Self.octal(0, 8)
        header += Self.octal(content.count, 12) + Self.octal(0, 12) + [UInt8](repeating: 0x20, count: 8)
        header += [type.asciiValue!] + Self.field(link, 100) + Self.field("ustar", 6) + Self.field("00", 2)
        header += [UInt8](repeating: 0, count: 512 - header.count)
        let sum = header.reduce(0) { $0 + Int($1) }
        header.replaceSubrange(148..<156, with: Self.octal(sum, 7) + [0x20])
        bytes += header + content + [UInt8](repeating: 0, count: (512 - content.count % 512) % 512)
    }

    mutating func file(_ path: String, _ text: String) { add(path, content: Array(text.utf8)) }

    var archive: [UInt8] { bytes + [UInt8](repeating: 0, count: 1024) }
}

@Suite("Layer reader")
struct LayerReaderTests {
    func view(_ layers: [TarBuilder], limits: ImageFiles.Limits = .init()) async throws -> ImageFiles {
        var files = ImageFiles(limits: limits) { _ in true }
        for layer in layers { try await files.apply(layer: ArrayByteSource(layer.archive)) }
        return files
    }

    @Test("entries, long contents and normalised paths")
    func reading() async throws {
        var layer = TarBuilder()
        layer.add("./etc/", type: "5")
        layer.file("./etc/os-release", "ID=alpine\nVERSION_ID=3.19.1\n")
        layer.add("usr/lib/big", content: [UInt8](repeating: 7, count: 5000))
        var reader = TarReader(ArrayByteSource(layer.archive))
        var seen: [String?] = []
        while let entry = try await reader.next() { seen.append(entry.path) }
        #expect(seen == ["etc", "etc/os-release", "usr/lib/big"])
        let files = try await view([layer])
        #expect(files.text(of: "etc/os-release") == "ID=alpine\nVERSION_ID=3.19.1\n")
        #expect(files.content(of: "usr/lib/big")?.count == 5000)
    }

    @Test("whiteouts and opaque directories hide lower layers only")
    func whiteouts() async throws {
        var base = TarBuilder()
        base.file("var/lib/dpkg/status", "old")
        base.file("app/a.txt", "a")
        base.file("app/b.txt", "b")
        base.file("keep/x", "x")
        var top = TarBuilder()
        top.add("var/lib/dpkg/.wh.status")
        top.add("app/.wh..wh..opq")
        top.file("app/c.txt", "c")
        let files = try await view([base, top])
        #expect(files.content(of: "var/lib/dpkg/status") == nil)
        #expect(files.content(of: "app/a.txt") == nil && files.content(of: "app/b.txt") == nil)
        #expect(files.text(of: "app/c.txt") == "c")
        #expect(files.text(of: "keep/x") == "x")
        #expect(!files.paths.contains("app/a.txt") && files.paths.contains("app/c.txt"))
        // A file deleted and added again in a higher layer is back.
        var again = TarBuilder()
        again.file("var/lib/dpkg/status", "new")
        #expect(try await view([base, top, again]).text(of: "var/lib/dpkg/status") == "new")
    }

    @Test("symbolic links resolve inside the image; loops and escapes end")
    func links() async throws {
        var layer = TarBuilder()
        layer.file("usr/lib/os-release", "ID=debian\n")
        layer.add("etc/os-release", type: "2", link: "../usr/lib/os-release")
        layer.add("escape", type: "2", link: "../../../../usr/lib/os-release")
        layer.add("loop-a", type: "2", link: "loop-b")
        layer.add("loop-b", type: "2", link: "loop-a")
        layer.add("lib", type: "2", link: "usr/lib")
        let files = try await view([layer])
        #expect(files.text(of: "etc/os-release") == "ID=debian\n")
        #expect(files.text(of: "escape") == "ID=debian\n")  // clamped at the root, like chroot
        #expect(files.text(of: "lib/os-release") == "ID=debian\n")
        #expect(files.content(of: "loop-a") == nil)
    }

    @Test("paths that climb out of the root are never applied")
    func traversal() async throws {
        var layer = TarBuilder()
        layer.file("../../etc/passwd", "root::0:0")
        layer.file("/../etc/shadow", "x")
        layer.file("ok/../etc/fine", "fine")
        let files = try await view([layer])
        #expect(files.paths == ["etc/fine"])
        #expect(files.text(of: "etc/fine") == "fine")
    }

    @Test("a layer that ends right after its last content (umoci) reads; one cut inside content does not")
    func endings() async throws {
        var layer = TarBuilder()
        layer.file("etc/os-release", "ID=alpine\n")
        layer.file("last.txt", "12345678")
        // As umoci writes layers: the last content, then nothing (no padding, no zero blocks).
        let unpadded = Array(layer.bytes.dropLast(504))
        var files = ImageFiles { _ in true }
        try await files.apply(layer: ArrayByteSource(unpadded))
        #expect(files.text(of: "last.txt") == "12345678")
        // Content itself cut short is still an error.
        var cut = ImageFiles { _ in true }
        await #expect(throws: TarError.truncated) { try await cut.apply(layer: ArrayByteSource(Array(layer.bytes.dropLast(510)))) }
    }

    @Test("limits: entries per layer, expanded bytes, corrupt headers")
    func limits() async throws {
        var many = TarBuilder()
        for i in 0..<50 { many.file("f\(i)", "x") }
        var small = ImageFiles.Limits()
        small.maximumEntriesPerLayer = 10
        await #expect(throws: TarError.limitExceeded("more than 10 entries in one layer")) { try await view([many], limits: small) }
        var tight = ImageFiles.Limits()
        tight.maximumExpandedBytes = 4096
        var big = TarBuilder()
        big.add("big", content: [UInt8](repeating: 1, count: 10_000))
        await #expect(throws: TarError.self) { try await view([big], limits: tight) }
        var corrupt = TarBuilder()
        corrupt.file("a", "a")
        var bytes = corrupt.archive
        bytes[10] ^= 0xFF
        var files = ImageFiles { _ in true }
        await #expect(throws: TarError.badHeader("checksum mismatch")) { try await files.apply(layer: ArrayByteSource(bytes)) }
        var truncated = ImageFiles { _ in true }
        var long = TarBuilder()
        long.add("long", content: [UInt8](repeating: 2, count: 1000))
        await #expect(throws: TarError.truncated) { try await truncated.apply(layer: ArrayByteSource(Array(long.bytes.prefix(600)))) }
    }
}
