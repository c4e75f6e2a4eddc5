import Foundation

/// The files of an image that cataloging needs, as the image's final filesystem shows them:
/// layers applied bottom to top, whiteouts (`.wh.<name>`) deleting what lower layers had,
/// opaque directories (`.wh..wh..opq`) hiding a lower layer's whole directory. Only files a
/// cataloger asks for are kept (and only up to a size), so memory stays bounded whatever the image.
public struct ImageFiles: Sendable {
    public struct File: Sendable, Equatable {
        public var content: [UInt8]
        public var mode: UInt32
        /// Index of the layer the file came from (0 is the base).
        public var layer: Int
    }

    public struct Limits: Sendable {
        /// Decompressed bytes across all layers.
        public var maximumExpandedBytes: Int64 = 8 << 30
        public var maximumEntriesPerLayer = 1_000_000
        /// Largest file kept in memory.
        public var maximumFileSize = 64 << 20
        /// All kept files together.
        public var maximumKeptBytes = 512 << 20
        /// Largest Java archive cataloged: written to a private temporary file as it streams past,
        /// never held in memory (a Spring Boot fat jar is often a few hundred MB).
        public var maximumJavaArchiveSize: Int64 = 4 << 30

        public init() {}
    }

    /// Look for secrets in every small text file (not only the wanted ones).
    public var detectSecrets = false
    public private(set) var secrets: [SecretFinding] = []
    /// Read the build info of Go executables as they stream past.
    public var probeGoBinaries = true
    /// Go build info by executable path, as the final view has them.
    public private(set) var goBinaries: [String: GoBinaryCataloger.BuildInfo] = [:]
    /// The layer each Go executable in `goBinaries` came from.
    public private(set) var goBinaryLayers: [String: Int] = [:]
    /// Catalog Java archives (`.jar`, `.war`, `.ear`, …) as they stream past.
    public var catalogJavaArchives = true
    /// The libraries in each Java archive of the final view, and the archive's layer.
    public private(set) var javaArchives: [String: JavaArchive] = [:]

    public struct JavaArchive: Sendable, Equatable {
        public var packages: [DetectedPackage]
        public var layer: Int
    }
    public private(set) var files: [String: File] = [:]
    public private(set) var symlinks: [String: String] = [:]
    /// Every path present in the final view (files, directories, links), for path-based catalogers.
    public private(set) var paths: Set<String> = []
    private var keptBytes = 0
    private var expandedBytes: Int64 = 0
    private var layerCount = 0
    public let limits: Limits
    private let wanted: @Sendable (String) -> Bool

    /// - Parameter wanted: which paths to keep the content of.
    public init(limits: Limits = Limits(), wanted: @escaping @Sendable (String) -> Bool) {
        self.limits = limits
        self.wanted = wanted
    }

    /// Applies the next layer (an uncompressed tar stream); returns the source as reading left it.
    @discardableResult
    public mutating func apply<Source: ByteSource>(layer source: Source) async throws -> Source {
        let layer = layerCount
        layerCount += 1
        var reader = TarReader(source, maximumEntries: limits.maximumEntriesPerLayer)
        var opaque: [String] = []
        var hiddenHere: Set<String> = []
        var added: [String] = []
        while let entry = try await reader.next() {
            expandedBytes += entry.size + 512
            guard expandedBytes <= limits.maximumExpandedBytes else {
                throw TarError.limitExceeded("the layers expand to more than \(limits.maximumExpandedBytes) bytes")
            }
            guard let path = entry.path else { continue }  // climbs out of the root: never applied
            let name = path.split(separator: "/").last.map(String.init) ?? path
            let directory = path.count > name.count ? String(path.dropLast(name.count + 1)) : ""
            if name == ".wh..wh..opq" {
                opaque.append(directory)
                continue
            }
            if name.hasPrefix(".wh.") {
                let target = (directory.isEmpty ? "" : directory + "/") + String(name.dropFirst(4))
                hiddenHere.insert(target)
                continue
            }
            added.append(path)
            switch entry.kind {
            case .file:
                goBinaries.removeValue(forKey: path)
                javaArchives.removeValue(forKey: path)
                if catalogJavaArchives, JavaArchiveCataloger.isArchive(path) {
                    if let old = files.removeValue(forKey: path) { keptBytes -= old.content.count }
                    symlinks.removeValue(forKey: path)
                    if entry.size > 0, entry.size <= limits.maximumJavaArchiveSize,
                        let packages = try await Self.catalogJavaArchive(from: &reader, location: "/" + path)
                    {
                        javaArchives[path] = JavaArchive(packages: packages, layer: layer)
                    }
                    continue
                }
                if wanted(path), entry.size <= Int64(limits.maximumFileSize), keptBytes + Int(entry.size) <= limits.maximumKeptBytes,
                    let content = try await reader.readContent(limit: limits.maximumFileSize)
                {
                    if let old = files[path] { keptBytes -= old.content.count }
                    files[path] = File(content: content, mode: entry.mode, layer: layer)
                    keptBytes += content.count
                } else {
                    if let old = files.removeValue(forKey: path) { keptBytes -= old.content.count }
                    let secretsWanted = detectSecrets && entry.size > 0 && entry.size <= 1 << 20 && !Self.skippedForSecrets(path)
                    let executable = probeGoBinaries && entry.mode & 0o111 != 0 && entry.size >= 1024
                    if secretsWanted, let content = try await reader.readContent(limit: 1 << 20) {
                        // Reported per layer: a secret deleted by a later layer is still in the image's blobs.
                        secrets += SecretDetector.scan(content: content, location: "/" + path, layer: layer)
                        if executable {
                            var probe = GoBinaryCataloger.Probe()
                            _ = probe.feed(content)
                            goBinaries[path] = probe.result
                            goBinaryLayers[path] = layer
                        }
                    } else if executable {
                        var probe = GoBinaryCataloger.Probe()
                        while let chunk = try await reader.readChunk(maximum: 1 << 20) {
                            if probe.feed(chunk) { break }
                        }
                        goBinaries[path] = probe.result
                        goBinaryLayers[path] = layer
                    }
                }
                symlinks.removeValue(forKey: path)
            case .symlink(let target):
                symlinks[path] = target
                goBinaries.removeValue(forKey: path)
                javaArchives.removeValue(forKey: path)
                if let old = files.removeValue(forKey: path) { keptBytes -= old.content.count }
            case .hardLink(let target):
                if let normalised = TarReader<Source>.normalise(target), let file = files[normalised], wanted(path) {
                    files[path] = File(content: file.content, mode: entry.mode, layer: layer)
                    keptBytes += file.content.count
                }
                if let normalised = TarReader<Source>.normalise(target), let archive = javaArchives[normalised] {
                    javaArchives[path] = JavaArchive(
                        packages: archive.packages.map { package in
                            var linked = package
                            linked.location = "/" + path + package.location.dropFirst(normalised.count + 1)
                            return linked
                        }, layer: layer)
                }
            case .directory, .other:
                break
            }
        }
        // Whiteouts and opaque directories hide what lower layers put there, not this layer's own entries.
        let addedHere = Set(added)
        func hide(_ path: String) {
            for key in Array(paths) where (key == path || key.hasPrefix(path + "/")) && !addedHere.contains(key) {
                paths.remove(key)
                if let old = files.removeValue(forKey: key), old.layer != layer { keptBytes -= old.content.count }
                if symlinks[key] != nil, !addedHere.contains(key) { symlinks.removeValue(forKey: key) }
                goBinaries.removeValue(forKey: key)
                javaArchives.removeValue(forKey: key)
            }
        }
        for target in hiddenHere { hide(target) }
        for directory in opaque {
            for key in Array(paths) where directory.isEmpty || key.hasPrefix(directory + "/") {
                guard !addedHere.contains(key) else { continue }
                paths.remove(key)
                if let old = files[key], old.layer != layer { files.removeValue(forKey: key); keptBytes -= old.content.count }
                if symlinks[key] != nil { symlinks.removeValue(forKey: key) }
                goBinaries.removeValue(forKey: key)
                javaArchives.removeValue(forKey: key)
            }
        }
        paths.formUnion(added)
        return reader.source
    }

