/// Media types Wharf recognises. Any other manifest media type is refused; any layer/config media type is accepted.
public enum MediaType {
    public static let ociManifest = "application/vnd.oci.image.manifest.v1+json"
    public static let ociIndex = "application/vnd.oci.image.index.v1+json"
    public static let dockerManifest = "application/vnd.docker.distribution.manifest.v2+json"
    public static let dockerManifestList = "application/vnd.docker.distribution.manifest.list.v2+json"
    public static let dockerSchema1 = "application/vnd.docker.distribution.manifest.v1+json"
    public static let dockerSchema1Signed = "application/vnd.docker.distribution.manifest.v1+prettyjws"
    /// The short-lived OCI 1.1 release-candidate artifact manifest, dropped from the final spec.
    public static let ociArtifactManifestRC = "application/vnd.oci.artifact.manifest.v1+json"
    public static let ociEmpty = "application/vnd.oci.empty.v1+json"
    public static let ociLayerNondistributablePrefix = "application/vnd.oci.image.layer.nondistributable."
    public static let dockerForeignLayer = "application/vnd.docker.image.rootfs.foreign.diff.tar.gzip"

    /// Media types of manifests that describe a single image or artifact.
    public static let imageManifests: Set<String> = [ociManifest, dockerManifest]
    /// Media types of manifests that list other manifests.
    public static let indexes: Set<String> = [ociIndex, dockerManifestList]
    public static let supportedManifests: Set<String> = imageManifests.union(indexes)
    /// Layers a container runtime unpacks into a filesystem: what a scan reads and a pull gate
    /// guards. Signatures and attestations (cosign's simplesigning and DSSE layers), SBOMs and helm
    /// charts use other types, even when their config says "image".
    public static func isFilesystemLayer(_ mediaType: String) -> Bool {
        mediaType.hasPrefix("application/vnd.oci.image.layer.") || mediaType.hasPrefix("application/vnd.docker.image.rootfs.")
    }

    /// Configs of runnable container images (not signatures, SBOMs, Helm charts or other artifacts).
    public static let containerImageConfigs: Set<String> = [
        "application/vnd.oci.image.config.v1+json", "application/vnd.docker.container.image.v1+json",
    ]

    /// Strips parameters (`; charset=…`) and whitespace, lowercases. Used on Content-Type and Accept values.
    /// Whether a comma-separated `Accept` value lists exactly `mediaType` (any parameters after
    /// `;` ignored), comparing bytes without building strings.
    public static func listed(_ mediaType: String, in accept: String) -> Bool {
        let wanted = Array(mediaType.utf8)
        for item in accept.utf8.split(separator: UInt8(ascii: ","), omittingEmptySubsequences: true) {
            var type = item.prefix { $0 != UInt8(ascii: ";") }
            while let first = type.first, first == UInt8(ascii: " ") || first == UInt8(ascii: "\t") { type = type.dropFirst() }
            while let last = type.last, last == UInt8(ascii: " ") || last == UInt8(ascii: "\t") { type = type.dropLast() }
            if type.count == wanted.count, zip(type, wanted).allSatisfy({ ($0 | 0x20) == ($1 | 0x20) }) { return true }
        }
        return false
    }

    public static func base(of value: some StringProtocol) -> String {
        let string = String(value)
        let head = string.split(separator: ";", maxSplits: 1, omittingEmptySubsequences: false).first ?? Substring(string)
        return head.trimmingSpaces().lowercased()
    }

    /// Layers the registry need not hold: non-distributable ("foreign") layers.
    public static func isNonDistributable(_ mediaType: String) -> Bool {
        mediaType.hasPrefix(ociLayerNondistributablePrefix) || mediaType == dockerForeignLayer
    }
}

/// The OCI empty descriptor's content: `{}`. Manifests may reference it without the client uploading it.
public enum EmptyJSON {
    public static let bytes: [UInt8] = Array("{}".utf8)
    public static let sha256 = Digest.of(bytes, algorithm: .sha256)
    public static let sha512 = Digest.of(bytes, algorithm: .sha512)

    public static func isEmptyJSON(_ digest: Digest) -> Bool { digest == sha256 || digest == sha512 }
}

extension StringProtocol {
    /// The string without leading and trailing spaces and tabs.
    public func trimmingSpaces() -> Substring {
        var slice = Substring(self)
        while let first = slice.first, first == " " || first == "\t" { slice.removeFirst() }
        while let last = slice.last, last == " " || last == "\t" { slice.removeLast() }
        return slice
    }
}
