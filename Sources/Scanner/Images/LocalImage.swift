import Foundation
import NIOCore

/// Where one layer's bytes lie: a whole file or a range of one (a member of an uncompressed tar).
public struct LayerLocation: Sendable, Equatable {
    public var path: String
    public var offset: Int64
    public var length: Int64?
    public var digest: String?

    public func chunks() throws -> FileChunks { try FileChunks(path: path, offset: offset, length: length) }
}

/// An image read from local files, the way skopeo writes them: `docker-archive:FILE[:TAG]`
/// (`docker save`, plain or compressed) or `oci:DIR[:TAG]` (an OCI image layout).
public struct LocalImage: Sendable {
    public var config: [UInt8]
    /// Bottom layer first.
    public var layers: [LayerLocation]
    public var reference: String
    /// The image manifest's digest, where the format records it (an OCI layout; not `docker save`).
    public var manifestDigest: String?
    /// A decompressed copy of the archive, removed by `close()`.
    private var scratchFile: String?

    public enum Failure: Error, Sendable, CustomStringConvertible {
        case unsupportedReference(String)
        case malformed(String)
        case notFound(String)

        public var description: String {
            switch self {
            case .unsupportedReference(let reference):
                "\(reference): expected docker-archive:FILE[:TAG] or oci:DIR[:TAG]"
            case .malformed(let why): why
            case .notFound(let what): what
            }
        }
    }

    public static func isLocal(_ reference: String) -> Bool {
        reference.hasPrefix("docker-archive:") || reference.hasPrefix("oci:")
    }

    /// - Parameters:
    ///   - platform: `os/architecture[/variant]` chosen from a multi-platform index (default linux/amd64).
    ///   - scratch: a folder for the decompressed copy of a compressed archive.
    public static func open(_ reference: String, platform: String = "linux/amd64", scratch: String = NSTemporaryDirectory()) async throws -> LocalImage {
        if reference.hasPrefix("docker-archive:") {
            let (path, tag) = split(String(reference.dropFirst("docker-archive:".count)))
            return try await openDockerArchive(path, tag: tag, reference: reference, scratch: scratch)
        }
        if reference.hasPrefix("oci:") {
            let (path, tag) = split(String(reference.dropFirst("oci:".count)))
            return try openLayout(path, tag: tag, platform: platform, reference: reference)
        }
        throw Failure.unsupportedReference(reference)
    }

    public func close() {
        if let scratchFile { try? FileManager.default.removeItem(atPath: scratchFile) }
    }

    /// `path[:reference]`: the longest existing path before a colon; what follows names the image
    /// (`alpine:3.11` in an archive, a tag in a layout).
    private static func split(_ text: String) -> (String, String?) {
        if FileManager.default.fileExists(atPath: text) { return (text, nil) }
        var index = text.startIndex
        while let colon = text[index...].firstIndex(of: ":") {
            let path = String(text[..<colon])
            if FileManager.default.fileExists(atPath: path) { return (path, String(text[text.index(after: colon)...])) }
            index = text.index(after: colon)
        }
        return (text, nil)
    }

    // MARK: docker save

    private struct ArchiveManifest: Decodable {
        var Config: String
        var RepoTags: [String]?
        var Layers: [String]
    }

    private static func openDockerArchive(_ path: String, tag: String?, reference: String, scratch: String) async throws -> LocalImage {
        var archive = path
        var scratchFile: String?
        var probe = try FileChunks(path: path, length: 4)
        if let head = try await probe.nextChunk(), LayerCompression.detect(head) != .none {
            // Members must be read in the manifest's order, not the archive's: one decompressed copy
            // on disk makes them addressable without holding any of them in memory.
            let copy = (scratch as NSString).appendingPathComponent("wharf-scan-\(UUID().uuidString).tar")
            try await decompress(path, to: copy)
            archive = copy
            scratchFile = copy
        }
        do {
            var members: [String: (offset: Int64, size: Int64)] = [:]
            var manifestBytes: [UInt8]?
            var reader = TarReader(LayerByteSource(try FileChunks(path: archive)))
            while let entry = try await reader.next() {
                guard let name = entry.path, entry.kind == .file else { continue }
                members[name] = (reader.offset, entry.size)
                if name == "manifest.json" { manifestBytes = try await reader.readContent(limit: 16 << 20) }
            }
            guard let manifestBytes else { throw Failure.malformed("\(path): no manifest.json (not a docker save archive)") }
            let manifests: [ArchiveManifest]
            do { manifests = try JSONDecoder().decode([ArchiveManifest].self, from: Data(manifestBytes)) } catch {
                throw Failure.malformed("\(path): manifest.json is not valid: \(error)")
            }
            let chosen: ArchiveManifest?
            if let tag {
                chosen = manifests.first { ($0.RepoTags ?? []).contains { $0 == tag || $0.hasSuffix(":" + tag) } }
            } else {
                chosen = manifests.first
            }
            guard let manifest = chosen else { throw Failure.notFound("\(path): no image \(tag.map { "tagged \($0)" } ?? "") in the archive") }
            func member(_ name: String) throws -> (offset: Int64, size: Int64) {
                guard let normalised = TarReader<ArrayByteSource>.normalise(name), let found = members[normalised] else {
                    throw Failure.malformed("\(path): manifest.json names \(name), which the archive lacks")
                }
                return found
            }
            let configMember = try member(manifest.Config)
            guard configMember.size <= 16 << 20 else { throw Failure.malformed("\(path): the image config is larger than 16 MiB") }
            var configReader = try FileChunks(path: archive, offset: configMember.offset, length: configMember.size)
            var config: [UInt8] = []
            while let chunk = try await configReader.nextChunk() { config += chunk.readableBytesView }
            let layers = try manifest.Layers.map { name -> LayerLocation in
                let found = try member(name)
                return LayerLocation(path: archive, offset: found.offset, length: found.size)
            }
            return LocalImage(config: config, layers: layers, reference: reference, manifestDigest: nil, scratchFile: scratchFile)
        } catch {
            if let scratchFile { try? FileManager.default.removeItem(atPath: scratchFile) }
            throw error
        }
    }

