import Access
import BlobStore
import Encryption
import Lifecycle
import Logging
import Metadata
import Monitoring
import OCI
import Registry
import Replication
import Scanning
import Signatures
import Synchronization
import UseCases

#if canImport(FoundationEssentials)
import FoundationEssentials
#else
import Foundation
#endif

/// Amazon ECR's control-plane API (AWS JSON 1.1, `POST /` with `X-Amz-Target`) over Wharf's own
/// use-cases, so `aws ecr …` and boto3 work unchanged. Every call is SigV4-signed with a Wharf
/// access key, validated against botocore's model, and authorised with the same namespace roles
/// and resource policies as `/v2`.
public final class ECRService: Sendable {
    public static let targetPrefix = "AmazonEC2ContainerRegistry_V20150921."

    let registry: Registry
    let access: AccessControl
    let lifecycle: LifecycleService
    /// The background scanner; nil when scanning is off.
    let scans: ImageScanService?
    /// Namespaces' pull policies, which BatchGetImage obeys as `/v2` manifest pulls do.
    let pullGate: PullGate?
    let signatureGate: SignatureGate?
    /// The replication destinations and this registry's region (DescribeImageReplicationStatus, rule checks).
    let replication: ReplicationDirectory?
    public let downloads: LayerDownloadSigner
    let logger: Logger
    private let verifier: SigV4Verifier
    /// Decoded on the first ECR request, not at start: servers nobody points `aws ecr` at never pay for it.
    private var model: ECRModel { ECRModel.shared }
    /// Access keys whose `last_used_at` was written recently (at most once a minute per key).
    private let recentlyTouchedKeys = RecentSet(window: 60)

    var metadata: MetadataStore { registry.metadata }
    /// The use-cases shared with `/v2` and `/api/v1`.
    var manifestPulls: ManifestPulls {
        ManifestPulls(registry: registry, pullGate: pullGate, authorizer: access.authorizer, audit: access.audit, signatureGate: signatureGate)
    }
    var manifestChanges: ManifestChanges {
        ManifestChanges(registry: registry, audit: access.audit, pullGate: pullGate, signatureGate: signatureGate)
    }
    var settingsChanges: RepositorySettingsChanges { RepositorySettingsChanges(metadata: registry.metadata, audit: access.audit) }
    var registryID: String { access.authorizer.policies.registryID }

    public init(
        registry: Registry, access: AccessControl, lifecycle: LifecycleService, scans: ImageScanService? = nil,
        pullGate: PullGate? = nil, signatureGate: SignatureGate? = nil, replication: ReplicationDirectory? = nil, logger: Logger
    ) {
        self.replication = replication
        self.registry = registry
        self.access = access
        self.lifecycle = lifecycle
        self.scans = scans
        self.pullGate = pullGate
        self.signatureGate = signatureGate
        self.logger = logger
        self.downloads = LayerDownloadSigner(metadata: registry.metadata, sealer: access.store.sealer)
        let store = access.store
        self.verifier = SigV4Verifier(lookUp: { keyID in try await store.activeAccessKey(keyID) })
    }

    /// Every ECR operation name botocore knows: the actions resource policies may name.
    public static var knownActions: Set<String> { Set(ECRModel.shared.operationNames) }

