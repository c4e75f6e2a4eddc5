import Foundation
import ZIPFoundation

/// Java archives and the libraries inside them, at any depth: an `.ear` holds `.war`s, a `.war`
/// holds `WEB-INF/lib/*.jar`, a Spring Boot jar holds `BOOT-INF/lib/*.jar`, a Jenkins plugin
/// (`.hpi`, `.jpi`) holds `WEB-INF/lib`, a resource adapter (`.rar`) holds jars.
///
/// Each archive is named by the best evidence it carries: Maven's `META-INF/maven/<group>/<artifact>/
/// pom.properties` (one per bundled library in a shaded jar), else its manifest and file name
/// (`JarIdentity`). One library is listed once per archive however many of these describe it.
public enum JavaArchiveCataloger {
    /// Every kind of Java archive that is a zip of classes and further archives.
    static let archiveExtensions: Set<String> = ["jar", "war", "ear", "rar", "sar", "par", "jpi", "hpi", "kar", "nar"]

    /// Bounds for opening nested archives, as the layer reader's: a zip bomb or a deep chain of
    /// archives costs disk up to `maximumExtractedBytes` and no memory beyond one small entry.
    public struct Limits: Sendable {
        /// Archives inside archives: an `.ear` → `.war` → `.jar` chain is depth 2.
        public var maximumDepth = 8
        /// Bytes of nested archives extracted, across one top-level archive.
        public var maximumExtractedBytes: Int64 = 2 << 30
        /// Nested archives opened, across one top-level archive.
        public var maximumArchives = 20_000
        /// Largest `pom.properties` or `MANIFEST.MF` read.
        public var maximumMetadataSize: Int64 = 1 << 20

        public init() {}
    }

    /// The files kept in memory for this cataloger: an exploded application's
    /// `META-INF/maven/…/pom.properties` (archives themselves are cataloged as the layer streams
    /// past, `ImageFiles.javaArchives`).
    public static func wants(_ path: String) -> Bool {
        path.hasSuffix("/pom.properties") && path.contains("META-INF/maven/")
    }

    public static func isArchive(_ path: String) -> Bool {
        guard let dot = path.lastIndex(of: "."), path.lastIndex(of: "/").map({ $0 < dot }) ?? true else { return false }
        return archiveExtensions.contains(path[path.index(after: dot)...].lowercased())
    }

    /// Packages named `group:artifact`, as OSV's Maven ecosystem names them.
    public static func packages(archive bytes: [UInt8], location: String, limits: Limits = .init()) -> [DetectedPackage] {
        // From a private temporary file, not from memory: ZIPFoundation's in-memory reader traps
        // (a range with lowerBound > upperBound) when a crafted archive makes it seek past the end,
        // which one jar in any pushed image turned into a crash of the whole server (found by the
        // `packages` fuzz target; Fuzz/regressions/packages). Reading a file, it gets a short read
        // and an error instead.
        guard let file = temporaryFile() else { return [] }
        defer { try? FileManager.default.removeItem(at: file) }
        guard FileManager.default.createFile(atPath: file.path, contents: Data(bytes), attributes: [.posixPermissions: 0o600]) else { return [] }
        return packages(archiveAt: file, location: location, limits: limits)
    }

    /// Packages of an archive already on disk (the layer reader streams each one to a file).
    public static func packages(archiveAt file: URL, location: String, limits: Limits = .init()) -> [DetectedPackage] {
        var walk = Walk(limits: limits)
        catalog(file: file, location: location, depth: 0, walk: &walk)
        return walk.packages
    }

    /// What one walk over an archive tree has spent and found.
    struct Walk {
        let limits: Limits
        var extractedBytes: Int64 = 0
        var archives = 0
        var packages: [DetectedPackage] = []
    }

