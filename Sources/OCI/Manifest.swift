#if canImport(FoundationEssentials)
import FoundationEssentials
#else
import Foundation
#endif

/// An OCI content descriptor. Only the fields Wharf reads are modelled; the manifest's bytes are
/// always stored and served exactly as pushed, so unknown fields are never lost.
public struct Descriptor: Codable, Sendable, Hashable {
    public var mediaType: String
    public var digest: Digest
    public var size: Int64
    public var urls: [String]?
    public var annotations: [String: String]?
    public var data: String?
    public var artifactType: String?
    public var platform: Platform?

    public init(mediaType: String, digest: Digest, size: Int64, annotations: [String: String]? = nil, artifactType: String? = nil) {
        self.mediaType = mediaType
        self.digest = digest
        self.size = size
        self.annotations = annotations
        self.artifactType = artifactType
    }
}

public struct Platform: Codable, Sendable, Hashable {
    public var architecture: String
    public var os: String
    public var variant: String?
    public var osVersion: String?
    public var osFeatures: [String]?

    enum CodingKeys: String, CodingKey {
        case architecture, os, variant
        case osVersion = "os.version"
        case osFeatures = "os.features"
    }
}

/// A manifest accepted by the parser: what it is and what it points at.
public struct ParsedManifest: Sendable {
    public enum Kind: String, Sendable { case image, index }

    public let mediaType: String
    public let kind: Kind
    public let config: Descriptor?
    public let layers: [Descriptor]
    /// An index's children.
    public let manifests: [Descriptor]
    public let subject: Descriptor?
    public let artifactType: String?
    public let annotations: [String: String]?

    /// Blobs that must already be in the repository: config and layers, except non-distributable layers.
    public var requiredBlobs: [Descriptor] {
        var result: [Descriptor] = []
        if let config { result.append(config) }
        result.append(contentsOf: layers.filter { !MediaType.isNonDistributable($0.mediaType) })
        return result
    }

    /// The `artifactType` a referrers listing shows: the manifest's own, else (for images) the config's media type.
    public var referrerArtifactType: String? {
        if let artifactType, !artifactType.isEmpty { return artifactType }
        return kind == .image ? config?.mediaType : nil
    }
}

public enum ManifestParser {
    /// Manifests larger than this are refused with 413; the spec asks registries to accept at least 4 MiB.
    public static let maximumSize = 4 * 1024 * 1024

    /// Parses and validates manifest bytes. `contentType` is the request's Content-Type, used when the
    /// manifest has no `mediaType` field (umoci writes such manifests).
    public static func parse(_ bytes: [UInt8], contentType: String?) throws(RegistryError) -> ParsedManifest {
        let raw: RawManifest
        do {
            raw = try JSONDecoder().decode(RawManifest.self, from: Data(bytes))
        } catch let error as DecodingError {
            throw .manifestInvalid("manifest is not a valid manifest document: \(describe(error))")
        } catch {
            throw .manifestInvalid("manifest is not valid JSON")
        }

        let headerType = contentType.map { MediaType.base(of: $0) }
        if raw.schemaVersion == 1 || raw.fsLayers != nil
            || [MediaType.dockerSchema1, MediaType.dockerSchema1Signed].contains(raw.mediaType ?? headerType ?? "")
        {
            throw .manifestInvalid(
                "Docker schema 1 manifests are deprecated and not accepted; push Docker schema 2 or OCI instead (for example: skopeo copy --format v2s2)")
        }
        if raw.mediaType == MediaType.ociArtifactManifestRC || headerType == MediaType.ociArtifactManifestRC {
            throw .manifestInvalid("\(MediaType.ociArtifactManifestRC) was dropped from OCI 1.1; push an image manifest with artifactType instead")
        }

        let mediaType: String
        if let declared = raw.mediaType {
            if let headerType, MediaType.supportedManifests.contains(headerType), headerType != declared {
                throw .manifestInvalid("Content-Type '\(headerType)' does not match the manifest's mediaType '\(declared)'")
            }
            mediaType = declared
        } else if let headerType, MediaType.supportedManifests.contains(headerType) {
            mediaType = headerType
        } else if raw.manifests != nil {
            mediaType = MediaType.ociIndex
        } else if raw.config != nil {
            mediaType = MediaType.ociManifest
        } else {
            throw .manifestInvalid("cannot tell the manifest's type: it has no mediaType field, no manifest Content-Type, and neither config nor manifests")
        }
        guard MediaType.supportedManifests.contains(mediaType) else {
            throw .manifestInvalid(
                "manifest media type '\(mediaType)' is not supported; supported: \(MediaType.supportedManifests.sorted().joined(separator: ", "))")
        }
        guard raw.schemaVersion == 2 else {
            throw .manifestInvalid("schemaVersion must be 2, got \(raw.schemaVersion.map(String.init) ?? "none")")
        }

        let kind: ParsedManifest.Kind = MediaType.indexes.contains(mediaType) ? .index : .image
        switch kind {
        case .image:
            guard let config = raw.config else {
                throw .manifestInvalid("an image manifest needs a config descriptor")
            }
            try validate(config, at: "config")
            for (i, layer) in (raw.layers ?? []).enumerated() { try validate(layer, at: "layers[\(i)]") }
        case .index:
            guard let manifests = raw.manifests else {
                throw .manifestInvalid("an image index needs a manifests array")
            }
            for (i, child) in manifests.enumerated() {
                try validate(child, at: "manifests[\(i)]")
                if MediaType.dockerSchema1 == child.mediaType || MediaType.dockerSchema1Signed == child.mediaType {
                    throw .manifestInvalid("manifests[\(i)] is a Docker schema 1 manifest, which is not accepted")
                }
            }
        }
        if let subject = raw.subject { try validate(subject, at: "subject") }

        return ParsedManifest(
            mediaType: mediaType,
            kind: kind,
            config: kind == .image ? raw.config : nil,
            layers: kind == .image ? (raw.layers ?? []) : [],
            manifests: kind == .index ? (raw.manifests ?? []) : [],
            subject: raw.subject,
            artifactType: raw.artifactType,
            annotations: raw.annotations
        )
    }