    /// Answers one request; never throws: every failure is an AWS JSON error.
    public func handle(_ request: AWSJSONRequest, now: Int64 = Timestamp.nowMillis()) async -> AWSJSONResponse {
        let requestID = request.requestID ?? UUID().uuidString.lowercased()
        var operation = "?"
        var identity: Identity?
        do {
            guard request.method == "POST" else {
                throw ECRError("UnknownOperationException", "the ECR API takes POST requests with an X-Amz-Target header")
            }
            guard let target = request.header("X-Amz-Target") else {
                throw ECRError("UnknownOperationException", "the request has no X-Amz-Target header (AmazonEC2ContainerRegistry_V20150921.<Operation>)")
            }
            guard target.hasPrefix(Self.targetPrefix), model.inputShape(of: String(target.dropFirst(Self.targetPrefix.count))) != nil else {
                throw ECRError.unknownOperation(target)
            }
            operation = String(target.dropFirst(Self.targetPrefix.count))
            if let contentType = request.header("Content-Type"), !contentType.hasPrefix("application/x-amz-json-1.1") {
                throw ECRError.serialization("Content-Type must be application/x-amz-json-1.1, not \(contentType)")
            }
            let verified: SigV4Verifier.Verified
            do {
                verified = try await verifier.verify(request, now: now / 1000)
                registry.metrics.recordAuthentication(scheme: .sigv4, succeeded: true)
            } catch {
                registry.metrics.recordAuthentication(scheme: .sigv4, succeeded: false)
                throw error
            }
            identity = verified.identity
            if recentlyTouchedKeys.insert(verified.accessKeyID) { try? await access.store.touchAccessKey(verified.accessKeyID) }

            let input: JSONValue
            if request.body.isEmpty {
                input = [:]
            } else {
                guard let parsed = try? JSONDecoder().decode(JSONValue.self, from: Data(request.body)), case .object = parsed else {
                    throw ECRError.serialization("the request body is not a JSON object")
                }
                input = parsed
            }
            try model.validate(input, operation: operation)
            guard let handler = Self.operations[operation] else { throw ECRError.notImplemented(operation) }
            let call = ECRCall(
                operation: operation, identity: verified.identity, accessKeyID: verified.accessKeyID, region: verified.region, input: input,
                scheme: request.scheme, host: request.host, source: request.source)
            if let registryID = input["registryId"]?.string, registryID != self.registryID {
                throw ECRError.invalidParameter(
                    "registry '\(registryID)' is not this registry: Wharf's registry id is '\(self.registryID)' (setting ecr.registryId)")
            }
            let output = try await handler(self)(call)
            if !Self.readOnly.contains(operation), !Self.auditedByUseCases.contains(operation) { audit(call, result: .success) }
            return .success(output, requestID: requestID)
        } catch let error as ECRError {
            if error.type == "AccessDeniedException", let identity {
                access.audit.record(AuditEvent(actor: identity, action: "ecr.\(operation)", result: .denied, source: request.source))
            }
            return .failure(error, requestID: requestID)
        } catch {
            let mapped = map(error)
            if mapped.status >= 500 {
                logger.error(
                    "ECR operation failed", metadata: ["operation": "\(operation)", "error": "\(String(reflecting: error))", "request": "\(requestID)"])
            }
            return .failure(mapped, requestID: requestID)
        }
    }

    private func audit(_ call: ECRCall, result: AuditEvent.Result) {
        let repository = call.input["repositoryName"]?.string
        access.audit.record(
            AuditEvent(
                actor: call.identity, action: "ecr.\(call.operation)",
                namespace: repository.flatMap { RepositoryName($0) }.map { String($0.namespace) },
                repository: repository, result: result, source: call.source))
    }

    /// Operations whose use-case writes its own audit event (the same one `/api/v1` writes), so
    /// the log holds one event per change whichever API made it.
    static let auditedByUseCases: Set<String> = [
        "PutImageTagMutability", "PutImageScanningConfiguration", "PutLifecyclePolicy", "DeleteLifecyclePolicy", "StartImageScan",
        "PutImage", "BatchDeleteImage",
    ]

    /// Errors of the use-cases underneath, in ECR's terms.
    func map(_ error: any Error) -> ECRError {
        switch error {
        case let error as UseCaseError:
            switch error {
            case .repositoryNotFound(let name): return .repositoryNotFound(name, registryID: registryID)
            case .invalidLifecyclePolicy(let reason):
                return .invalidParameter("Invalid parameter at 'LifecyclePolicyText' failed to satisfy constraint: '\(reason)'")
            case .invalid(let message): return .invalidParameter(message)
            }
        default: return Self.map(error)
        }
    }

