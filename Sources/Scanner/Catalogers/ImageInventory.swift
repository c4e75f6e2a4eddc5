/// What an image contains, as the scanner sees it: its distribution and every package found.
public struct ImageInventory: Sendable, Equatable, Codable {
    public var operatingSystem: OperatingSystem?
    public var packages: [DetectedPackage]
    /// Layers read and bytes they expanded to (for reports and benchmarks).
    public var layers: Int
    public var expandedBytes: Int64
    /// Secrets in layer files and the image config (when detection was asked for).
    public var secrets: [SecretFinding] = []
    /// Digests of the layers read, bottom first, when the caller knows them: a package's `layer`
    /// indexes this list (SBOMs name the layer by digest).
    public var layerDigests: [String]?

    public init(operatingSystem: OperatingSystem?, packages: [DetectedPackage], layers: Int = 0, expandedBytes: Int64 = 0) {
        self.operatingSystem = operatingSystem
        self.packages = packages
        self.layers = layers
        self.expandedBytes = expandedBytes
    }
}

/// Runs every cataloger over an image's final filesystem view.
public enum Inventory {
    static let releaseFiles: Set<String> = [
        "etc/os-release", "usr/lib/os-release", "etc/alpine-release", "etc/debian_version", "etc/lsb-release",
        "var/lib/dpkg/status", "lib/apk/db/installed",
    ]

    /// The files catalogers read; nothing else is kept in memory.
    public static func wants(_ path: String) -> Bool {
        if releaseFiles.contains(path) { return true }
        if path.hasPrefix("var/lib/dpkg/status.d/") { return !path.hasSuffix(".md5sums") }
        return PythonCataloger.wants(path) || NpmCataloger.wants(path) || CargoLockCataloger.wants(path)
            || JavaArchiveCataloger.wants(path) || RpmCataloger.wants(path)
    }

    /// Reads the layers (bottom first) and catalogs the result.
    public static func of<Layer: ChunkSource>(
        layers: [Layer], config: [UInt8]? = nil, detectSecrets: Bool = false,
        limits: ImageFiles.Limits = .init(),
        expansion: ExpansionLimits = .init()
    ) async throws -> ImageInventory {
        var files = ImageFiles(limits: limits, wanted: wants)
        files.detectSecrets = detectSecrets
        var expanded: Int64 = 0
        for layer in layers {
            let finished = try await files.apply(layer: LayerByteSource(layer, limits: expansion))
            expanded += finished.expandedBytes
        }
        var inventory = await of(files)
        inventory.layers = layers.count
        inventory.expandedBytes = expanded
        if detectSecrets {
            inventory.secrets = (config.map(SecretDetector.scan(config:)) ?? []) + files.secrets
        }
        return inventory
    }

    public static func of(_ files: ImageFiles) async -> ImageInventory {
        let os = OperatingSystem.detect { files.text(of: $0) }
        var packages: [DetectedPackage] = []
        /// Marks the packages found since `start` as read from `path`'s layer.
        func fromLayer(of path: String, since start: Int) {
            guard let layer = files.files[path]?.layer else { return }
            for index in start..<packages.count { packages[index].layer = layer }
        }
        if let status = files.text(of: "var/lib/dpkg/status") {
            packages += DpkgCataloger.packages(status: status, location: "/var/lib/dpkg/status")
            fromLayer(of: "var/lib/dpkg/status", since: 0)
        }
        for path in files.files.keys.sorted() {
            let location = "/" + path
            let start = packages.count
            defer { fromLayer(of: path, since: start) }
            if path.hasPrefix("var/lib/dpkg/status.d/") {
                packages += DpkgCataloger.packages(status: files.text(of: path) ?? "", location: location)
            } else if path == "lib/apk/db/installed" {
                packages += ApkCataloger.packages(installed: files.text(of: path) ?? "", location: location)
            } else if PythonCataloger.wants(path), let text = files.text(of: path),
                let package = PythonCataloger.package(metadata: text, location: location)
            {
                packages.append(package)
            } else if NpmCataloger.wants(path), let bytes = files.content(of: path),
                let package = NpmCataloger.package(json: bytes, location: location)
            {
                packages.append(package)
            } else if CargoLockCataloger.wants(path), let text = files.text(of: path) {
                packages += CargoLockCataloger.packages(lock: text, location: location)
            } else if JavaArchiveCataloger.wants(path), let text = files.text(of: path),
                let package = JavaArchiveCataloger.package(properties: text, location: location)
            {
                packages.append(package)
            }
        }
        // rpm keeps one database; an image converted from BerkeleyDB may still carry the old file.
        let rpmDatabases = RpmCataloger.sqlitePaths.union(RpmCataloger.berkeleyPaths).sorted {
            (RpmCataloger.sqlitePaths.contains($0) ? 0 : 1, $0) < (RpmCataloger.sqlitePaths.contains($1) ? 0 : 1, $1)
        }
        for path in rpmDatabases {
            guard let bytes = files.content(of: path),
                let found = try? await RpmCataloger.packages(database: bytes, location: "/" + path)
            else { continue }
            let start = packages.count
            packages += found
            fromLayer(of: path, since: start)
            break
        }
        for (_, archive) in files.javaArchives.sorted(by: { $0.key < $1.key }) {
            packages += archive.packages.map { package in
                var package = package
                package.layer = archive.layer
                return package
            }
        }
        for (path, info) in files.goBinaries.sorted(by: { $0.key < $1.key }) {
            let start = packages.count
            packages += GoBinaryCataloger.packages(info, location: "/" + path)
            for index in start..<packages.count { packages[index].layer = files.goBinaryLayers[path] }
        }
        return ImageInventory(operatingSystem: os, packages: packages)
    }
}
