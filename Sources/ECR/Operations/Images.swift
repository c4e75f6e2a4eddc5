import Access
import Metadata
import NIOCore
import OCI
import Registry
import Scanning
import UseCases

extension ECRService {
    /// What a tag filter keeps: TAGGED, UNTAGGED or ANY (the default).
    static func keeps(_ image: ImageRecord, tagStatus: String?) -> Bool {
        switch tagStatus {
        case "TAGGED": !image.tags.isEmpty
        case "UNTAGGED": image.tags.isEmpty
        default: true
        }
    }

    /// The repository's images with their manifests' exact bytes (opened when the repository is encrypted).
    func images(_ name: RepositoryName) async throws -> [ImageRecord] {
        guard var images = try await metadata.images(in: name) else { throw ECRError.repositoryNotFound(name.value, registryID: registryID) }
        for index in images.indices where images[index].sealedWith != nil {
            let opened = try await registry.openManifest(ByteBuffer(bytes: images[index].content), sealedWith: images[index].sealedWith, in: name)
            images[index].content = Array(opened.readableBytesView)
            images[index].sealedWith = nil
        }
        return images
    }

    func listImages(_ call: ECRCall) async throws -> JSONValue {
        let name = try repositoryName(call)
        try await authorize(call, .pull, on: name)
        let tagStatus = call.input["filter"]?["tagStatus"]?.string
        var ids: [JSONValue] = []
        for image in try await images(name).sorted(by: { $0.digest.description < $1.digest.description }) where Self.keeps(image, tagStatus: tagStatus) {
            if image.tags.isEmpty {
                ids.append(Self.imageID(digest: image.digest, tag: nil))
            } else {
                ids += image.tags.map { Self.imageID(digest: image.digest, tag: $0) }
            }
        }
        let page = try Self.page(ids, call, size: pageSize(call))
        return .compact(["imageIds": .array(Array(page.items)), "nextToken": page.nextToken.map(JSONValue.string)])
    }

    func describeImages(_ call: ECRCall) async throws -> JSONValue {
        let name = try repositoryName(call)
        try await authorize(call, .pull, on: name)
        let all = try await images(name)
        var selected: [ImageRecord]
        if let ids = call.input["imageIds"]?.array {
            guard call.string("nextToken") == nil, call.int("maxResults") == nil else {
                throw ECRError.invalidParameter(
                    "Invalid parameter at 'imageIds' failed to satisfy constraint: 'imageIds cannot be used with maxResults or nextToken'")
            }
            selected = []
            for id in ids {
                guard let image = try find(id, in: all) else { throw imageNotFound(id, in: name) }
                if !selected.contains(where: { $0.digest == image.digest }) { selected.append(image) }
            }
        } else {
            let tagStatus = call.input["filter"]?["tagStatus"]?.string
            selected = all.filter { Self.keeps($0, tagStatus: tagStatus) }
        }
        let page = try Self.page(selected, call, size: pageSize(call))
        var details: [JSONValue] = []
        let sizes = try await imageSizes(Array(page.items), all: all)
        for image in page.items {
            var detail = imageDetail(image, in: name, size: sizes[image.digest] ?? 0)
            if case .object(var fields) = detail, let record = try await metadata.scanRecord(image.digest) {
                fields["imageScanStatus"] = Self.scanStatus(record)
                if let result = try await storedResult(record, in: name) {
                    fields["imageScanFindingsSummary"] = .compact([
                        "imageScanCompletedAt": record.completedAt.map { .timestamp(millis: $0) },
                        "vulnerabilitySourceUpdatedAt": Self.millis(result.databaseImportedAt).map { .timestamp(millis: $0) },
                        "findingSeverityCounts": .object(result.severityCounts.mapValues { .integer($0) }),
                    ])
                }
                detail = .object(fields)
            }
            details.append(detail)
        }
        return .compact(["imageDetails": .array(details), "nextToken": page.nextToken.map(JSONValue.string)])
    }

