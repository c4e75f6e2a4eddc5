import CompressNIO
import Foundation
import NIOCore
import Testing

@testable import Scanner

/// Compressed layers, the real images of ../shared/testdata/images and decompression bombs.
@Suite("Layer streams and local images")
struct LayerStreamTests {
    static func sampleLayer() -> TarBuilder {
        var layer = TarBuilder()
        layer.add("etc/", type: "5")
        layer.file("etc/os-release", "ID=debian\nVERSION_ID=\"12\"\n")
        layer.add("usr/share/blob", content: (0..<300_000).map { UInt8(truncatingIfNeeded: $0 &* 31 &+ $0 >> 9) })
        layer.file("var/lib/dpkg/status", "Package: tzdata\nStatus: install ok installed\nVersion: 2024a-0+deb12u1\n")
        return layer
    }

    static func gzip(_ bytes: [UInt8]) throws -> [UInt8] {
        var buffer = ByteBuffer(bytes: bytes)
        var compressed = try buffer.compress(with: .gzip)
        return compressed.readBytes(length: compressed.readableBytes) ?? []
    }

    static func zstd(_ bytes: [UInt8]) throws -> [UInt8] {
        try Shell.run("zstd", ["-q", "-c", "-3"], input: bytes)
    }

    func contents(_ bytes: [UInt8], chunkSize: Int) async throws -> ([String: [UInt8]], LayerCompression) {
        var files = ImageFiles { _ in true }
        let source = try await files.apply(layer: LayerByteSource(BufferChunks(bytes, chunkSize: chunkSize)))
        return (files.files.mapValues(\.content), source.compression)
    }

    @Test("gzip, zstd and plain layers read the same, whatever the chunking", arguments: [3, 512, 4096, 1 << 20])
    func compressions(chunkSize: Int) async throws {
        let plain = Self.sampleLayer().archive
        let (expected, none) = try await contents(plain, chunkSize: chunkSize)
        #expect(none == .none)
        #expect(expected["etc/os-release"] == Array("ID=debian\nVERSION_ID=\"12\"\n".utf8))
        #expect(expected["usr/share/blob"]?.count == 300_000)
        let (fromGzip, gzip) = try await contents(try Self.gzip(plain), chunkSize: chunkSize)
        #expect(gzip == .gzip)
        #expect(fromGzip == expected)
        let (fromZstd, zstd) = try await contents(try Self.zstd(plain), chunkSize: chunkSize)
        #expect(zstd == .zstd)
        #expect(fromZstd == expected)
    }

    @Test("a zstd layer of several frames reads as one stream")
    func zstdFrames() async throws {
        let plain = Self.sampleLayer().archive
        let split = plain.count / 2 / 512 * 512
        let frames = try Self.zstd(Array(plain[..<split])) + Self.zstd(Array(plain[split...]))
        let (files, _) = try await contents(frames, chunkSize: 1000)
        #expect(files["var/lib/dpkg/status"] != nil)
        #expect(files["usr/share/blob"]?.count == 300_000)
    }

    @Test("corrupt and truncated compressed layers fail with a clear error")
    func corrupt() async throws {
        let plain = Self.sampleLayer().archive
        var badMethod = try Self.gzip(plain)
        badMethod[2] = 7  // not deflate
        await #expect(throws: LayerError.corrupt("invalid gzip data")) { _ = try await contents(badMethod, chunkSize: 4096) }
        var garbled = try Self.gzip(plain)
        for index in 30..<200 { garbled[index] ^= 0xA5 }
        await #expect(throws: (any Error).self) { _ = try await contents(garbled, chunkSize: 4096) }
        let gzip = try Self.gzip(plain)
        let cut = Array(gzip.prefix(gzip.count / 2))
        await #expect(throws: TarError.truncated) { _ = try await contents(cut, chunkSize: 4096) }
        let zstd = try Self.zstd(plain)
        let zstdCut = Array(zstd.prefix(zstd.count / 2))
        await #expect(throws: TarError.truncated) { _ = try await contents(zstdCut, chunkSize: 4096) }
        var zstdBad = try Self.zstd(plain)
        for index in 20..<60 { zstdBad[index] ^= 0x5A }
        do {
            _ = try await contents(zstdBad, chunkSize: 4096)
            Issue.record("a corrupt zstd layer was accepted")
        } catch let error as LayerError {
            #expect(error.description.contains("zstd"))
        } catch is TarError {
            // The damaged frame still decoded, to bytes that are no tar stream: refused all the same.
        } catch {
            Issue.record("a corrupt zstd layer failed with an unexpected error: \(error)")
        }
    }

