import BlobStore
import Metadata
import Monitoring
import NIOCore
import OCI

#if canImport(FoundationEssentials)
import FoundationEssentials
#else
import Foundation
#endif

public struct PushedManifest: Sendable {
    public let digest: Digest
    public let subject: Digest?
    /// Tags now pointing at the manifest (requested by the client; unchanged ones included).
    public let tags: [String]
}

extension Registry {
    /// PUT manifest: validates, stores the exact bytes, and moves the tags in one transaction.
    /// `reference` is the tag or digest from the URL; `extraTags` come from `?tag=` parameters.
    public func putManifest(
        _ content: ByteBuffer, contentType: String?, in repository: RepositoryName,
        reference: Reference, extraTags: [Tag] = [], actor: String? = nil
    ) async throws -> PushedManifest {
        guard content.readableBytes <= ManifestParser.maximumSize else {
            throw RegistryError(.manifestInvalid, "manifest is \(content.readableBytes) bytes; the limit is \(ManifestParser.maximumSize)", status: 413)
        }
        let bytes = Array(content.readableBytesView)
        let parsed = try ManifestParser.parse(bytes, contentType: contentType)

        let digest: Digest
        var tags = extraTags
        switch reference {
        case .digest(let expected):
            digest = Digest.of(bytes, algorithm: expected.algorithm)
            guard digest == expected else {
                throw RegistryError.digestInvalid("the manifest's digest is \(digest), not \(expected) as in the URL")
            }
        case .tag(let tag):
            digest = Digest.of(bytes)
            tags.insert(tag, at: 0)
        }

        // Deployment rules before anything is stored: a refused tag leaves no trace.
        try await tagRules.check(uniqued(tags), in: repository)

        // The OCI empty descriptor (`{}`) is well known; accept it even if the client never uploaded it.
        for blob in parsed.requiredBlobs where EmptyJSON.isEmptyJSON(blob.digest) && blob.size == 2 {
            try await ensureEmptyJSON(blob.digest, in: repository)
        }

        var annotationsJSON: String?
        if let annotations = parsed.annotations, !annotations.isEmpty {
            let encoder = JSONEncoder()
            encoder.outputFormatting = [.sortedKeys]
            annotationsJSON = String(decoding: try encoder.encode(annotations), as: UTF8.self)
        }

        let settings = try await metadata.settings(of: repository)
        let sealing = try await sealManifest(content, in: repository)
        let changes: [TagChange]
        do {
            var manifest = NewManifest(
                repository: repository, digest: digest, mediaType: parsed.mediaType, content: content,
                artifactType: parsed.referrerArtifactType, subject: parsed.subject?.digest,
                annotationsJSON: annotationsJSON, blobs: parsed.requiredBlobs,
                children: parsed.manifests.map(\.digest), allowMissingChildren: configuration.allowSparseIndexes,
                tags: uniqued(tags), tagMutability: settings.tagMutability)
            manifest.actor = actor
            if let sealing {
                manifest.content = sealing.sealed
                manifest.sealedWith = sealing.sealedWith
                manifest.plainSize = Int64(content.readableBytes)
            }
            changes = try await metadata.putManifest(manifest)
        } catch let error as MetadataError {
            switch error {
            case .missingBlob(let blob):
                throw RegistryError(
                    .manifestBlobUnknown, "the manifest references blob \(blob), which is not in repository \(repository)", detail: blob.description)
            case .missingManifest(let child):
                throw RegistryError(
                    .manifestBlobUnknown, "the index references manifest \(child), which is not in repository \(repository); push it first",
                    detail: child.description)
            case .sizeMismatch(let blob, let declared, let actual):
                throw RegistryError.manifestInvalid("the manifest declares blob \(blob) as \(declared) bytes, but it is \(actual) bytes")
            case .immutableTag(let tag):
                // ECR's wording, so scripts that match on it keep working.
                throw RegistryError(
                    .denied,
                    "tag invalid: The image tag '\(tag)' already exists in the '\(repository)' repository and cannot be overwritten because the repository is immutable."
                )
            case .encryptionMismatch(let message):
                throw RegistryError(.denied, "\(message); push again", status: 409)
            case .invalid, .conflict, .limitReached, .internalError:
                throw error
            }
        }
        await forget(tags: changes.map(\.tag), in: repository.value)
        // Scan on push (ECR's scanOnPush): container images and indexes, not signatures, attestations
        // or SBOMs (cosign's tag-scheme ones included: an image config, but no filesystem layer).
        // The queue is a table, so the scanner of any node picks the job up.
        // The registry's scanning rules decide when it has any (ECR), else the repository's setting.
        let scanOnPush = (try? await self.settings.scansOnPush(repository.value, repositorySetting: settings.scanOnPush)) ?? settings.scanOnPush
        if scanOnPush, parsed.subject == nil, parsed.kind == .index || parsed.isRunnableImage {
            do { try await metadata.enqueueScan(digest, in: repository, keepCompleted: true) } catch {
                logger.warning("could not queue the scan on push", metadata: ["digest": "\(digest)", "error": "\(error)"])
            }
        }
        return PushedManifest(digest: digest, subject: parsed.subject?.digest, tags: uniqued(tags).map(\.value))
    }

