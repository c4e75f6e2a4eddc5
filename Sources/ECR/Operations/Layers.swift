import Access
import Crypto
import Metadata
import NIOCore
import OCI
import Registry
import Synchronization
import UseCases

#if canImport(FoundationEssentials)
import FoundationEssentials
#else
import Foundation
#endif

/// Short-lived download URLs for layers (GetDownloadUrlForLayer): `/ecr/layers/<token>`, where the
/// token carries repository, digest and expiry under an HMAC with a key every node shares (it
/// lives in the database). Anyone holding the URL may download that one blob until it expires.
public final class LayerDownloadSigner: Sendable {
    public static let pathPrefix = "/ecr/layers/"
    static let lifetime: Int64 = 15 * 60 * 1000
    private let metadata: MetadataStore
    private let sealer: SecretSealer
    private let key = Mutex<SymmetricKey?>(nil)

    init(metadata: MetadataStore, sealer: SecretSealer) {
        self.metadata = metadata
        self.sealer = sealer
    }

    private func signingKey() async throws -> SymmetricKey {
        if let key = key.withLock({ $0 }) { return key }
        let candidate = try sealer.seal(SymmetricKey(size: .bits256).withUnsafeBytes { Data($0).base64EncodedString() })
        let stored = try await metadata.registrySetting("layer_download_key", initial: candidate)
        if !SecretSealer.isSealed(stored) {
            try await metadata.putRegistrySetting("layer_download_key", try sealer.seal(stored))  // written by an earlier version
        }
        let text = try sealer.open(stored)
        let loaded = SymmetricKey(data: Data(base64Encoded: text) ?? Data(text.utf8))
        key.withLock { $0 = loaded }
        return loaded
    }

    func token(repository: RepositoryName, digest: OCI.Digest, now: Int64 = Timestamp.nowMillis()) async throws -> String {
        let payload = "\(repository.value)\n\(digest)\n\(now + Self.lifetime)"
        let mac = HMAC<SHA256>.authenticationCode(for: Array(payload.utf8), using: try await signingKey())
        return Self.base64URL(Array(payload.utf8)) + "." + Self.base64URL(Array(mac))
    }

    /// The repository and digest a token grants, if it is genuine and not expired.
    public func verify(_ token: String, now: Int64 = Timestamp.nowMillis()) async throws -> (RepositoryName, OCI.Digest)? {
        let parts = token.split(separator: ".")
        guard parts.count == 2, let payload = Self.fromBase64URL(String(parts[0])), let mac = Self.fromBase64URL(String(parts[1])),
            HMAC<SHA256>.isValidAuthenticationCode(mac, authenticating: payload, using: try await signingKey())
        else { return nil }
        let fields = String(decoding: payload, as: UTF8.self).split(separator: "\n")
        guard fields.count == 3, let repository = RepositoryName(fields[0]), let digest = OCI.Digest(fields[1]),
            let expires = Int64(fields[2]), expires > now
        else { return nil }
        return (repository, digest)
    }

    static func base64URL(_ bytes: [UInt8]) -> String {
        Data(bytes).base64EncodedString().replacingOccurrences(of: "+", with: "-").replacingOccurrences(of: "/", with: "_")
            .replacingOccurrences(of: "=", with: "")
    }

    static func fromBase64URL(_ text: String) -> [UInt8]? {
        var base64 = text.replacingOccurrences(of: "-", with: "+").replacingOccurrences(of: "_", with: "/")
        while base64.count % 4 != 0 { base64 += "=" }
        return Data(base64Encoded: base64).map(Array.init)
    }
}

extension ECRService {
    /// The part size suggested to clients of the layer-upload operations.
    static let suggestedPartSize = 10 * 1024 * 1024

    func batchCheckLayerAvailability(_ call: ECRCall) async throws -> JSONValue {
        let name = try repositoryName(call)
        try await authorize(call, .pull, on: name)
        _ = try await existingRepository(name)
        var layers: [JSONValue] = []
        var failures: [JSONValue] = []
        for text in call.input["layerDigests"]?.array?.compactMap(\.string) ?? [] {
            guard let digest = OCI.Digest(text) else {
                failures.append(["layerDigest": .string(text), "failureCode": "InvalidLayerDigest", "failureReason": "Invalid layer digest"])
                continue
            }
            if let blob = try await metadata.blob(digest, in: name) {
                layers.append(["layerDigest": .string(text), "layerAvailability": "AVAILABLE", "layerSize": .integer(Int(blob.size))])
            } else {
                failures.append(["layerDigest": .string(text), "failureCode": "MissingLayerDigest", "failureReason": "Requested layer not found"])
            }
        }
        return ["layers": .array(layers), "failures": .array(failures)]
    }

    func getDownloadUrlForLayer(_ call: ECRCall) async throws -> JSONValue {
        let name = try repositoryName(call)
        try await authorize(call, .pull, on: name)
        _ = try await existingRepository(name)
        let text = call.string("layerDigest") ?? ""
        guard let digest = OCI.Digest(text) else {
            throw ECRError.invalidParameter("Invalid parameter at 'layerDigest' failed to satisfy constraint: '\(text)' is not a digest")
        }
        guard try await metadata.blob(digest, in: name) != nil else {
            throw ECRError(
                "LayersNotFoundException",
                "The image layer '\(digest)' does not exist in the repository with name '\(name)' in the registry with id '\(registryID)'")
        }
        // The pull gate covers layers as it covers manifests (checked when the URL is issued).
        do {
            try await BlobPulls(registry: registry, pullGate: pullGate, authorizer: access.authorizer, audit: access.audit, signatureGate: signatureGate)
                .checkGate(digest, in: name, by: call.requester)
        } catch ManifestPulls.Refusal.gated(let message, _) {
            throw ECRError("AccessDeniedException", message)
        }
        let token = try await downloads.token(repository: name, digest: digest)
        return ["downloadUrl": .string("\(call.scheme)://\(call.host)\(LayerDownloadSigner.pathPrefix)\(token)"), "layerDigest": .string(text)]
    }