    /// An image id (digest and/or tag) resolved among `images`; nil when no image matches.
    /// Throws InvalidParameter for a malformed id.
    func find(_ id: JSONValue, in images: [ImageRecord]) throws -> ImageRecord? {
        let digestText = id["imageDigest"]?.string
        let tag = id["imageTag"]?.string
        guard digestText != nil || tag != nil else {
            throw ECRError.invalidParameter("Invalid parameter at 'imageIds' failed to satisfy constraint: 'every image id needs imageDigest or imageTag'")
        }
        let digest = try digestText.map { text -> Digest in
            guard let digest = Digest(text) else {
                throw ECRError.invalidParameter("Invalid parameter at 'imageDigest' failed to satisfy constraint: '\(text)' is not a digest")
            }
            return digest
        }
        return images.first { image in
            (digest.map { image.digest == $0 } ?? true) && (tag.map { image.tags.contains($0) } ?? true)
        }
    }

    func imageDetail(_ image: ImageRecord, in name: RepositoryName, size: Int64) -> JSONValue {
        let parsed = try? ManifestParser.parse(image.content, contentType: image.mediaType)
        return .compact([
            "registryId": .string(registryID),
            "repositoryName": .string(name.value),
            "imageDigest": .string(image.digest.description),
            "imageTags": image.tags.isEmpty ? nil : .array(image.tags.map(JSONValue.string)),
            "imageSizeInBytes": .integer(Int(size)),
            "imagePushedAt": .timestamp(millis: image.pushedAt),
            "lastRecordedPullTime": image.lastPulledAt.map { .timestamp(millis: $0) },
            "imageManifestMediaType": .string(image.mediaType),
            "artifactMediaType": (image.artifactType ?? parsed?.config?.mediaType).map(JSONValue.string),
        ])
    }

    /// ECR's `imageSizeInBytes`: an image's layers added up; for an index, its largest child image.
    func imageSizes(_ images: [ImageRecord], all: [ImageRecord]) async throws -> [Digest: Int64] {
        var parsed: [Digest: ParsedManifest] = [:]
        for image in all { parsed[image.digest] = try? ManifestParser.parse(image.content, contentType: image.mediaType) }
        func layerBytes(_ manifest: ParsedManifest) -> Int64 { manifest.layers.reduce(0) { $0 + $1.size } }
        var sizes: [Digest: Int64] = [:]
        for image in images {
            guard let manifest = parsed[image.digest] else { continue }
            switch manifest.kind {
            case .image:
                sizes[image.digest] = layerBytes(manifest)
            case .index:
                sizes[image.digest] = manifest.manifests.compactMap { parsed[$0.digest].map(layerBytes) }.max() ?? 0
            }
        }
        return sizes
    }

    func batchGetImage(_ call: ECRCall) async throws -> JSONValue {
        let name = try repositoryName(call)
        try await authorize(call, .pull, on: name)
        let all = try await images(name)
        let accepted = call.input["acceptedMediaTypes"]?.array?.compactMap(\.string)
        var images: [JSONValue] = []
        var failures: [JSONValue] = []
        var seen = Set<Digest>()
        for id in call.input["imageIds"]?.array ?? [] {
            do {
                guard let image = try find(id, in: all) else {
                    failures.append(
                        Self.failure(
                            id, code: try tagMismatch(id, all) ? "ImageTagDoesNotMatchDigest" : "ImageNotFound",
                            reason: try tagMismatch(id, all) ? "Tag does not match digest" : "Requested image not found"))
                    continue
                }
                guard seen.insert(image.digest).inserted else { continue }
                let served: ServedManifest
                do {
                    served = try await manifestPulls.pull(
                        .digest(image.digest), in: name, by: call.requester,
                        accepting: { accepted?.contains($0) ?? true })
                } catch ManifestPulls.Refusal.notAcceptable(let mediaType) {
                    seen.remove(image.digest)
                    failures.append(
                        Self.failure(
                            id, code: "ImageNotFound",
                            reason: "The image's manifest is \(mediaType), which is not among acceptedMediaTypes; Wharf does not convert manifests"))
                    continue
                } catch ManifestPulls.Refusal.gated(let message, _) {
                    failures.append(Self.failure(id, code: "ImageInaccessible", reason: message))
                    continue
                }
                images.append([
                    "registryId": .string(registryID),
                    "repositoryName": .string(name.value),
                    "imageId": Self.imageID(digest: image.digest, tag: id["imageTag"]?.string),
                    "imageManifest": .string(String(decoding: served.content.readableBytesView, as: UTF8.self)),
                    "imageManifestMediaType": .string(served.mediaType),
                ])
            } catch let error as ECRError where error.type == "InvalidParameterException" {
                failures.append(Self.failure(id, code: id["imageDigest"] != nil ? "InvalidImageDigest" : "MissingDigestAndTag", reason: error.message))
            }
        }
        return ["images": .array(images), "failures": .array(failures)]
    }