    private func ensureEmptyJSON(_ digest: Digest, in repository: RepositoryName) async throws {
        if try await metadata.blob(digest, in: repository) != nil { return }
        try await storeSmallBlob(EmptyJSON.bytes, as: digest, in: repository)
    }

    private func uniqued(_ tags: [Tag]) -> [Tag] {
        var seen = Set<Tag>()
        return tags.filter { seen.insert($0).inserted }
    }

    /// Records that `digest` was pulled from `repository` (lifecycle rules read the time). Call it
    /// once the manifest is actually served: after content negotiation and the pull gate.
    public func recordPull(_ digest: Digest, in repository: RepositoryName) {
        pulls.record(digest, in: repository.value)
    }

    /// GET/HEAD manifest by tag or digest, from the cache when possible. `recordPull` marks a real pull.
    public func manifest(_ reference: Reference, in repository: RepositoryName, recordPull: Bool) async throws -> ServedManifest {
        let served: ServedManifest
        switch reference {
        case .digest(let digest):
            if let cached = cache.manifest(digest, in: repository.value) {
                served = cached
                metrics.recordManifestCache(hit: true)
            } else {
                metrics.recordManifestCache(hit: false)
                guard let record = try await metadata.manifest(digest, in: repository) else {
                    throw RegistryError.manifestUnknown(digest)
                }
                let content = try await openManifest(record.content, sealedWith: record.sealedWith, in: repository)
                served = ServedManifest(digest: record.digest, mediaType: record.mediaType, content: content)
                cache.store(served, in: repository.value)
            }
        case .tag(let tag):
            if let digest = cache.digest(forTag: tag.value, in: repository.value),
                let cached = cache.manifest(digest, in: repository.value)
            {
                served = cached
                metrics.recordManifestCache(hit: true)
            } else {
                metrics.recordManifestCache(hit: false)
                let generation = cache.tagListGeneration(repository.value)
                guard let record = try await metadata.manifest(tagged: tag, in: repository) else {
                    throw RegistryError.manifestUnknown(tag)
                }
                let content = try await openManifest(record.content, sealedWith: record.sealedWith, in: repository)
                served = ServedManifest(digest: record.digest, mediaType: record.mediaType, content: content)
                cache.store(served, in: repository.value, tag: tag.value, generation: generation)
            }
        }
        if recordPull { pulls.record(served.digest, in: repository.value) }
        return served
    }

    /// DELETE manifest: by digest removes the manifest and every tag on it; by tag removes only the tag.
    public func deleteManifest(_ reference: Reference, in repository: RepositoryName, actor: String? = nil) async throws {
        space?.releaseReserveIfLow()  // room for the database to record the deletion on a full disk
        switch reference {
        case .digest(let digest):
            guard let removedTags = try await metadata.deleteManifest(digest, in: repository, actor: actor) else {
                throw RegistryError.manifestUnknown(digest)
            }
            await forget(tags: removedTags, manifests: [digest], in: repository.value)
        case .tag(let tag):
            guard try await metadata.deleteTag(tag, in: repository, actor: actor) != nil else {
                throw RegistryError.manifestUnknown(tag)
            }
            await forget(tags: [tag.value], in: repository.value)
        }
    }

