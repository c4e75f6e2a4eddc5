import BlobStore
import Encryption
import Metadata
import NIOCore
import OCI

/// What `wharf fsck` found (and, with repair, fixed).
public struct ConsistencyReport: Sendable, Codable, Equatable {
    public var checkedBlobs = 0
    public var checkedBytes: Int64 = 0
    /// Recorded blobs whose file is gone.
    public var missingBlobs: [String] = []
    /// Recorded size differs from the file's.
    public var sizeMismatches: [String] = []
    /// The file's content does not hash to its name.
    public var corruptBlobs: [String] = []
    /// Files no row records.
    public var orphanFiles: [String] = []
    /// Upload files without a session, and sessions without a file.
    public var orphanUploads: [String] = []
    /// A manifest references a blob its repository does not hold: `repository@manifest → blob`.
    public var danglingReferences: [String] = []
    /// Recorded blobs no repository links to (the collector will take them).
    public var unlinkedBlobs = 0
    /// Encrypted copies checked (their objects opened and, with digest checks, decrypted and hashed).
    public var checkedEncryptedCopies = 0
    /// Encrypted copies that could not be decrypted for want of a usable key (not counted as corrupt).
    public var undecryptedCopies: [String] = []
    public var repairs: [String] = []

    /// No inconsistency (unlinked blobs are normal: they await collection).
    public var isClean: Bool {
        missingBlobs.isEmpty && sizeMismatches.isEmpty && corruptBlobs.isEmpty && orphanFiles.isEmpty
            && orphanUploads.isEmpty && danglingReferences.isEmpty
    }
}

/// Checks that metadata and bytes agree: every recorded blob exists with its size and digest,
/// every reference resolves, no file is unaccounted for. With `repair`, fixes what can be fixed
/// without guessing: wrong sizes are corrected, rows of missing or corrupt blobs are removed (their
/// repositories then no longer offer them), a blob file with a valid name but no row is recorded
/// again if a manifest needs it and deleted otherwise, links a manifest needs are restored.
public struct ConsistencyChecker: Sendable {
    let metadata: MetadataStore
    let blobs: any BlobStore
    let encryption: BlobEncryption?

    public init(metadata: MetadataStore, blobs: any BlobStore, encryption: BlobEncryption? = nil) {
        self.metadata = metadata
        self.blobs = blobs
        self.encryption = encryption
    }

    public func check(verifyDigests: Bool = true, repair: Bool = false) async throws -> ConsistencyReport {
        var report = ConsistencyReport()

        // 1. Every recorded blob against its file. `withRows` is what the database records; `recorded`
        // what is recorded and sound (the blobs references may be relinked to).
        var withRows = Set<Digest>()
        var recorded = Set<Digest>()
        var lastDigest = ""
        while true {
            let rows = try await metadata.blobRows(after: lastDigest, limit: 500)
            guard let last = rows.last else { break }
            lastDigest = last.0
            for (name, size) in rows {
                guard let digest = Digest(name) else { continue }
                withRows.insert(digest)
                report.checkedBlobs += 1
                guard let reader = try await blobs.open(digest) else {
                    // Only encrypted repositories hold it: its bytes are their copies, checked below.
                    if try await !metadata.needsPlainFile(digest) { continue }
                    report.missingBlobs.append(name)
                    if repair { try await forget(digest, &report, reason: "missing") }
                    continue
                }
                if reader.size != size {
                    report.sizeMismatches.append("\(name): recorded \(size), file \(reader.size)")
                }
                report.checkedBytes += reader.size
                if verifyDigests {
                    var hasher = DigestHasher(digest.algorithm)
                    try await reader.stream(range: nil) { hasher.update($0) }
                    if hasher.finalize() != digest {
                        report.corruptBlobs.append(name)
                        if repair {
                            _ = try await blobs.trash(digest)
                            try await blobs.emptyTrash(digest)
                            try await forget(digest, &report, reason: "corrupt")
                        }
                        continue
                    }
                } else {
                    try await reader.close()
                }
                if reader.size != size, repair {
                    try await metadata.correctBlobSize(digest, to: reader.size)
                    report.repairs.append("corrected the recorded size of \(name) to \(reader.size)")
                }
                recorded.insert(digest)
            }
        }

        // 1b. Every encrypted copy against its object: present, of the size its plaintext needs, and
        // (with digest checks) opening under its keys to the blob's digest.
        var objectKeys = Set<Digest>()
        var after: (String, String)?
        while true {
            let copies = try await metadata.encryptedBlobs(domain: nil, after: after, limit: 200)
            guard let last = copies.last else { break }
            after = (last.domain, last.digest.description)
            for copy in copies {
                objectKeys.insert(copy.objectKey)
                try await checkCopy(copy, verifyDigests: verifyDigests, repair: repair, &report)
            }
        }

        // 2. Files no row records.
        var orphans: [Digest] = []
        for try await digest in blobs.allBlobs() where !withRows.contains(digest) && !objectKeys.contains(digest) { orphans.append(digest) }

        // 3. References that do not resolve: a manifest's blob not linked in its repository.
        let dangling = try await metadata.danglingBlobReferences()
        var neededOrphans = Set<Digest>()
        for (repository, manifest, child) in dangling {
            report.danglingReferences.append("\(repository)@\(manifest) → \(child)")
            if let digest = Digest(child), orphans.contains(digest) { neededOrphans.insert(digest) }
        }
        for digest in orphans {
            report.orphanFiles.append(digest.description)
            guard repair else { continue }
            if neededOrphans.contains(digest) {
                // A manifest needs these bytes and they verify: record the blob again.
                var hasher = DigestHasher(digest.algorithm)
                guard let reader = try await blobs.open(digest) else { continue }
                let size = reader.size
                try await reader.stream(range: nil) { hasher.update($0) }
                if hasher.finalize() == digest {
                    try await metadata.recordBlob(digest, size: size)
                    recorded.insert(digest)
                    report.repairs.append("recorded orphan file \(digest), which manifests reference")
                    continue
                }
            }
            try await blobs.delete(digest)
            report.repairs.append("deleted orphan file \(digest)")
        }
        if repair {
            // Restore links for dangling references whose blob is recorded (and so verified above).
            for (repository, manifest, child) in dangling {
                guard let digest = Digest(child), recorded.contains(digest), let name = RepositoryName(repository) else { continue }
                try await metadata.relinkBlob(child, in: name)
                report.repairs.append("relinked \(child) in \(repository) (needed by \(manifest))")
            }
        }

        // 4. Uploads: files without sessions, sessions without files.
        for id in try await blobs.allUploads() where try await metadata.upload(id) == nil {
            report.orphanUploads.append("file \(id)")
            if repair {
                try await blobs.deleteUpload(id)
                report.repairs.append("deleted upload file \(id) that no session owns")
            }
        }
        let sessions = try await metadata.uploads(notUpdatedSince: Int64.max, limit: 100_000)
        for session in sessions where try await blobs.uploadSize(session.id) == nil {
            report.orphanUploads.append("session \(session.id)")
            if repair {
                try await metadata.deleteUpload(session.id)
                report.repairs.append("deleted upload session \(session.id), whose file is gone")
            }
        }

        report.unlinkedBlobs = try await metadata.unlinkedBlobCount()
        return report
    }

