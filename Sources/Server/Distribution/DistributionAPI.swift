import Access
import BlobStore
import HTTPTypes
import Hummingbird
import Logging
import Metadata
import NIOCore
import OCI
import Registry
import Scanning
import Signatures
import UseCases

#if canImport(FoundationEssentials)
import FoundationEssentials
#else
import Foundation
#endif

/// The OCI Distribution API over HTTP: parses `/v2` requests, calls the registry's use-cases and
/// renders their results and errors the way the spec and real clients expect.
struct DistributionAPI: Sendable {
    let registry: Registry
    /// Nil when authentication is turned off: then every request is allowed.
    let authentication: RequestAuthentication?
    /// The largest page of tags or repositories served at once.
    let maximumPageSize: Int
    /// Namespaces' pull policies, judged on scan results.
    let pullGate: PullGate?
    /// Namespaces' signature policies.
    let signatureGate: SignatureGate?
    /// Page size for the catalog when the client does not ask for one.
    let defaultCatalogPageSize = 1000

    private var audit: AuditLog? { authentication?.access.audit }
    /// Commit, then audit (and, later, replicate): shared with ECR's PutImage and BatchDeleteImage.
    private var manifestChanges: ManifestChanges { ManifestChanges(registry: registry, audit: audit, pullGate: pullGate, signatureGate: signatureGate) }
    /// Resolve, negotiate, gate, then count: the steps of a pull, shared with ECR's BatchGetImage.
    private var manifestPulls: ManifestPulls {
        ManifestPulls(
            registry: registry, pullGate: pullGate, authorizer: authentication?.access.authorizer, audit: audit, signatureGate: signatureGate)
    }

    func respond(to request: Request, context: WharfRequestContext) async -> Response {
        var response: Response
        do {
            guard let route = DistributionRoute.parse(path: request.uri.path) else {
                throw RegistryError(.unsupported, "no such endpoint: \(request.uri.path)", status: 404)
            }
            let caller = try await authorize(route, request, context)
            response = try await dispatch(route, request, caller)
        } catch let error as RegistryError {
            response = ErrorResponse.make(error, method: request.method)
        } catch let error as UploadError {
            response = uploadErrorResponse(error, request: request)
        } catch  where StorageSpace.isNoSpace(error) {
            context.logger.error("storage full", metadata: ["error": "\(String(reflecting: error))", "path": "\(request.uri.path)"])
            response = ErrorResponse.json(status: .init(code: 507), code: "UNKNOWN", message: ErrorResponse.storageFull, method: request.method)
        } catch {
            context.logger.error("request failed", metadata: ["error": "\(String(reflecting: error))", "path": "\(request.uri.path)"])
            response = ErrorResponse.json(
                status: .internalServerError, code: "UNKNOWN", message: "internal server error; see the server log", method: request.method)
        }
        response.headers[.dockerDistributionAPIVersion] = "registry/2.0"
        return response
    }

    // MARK: Access

    /// What a request needs: any signed-in caller, the catalog, or an action on a repository.
    private enum Requirement {
        case signedIn
        case catalog
        case repository(RepositoryName, Action)

        /// The scope a challenge names, so the client asks the token endpoint for exactly that.
        var scope: String? {
            switch self {
            case .signedIn: nil
            case .catalog: "registry:catalog:*"
            case .repository(let name, .pull): "repository:\(name):pull"
            case .repository(let name, .push): "repository:\(name):pull,push"
            case .repository(let name, .delete): "repository:\(name):delete"
            case .repository(let name, let action): "repository:\(name):\(action.rawValue)"
            }
        }
    }

    private func requirement(_ route: DistributionRoute, _ method: HTTPRequest.Method) throws -> Requirement {
        switch route {
        case .base: return .signedIn
        case .catalog: return .catalog
        case .tags(let name), .referrers(let name, _): return .repository(try repositoryName(name), .pull)
        case .manifest(let name, _), .blob(let name, _):
            let action: Action =
                switch method {
                case .put: .push
                case .delete: .delete
                default: .pull
                }
            return .repository(try repositoryName(name), action)
        case .uploads(let name), .upload(let name, _): return .repository(try repositoryName(name), .push)
        }
    }