    /// Errors of the layers underneath, in ECR's terms.
    static func map(_ error: any Error) -> ECRError {
        switch error {
        case let error as ECRError: return error
        case let error as AccessError:
            switch error {
            case .forbidden(let message): return .accessDenied(message)
            case .invalid(let message), .conflict(let message), .notFound(let message): return .invalidParameter(message)
            }
        case let error as MetadataError:
            switch error {
            case .invalid(let message), .conflict(let message): return .invalidParameter(message)
            default: return .server("the operation failed: \(error)")
            }
        case let error as RegistryError:
            if let detail = error.detail, let fields = try? JSONDecoder().decode([String: String].self, from: Data(detail.utf8)),
                let code = fields["kmsError"]
            {
                return .kms(code, error.message)
            }
            return error.status >= 500 ? .server(error.message) : .invalidParameter(error.message)
        case EncryptionError.keyUnavailable(let keyID, let code, let message):
            return .kms(code, "The KMS key \(keyID) cannot be used (\(code)): \(message)")
        case EncryptionError.serviceFailed(let message):
            return .kms("KMSInternalException", message)
        case let error where StorageSpace.isNoSpace(error):
            return .server("the registry's storage is full (no space left on device); the operation changed nothing")
        case let error as LifecyclePolicy.ValidationError:
            // A stored policy that no longer validates (written before a bound existed) is reported, never evaluated.
            return .invalidParameter("the lifecycle policy is invalid: \(error.message); put a corrected policy")
        default:
            return .server("the operation failed on the server; see Wharf's log")
        }
    }

    /// Operations that change nothing: not written to the audit log.
    static let readOnly: Set<String> = [
        "DescribeRepositories", "ListImages", "DescribeImages", "BatchGetImage", "GetLifecyclePolicy", "GetLifecyclePolicyPreview",
        "GetRepositoryPolicy", "GetRegistryPolicy", "DescribeRegistry", "DescribeImageScanFindings", "ListTagsForResource",
        "BatchCheckLayerAvailability", "GetDownloadUrlForLayer", "UploadLayerPart", "GetAuthorizationToken",
        "ListPullTimeUpdateExclusions", "GetAccountSetting", "DescribeImageReplicationStatus", "GetRegistryScanningConfiguration",
        "BatchGetRepositoryScanningConfiguration", "DescribeRepositoryCreationTemplates",
    ]

    typealias Handler = @Sendable (ECRService) -> @Sendable (ECRCall) async throws -> JSONValue