    /// Streams the current entry into a private temporary file and catalogs it there; nil when
    /// the file cannot be written (the archive is then left out, as an unreadable one is).
    static func catalogJavaArchive<Source: ByteSource>(from reader: inout TarReader<Source>, location: String) async throws -> [DetectedPackage]? {
        let url = FileManager.default.temporaryDirectory.appendingPathComponent("wharf-layer-jar-\(UUID().uuidString)")
        guard FileManager.default.createFile(atPath: url.path, contents: nil, attributes: [.posixPermissions: 0o600]),
            let handle = try? FileHandle(forWritingTo: url)
        else { return nil }
        defer { try? FileManager.default.removeItem(at: url) }
        var written = true
        while let chunk = try await reader.readChunk(maximum: 1 << 20) {
            if written { written = (try? handle.write(contentsOf: chunk)) != nil }
        }
        try? handle.close()
        guard written else { return nil }
        return JavaArchiveCataloger.packages(archiveAt: url, location: location)
    }

    /// Documentation and translations: full of example keys, never the image's own secrets.
    static func skippedForSecrets(_ path: String) -> Bool {
        path.hasPrefix("usr/share/doc/") || path.hasPrefix("usr/share/man/") || path.hasPrefix("usr/share/locale/")
            || path.hasPrefix("usr/share/i18n/") || path.hasPrefix("usr/share/info/")
    }

    /// A kept file's content, following symbolic links inside the image (never outside its root,
    /// at most 40 hops, so link loops end).
    public func content(of path: String) -> [UInt8]? {
        var current = path
        for _ in 0..<40 {
            if let file = files[current] { return file.content }
            guard let resolved = resolveOneLink(current) else { return nil }
            current = resolved
        }
        return nil
    }

    /// Replaces the first symlinked prefix of `path` by its target; nil when nothing is linked.
    private func resolveOneLink(_ path: String) -> String? {
        let parts = path.split(separator: "/").map(String.init)
        for end in stride(from: parts.count, through: 1, by: -1) {
            let prefix = parts[0..<end].joined(separator: "/")
            guard let target = symlinks[prefix] else { continue }
            let base = target.hasPrefix("/") ? "" : parts[0..<(end - 1)].joined(separator: "/")
            let rest = parts[end...].joined(separator: "/")
            let combined = [base, target, rest].filter { !$0.isEmpty }.joined(separator: "/")
            // `..` cannot climb above the root: clamp, as the kernel does for chroot'ed lookups.
            var resolved: [Substring] = []
            for component in combined.split(separator: "/") {
                if component == "." { continue }
                if component == ".." { if !resolved.isEmpty { resolved.removeLast() }; continue }
                resolved.append(component)
            }
            return resolved.joined(separator: "/")
        }
        return nil
    }

    public func text(of path: String) -> String? { content(of: path).map { String(decoding: $0, as: UTF8.self) } }
}