    /// Checks credentials and permissions: 401 with a challenge for the anonymous and for bad
    /// credentials, and for a token lacking the scope (with `error="insufficient_scope"` and the
    /// scope in the challenge); 403 for a caller signed in with credentials who lacks the permission.
    private func authorize(_ route: DistributionRoute, _ request: Request, _ context: WharfRequestContext) async throws -> Caller {
        guard let authentication else { return .anonymous(source: context.sourceAddress) }
        let requirement = try requirement(route, request.method)
        let caller = try await authentication.caller(for: request, context: context, challengeScope: requirement.scope)
        let identity = caller.identity
        switch requirement {
        case .signedIn:
            if identity.kind == .anonymous {
                throw authentication.unauthorized(request, scope: nil, message: "authentication required")
            }
        case .catalog:
            if identity.kind == .anonymous {
                throw authentication.unauthorized(request, scope: requirement.scope, message: "authentication required")
            }
            if let token = caller.token, !token.mayListCatalog {
                throw authentication.insufficientScope(request, scope: requirement.scope, message: "the token does not grant catalog access")
            }
        case .repository(let repository, let action):
            if try await allowed(caller, action, on: repository) {
                if action == .push, caller.identity.kind != .anonymous {
                    try await authentication.access.authorizer.ensureNamespace(String(repository.namespace), for: identity)
                }
                return caller
            }
            if identity.kind == .anonymous {
                throw authentication.unauthorized(request, scope: requirement.scope, message: "authentication required to \(action.rawValue) \(repository)")
            }
            if caller.token != nil {
                throw authentication.insufficientScope(
                    request, scope: requirement.scope, message: "the token does not grant \(action.rawValue) on \(repository)")
            }
            audit?.record(
                AuditEvent(
                    actor: identity, action: action.rawValue, namespace: String(repository.namespace),
                    repository: repository.value, result: .denied, source: caller.source))
            throw RegistryError(.denied, "\(identity) may not \(action.rawValue) \(repository)")
        }
        return caller
    }

    /// Whether `caller` may take `action` on `repository`: by the token's grant, or by the rules.
    private func allowed(_ caller: Caller, _ action: Action, on repository: RepositoryName) async throws -> Bool {
        guard let authentication else { return true }
        if let token = caller.token { return try await authentication.access.authorizer.tokenActions(token, on: repository).contains(action) }
        return try await authentication.access.authorizer.actions(for: caller.identity, on: repository).contains(action)
    }

    private func record(_ action: String, by caller: Caller, in repository: RepositoryName, target: String, detail: String? = nil) {
        audit?.record(
            AuditEvent(
                actor: caller.identity, action: action, namespace: String(repository.namespace),
                repository: repository.value, target: target, source: caller.source, detail: detail))
    }

    // MARK: Dispatch

    private func dispatch(_ route: DistributionRoute, _ request: Request, _ caller: Caller) async throws -> Response {
        let method = request.method
        switch route {
        case .base:
            try allow(method, [.get, .head])
            return jsonResponse(ByteBuffer(string: "{}"), method: method)
        case .catalog:
            try allow(method, [.get])
            return try await catalog(request, caller)
        case .tags(let name):
            try allow(method, [.get])
            return try await tags(request, repository: try repositoryName(name))
        case .manifest(let name, let reference):
            try allow(method, [.get, .head, .put, .delete])
            let repository = try repositoryName(name)
            switch method {
            case .put: return try await putManifest(request, repository: repository, reference: reference, caller)
            case .delete: return try await deleteManifest(repository: repository, reference: reference, caller)
            default: return try await getManifest(request, repository: repository, reference: reference, caller)
            }
        case .blob(let name, let digest):
            try allow(method, [.get, .head, .delete])
            let repository = try repositoryName(name)
            let digest = try parseDigest(digest)
            switch method {
            case .delete:
                try await registry.deleteBlob(digest, in: repository)
                record("delete", by: caller, in: repository, target: digest.description)
                return emptyResponse(.accepted)
            case .head: return try await headBlob(repository: repository, digest: digest)
            default: return try await getBlob(request, repository: repository, digest: digest, caller)
            }
        case .uploads(let name):
            try allow(method, [.post])
            return try await startUpload(request, repository: try repositoryName(name), caller)
        case .upload(let name, let id):
            try allow(method, [.get, .patch, .put, .delete])
            let repository = try repositoryName(name)
            switch method {
            case .patch: return try await patchUpload(request, repository: repository, id: id)
            case .put: return try await putUpload(request, repository: repository, id: id)
            case .delete:
                try await registry.cancelUpload(id, in: repository)
                return emptyResponse(.noContent)
            default:
                let status = try await registry.uploadStatus(id, in: repository)
                return uploadProgressResponse(.noContent, repository: repository, status: status)
            }
        case .referrers(let name, let digest):
            try allow(method, [.get])
            return try await referrers(request, repository: try repositoryName(name), digest: try parseDigest(digest))
        }
    }