    /// Whether the id names a tag and a digest that both exist but not together.
    private func tagMismatch(_ id: JSONValue, _ all: [ImageRecord]) throws -> Bool {
        guard let tag = id["imageTag"]?.string, let digest = id["imageDigest"]?.string.flatMap({ Digest($0) }) else { return false }
        return all.contains { $0.tags.contains(tag) } && all.contains { $0.digest == digest }
    }

    static func failure(_ id: JSONValue, code: String, reason: String) -> JSONValue {
        ["imageId": id, "failureCode": .string(code), "failureReason": .string(reason)]
    }

    /// By digest: the image and all its tags go. By tag: the tag goes, and the image with it when
    /// that was its last tag (ECR's rule). An image an index lists is refused while the index exists.
    func batchDeleteImage(_ call: ECRCall) async throws -> JSONValue {
        let name = try repositoryName(call)
        try await authorize(call, .delete, on: name)
        var all = try await images(name)
        var deleted: [JSONValue] = []
        var failures: [JSONValue] = []
        for id in call.input["imageIds"]?.array ?? [] {
            let image: ImageRecord
            do {
                guard let found = try find(id, in: all) else {
                    let mismatch = try tagMismatch(id, all)
                    failures.append(
                        Self.failure(
                            id, code: mismatch ? "ImageTagDoesNotMatchDigest" : "ImageNotFound",
                            reason: mismatch ? "Tag does not match digest" : "Requested image not found"))
                    continue
                }
                image = found
            } catch let error as ECRError {
                failures.append(Self.failure(id, code: id["imageDigest"] != nil ? "InvalidImageDigest" : "MissingDigestAndTag", reason: error.message))
                continue
            }
            let tag = id["imageTag"]?.string
            let removesImage = id["imageDigest"] != nil || image.tags.count <= 1
            if removesImage, try await !metadata.childManifests(in: name, of: [image.digest]).isEmpty {
                failures.append(
                    Self.failure(
                        id, code: "ImageReferencedByManifestList",
                        reason: "Requested image is referenced by an image index; delete the index first"))
                continue
            }
            if removesImage {
                do {
                    try await manifestChanges.delete(.digest(image.digest), in: name, by: call.requester)
                } catch let error as RegistryError where error.code == .manifestUnknown {
                    failures.append(Self.failure(id, code: "ImageNotFound", reason: "Requested image not found"))
                    continue
                }
                if image.tags.isEmpty {
                    deleted.append(Self.imageID(digest: image.digest, tag: nil))
                } else {
                    deleted += image.tags.map { Self.imageID(digest: image.digest, tag: $0) }
                }
                all.removeAll { $0.digest == image.digest }
            } else if let tag, let parsedTag = Tag(tag) {
                try await manifestChanges.delete(.tag(parsedTag), in: name, by: call.requester)
                deleted.append(Self.imageID(digest: image.digest, tag: tag))
                if let index = all.firstIndex(where: { $0.digest == image.digest }) { all[index].tags.removeAll { $0 == tag } }
            }
        }
        return ["imageIds": .array(deleted), "failures": .array(failures)]
    }

