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

    public init(id: String, repository: String, size: Int64, algorithm: DigestAlgorithm, createdAt: Int64, updatedAt: Int64) {
        self.id = id
        self.repository = repository
        self.size = size
        self.algorithm = algorithm
        self.createdAt = createdAt
        self.updatedAt = updatedAt
    }
}

public struct ManifestRecord: Sendable {
    public var digest: Digest
    public var mediaType: String
    public var size: Int64
    public var content: ByteBuffer
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