    // MARK: Blobs

    private func headBlob(repository: RepositoryName, digest: Digest) async throws -> Response {
        let blob = try await registry.blobInfo(digest, in: repository, refreshLink: true)
        var headers = blobHeaders(digest)
        headers[.contentLength] = String(blob.size)
        return Response(status: .ok, headers: headers, body: .init())
    }

    private func getBlob(_ request: Request, repository: RepositoryName, digest: Digest, _ caller: Caller) async throws -> Response {
        let reader: any BlobReader
        do {
            reader = try await BlobPulls(
                registry: registry, pullGate: pullGate, authorizer: authentication?.access.authorizer, audit: audit, signatureGate: signatureGate
            )
            .open(digest, in: repository, by: caller.requester)
        } catch ManifestPulls.Refusal.gated(let message, let detail) {
            throw RegistryError(.denied, message, detail: detail, status: 403)
        }
        let pulls = registry.pulls
        return try await BlobResponse.make(request, reader: reader, digest: digest) { pulls.recordEgress($0, in: repository.value) }
    }

    private func blobHeaders(_ digest: Digest) -> HTTPFields { BlobResponse.headers(digest) }

    // MARK: Uploads

    private func startUpload(_ request: Request, repository: RepositoryName, _ caller: Caller) async throws -> Response {
        let query = request.uri.queryParameters
        if let mount = query.get("mount") {
            let digest = try parseDigest(mount)
            // Mounting needs pull on the source; without it the client simply uploads the blob.
            if let from = query.get("from"), let source = RepositoryName(from), try await allowed(caller, .pull, on: source),
                let blob = try await registry.mountBlob(digest, from: source, into: repository)
            {
                return blobCreatedResponse(repository: repository, digest: blob.digest)
            }
            // Not mountable: fall back to a regular upload session (202), as the spec asks.
        } else if let digestParameter = query.get("digest") {
            let digest = try parseDigest(digestParameter)
            let blob = try await registry.pushBlob(request.body, in: repository, digest: digest, length: contentLength(request))
            return blobCreatedResponse(repository: repository, digest: blob.digest)
        }
        var algorithm = DigestAlgorithm.sha256
        if let requested = query.get("digest-algorithm") {
            guard let parsed = DigestAlgorithm(rawValue: requested) else {
                throw RegistryError.digestInvalid("digest algorithm '\(requested)' is not supported (use sha256 or sha512)")
            }
            algorithm = parsed
        }
        let status = try await registry.startUpload(
            in: repository, algorithm: algorithm, owner: caller.identity.kind == .anonymous ? nil : caller.identity.name)
        var response = uploadProgressResponse(.accepted, repository: repository, status: status)
        if let minimum = registry.configuration.chunkMinimumLength {
            response.headers[.ociChunkMinLength] = String(minimum)
        }
        return response
    }

    private func patchUpload(_ request: Request, repository: RepositoryName, id: String) async throws -> Response {
        let chunk = try chunkRange(request)
        let status = try await registry.appendToUpload(
            id, in: repository, start: chunk?.first, length: chunk?.length,
            body: request.body
        )
        return uploadProgressResponse(.accepted, repository: repository, status: status)
    }

    private func putUpload(_ request: Request, repository: RepositoryName, id: String) async throws -> Response {
        guard let digestParameter = request.uri.queryParameters.get("digest") else {
            throw RegistryError.digestInvalid("closing an upload needs the blob's digest: PUT …?digest=<digest>")
        }
        let digest = try parseDigest(digestParameter)
        let chunk = try chunkRange(request)
        let blob = try await registry.completeUpload(
            id, in: repository, digest: digest, start: chunk?.first, length: chunk?.length, body: request.body
        )
        return blobCreatedResponse(repository: repository, digest: blob.digest)
    }