    func putImage(_ call: ECRCall) async throws -> JSONValue {
        let name = try repositoryName(call)
        try await authorize(call, .push, on: name)
        _ = try await existingRepository(name)
        let text = call.string("imageManifest") ?? ""
        let bytes = Array(text.utf8)
        let mediaType = call.string("imageManifestMediaType")
        let digest = Digest.of(bytes)
        if let declared = call.string("imageDigest"), Digest(declared) != digest {
            throw ECRError(
                "ImageDigestDoesNotMatchException",
                "Invalid parameter at 'imageDigest' failed to satisfy constraint: 'The provided digest \(declared) does not match the digest of the manifest, \(digest)'"
            )
        }
        let tag = try call.string("imageTag").map { text -> Tag in
            guard let tag = Tag(text) else {
                throw ECRError.invalidParameter("Invalid parameter at 'imageTag' failed to satisfy constraint: '\(text)' is not a valid tag")
            }
            return tag
        }
        if let existing = try await metadata.manifest(digest, in: name) {
            let alreadyTagged = try await tag.asyncMap { try await metadata.resolveTag($0, in: name) == existing.digest } ?? true
            if alreadyTagged {
                throw ECRError(
                    "ImageAlreadyExistsException",
                    "Image with digest '\(digest)'\(tag.map { " and tag '\($0)'" } ?? "") already exists in the repository with name '\(name)' in registry with id '\(registryID)'"
                )
            }
        }
        let parsed: ParsedManifest
        do {
            parsed = try ManifestParser.parse(bytes, contentType: mediaType)
        } catch {
            throw ECRError.invalidParameter("Invalid parameter at 'imageManifest' failed to satisfy constraint: '\(error.message)'")
        }
        let pushed: PushedManifest
        do {
            pushed = try await manifestChanges.push(
                ByteBuffer(bytes: bytes), contentType: mediaType, in: name,
                reference: tag.map(Reference.tag) ?? .digest(digest), by: call.requester)
        } catch let error as RegistryError {
            switch error.code {
            case .manifestBlobUnknown:
                let missing = error.detail.flatMap { Digest($0) }
                if let missing, parsed.manifests.contains(where: { $0.digest == missing }) {
                    throw ECRError("ReferencedImagesNotFoundException", "The image index references \(missing), which is not in the repository '\(name)'")
                }
                throw ECRError(
                    "LayersNotFoundException",
                    "Layers with digests '[\(error.detail ?? "?")]' required for pushing image into repository with name '\(name)' in the registry with id '\(registryID)' do not exist"
                )
            case .denied where error.message.hasPrefix("tag invalid"):
                throw ECRError(
                    "ImageTagAlreadyExistsException",
                    "The image tag '\(tag?.value ?? "")' already exists in the '\(name)' repository and cannot be overwritten because the repository is immutable."
                )
            case .denied:
                throw ECRError("LimitExceededException", error.message)
            default:
                throw ECRError.invalidParameter("Invalid parameter at 'imageManifest' failed to satisfy constraint: '\(error.message)'")
            }
        }
        return [
            "image": .compact([
                "registryId": .string(registryID),
                "repositoryName": .string(name.value),
                "imageId": Self.imageID(digest: pushed.digest, tag: tag?.value),
                "imageManifest": .string(text),
                "imageManifestMediaType": .string(parsed.mediaType),
            ])
        ]
    }

    func putImageTagMutability(_ call: ECRCall) async throws -> JSONValue {
        let name = try repositoryName(call)
        try await authorize(call, .administer, on: name)
        let policy = try tagMutability(call)
        _ = try await settingsChanges.setTagMutability(policy, of: name, by: call.requester, ifMissing: .refuse)
        return .compact([
            "registryId": .string(registryID),
            "repositoryName": .string(name.value),
            "imageTagMutability": .string(policy.mode.rawValue),
            "imageTagMutabilityExclusionFilters": policy.exclusions.isEmpty
                ? nil
                : .array(policy.exclusions.map { ["filterType": "WILDCARD", "filter": .string($0)] }),
        ])
    }

    func putImageScanningConfiguration(_ call: ECRCall) async throws -> JSONValue {
        let name = try repositoryName(call)
        try await authorize(call, .administer, on: name)
        let scanOnPush = call.input["imageScanningConfiguration"]?["scanOnPush"]?.bool ?? false
        _ = try await settingsChanges.setScanOnPush(scanOnPush, of: name, by: call.requester, ifMissing: .refuse)
        return [
            "registryId": .string(registryID), "repositoryName": .string(name.value),
            "imageScanningConfiguration": ["scanOnPush": .bool(scanOnPush)],
        ]
    }
}

extension Optional {
    func asyncMap<T>(_ transform: (Wrapped) async throws -> T) async rethrows -> T? {
        switch self {
        case .some(let value): try await transform(value)
        case .none: nil
        }
    }
}