    /// A gzip layer that expands to 10 GiB (ten 1 GiB files of zeros) in about 10 MB: deflate
    /// blocks ended by a full flush are byte-aligned and independent, so one is repeated.
    static func gzipBomb(at path: String, fileCount: Int, fileSize: Int64) throws {
        let script = """
            import sys, tarfile, zlib, struct
            path, count, size = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
            block = zlib.compressobj(9, zlib.DEFLATED, -15)
            zeros = block.compress(bytes(1 << 20)) + block.flush(zlib.Z_FULL_FLUSH)
            with open(path, "wb") as out:
                out.write(b"\\x1f\\x8b\\x08\\x00\\x00\\x00\\x00\\x00\\x00\\xff")
                deflate = zlib.compressobj(9, zlib.DEFLATED, -15)
                for n in range(count):
                    info = tarfile.TarInfo(f"zeros/{n}"); info.size = size
                    out.write(deflate.compress(info.tobuf(format=tarfile.GNU_FORMAT)) + deflate.flush(zlib.Z_FULL_FLUSH))
                    for _ in range(size >> 20):
                        out.write(zeros)
                out.write(deflate.compress(bytes(1024)) + deflate.flush(zlib.Z_FINISH))
                # The CRC is not of the content (computing it costs seconds); a reader must refuse long before.
                out.write(struct.pack("<II", 0, (count * (size + 512) + 1024) & 0xFFFFFFFF))
            """
        _ = try Shell.run("python3", ["-c", script, path, String(fileCount), String(fileSize)])
    }

    @Test("a gzip bomb expanding to 10 GiB is refused early, in bounded time and memory")
    func gzipBomb() async throws {
        let directory = try TemporaryDirectory()
        let path = directory.path + "/bomb.tar.gz"
        try Self.gzipBomb(at: path, fileCount: 10, fileSize: 1 << 30)
        let compressedSize = try FileManager.default.attributesOfItem(atPath: path)[.size] as? Int ?? 0
        #expect(compressedSize < 12 << 20)
        let started = ContinuousClock.now
        do {
            _ = try await Inventory.of(layers: [try FileChunks(path: path)])
            Issue.record("the bomb was read to the end")
        } catch let error as TarError {
            guard case .limitExceeded(let why) = error else { Issue.record("unexpected \(error)"); return }
            #expect(why.contains("decompression bomb"))
        }
        #expect(ContinuousClock.now - started < .seconds(20))
        // And with the ratio check off, the total expansion limit still stops it.
        var limits = ExpansionLimits()
        limits.maximumRatio = .max
        limits.maximumBytes = 512 << 20
        await #expect(throws: TarError.limitExceeded("the layer expands to more than \(512 << 20) bytes")) {
            _ = try await Inventory.of(layers: [try FileChunks(path: path)], expansion: limits)
        }
    }

    @Test("a layer declaring one 10 GiB file is refused at its header")
    func hugeEntry() async throws {
        let directory = try TemporaryDirectory()
        let path = directory.path + "/huge.tar.gz"
        try Self.gzipBomb(at: path, fileCount: 1, fileSize: 10 << 30)
        var limits = ImageFiles.Limits()
        limits.maximumExpandedBytes = 8 << 30
        await #expect(throws: TarError.self) {
            _ = try await Inventory.of(layers: [try FileChunks(path: path)], limits: limits)
        }
    }

    @Test(
        "the Alpine docker-save archives: OS and exactly their 14 apk packages",
        arguments: [
            ("alpine-310.tar.gz", "3.10.4", ["musl": "1.1.22-r3", "busybox": "1.30.1-r3", "alpine-baselayout": "3.1.2-r0"]),
            ("alpine-311.tar.gz", "3.11.5", ["musl": "1.1.24-r2", "libcrypto1.1": "1.1.1d-r3", "libssl1.1": "1.1.1d-r3"]),
        ])
    func alpineImages(file: String, version: String, some: [String: String]) async throws {
        let path = try TestData.url("images", file).path
        let image = try await LocalImage.open("docker-archive:\(path)")
        defer { image.close() }
        #expect(image.layers.count == 1)
        #expect(String(decoding: image.config, as: UTF8.self).contains("\"architecture\":\"amd64\""))
        let inventory = try await Inventory.of(layers: try image.layers.map { try $0.chunks() })
        #expect(inventory.operatingSystem?.id == "alpine")
        #expect(inventory.operatingSystem?.versionID == version)
        #expect(inventory.packages.count == 14)
        #expect(Set(inventory.packages.map(\.kind)) == [.apk])
        let versions = Dictionary(inventory.packages.map { ($0.name, $0.version) }, uniquingKeysWith: { a, _ in a })
        for (name, expected) in some { #expect(versions[name] == expected, "\(name)") }
        #expect(inventory.packages.first { $0.name == "libcrypto1.1" }?.sourceName == (file.contains("311") ? "openssl" : "openssl"))
    }

    @Test("an OCI layout written by skopeo reads like the archive it came from")
    func ociLayout() async throws {
        guard Shell.exists("skopeo") else {
            Issue.record("skopeo is not installed (scripts/install-deps.sh installs it)")
            return
        }
        let directory = try TemporaryDirectory()
        let compressed = try TestData.url("images", "alpine-311.tar.gz").path
        // skopeo reads only uncompressed docker archives (Wharf reads both); it writes gzip layers.
        let archive = directory.path + "/alpine-311.tar"
        FileManager.default.createFile(atPath: archive, contents: Data(try Shell.run("gzip", ["-dc", compressed])))
        let fromArchive = try await LocalImage.open("docker-archive:\(archive):alpine:3.11")
        #expect(fromArchive.layers.first?.length == 5_589_504 || fromArchive.layers.first?.length ?? 0 > 0)
        let archiveInventory = try await Inventory.of(layers: try fromArchive.layers.map { try $0.chunks() })
        #expect(archiveInventory.packages.count == 14)
        _ = try Shell.run("skopeo", ["copy", "--quiet", "docker-archive:\(archive)", "oci:\(directory.path)/layout:3.11"])
        let image = try await LocalImage.open("oci:\(directory.path)/layout:3.11")
        let inventory = try await Inventory.of(layers: try image.layers.map { try $0.chunks() })
        #expect(inventory.operatingSystem?.versionID == "3.11.5")
        #expect(inventory.packages.count == 14)
        await #expect(throws: LocalImage.Failure.self) { _ = try await LocalImage.open("oci:\(directory.path)/layout:nope") }
        await #expect(throws: LocalImage.Failure.self) { _ = try await LocalImage.open("registry:thing") }
    }
}