    private func chunkRange(_ request: Request) throws -> ClientByteRange? {
        guard let header = request.headers[.contentRange] else { return nil }
        guard let range = ByteRanges.parseChunkRange(header) else {
            throw RegistryError(
                .blobUploadInvalid, "malformed Content-Range '\(header)'; expected <start>-<end> with start <= end <= \(ClientNumber.maximumByteOffset)",
                status: 400)
        }
        return range
    }

    private func uploadLocation(_ repository: RepositoryName, _ id: String) -> String {
        "/v2/\(repository)/blobs/uploads/\(id)"
    }

    private func uploadProgressResponse(_ status: HTTPResponse.Status, repository: RepositoryName, status upload: UploadStatus) -> Response {
        var headers = HTTPFields()
        headers[.location] = uploadLocation(repository, upload.id)
        headers[.range] = ByteRanges.uploadRange(size: upload.size)
        headers[.dockerUploadUUID] = upload.id
        headers[.contentLength] = "0"
        return Response(status: status, headers: headers, body: .init())
    }

    private func blobCreatedResponse(repository: RepositoryName, digest: Digest) -> Response {
        var headers = HTTPFields()
        headers[.location] = "/v2/\(repository)/blobs/\(digest)"
        headers[.dockerContentDigest] = digest.description
        headers[.contentLength] = "0"
        return Response(status: .created, headers: headers, body: .init())
    }

    private func uploadErrorResponse(_ error: UploadError, request: Request) -> Response {
        let status: UploadStatus
        let registryError: RegistryError
        switch error {
        case .outOfOrder(let current, let requestedStart):
            status = current
            registryError = RegistryError(
                .blobUploadInvalid, "chunk starts at byte \(requestedStart), but the upload has \(current.size) bytes; resume at \(current.size)", status: 416)
        case .lengthMismatch(let current, let declared, let received):
            status = current
            registryError = RegistryError(
                .blobUploadInvalid, "Content-Range announced \(declared) bytes but \(received) arrived; the chunk was discarded", status: 400)
        }
        var response = ErrorResponse.make(registryError, method: request.method)
        response.headers[.range] = ByteRanges.uploadRange(size: status.size)
        response.headers[.dockerUploadUUID] = status.id
        if case .upload(let name, _) = DistributionRoute.parse(path: request.uri.path) {
            response.headers[.location] = "/v2/\(name)/blobs/uploads/\(status.id)"
        }
        return response
    }

    // MARK: Manifests

    private func getManifest(_ request: Request, repository: RepositoryName, reference: String, _ caller: Caller) async throws -> Response {
        let reference = try parseReference(reference, forWriting: false)
        let accepted = request.headers[values: .accept]
        let manifest: ServedManifest
        do {
            manifest = try await manifestPulls.pull(
                reference, in: repository, by: Requester(identity: caller.identity, source: caller.source),
                accepting: { Self.accepts(accepted, mediaType: $0) },
                purpose: request.method == .get ? .serve : .describe)
        } catch ManifestPulls.Refusal.notAcceptable(let mediaType) {
            throw RegistryError(.manifestUnknown, "manifest \(reference) is \(mediaType), which the request's Accept header does not include")
        } catch ManifestPulls.Refusal.gated(let message, let detail) {
            throw RegistryError(.denied, message, detail: detail, status: 403)
        }
        var headers = HTTPFields()
        headers[.contentType] = manifest.mediaType
        headers[.dockerContentDigest] = manifest.digest.description
        headers[.eTag] = "\"\(manifest.digest)\""
        headers[.contentLength] = String(manifest.content.readableBytes)
        if let ifNoneMatch = request.headers[.ifNoneMatch], ifNoneMatch.contains(manifest.digest.description) {
            return Response(status: .notModified, headers: headers, body: .init())
        }
        if request.method == .head {
            return Response(status: .ok, headers: headers, body: .init())
        }
        return Response(status: .ok, headers: headers, body: .init(byteBuffer: manifest.content))
    }