    private func checkCopy(_ copy: EncryptedBlobRecord, verifyDigests: Bool, repair: Bool, _ report: inout ConsistencyReport) async throws {
        let name = "\(copy.digest) (\(copy.domain))"
        report.checkedEncryptedCopies += 1
        guard let size = try await metadata.recordedBlobSize(copy.digest) else { return }  // awaiting collection
        guard let reader = try await blobs.open(copy.objectKey) else {
            report.missingBlobs.append(name)
            return
        }
        report.checkedBytes += reader.size
        guard let domain = EncryptionDomain(identifier: copy.domain) else {
            try await reader.close()
            report.corruptBlobs.append("\(name): unknown domain")
            return
        }
        let layers = domain.layers
        let expected = SegmentedEnvelope.storedSize(plaintext: size, layers: layers, segmentSize: copy.segmentSize)
        guard reader.size == expected else {
            try await reader.close()
            report.sizeMismatches.append("\(name): stored \(reader.size), \(size) plaintext bytes need \(expected)")
            return
        }
        guard verifyDigests else {
            try await reader.close()
            return
        }
        guard let encryption else {
            try await reader.close()
            report.undecryptedCopies.append("\(name): no key service configured")
            return
        }
        let keys: ObjectKeys
        do {
            keys = try await encryption.keys(for: domain, wrapped: try WrappedKeys.decode(copy.wrappedKeys))
        } catch EncryptionError.keyUnavailable(let keyID, let code, _) {
            try await reader.close()
            report.undecryptedCopies.append("\(name): key \(keyID) unavailable (\(code))")
            return
        } catch {
            try await reader.close()
            report.corruptBlobs.append("\(name): \(error)")
            return
        }
        var hasher = DigestHasher(copy.digest.algorithm)
        do {
            let plaintext = try DecryptingBlobReader(stored: reader, keys: keys, size: size, segmentSize: copy.segmentSize)
            try await plaintext.stream(range: nil) { hasher.update($0) }
        } catch {
            report.corruptBlobs.append("\(name): \(error)")
            return
        }
        if hasher.finalize() != copy.digest { report.corruptBlobs.append("\(name): decrypts to other content") }
    }

    /// Removes a blob's row and links: its bytes are gone, so no repository should offer it.
    private func forget(_ digest: Digest, _ report: inout ConsistencyReport, reason: String) async throws {
        try await metadata.forgetBlob(digest)
        report.repairs.append("removed the records of \(reason) blob \(digest)")
    }
}