/// A private folder removed when the test ends.
final class TemporaryDirectory {
    let path: String
    init() throws {
        path = NSTemporaryDirectory() + "wharf-scanner-test-" + UUID().uuidString
        try FileManager.default.createDirectory(atPath: path, withIntermediateDirectories: true)
    }
    deinit { try? FileManager.default.removeItem(atPath: path) }
}

enum Shell {
    struct Failed: Error, CustomStringConvertible {
        let description: String
    }

    static func exists(_ tool: String) -> Bool {
        (ProcessInfo.processInfo.environment["PATH"] ?? "/usr/bin:/bin").split(separator: ":").contains {
            FileManager.default.isExecutableFile(atPath: "\($0)/\(tool)")
        }
    }

    /// Runs a tool, feeding `input` on stdin; returns stdout, throws with stderr on failure.
    static func run(_ tool: String, _ arguments: [String], input: [UInt8] = []) throws -> [UInt8] {
        let process = Process()
        process.executableURL = URL(fileURLWithPath: "/usr/bin/env")
        process.arguments = [tool] + arguments
        let stdin = Pipe(), stdout = Pipe(), stderr = Pipe()
        process.standardInput = stdin
        process.standardOutput = stdout
        process.standardError = stderr
        try process.run()
        let writer = Thread {
            try? stdin.fileHandleForWriting.write(contentsOf: Data(input))
            try? stdin.fileHandleForWriting.close()
        }
        writer.start()
        let output = stdout.fileHandleForReading.readDataToEndOfFile()
        let errors = stderr.fileHandleForReading.readDataToEndOfFile()
        process.waitUntilExit()
        guard process.terminationStatus == 0 else {
            throw Failed(description: "\(tool) \(arguments.prefix(2).joined(separator: " ")) failed: \(String(decoding: errors, as: UTF8.self))")
        }
        return [UInt8](output)
    }
}