    /// Content negotiation: a client that lists manifest media types gets only those. A client
    /// that lists none (no Accept, `*/*`, `application/json`) gets whatever is stored.
    static func accepts(_ acceptValues: [String], mediaType: String) -> Bool {
        // Fast path: the stored type is listed as is (what every client pulling it sends).
        for value in acceptValues where value.utf8.count >= mediaType.utf8.count && value.contains(mediaType) {
            if MediaType.listed(mediaType, in: value) { return true }
        }
        var listsManifestTypes = false
        for value in acceptValues {
            for item in value.split(separator: ",") {
                let type = MediaType.base(of: item)
                if type == mediaType || type == "*/*" { return true }
                if MediaType.supportedManifests.contains(type) { listsManifestTypes = true }
            }
        }
        return !listsManifestTypes
    }

    private func putManifest(_ request: Request, repository: RepositoryName, reference: String, _ caller: Caller) async throws -> Response {
        let reference = try parseReference(reference, forWriting: true)
        var extraTags: [Tag] = []
        for value in request.uri.queryParameters.getAll("tag") {
            guard let tag = Tag(value) else { throw invalidTag(value) }
            extraTags.append(tag)
        }
        let content: ByteBuffer
        do {
            content = try await request.body.collect(upTo: ManifestParser.maximumSize)
        } catch is NIOTooManyBytesError {
            throw RegistryError(.manifestInvalid, "manifest is larger than the \(ManifestParser.maximumSize)-byte limit", status: 413)
        }
        let pushed = try await manifestChanges.push(
            content, contentType: request.headers[.contentType], in: repository,
            reference: reference, extraTags: extraTags, by: caller.requester)
        var headers = HTTPFields()
        headers[.location] = "/v2/\(repository)/manifests/\(pushed.digest)"
        headers[.dockerContentDigest] = pushed.digest.description
        headers[.contentLength] = "0"
        if let subject = pushed.subject { headers[.ociSubject] = subject.description }
        if !extraTags.isEmpty {
            for tag in pushed.tags { headers.append(HTTPField(name: .ociTag, value: tag)) }
        }
        return Response(status: .created, headers: headers, body: .init())
    }

    private func deleteManifest(repository: RepositoryName, reference: String, _ caller: Caller) async throws -> Response {
        let reference = try parseReference(reference, forWriting: false)
        try await manifestChanges.delete(reference, in: repository, by: caller.requester)
        return emptyResponse(.accepted)
    }

    // MARK: Listings

    private func tags(_ request: Request, repository: RepositoryName) async throws -> Response {
        let (limit, requested) = try pageSize(request, default: maximumPageSize)
        let last = request.uri.queryParameters.get("last")
        // Always asks the registry, so an unknown repository answers NAME_UNKNOWN even for n=0.
        let page = try await registry.tagPage(in: repository, after: last, limit: limit)
        var headers = HTTPFields()
        if limit > 0, page.hasMore, let lastTag = page.last {  // n=0: an empty list and no Link header (spec)
            headers[.link] = "</v2/\(repository)/tags/list?n=\(requested)&last=\(percentEncode(lastTag))>; rel=\"next\""
        }
        let prefix = #"{"name":"# + JSONString.literal(repository.value) + #","tags":["#
        var body = ByteBuffer()
        body.reserveCapacity(prefix.utf8.count + page.elements.readableBytes + 2)
        body.writeString(prefix)
        body.writeImmutableBuffer(page.elements)
        body.writeString("]}")
        return jsonResponse(body, headers: headers)
    }