    /// Deletes an image for a lifecycle rule or the collector: its referrers (signatures, SBOMs,
    /// and theirs) first, then the manifest. Returns every manifest deleted.
    @discardableResult
    public func expire(_ digest: Digest, in repository: RepositoryName) async throws -> [Digest] {
        space?.releaseReserveIfLow()  // room for the database to record the deletion on a full disk
        let referrers = try await metadata.referrerClosure(of: digest, in: repository)
        var deleted: [Digest] = []
        for manifest in referrers.reversed() + [digest] {
            if let removedTags = try await metadata.deleteManifest(manifest, in: repository) {
                await forget(tags: removedTags, manifests: [manifest], in: repository.value)
                deleted.append(manifest)
            }
        }
        return deleted
    }

    /// A page of a repository's tags in byte order, JSON-encoded.
    /// Served from the whole sorted list kept in memory with its JSON (invalidated by every tag
    /// change). When it is not there, this page comes from one indexed query and the whole list is
    /// read in the background for the pages after it: the first page never waits for 10,000 tags.
    public func tagPage(in repository: RepositoryName, after last: String?, limit: Int) async throws -> TagPage {
        if let list = cache.tagList(repository.value) { return list.page(after: last, limit: limit) }
        let generation = cache.tagListGeneration(repository.value)
        guard let tags = try await metadata.listTags(in: repository, after: last, limit: limit + 1) else {
            throw RegistryError.nameUnknown(repository)
        }
        if last == nil, tags.count <= limit, tags.count <= ManifestCache.maximumCachedTagList {
            // This page is the whole list (a list asked for without n usually is): keep it.
            let list = EncodedTagList(sorted: tags)
            cache.storeTagList(list, for: repository.value, generation: generation)
            return list.page(after: nil, limit: limit)
        }
        fillTagList(repository, generation: generation)
        return EncodedTagList.page(Array(tags.prefix(limit)), hasMore: tags.count > limit)
    }

    /// Reads a repository's whole tag list into the cache, unless that is already under way or the
    /// list is longer than is kept (then every page is its own query).
    private func fillTagList(_ repository: RepositoryName, generation: ManifestCache.Generation) {
        guard cache.beginTagListFill(repository.value, generation: generation) else { return }
        let (metadata, cache, logger) = (self.metadata, self.cache, self.logger)
        Task {
            defer { cache.endTagListFill(repository.value) }
            do {
                let wanted = ManifestCache.maximumCachedTagList + 1
                guard let all = try await metadata.listTags(in: repository, after: nil, limit: wanted) else { return }
                if all.count < wanted {
                    cache.storeTagList(EncodedTagList(sorted: all), for: repository.value, generation: generation)
                } else {
                    cache.markTagListOversized(repository.value, generation: generation)
                }
            } catch {
                logger.debug("reading a tag list for the cache failed", metadata: ["repository": "\(repository)", "error": "\(error)"])
            }
        }
    }

    /// A page of repository names in ASCII order.
    public func catalog(after last: String?, limit: Int, filter: RepositoryFilter? = nil) async throws -> [String] {
        try await metadata.listRepositories(after: last, limit: limit, filter: filter)
    }

    /// Descriptors of the manifests whose `subject` is `digest`, optionally of one artifact type.
    /// Works before the subject itself is pushed; an unknown repository simply has no referrers.
    public func referrers(of digest: Digest, in repository: RepositoryName, artifactType: String?) async throws -> [Descriptor] {
        let records = try await metadata.referrers(of: digest, in: repository, artifactType: artifactType)
        return records.map { record in
            var annotations: [String: String]?
            if let json = record.annotationsJSON {
                annotations = try? JSONDecoder().decode([String: String].self, from: Data(json.utf8))
            }
            return Descriptor(
                mediaType: record.mediaType, digest: record.digest, size: record.size,
                annotations: annotations, artifactType: record.artifactType)
        }
    }
}
