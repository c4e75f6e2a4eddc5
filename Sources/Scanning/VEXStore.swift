import Foundation
import Logging
import OCI
import Registry
import Scanner

/// Where VEX statements come from in the registry: documents a namespace's administrators set
/// through the management API, and documents attached to an image as referrers (OpenVEX, or a
/// CycloneDX BOM with analysed vulnerabilities, that is not one of Wharf's own SBOMs). Statements
/// are applied when findings are read (the pull gate, the scan API, ECR's scan findings), never
/// written into the stored scan, so adding or removing a document takes effect within the cache's
/// few seconds, with no rescan.
public final class VEXStore: Sendable {
    static let settingPrefix = "vex:"
    /// Documents per namespace; each up to `VEXDocument.maximumSize`.
    public static let maximumDocuments = 50
    /// Referrer documents read per image.
    static let maximumReferrers = 20

    let registry: Registry
    let logger: Logger
    private let namespaceStatements = TTLCache<String, [VEXStatement]>(timeToLive: .seconds(5))
    private let imageStatements = TTLCache<String, [VEXStatement]>(timeToLive: .seconds(5))

    public init(registry: Registry, logger: Logger = Logger(label: "wharf.vex")) {
        self.registry = registry
        self.logger = logger
    }

    /// A namespace's document as stored and listed.
    public struct NamespaceDocument: Codable, Sendable, Equatable {
        public var name: String
        public var document: String
        public var statements: Int
        public var updatedBy: String?
        public var updatedAt: String
    }

    public func documents(of namespace: String) async throws -> [NamespaceDocument] {
        guard let text = try await registry.metadata.registrySetting(Self.settingPrefix + namespace) else { return [] }
        return (try? JSONDecoder().decode([NamespaceDocument].self, from: Data(text.utf8))) ?? []
    }

    /// Stores (or replaces) a named document after reading every statement in it.
    @discardableResult
    public func put(
        _ bytes: [UInt8], named name: String, in namespace: String, by actor: String?
    ) async throws -> NamespaceDocument {
        guard !name.isEmpty, name.count <= 128, name.allSatisfy({ $0.isASCII && ($0.isLetter || $0.isNumber || "-_.".contains($0)) }) else {
            throw VEXError("a VEX document's name is 1 to 128 letters, digits, '-', '_' or '.'")
        }
        let statements = try VEXDocument.statements(from: bytes, origin: "namespace \(namespace)")
        guard !statements.isEmpty else { throw VEXError("the document holds no VEX statement") }
        var documents = try await documents(of: namespace).filter { $0.name != name }
        guard documents.count < Self.maximumDocuments else {
            throw VEXError("namespace \(namespace) already has \(Self.maximumDocuments) VEX documents; delete one first")
        }
        let document = NamespaceDocument(
            name: name, document: String(decoding: bytes, as: UTF8.self), statements: statements.count, updatedBy: actor,
            updatedAt: ISO8601DateFormatter().string(from: Date()))
        documents.append(document)
        try await save(documents.sorted { $0.name < $1.name }, for: namespace)
        return document
    }

    @discardableResult
    public func delete(named name: String, in namespace: String) async throws -> Bool {
        let documents = try await documents(of: namespace)
        guard documents.contains(where: { $0.name == name }) else { return false }
        try await save(documents.filter { $0.name != name }, for: namespace)
        return true
    }

    private func save(_ documents: [NamespaceDocument], for namespace: String) async throws {
        if documents.isEmpty {
            _ = try await registry.metadata.deleteRegistrySetting(Self.settingPrefix + namespace)
        } else {
            let text = String(decoding: try JSONEncoder().encode(documents), as: UTF8.self)
            try await registry.metadata.putRegistrySetting(Self.settingPrefix + namespace, text)
        }
        namespaceStatements.remove(namespace)
        imageStatements.removeAll()
    }

    /// Forgets a namespace's cached statements (its documents were removed with it).
    public func forget(namespace: String) {
        namespaceStatements.remove(namespace)
        imageStatements.removeAll()
    }

    /// Forgets the cached referrer statements of `subject` (of every image when nil).
    public func forgetReferrers(of subject: Digest?, in repository: RepositoryName) {
        if let subject { imageStatements.remove("\(repository.value)@\(subject)") } else { imageStatements.removeAll() }
    }

    /// Every statement that may apply to the image `digest` in `repository`.
    public func statements(for digest: Digest, in repository: RepositoryName) async throws -> [VEXStatement] {
        try await statements(of: String(repository.namespace)) + referrerStatements(for: digest, in: repository)
    }

    func statements(of namespace: String) async throws -> [VEXStatement] {
        if let cached = namespaceStatements.get(namespace) { return cached }
        var statements: [VEXStatement] = []
        for document in try await documents(of: namespace) {
            // Checked when stored; one that no longer reads (a newer Wharf is stricter) is reported
            // and left out, never a failed pull.
            do {
                statements += try VEXDocument.statements(from: Array(document.document.utf8), origin: "namespace \(namespace) document \(document.name)")
            } catch {
                logger.warning("VEX document '\(document.name)' of namespace \(namespace) is ignored: \(error)")
            }
        }
        namespaceStatements.set(namespace, statements)
        return statements
    }

    func referrerStatements(for digest: Digest, in repository: RepositoryName) async throws -> [VEXStatement] {
        let key = "\(repository.value)@\(digest)"
        if let cached = imageStatements.get(key) { return cached }
        var statements: [VEXStatement] = []
        let candidates = try await registry.referrers(of: digest, in: repository, artifactType: nil).filter {
            [VEXDocument.openVEXMediaType, SBOMWriter.cycloneDXMediaType].contains($0.artifactType ?? "")
                && $0.annotations?[SBOMReferrers.generatorAnnotation] == nil
        }
        for descriptor in candidates.prefix(Self.maximumReferrers) {
            do {
                let manifest = try await registry.manifest(.digest(descriptor.digest), in: repository, recordPull: false)
                let parsed = try ManifestParser.parse(Array(manifest.content.readableBytesView), contentType: manifest.mediaType)
                for layer in parsed.layers where layer.size <= Int64(VEXDocument.maximumSize) {
                    var chunks = StoredBlobChunks(registry: registry, digest: layer.digest, repository: repository, size: layer.size)
                    var bytes: [UInt8] = []
                    while let chunk = try await chunks.nextChunk() { bytes += chunk.readableBytesView }
                    statements += try VEXDocument.statements(from: bytes, origin: "referrer \(descriptor.digest)")
                }
            } catch {
                logger.warning("VEX referrer \(descriptor.digest) of \(repository)@\(digest) is ignored: \(error)")
            }
        }
        imageStatements.set(key, statements)
        return statements
    }

    /// A scan result with the statements that apply to each of its images.
    public func applied(to result: StoredScanResult, in repository: RepositoryName) async throws -> StoredScanResult {
        var result = result
        for index in result.platforms.indices {
            let platform = result.platforms[index]
            guard let digest = Digest(platform.manifestDigest) else { continue }
            let statements = try await statements(for: digest, in: repository)
            result.platforms[index].findings = VEXApplication.apply(
                statements, to: platform.findings, inventory: platform.inventory, image: .init(digest: platform.manifestDigest, repository: repository.value))
        }
        return result
    }
}
