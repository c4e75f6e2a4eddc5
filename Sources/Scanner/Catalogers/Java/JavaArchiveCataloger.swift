import Foundation
import ZIPFoundation

/// Java archives (`.jar`, `.war`, `.ear`): Maven writes `META-INF/maven/<group>/<artifact>/pom.properties`
/// into every artifact it builds, with `groupId`, `artifactId` and `version`; a fat jar or a war carries
/// one per bundled library, and libraries nested as jars inside (`WEB-INF/lib/*.jar`, Spring Boot's
/// `BOOT-INF/lib/*.jar`) are opened in turn, one level deep.
public enum JavaArchiveCataloger {
    public static func wants(_ path: String) -> Bool {
        path.hasSuffix(".jar") || path.hasSuffix(".war") || path.hasSuffix(".ear")
    }

    /// Packages named `group:artifact`, as OSV's Maven ecosystem names them.
    public static func packages(archive bytes: [UInt8], location: String, depth: Int = 0) -> [DetectedPackage] {
        // From a private temporary file, not from memory: ZIPFoundation's in-memory reader traps
        // (a range with lowerBound > upperBound) when a crafted archive makes it seek past the end,
        // which one jar in any pushed image turned into a crash of the whole server (found by the
        // `packages` fuzz target; Fuzz/regressions/packages). Reading a file, it gets a short read
        // and an error instead.
        let file = FileManager.default.temporaryDirectory.appendingPathComponent("wharf-jar-\(UUID().uuidString)")
        guard FileManager.default.createFile(atPath: file.path, contents: Data(bytes), attributes: [.posixPermissions: 0o600]) else { return [] }
        defer { try? FileManager.default.removeItem(at: file) }
        guard let archive = try? Archive(url: file, accessMode: .read) else { return [] }
        var packages: [DetectedPackage] = []
        for entry in archive where entry.type == .file {
            let path = entry.path
            if path.hasPrefix("META-INF/maven/"), path.hasSuffix("/pom.properties"), entry.uncompressedSize < 1 << 20,
                let text = extract(entry, from: archive).flatMap({ String(bytes: $0, encoding: .utf8) }),
                let package = package(properties: text, location: location)
            {
                packages.append(package)
            } else if depth == 0, path.hasSuffix(".jar"), entry.uncompressedSize < 64 << 20,
                let nested = extract(entry, from: archive)
            {
                packages += Self.packages(archive: nested, location: location + "!/" + path, depth: 1)
            }
        }
        return packages
    }

    static func package(properties text: String, location: String) -> DetectedPackage? {
        var values: [String: String] = [:]
        for line in text.split(whereSeparator: \.isNewline) {
            let trimmed = line.trimmingASCIIWhitespace()
            guard !trimmed.hasPrefix("#"), let equals = trimmed.firstIndex(of: "=") else { continue }
            values[String(trimmed[..<equals].trimmingASCIIWhitespace())] = String(trimmed[trimmed.index(after: equals)...].trimmingASCIIWhitespace())
        }
        guard let group = values["groupId"], let artifact = values["artifactId"], let version = values["version"],
            !group.isEmpty, !artifact.isEmpty, !version.isEmpty
        else { return nil }
        return DetectedPackage(kind: .java, name: "\(group):\(artifact)", version: version, location: location)
    }

    private static func extract(_ entry: Entry, from archive: Archive) -> [UInt8]? {
        var bytes: [UInt8] = []
        do { _ = try archive.extract(entry, skipCRC32: false) { bytes += $0 } } catch { return nil }
        return bytes
    }
}
