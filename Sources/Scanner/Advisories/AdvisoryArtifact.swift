import Crypto
import Foundation

/// The vulnerability database as an OCI artifact, so a site without internet access mirrors it
/// like any image (`skopeo copy`, replication) into its own Wharf, which installs it. The artifact
/// is one layer, the SQLite file itself, with an empty config.
public enum AdvisoryArtifact {
    public static let artifactType = "application/vnd.wharf.advisories.v1"
    public static let layerMediaType = "application/vnd.wharf.advisories.sqlite.v1"

    /// Writes the database at `database` as an OCI image layout in `directory`, tagged `tag`
    /// (what `skopeo copy oci:DIR:TAG docker://…` pushes). Returns the manifest's digest.
    @discardableResult
    public static func exportLayout(database: String, directory: String, tag: String, summary: AdvisoryDatabase.Summary) throws -> String {
        let fileManager = FileManager.default
        let blobs = directory + "/blobs/sha256"
        try fileManager.createDirectory(atPath: blobs, withIntermediateDirectories: true)

        // Copy the database into the layout while hashing it: it may be hundreds of MiB.
        guard let input = FileHandle(forReadingAtPath: database) else { throw AdvisoryImportError("cannot read \(database)") }
        defer { try? input.close() }
        let staging = blobs + "/.incoming-\(UUID().uuidString)"
        guard fileManager.createFile(atPath: staging, contents: nil), let output = FileHandle(forWritingAtPath: staging) else {
            throw AdvisoryImportError("cannot write into \(directory)")
        }
        var hasher = SHA256()
        var size = 0
        do {
            while let chunk = try input.read(upToCount: 4 << 20), !chunk.isEmpty {
                hasher.update(data: chunk)
                try output.write(contentsOf: chunk)
                size += chunk.count
            }
            try output.close()
        } catch {
            try? fileManager.removeItem(atPath: staging)
            throw error
        }
        let layerDigest = hex(hasher.finalize())
        try? fileManager.removeItem(atPath: blobs + "/" + layerDigest)
        try fileManager.moveItem(atPath: staging, toPath: blobs + "/" + layerDigest)

        let config = Data("{}".utf8)
        try config.write(to: URL(fileURLWithPath: blobs + "/" + hex(SHA256.hash(data: config))))
        let manifestBytes = try manifest(layerDigest: "sha256:" + layerDigest, size: size, summary: summary)
        let manifestDigest = hex(SHA256.hash(data: manifestBytes))
        try manifestBytes.write(to: URL(fileURLWithPath: blobs + "/" + manifestDigest))

        // Keep other tags of an existing layout; replace this one.
        var entries: [[String: Any]] = []
        if let data = fileManager.contents(atPath: directory + "/index.json"),
            let index = try? JSONSerialization.jsonObject(with: data) as? [String: Any], let existing = index["manifests"] as? [[String: Any]]
        {
            entries = existing.filter { ($0["annotations"] as? [String: String])?["org.opencontainers.image.ref.name"] != tag }
        }
        entries.append([
            "mediaType": "application/vnd.oci.image.manifest.v1+json", "digest": "sha256:" + manifestDigest,
            "size": manifestBytes.count, "artifactType": artifactType,
            "annotations": ["org.opencontainers.image.ref.name": tag],
        ])
        let index: [String: Any] = ["schemaVersion": 2, "mediaType": "application/vnd.oci.image.index.v1+json", "manifests": entries]
        try JSONSerialization.data(withJSONObject: index, options: [.sortedKeys, .withoutEscapingSlashes])
            .write(to: URL(fileURLWithPath: directory + "/index.json"))
        try Data(#"{"imageLayoutVersion":"1.0.0"}"#.utf8).write(to: URL(fileURLWithPath: directory + "/oci-layout"))
        return "sha256:" + manifestDigest
    }

    /// The artifact's manifest for a database layer: empty config, one layer, the summary as annotations.
    public static func manifest(layerDigest: String, size: Int, summary: AdvisoryDatabase.Summary) throws -> Data {
        var annotations = [
            "org.opencontainers.image.created": ISO8601DateFormatter().string(from: Date()),
            "dev.wharf.advisories.records": String(summary.records),
        ]
        if let version = summary.version { annotations[versionAnnotation] = version }
        if let importedAt = summary.importedAt { annotations["dev.wharf.advisories.imported"] = importedAt }
        let manifest: [String: Any] = [
            "schemaVersion": 2,
            "mediaType": "application/vnd.oci.image.manifest.v1+json",
            "artifactType": artifactType,
            "config": ["mediaType": "application/vnd.oci.empty.v1+json", "digest": "sha256:" + hex(SHA256.hash(data: Data("{}".utf8))), "size": 2],
            "layers": [
                [
                    "mediaType": layerMediaType, "digest": layerDigest, "size": size,
                    "annotations": ["org.opencontainers.image.title": "osv.sqlite"],
                ]
            ],
            "annotations": annotations,
        ]
        return try JSONSerialization.data(withJSONObject: manifest, options: [.sortedKeys, .withoutEscapingSlashes])
    }

    public static let versionAnnotation = "dev.wharf.advisories.version"

    static func hex(_ digest: SHA256.Digest) -> String { digest.map { String(format: "%02x", $0) }.joined() }
}