    private static func validate(_ descriptor: Descriptor, at path: String) throws(RegistryError) {
        guard descriptor.size >= 0 else {
            throw .manifestInvalid("\(path).size must not be negative")
        }
        guard !descriptor.mediaType.isEmpty else {
            throw .manifestInvalid("\(path).mediaType must not be empty")
        }
        if let data = descriptor.data {
            // Embedded data must be exactly the content the descriptor names.
            guard let decoded = Data(base64Encoded: data) else {
                throw .manifestInvalid("\(path).data is not valid base64")
            }
            guard Int64(decoded.count) == descriptor.size,
                Digest.of(decoded, algorithm: descriptor.digest.algorithm) == descriptor.digest
            else {
                throw .manifestInvalid("\(path).data does not match the descriptor's digest and size")
            }
        }
    }

    private static func describe(_ error: DecodingError) -> String {
        func path(_ context: DecodingError.Context) -> String {
            let joined = context.codingPath.map { key in key.intValue.map { "[\($0)]" } ?? ".\(key.stringValue)" }.joined()
            return joined.isEmpty ? "document" : String(joined.drop(while: { $0 == "." }))
        }
        switch error {
        case .keyNotFound(let key, let context):
            let base = path(context)
            return "\(base == "document" ? "" : base + ".")\(key.stringValue) is required"
        case .typeMismatch(_, let context), .valueNotFound(_, let context):
            return "\(path(context)) has the wrong type: \(context.debugDescription)"
        case .dataCorrupted(let context):
            return "\(path(context)): \(context.debugDescription)"
        @unknown default:
            return "\(error)"
        }
    }
}

/// The JSON shape shared by every manifest type, enough to classify and validate it.
private struct RawManifest: Decodable {
    var schemaVersion: Int?
    var mediaType: String?
    var artifactType: String?
    var config: Descriptor?
    var layers: [Descriptor]?
    var manifests: [Descriptor]?
    var subject: Descriptor?
    var annotations: [String: String]?
    /// Present only in Docker schema 1 manifests.
    var fsLayers: [FSLayer]?

    struct FSLayer: Decodable {}
}

extension ParsedManifest {
    /// A container image someone runs: an image config and at least one filesystem layer, and no
    /// subject. Signatures, attestations, SBOMs, helm charts and cosign's tag-scheme signatures
    /// (an image config but no filesystem layer) are not; pull policies judge only images.
    public var isRunnableImage: Bool {
        subject == nil && MediaType.containerImageConfigs.contains(config?.mediaType ?? "")
            && layers.contains(where: { MediaType.isFilesystemLayer($0.mediaType) })
    }
}