    func initiateLayerUpload(_ call: ECRCall) async throws -> JSONValue {
        let name = try repositoryName(call)
        try await authorize(call, .push, on: name)
        _ = try await existingRepository(name)
        let upload = try await registry.startUpload(in: name, owner: call.identity.name)
        return ["uploadId": .string(upload.id), "partSize": .integer(Self.suggestedPartSize)]
    }

    /// Appends one part; parts arrive in order, each starting where the upload ends.
    func uploadLayerPart(_ call: ECRCall) async throws -> JSONValue {
        let name = try repositoryName(call)
        try await authorize(call, .push, on: name)
        let uploadID = call.string("uploadId") ?? ""
        guard let bytes = call.string("layerPartBlob").flatMap({ Data(base64Encoded: $0) }) else {
            throw ECRError("InvalidLayerPartException", "layerPartBlob is not base64")
        }
        guard let first = call.byteOffset("partFirstByte"), let last = call.byteOffset("partLastByte"),
            let part = ClientByteRange(first: first, last: last)
        else {
            throw ECRError(
                "InvalidLayerPartException",
                "partFirstByte and partLastByte must satisfy 0 <= partFirstByte <= partLastByte <= \(ClientNumber.maximumByteOffset)")
        }
        guard part.length == Int64(bytes.count) else {
            throw ECRError(
                "InvalidLayerPartException", "The part has \(bytes.count) bytes, but partFirstByte \(first) and partLastByte \(last) describe \(part.length)")
        }
        let status: UploadStatus
        do {
            status = try await registry.uploadStatus(uploadID, in: name)
        } catch {
            throw uploadNotFound(uploadID, name)
        }
        guard status.size == first else {
            throw ECRError("InvalidLayerPartException", "The part starts at byte \(first), but the upload's last valid byte received is \(status.size - 1)")
        }
        let body = [ByteBuffer(bytes: bytes)].async
        let updated: UploadStatus
        do {
            updated = try await registry.appendToUpload(uploadID, in: name, start: first, length: Int64(bytes.count), body: body)
        } catch is UploadError {
            throw ECRError("InvalidLayerPartException", "The part does not continue the upload; resend from the last valid byte")
        }
        return [
            "registryId": .string(registryID), "repositoryName": .string(name.value), "uploadId": .string(uploadID),
            "lastByteReceived": .integer(Int(updated.size - 1)),
        ]
    }

    func completeLayerUpload(_ call: ECRCall) async throws -> JSONValue {
        let name = try repositoryName(call)
        try await authorize(call, .push, on: name)
        let uploadID = call.string("uploadId") ?? ""
        let digests = call.input["layerDigests"]?.array?.compactMap(\.string) ?? []
        guard digests.count == 1, let digest = OCI.Digest(digests[0]) else {
            throw ECRError("InvalidLayerException", "CompleteLayerUpload takes exactly one valid layer digest")
        }
        let status: UploadStatus
        do {
            status = try await registry.uploadStatus(uploadID, in: name)
        } catch {
            throw uploadNotFound(uploadID, name)
        }
        guard status.size > 0 else { throw ECRError("EmptyUploadException", "The upload with id '\(uploadID)' contains no data") }
        if try await metadata.blob(digest, in: name) != nil {
            try? await registry.cancelUpload(uploadID, in: name)
            throw ECRError(
                "LayerAlreadyExistsException",
                "The image layer '\(digest)' already exists in the repository with name '\(name)' in the registry with id '\(registryID)'")
        }
        do {
            _ = try await registry.completeUpload(uploadID, in: name, digest: digest, start: nil, length: 0, body: [ByteBuffer]().async)
        } catch let error as RegistryError where error.code == .digestInvalid {
            throw ECRError("InvalidLayerException", error.message)
        }
        return [
            "registryId": .string(registryID), "repositoryName": .string(name.value), "uploadId": .string(uploadID),
            "layerDigest": .string(digest.description),
        ]
    }

    private func uploadNotFound(_ id: String, _ name: RepositoryName) -> ECRError {
        ECRError(
            "UploadNotFoundException", "The upload with id '\(id)' does not exist in the repository with name '\(name)' in the registry with id '\(registryID)'"
        )
    }
}

extension Array where Element: Sendable {
    /// The elements as an async sequence (the upload API takes streamed bodies).
    var async: AsyncArray<Element> { AsyncArray(elements: self) }
}

struct AsyncArray<Element: Sendable>: AsyncSequence, Sendable {
    let elements: [Element]

    struct AsyncIterator: AsyncIteratorProtocol {
        var remaining: IndexingIterator<[Element]>
        mutating func next() async -> Element? { remaining.next() }
    }

    func makeAsyncIterator() -> AsyncIterator { AsyncIterator(remaining: elements.makeIterator()) }
}