    static let operations: [String: Handler] = [
        "CreateRepository": { $0.createRepository },
        "DescribeRepositories": { $0.describeRepositories },
        "DeleteRepository": { $0.deleteRepository },
        "ListImages": { $0.listImages },
        "DescribeImages": { $0.describeImages },
        "BatchGetImage": { $0.batchGetImage },
        "BatchDeleteImage": { $0.batchDeleteImage },
        "PutImage": { $0.putImage },
        "PutImageTagMutability": { $0.putImageTagMutability },
        "PutImageScanningConfiguration": { $0.putImageScanningConfiguration },
        "BatchCheckLayerAvailability": { $0.batchCheckLayerAvailability },
        "GetDownloadUrlForLayer": { $0.getDownloadUrlForLayer },
        "InitiateLayerUpload": { $0.initiateLayerUpload },
        "UploadLayerPart": { $0.uploadLayerPart },
        "CompleteLayerUpload": { $0.completeLayerUpload },
        "PutLifecyclePolicy": { $0.putLifecyclePolicy },
        "GetLifecyclePolicy": { $0.getLifecyclePolicy },
        "DeleteLifecyclePolicy": { $0.deleteLifecyclePolicy },
        "StartLifecyclePolicyPreview": { $0.startLifecyclePolicyPreview },
        "GetLifecyclePolicyPreview": { $0.getLifecyclePolicyPreview },
        "SetRepositoryPolicy": { $0.setRepositoryPolicy },
        "GetRepositoryPolicy": { $0.getRepositoryPolicy },
        "DeleteRepositoryPolicy": { $0.deleteRepositoryPolicy },
        "PutRegistryPolicy": { $0.putRegistryPolicy },
        "GetRegistryPolicy": { $0.getRegistryPolicy },
        "DeleteRegistryPolicy": { $0.deleteRegistryPolicy },
        "GetAuthorizationToken": { $0.getAuthorizationToken },
        "DescribeRegistry": { $0.describeRegistry },
        "PutReplicationConfiguration": { $0.putReplicationConfiguration },
        "DescribeImageReplicationStatus": { $0.describeImageReplicationStatus },
        "PutRegistryScanningConfiguration": { $0.putRegistryScanningConfiguration },
        "CreateRepositoryCreationTemplate": { $0.createRepositoryCreationTemplate },
        "DescribeRepositoryCreationTemplates": { $0.describeRepositoryCreationTemplates },
        "UpdateRepositoryCreationTemplate": { $0.updateRepositoryCreationTemplate },
        "DeleteRepositoryCreationTemplate": { $0.deleteRepositoryCreationTemplate },
        "GetRegistryScanningConfiguration": { $0.getRegistryScanningConfiguration },
        "BatchGetRepositoryScanningConfiguration": { $0.batchGetRepositoryScanningConfiguration },
        "StartImageScan": { $0.startImageScan },
        "DescribeImageScanFindings": { $0.describeImageScanFindings },
        "TagResource": { $0.tagResource },
        "UntagResource": { $0.untagResource },
        "ListTagsForResource": { $0.listTagsForResource },
        "RegisterPullTimeUpdateExclusion": { $0.registerPullTimeUpdateExclusion },
        "DeregisterPullTimeUpdateExclusion": { $0.deregisterPullTimeUpdateExclusion },
        "ListPullTimeUpdateExclusions": { $0.listPullTimeUpdateExclusions },
        "GetAccountSetting": { $0.getAccountSetting },
        "PutAccountSetting": { $0.putAccountSetting },
    ]
}

/// One authenticated, validated call.
struct ECRCall: Sendable {
    let operation: String
    let identity: Identity
    /// The access key that signed the call.
    let accessKeyID: String
    /// From the signature's credential scope: echoed in ARNs.
    let region: String
    let input: JSONValue
    let scheme: String
    let host: String
    let source: String?

    /// The caller as the use-cases know it.
    var requester: Requester { Requester(identity: identity, source: source) }

    func string(_ name: String) -> String? { input[name]?.string }
    func bool(_ name: String) -> Bool? { input[name]?.bool }
    /// An integer member as an exact value in `range` (nil when absent, fractional or outside it;
    /// model validation has refused those already, and converting a JSON double with `Int(_:)`
    /// would trap on them).
    func int(_ name: String, in range: ClosedRange<Int> = Int(Int32.min)...Int(Int32.max)) -> Int? {
        input[name]?.double.flatMap { ClientNumber.exactInteger($0, in: range) }
    }

    /// A `long` member (byte offsets), bounded like every offset a client names.
    func byteOffset(_ name: String) -> Int64? {
        input[name]?.double.flatMap { ClientNumber.exactInteger($0, in: 0...ClientNumber.maximumByteOffset) }
    }
}

/// Remembers keys for a while; `insert` says whether the key was new (or forgotten).
final class RecentSet: Sendable {
    private let window: Int64
    private let entries = Mutex<[String: Int64]>([:])

    init(window seconds: Int64) { self.window = seconds * 1000 }

    func insert(_ key: String) -> Bool {
        let now = Timestamp.nowMillis()
        return entries.withLock { entries in
            if let last = entries[key], now - last < window { return false }
            if entries.count > 10_000 { entries.removeAll() }
            entries[key] = now
            return true
        }
    }
}
