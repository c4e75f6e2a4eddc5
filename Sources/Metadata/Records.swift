import NIOCore
import OCI

#if canImport(FoundationEssentials)
import FoundationEssentials
#else
import Foundation
#endif

/// Wall-clock time as Unix milliseconds: how every timestamp is stored.
public enum Timestamp {
    public static func nowMillis() -> Int64 {
        Int64((Date().timeIntervalSince1970 * 1000).rounded())
    }

    /// RFC 3339 in UTC with milliseconds (`2026-12-07T16:01:11.330Z`), computed exactly from the
    /// integer (a `Date` round trip can turn .123 into .122).
    public static func rfc3339(millis: Int64) -> String {
        let seconds = CivilDate.floorDivide(millis, 1000)
        let milliseconds = millis - seconds * 1000
        let days = CivilDate.floorDivide(seconds, 86_400)
        let secondOfDay = seconds - days * 86_400
        let (year, month, day) = CivilDate.date(days: days)
        func pad(_ value: Int64, _ width: Int) -> String {
            let text = String(value)
            return String(repeating: "0", count: max(0, width - text.count)) + text
        }
        return "\(pad(year, 4))-\(pad(month, 2))-\(pad(day, 2))T\(pad(secondOfDay / 3600, 2)):\(pad(secondOfDay / 60 % 60, 2)):"
            + "\(pad(secondOfDay % 60, 2)).\(pad(milliseconds, 3))Z"
    }
}

public struct BlobRecord: Sendable, Equatable {
    public var digest: Digest
    public var size: Int64

    public init(digest: Digest, size: Int64) {
        self.digest = digest
        self.size = size
    }
}

public struct UploadRecord: Sendable, Equatable {
    public var id: String
    public var repository: String
    /// Bytes the client has been told were received.
    public var size: Int64
    public var algorithm: DigestAlgorithm
    public var createdAt: Int64
    public var updatedAt: Int64
    /// For an encrypted repository: the domain and the upload's wrapped data keys (the registry's
    /// own encoding; opaque here).
    public var encryption: String?
    /// For an encrypted upload: the partial last segment of the last request, sealed.
    public var sealedTail: String?

    public init(
        id: String, repository: String, size: Int64, algorithm: DigestAlgorithm, createdAt: Int64, updatedAt: Int64,
        encryption: String? = nil, sealedTail: String? = nil
    ) {
        self.id = id
        self.repository = repository
        self.size = size
        self.algorithm = algorithm
        self.createdAt = createdAt
        self.updatedAt = updatedAt
        self.encryption = encryption
        self.sealedTail = sealedTail
    }
}

public struct ManifestRecord: Sendable {
    public var digest: Digest
    public var mediaType: String
    public var size: Int64
    /// The exact bytes, or (with `sealedWith`) the bytes sealed for an encrypted repository.
    public var content: ByteBuffer
    public var sealedWith: String?
    public var subject: Digest?
    public var artifactType: String?
    public var pushedAt: Int64
    public var lastPulledAt: Int64?
}

/// One entry of a referrers listing: a manifest whose `subject` is the digest asked about.
public struct ReferrerRecord: Sendable, Equatable {
    public var digest: Digest
    public var mediaType: String
    public var size: Int64
    public var artifactType: String?
    /// The manifest's annotations as a JSON object, or nil when it has none.
    public var annotationsJSON: String?
}

/// A manifest ready to be stored: already parsed and validated by the caller.
public struct NewManifest: Sendable {
    public var repository: RepositoryName
    public var digest: Digest
    public var mediaType: String
    public var content: ByteBuffer
    /// For an encrypted repository: `content` is sealed, `sealedWith` names its domain and keys,
    /// and `plainSize` is the manifest's own size.
    public var sealedWith: String? = nil
    public var plainSize: Int64? = nil
    /// The artifact type a referrers listing shows for it.
    public var artifactType: String?
    public var subject: Digest?
    public var annotationsJSON: String?
    /// Config and layers that must already be in the repository (digest and declared size).
    public var blobs: [Descriptor]
    /// Child manifests of an index.
    public var children: [Digest]
    /// Whether an index may name children the repository does not hold (a sparse index).
    public var allowMissingChildren: Bool
    public var tags: [Tag]
    /// Which of the tags may not move to another manifest.
    public var tagMutability: TagMutabilityPolicy
    /// Who pushed it, for the push event.
    public var actor: String? = nil

    public init(
        repository: RepositoryName, digest: Digest, mediaType: String, content: ByteBuffer,
        artifactType: String?, subject: Digest?, annotationsJSON: String?,
        blobs: [Descriptor], children: [Digest], allowMissingChildren: Bool, tags: [Tag],
        tagMutability: TagMutabilityPolicy = .mutable
    ) {
        self.repository = repository
        self.digest = digest
        self.mediaType = mediaType
        self.content = content
        self.artifactType = artifactType
        self.subject = subject
        self.annotationsJSON = annotationsJSON
        self.blobs = blobs
        self.children = children
        self.allowMissingChildren = allowMissingChildren
        self.tags = tags
        self.tagMutability = tagMutability
    }
}

/// A tag that moved (or was created) while storing a manifest.
public struct TagChange: Sendable, Equatable {
    public var tag: String
    public var previous: Digest?
    public var current: Digest?

    public init(tag: String, previous: Digest?, current: Digest?) {
        self.tag = tag
        self.previous = previous
        self.current = current
    }
}
