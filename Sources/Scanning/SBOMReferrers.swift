import Foundation
import NIOCore
import OCI
import Registry
import Scanner

/// Stores each scanned image's SBOMs (CycloneDX 1.5 and SPDX 2.3) in its repository as OCI
/// artifacts whose `subject` is the image, so the referrers API (`oras discover`, cosign, Harbor's
/// accessories) lists them next to signatures. A rescan whose package list has not changed leaves
/// them alone; a changed one replaces them, so an image carries one SBOM of each format.
struct SBOMReferrers {
    static let generatorAnnotation = "dev.wharf.sbom.generator"
    /// Digest of the inventory the SBOM was written from, to tell whether a rescan changed anything.
    static let inventoryAnnotation = "dev.wharf.sbom.inventory"

    let registry: Registry

    struct Format: Sendable {
        var mediaType: String
        var fileName: String
        var write: @Sendable (ImageInventory, SBOMWriter.Subject) throws -> [UInt8]
    }

    static let formats = [
        Format(mediaType: SBOMWriter.cycloneDXMediaType, fileName: "sbom.cdx.json") { try SBOMWriter.cycloneDX($0, subject: $1) },
        Format(mediaType: SBOMWriter.spdxMediaType, fileName: "sbom.spdx.json") { try SBOMWriter.spdx($0, subject: $1) },
    ]

    /// Attaches (or refreshes) the SBOMs of one scanned image manifest.
    func attach(_ platform: StoredScanResult.Platform, in repository: RepositoryName) async throws {
        let subjectDigest = try Digest(parsing: platform.manifestDigest)
        let subject = try await registry.manifest(.digest(subjectDigest), in: repository, recordPull: false)
        let encoder = JSONEncoder()
        encoder.outputFormatting = [.sortedKeys]
        var inventory = platform.inventory
        inventory.secrets = []  // an SBOM lists software; secrets stay in the scan result
        let inventoryDigest = Digest.of(Array(try encoder.encode(inventory))).description
        for format in Self.formats {
            let existing = try await registry.referrers(of: subjectDigest, in: repository, artifactType: format.mediaType)
                .filter { $0.annotations?[Self.generatorAnnotation] != nil }
            if existing.contains(where: { $0.annotations?[Self.inventoryAnnotation] == inventoryDigest }) { continue }

            let document = try format.write(inventory, SBOMWriter.Subject(name: "\(repository)@\(subjectDigest)", digest: subjectDigest.description))
            let documentDigest = Digest.of(document)
            _ = try await registry.pushBlob(
                SingleBuffer(ByteBuffer(bytes: document)), in: repository, digest: documentDigest,
                length: Int64(document.count))
            let manifest: [String: Any] = [
                "schemaVersion": 2,
                "mediaType": MediaType.ociManifest,
                "artifactType": format.mediaType,
                "config": ["mediaType": MediaType.ociEmpty, "digest": EmptyJSON.sha256.description, "size": 2],
                "layers": [
                    [
                        "mediaType": format.mediaType, "digest": documentDigest.description, "size": document.count,
                        "annotations": ["org.opencontainers.image.title": format.fileName],
                    ]
                ],
                "subject": ["mediaType": subject.mediaType, "digest": subjectDigest.description, "size": subject.content.readableBytes],
                "annotations": [
                    "org.opencontainers.image.created": ISO8601DateFormatter().string(from: Date()),
                    Self.generatorAnnotation: "wharf",
                    Self.inventoryAnnotation: inventoryDigest,
                ],
            ]
            let bytes = try JSONSerialization.data(withJSONObject: manifest, options: [.sortedKeys, .withoutEscapingSlashes])
            let pushed = try await registry.putManifest(
                ByteBuffer(bytes: Array(bytes)), contentType: MediaType.ociManifest, in: repository,
                reference: .digest(Digest.of(Array(bytes))))
            // The SBOMs of an earlier inventory describe software the image no longer has.
            for old in existing where old.digest != pushed.digest {
                try? await registry.deleteManifest(.digest(old.digest), in: repository)
            }
        }
    }
}

/// One buffer as the async sequence an upload reads.
struct SingleBuffer: AsyncSequence, Sendable {
    typealias Element = ByteBuffer
    let buffer: ByteBuffer
    init(_ buffer: ByteBuffer) { self.buffer = buffer }

    struct AsyncIterator: AsyncIteratorProtocol {
        var buffer: ByteBuffer?
        mutating func next() async throws -> ByteBuffer? {
            defer { buffer = nil }
            return buffer
        }
    }

    func makeAsyncIterator() -> AsyncIterator { AsyncIterator(buffer: buffer) }
}