    static func catalog(file: URL, location: String, depth: Int, walk: inout Walk) {
        guard let archive = try? Archive(url: file, accessMode: .read) else { return }
        var described: [DetectedPackage] = []
        var manifest: JarManifest?
        var nested: [Entry] = []
        for entry in archive where entry.type == .file {
            let path = entry.path
            if path.hasPrefix("META-INF/maven/"), path.hasSuffix("/pom.properties"), entry.uncompressedSize <= walk.limits.maximumMetadataSize {
                if let text = extract(entry, from: archive).flatMap({ String(bytes: $0, encoding: .utf8) }),
                    let package = package(properties: text, location: location),
                    !described.contains(where: { $0.name == package.name && $0.version == package.version })
                {
                    described.append(package)
                }
            } else if path == "META-INF/MANIFEST.MF", entry.uncompressedSize <= walk.limits.maximumMetadataSize {
                manifest = extract(entry, from: archive).map { JarManifest(String(decoding: $0, as: UTF8.self)) }
            } else if isArchive(path) {
                nested.append(entry)
            }
        }
        // The archive's own identity, unless its pom.properties already name it: where any exist,
        // only a manifest naming an artifact none of them names adds one (a jar Gradle built
        // that shades Maven-built libraries); a file name alone does not.
        let fileName = String(location.split(separator: "/").last ?? "")
        if let identity = JarIdentity.identify(manifest: manifest, fileName: fileName),
            described.isEmpty
                || identity.identifiedBy == .manifest
                    && !described.contains(where: { $0.name.split(separator: ":").last.map(String.init) == identity.artifact })
        {
            described.append(
                DetectedPackage(
                    kind: .java, name: identity.name, version: identity.version, location: location,
                    identifiedBy: identity.identifiedBy, confidence: identity.confidence))
        }
        walk.packages += described

        guard depth < walk.limits.maximumDepth else { return }
        for entry in nested {
            let size = Int64(clamping: entry.uncompressedSize)
            guard walk.archives < walk.limits.maximumArchives, size <= walk.limits.maximumExtractedBytes - walk.extractedBytes,
                let inner = temporaryFile()
            else { continue }
            defer { try? FileManager.default.removeItem(at: inner) }
            walk.archives += 1
            walk.extractedBytes += size
            // To disk in chunks, not to memory; an entry that inflates past the size it declared
            // (and was budgeted for) is cut off and skipped.
            guard let handle = try? FileHandle(forWritingTo: inner) else { continue }
            var written: Int64 = 0
            let complete: Bool
            do {
                _ = try archive.extract(entry, skipCRC32: false) { chunk in
                    written += Int64(chunk.count)
                    guard written <= size else { throw CatalogError.entryLargerThanDeclared }
                    try handle.write(contentsOf: chunk)
                }
                complete = true
            } catch {
                complete = false
            }
            try? handle.close()
            guard complete else { continue }
            catalog(file: inner, location: location + "!/" + entry.path, depth: depth + 1, walk: &walk)
        }
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
        return DetectedPackage(kind: .java, name: "\(group):\(artifact)", version: version, location: location, identifiedBy: .pomProperties, confidence: .high)
    }

    enum CatalogError: Error { case entryLargerThanDeclared }

    private static func temporaryFile() -> URL? {
        let url = FileManager.default.temporaryDirectory.appendingPathComponent("wharf-jar-\(UUID().uuidString)")
        return FileManager.default.createFile(atPath: url.path, contents: nil, attributes: [.posixPermissions: 0o600]) ? url : nil
    }

    /// A small entry (already checked against the metadata limit) in memory, cut off if it
    /// inflates past the size it declared.
    private static func extract(_ entry: Entry, from archive: Archive) -> [UInt8]? {
        var bytes: [UInt8] = []
        let declared = entry.uncompressedSize
        do {
            _ = try archive.extract(entry, skipCRC32: false) { chunk in
                guard UInt64(bytes.count) + UInt64(chunk.count) <= UInt64(declared) else { throw CatalogError.entryLargerThanDeclared }
                bytes += chunk
            }
        } catch { return nil }
        return bytes
    }
}