    private static func decompress(_ path: String, to copy: String) async throws {
        guard FileManager.default.createFile(atPath: copy, contents: nil), let output = FileHandle(forWritingAtPath: copy) else {
            throw Failure.malformed("cannot write \(copy)")
        }
        defer { try? output.close() }
        var source = LayerByteSource(try FileChunks(path: path))
        while let chunk = try await source.nextChunk() {
            try output.write(contentsOf: Data(chunk.readableBytesView))
        }
    }

    // MARK: OCI image layout

    private struct Descriptor: Decodable {
        var mediaType: String?
        var digest: String
        var size: Int64?
        var annotations: [String: String]?
        var platform: Platform?
    }

    private struct Platform: Decodable {
        var os: String
        var architecture: String
        var variant: String?
    }

    private struct Manifest: Decodable {
        var mediaType: String?
        var config: Descriptor?
        var layers: [Descriptor]?
        var manifests: [Descriptor]?
    }

    private static func openLayout(_ directory: String, tag: String?, platform: String, reference: String) throws -> LocalImage {
        func blobPath(_ digest: String) throws -> String {
            let parts = digest.split(separator: ":", maxSplits: 1)
            guard parts.count == 2, parts[0].allSatisfy({ $0.isLetter || $0.isNumber }), parts[1].allSatisfy({ $0.isHexDigit }) else {
                throw Failure.malformed("\(directory): invalid digest \(digest)")
            }
            return "\(directory)/blobs/\(parts[0])/\(parts[1])"
        }
        func read(_ path: String) throws -> Data {
            guard let data = FileManager.default.contents(atPath: path) else { throw Failure.notFound("\(path) is missing") }
            return data
        }
        func decode(_ path: String) throws -> Manifest {
            do { return try JSONDecoder().decode(Manifest.self, from: try read(path)) } catch let error as Failure { throw error } catch {
                throw Failure.malformed("\(path) is not a valid manifest or index: \(error)")
            }
        }
        let index = try decode("\(directory)/index.json")
        let entries = index.manifests ?? []
        let chosen: Descriptor?
        if let tag {
            chosen = entries.first { $0.annotations?["org.opencontainers.image.ref.name"] == tag }
        } else {
            chosen = entries.count == 1 ? entries.first : entries.first { $0.annotations?["org.opencontainers.image.ref.name"] != nil } ?? entries.first
        }
        guard var descriptor = chosen else { throw Failure.notFound("\(directory): no image \(tag.map { "tagged \($0) " } ?? "")in index.json") }
        var manifest = try decode(try blobPath(descriptor.digest))
        // An image index (multi-platform): take the wanted platform's manifest.
        for _ in 0..<4 where manifest.manifests != nil {
            let wanted = platform.split(separator: "/").map(String.init)
            guard
                let child = (manifest.manifests ?? []).first(where: { child in
                    guard let p = child.platform else { return false }
                    return p.os == wanted.first && p.architecture == (wanted.count > 1 ? wanted[1] : "amd64")
                        && (wanted.count < 3 || p.variant == wanted[2])
                })
            else { throw Failure.notFound("\(directory): the index has no \(platform) image") }
            descriptor = child
            manifest = try decode(try blobPath(child.digest))
        }
        guard let configDescriptor = manifest.config, let layerDescriptors = manifest.layers else {
            throw Failure.malformed("\(directory): \(descriptor.digest) is not an image manifest")
        }
        let config = [UInt8](try read(try blobPath(configDescriptor.digest)))
        let layers = try layerDescriptors.map { LayerLocation(path: try blobPath($0.digest), offset: 0, length: nil, digest: $0.digest) }
        return LocalImage(config: config, layers: layers, reference: reference, manifestDigest: descriptor.digest, scratchFile: nil)
    }
}