    private func catalog(_ request: Request, _ caller: Caller) async throws -> Response {
        let (limit, requested) = try pageSize(request, default: defaultCatalogPageSize)
        let last = request.uri.queryParameters.get("last")
        // The catalog lists only what the caller may pull (explicit Deny policies included).
        let (names, more) = try await RepositoryListings(registry: registry, authorizer: authentication?.access.authorizer)
            .names(after: last, limit: limit, by: caller.requester)
        var headers = HTTPFields()
        if more {
            headers[.link] = "</v2/_catalog?n=\(requested)&last=\(percentEncode(names[names.count - 1]))>; rel=\"next\""
        }
        var body = ByteBuffer()
        body.reserveCapacity(names.reduce(20) { $0 + $1.utf8.count + 3 })
        body.writeString(#"{"repositories":["#)
        for (index, name) in names.enumerated() {
            if index > 0 { body.writeInteger(UInt8(ascii: ",")) }
            JSONString.write(name, to: &body)
        }
        body.writeString("]}")
        return jsonResponse(body, headers: headers)
    }

    /// `n`: how many entries per page the client wants (capped at the server's maximum page).
    private func pageSize(_ request: Request, default defaultSize: Int) throws -> (limit: Int, requested: Int) {
        guard let value = request.uri.queryParameters.get("n") else {
            return (min(defaultSize, maximumPageSize), min(defaultSize, maximumPageSize))
        }
        guard let n = ClientNumber.parse(value, in: 0...Int.max) else {
            throw RegistryError(.unsupported, "n must be a non-negative integer, got '\(value)'", status: 400)
        }
        return (min(n, maximumPageSize), min(n, maximumPageSize))
    }

    private func referrers(_ request: Request, repository: RepositoryName, digest: Digest) async throws -> Response {
        let artifactType = request.uri.queryParameters.get("artifactType").flatMap { $0.isEmpty ? nil : $0 }
        let descriptors = try await registry.referrers(of: digest, in: repository, artifactType: artifactType)
        let index = ReferrersIndex(manifests: descriptors)
        let encoder = JSONEncoder()
        encoder.outputFormatting = [.sortedKeys, .withoutEscapingSlashes]
        var headers = HTTPFields()
        if artifactType != nil { headers[.ociFiltersApplied] = "artifactType" }
        return jsonResponse(ByteBuffer(bytes: try encoder.encode(index)), contentType: MediaType.ociIndex, headers: headers)
    }

    private struct ReferrersIndex: Encodable {
        let schemaVersion = 2
        let mediaType = MediaType.ociIndex
        let manifests: [Descriptor]
    }

    // MARK: Helpers

    private func allow(_ method: HTTPRequest.Method, _ allowed: [HTTPRequest.Method]) throws {
        guard allowed.contains(method) else {
            throw RegistryError(
                .unsupported, "\(method.rawValue) is not supported on this endpoint",
                headers: [("Allow", allowed.map(\.rawValue).joined(separator: ", "))])
        }
    }

    private func repositoryName(_ name: String) throws -> RepositoryName {
        guard let repository = RepositoryName(name) else { throw RegistryError.nameInvalid(name) }
        return repository
    }

    private func parseDigest(_ string: String) throws -> Digest {
        do {
            return try Digest(parsing: string)
        } catch {
            throw RegistryError.digestInvalid(error.description)
        }
    }

    private func parseReference(_ string: String, forWriting: Bool) throws -> Reference {
        do {
            return try Reference(parsing: string)
        } catch .invalidDigest(let error) {
            throw RegistryError.digestInvalid(error.description)
        } catch .invalidTag(let tag) {
            if forWriting { throw invalidTag(tag) }
            throw RegistryError(.manifestUnknown, "'\(tag)' is neither a valid tag nor a digest, so no manifest has it")
        }
    }

    private func invalidTag(_ tag: String) -> RegistryError {
        RegistryError.manifestInvalid("invalid tag '\(tag)': tags match [a-zA-Z0-9_][a-zA-Z0-9._-]{0,127}")
    }

    private func contentLength(_ request: Request) -> Int64? {
        request.headers[.contentLength].flatMap { ClientNumber.parse($0, in: 0...ClientNumber.maximumByteOffset) }
    }

    private func emptyResponse(_ status: HTTPResponse.Status) -> Response {
        Response(status: status, headers: [.contentLength: "0"], body: .init())
    }

    private func jsonResponse(
        _ body: ByteBuffer, contentType: String = "application/json", headers: HTTPFields = [:], method: HTTPRequest.Method = .get
    ) -> Response {
        var headers = headers
        headers[.contentType] = contentType
        headers[.contentLength] = String(body.readableBytes)
        return Response(status: .ok, headers: headers, body: method == .head ? .init() : .init(byteBuffer: body))
    }

    private func percentEncode(_ value: String) -> String {
        // Tags and repository names only contain [A-Za-z0-9._/-]; '/' is the one that needs escaping in a query.
        value.replacing("/", with: "%2F")
    }
}
