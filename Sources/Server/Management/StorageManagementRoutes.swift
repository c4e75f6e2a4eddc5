import Access
import Foundation
import HTTPTypes
import Hummingbird
import Lifecycle
import Metadata
import NIOCore
import OCI
import Registry
import Scanner
import Scanning
import Signatures
import UseCases

/// The parts of the registry the management API controls beyond identities: repository settings
/// (tag immutability), lifecycle policies (per repository and registry-wide, with previews),
/// namespace quotas and garbage collection.
struct StorageManagement: Sendable {
    let registry: Registry
    let lifecycle: LifecycleService
    let collector: GarbageCollector
    let scans: ImageScanService
    let advisories: AdvisoryUpdater
    /// The use-case shared with ECR's settings operations.
    let settingsChanges: RepositorySettingsChanges
    /// Pull policies and VEX documents of namespaces.
    let scanPolicies: NamespaceScanPolicies
    /// Tag rules of namespaces.
    let tagRuleChanges: NamespaceTagRuleChanges
    /// Signature policies of namespaces, and the verdicts they give.
    let signatures: SignatureGate
    let signaturePolicies: NamespaceSignaturePolicies
    /// Webhooks and their delivery logs.
    let webhooks: WebhookChanges
    /// The storage and cost report.
    let reports: StorageReports
    /// Which node runs which scheduled work.
    let leases: ClusterLeases
    /// `filesystem` or `s3`.
    let storageKind: String
    /// Keys of encryption at rest.
    let encryptionKeys: EncryptionKeyChanges
    /// Replication queues and status.
    let replication: ReplicationOverview
}

extension API {
    /// A scan as the API shows it; `result` is the scanner's full report once COMPLETE.
    struct ImageScan: Encodable {
        var digest: String
        var status: String
        var description: String?
        var requestedAt: String?
        var completedAt: String?
        var severityCounts: [String: Int]?
        var result: StoredScanResult?

        init(_ record: ImageScanRecord?) {
            digest = record?.digest ?? ""
            status = record?.status.rawValue ?? "PENDING"
            description = record?.description
            requestedAt = record.flatMap { API.time($0.requestedAt) }
            completedAt = record?.completedAt.flatMap { API.time($0) }
            result = record?.result.flatMap { try? JSONDecoder().decode(StoredScanResult.self, from: Data($0.utf8)) }
            severityCounts = result?.severityCounts
        }

        /// Findings with VEX statements applied: suppressed ones stay, marked, and leave the counts.
        mutating func apply(_ applied: StoredScanResult) {
            result = applied
            severityCounts = applied.severityCounts
            suppressedCount = applied.suppressedCount
        }

        var suppressedCount: Int?
    }

    struct SignatureVerdict: Encodable {
        var digest: String
        var verified: Bool
        /// The policy key that verified it, and the signature manifest.
        var key: String?
        var signature: String?
        /// Why no signature was accepted.
        var reason: String?
    }

    struct AdvisoryDatabaseState: Encodable {
        /// Shown to system administrators only.
        var path: String?
        var summary: AdvisoryDatabase.Summary?
        var error: String?
        var update: AdvisoryUpdater.Status
    }

    struct RepositorySettings: Codable {
        var tagMutability: String
        var tagMutabilityExclusions: [String]
        var lifecyclePolicy: String?
        /// Where the governing lifecycle policy comes from: "repository", "registry:<scope>", or absent.
        var lifecyclePolicySource: String?
    }

    struct UpdateRepositorySettings: Codable {
        var tagMutability: String
        var tagMutabilityExclusions: [String]?
    }

    struct LifecyclePolicyText: Codable {
        /// The policy as ECR's JSON text.
        var policy: String
    }

    struct KeyRequest: Codable {
        var keyId: String
    }

    struct RegistryPolicy: Codable {
        var scope: String
        var policy: String
        var createdBy: String?
        var updatedAt: String?
    }

    struct Expiry: Codable {
        var repository: String
        var digest: String
        var tags: [String]
        var pushedAt: String?
        var lastPulledAt: String?
        var rulePriority: Int
        var ruleDescription: String?
        var alsoDeleted: [String]

        init(_ expiry: PlannedExpiry) {
            repository = expiry.repository
            digest = expiry.digest
            tags = expiry.tags
            pushedAt = API.time(expiry.pushedAt)
            lastPulledAt = API.time(expiry.lastPulledAt)
            rulePriority = expiry.rulePriority
            ruleDescription = expiry.ruleDescription
            alsoDeleted = expiry.alsoDeleted
        }
    }

    struct Usage: Codable {
        var namespace: String
        var usageBytes: Int64
        var quotaBytes: Int64?
    }

    struct SetQuota: Codable {
        /// Null removes the quota.
        var quotaBytes: Int64?
    }

    struct GarbageCollectionStatus: Codable {
        var running: GarbageCollectionReport?
        var recent: [GarbageCollectionReport]
    }

    struct ClusterStatus: Codable {
        var node: String
        var database: String
        var storage: String
        var leases: [ClusterLeases.Lease]
    }
}

extension ManagementAPI {
    static let repositoryPrefix = "/repositories/{repository}/"

    func storageRoutes(_ storage: StorageManagement) -> [Route] {
        let access = self.access
        @Sendable func repository(_ context: WharfRequestContext) throws -> RepositoryName {
            let name = try Self.parameter(context, "repository")
            guard let repository = RepositoryName(name) else { throw AccessError.invalid("'\(name)' is not a valid repository name") }
            return repository
        }
        @Sendable func settingsBody(_ repository: RepositoryName) async throws -> API.RepositorySettings {
            let settings = try await storage.registry.metadata.settings(of: repository)
            var source: String?
            if let (_, origin) = try? await storage.lifecycle.policy(for: repository) {
                switch origin {
                case .repository: source = "repository"
                case .registry(let scope): source = "registry:\(scope)"
                }
            }
            return API.RepositorySettings(
                tagMutability: settings.tagMutability.mode.rawValue, tagMutabilityExclusions: settings.tagMutability.exclusions,
                lifecyclePolicy: settings.lifecyclePolicy, lifecyclePolicySource: source)
        }
        return [
            Route(
                .get, Self.repositoryPrefix + "settings", "A repository's tag immutability and lifecycle policy (the name may contain '/')",
                response: "RepositorySettings"
            ) { _, context, caller in
                let name = try repository(context)
                try await access.requireRepositoryRead(name, by: caller.identity)
                return try Self.json(try await settingsBody(name))
            },
            Route(
                .put, Self.repositoryPrefix + "settings",
                "Set tag immutability: MUTABLE, IMMUTABLE, IMMUTABLE_WITH_EXCLUSION or MUTABLE_WITH_EXCLUSION with wildcard filters",
                request: "UpdateRepositorySettings", response: "RepositorySettings"
            ) { request, context, caller in
                let name = try repository(context)
                try await access.requireRepositoryAdministration(name, by: caller.identity)
                let body = try await Self.decode(API.UpdateRepositorySettings.self, request)
                guard let mode = TagMutabilityPolicy.Mode(rawValue: body.tagMutability) else {
                    throw AccessError.invalid("tagMutability must be one of \(TagMutabilityPolicy.Mode.allCases.map(\.rawValue).joined(separator: ", "))")
                }
                let policy = TagMutabilityPolicy(mode: mode, exclusions: body.tagMutabilityExclusions ?? [])
                _ = try await storage.settingsChanges.setTagMutability(policy, of: name, by: caller.requester, ifMissing: .create)
                return try Self.json(try await settingsBody(name))
            },
            Route(
                .put, Self.repositoryPrefix + "lifecycle-policy", "Set the repository's lifecycle policy (ECR's JSON language, validated)",
                request: "LifecyclePolicyText", response: "RepositorySettings"
            ) { request, context, caller in
                let name = try repository(context)
                try await access.requireRepositoryAdministration(name, by: caller.identity)
                let body = try await Self.decode(API.LifecyclePolicyText.self, request)
                _ = try await storage.settingsChanges.setLifecyclePolicy(body.policy, of: name, by: caller.requester, ifMissing: .create)
                return try Self.json(try await settingsBody(name))
            },
            Route(.delete, Self.repositoryPrefix + "lifecycle-policy", "Remove the repository's own lifecycle policy", status: .noContent) {
                _, context, caller in
                let name = try repository(context)
                try await access.requireRepositoryAdministration(name, by: caller.identity)
                try await storage.settingsChanges.deleteLifecyclePolicy(of: name, by: caller.requester, ifMissing: .create)
                return Response(status: .noContent)
            },
            Route(
                .post, Self.repositoryPrefix + "lifecycle-policy/preview",
                "Dry run: the images the given policy (or, without a body, the governing one) would expire now, and the rule for each",
                response: "[Expiry]"
            ) { request, context, caller in
                let name = try repository(context)
                try await access.requireRepositoryRead(name, by: caller.identity)
                let body = try await request.body.collect(upTo: 64 * 1024)
                var text: String?
                if body.readableBytes > 0 {
                    text = try JSONDecoder().decode(API.LifecyclePolicyText.self, from: Data(body.readableBytesView)).policy
                    try RepositorySettingsChanges.validateLifecyclePolicy(text!)
                }
                return try Self.json(try await storage.lifecycle.preview(name, policyText: text).map(API.Expiry.init))
            },
            Route(.post, Self.repositoryPrefix + "lifecycle-policy/apply", "Evaluate the governing policy now and expire what it selects", response: "[Expiry]")
            { _, context, caller in
                let name = try repository(context)
                try await access.requireRepositoryAdministration(name, by: caller.identity)
                return try Self.json(try await storage.lifecycle.apply(name).map(API.Expiry.init))
            },
            Route(
                .post, Self.repositoryPrefix + "scan", "Queue a vulnerability and secret scan of an image (tag or digest); GET the same path for the result",
                response: "ImageScan", status: .accepted,
                query: [
                    ("reference", "the tag or digest to scan"),
                    ("force", "true to rescan even if the image was just scanned against the current database (namespace admins)"),
                ]
            ) { request, context, caller in
                let name = try repository(context)
                try await access.requireRepositoryWrite(name, by: caller.identity)
                let digest = try await Self.resolve(request, in: name, storage.registry)
                let force = request.uri.queryParameters.get("force") == "true"
                if force { try await access.requireRepositoryAdministration(name, by: caller.identity) }
                do {
                    try await ScanRequests(scans: storage.scans, audit: access.audit).request(digest, in: name, force: force, by: caller.requester)
                } catch let refused as RescanRefused {
                    throw RegistryError(.tooManyRequests, refused.message, headers: [("Retry-After", String(refused.retryAfterSeconds))])
                }
                return try Self.json(API.ImageScan(try await storage.registry.metadata.scanRecord(digest)), status: .accepted)
            },
            Route(
                .get, Self.repositoryPrefix + "scan", "An image's latest scan: status, severity counts, vulnerabilities, secrets and packages",
                response: "ImageScan", query: [("reference", "the tag or digest")]
            ) { request, context, caller in
                let name = try repository(context)
                try await access.requireRepositoryRead(name, by: caller.identity)
                let digest = try await Self.resolve(request, in: name, storage.registry)
                guard let record = try await storage.registry.metadata.scanRecord(digest) else {
                    throw AccessError.notFound("\(digest) has not been scanned; POST to this path to scan it")
                }
                var scan = API.ImageScan(record)
                if let result = scan.result { scan.apply(try await storage.scans.vex.applied(to: result, in: name)) }
                return try Self.json(scan)
            },
            Route(
                .get, Self.repositoryPrefix + "sbom", "The SBOM of a scanned image, CycloneDX 1.5 (with its vulnerabilities) or SPDX 2.3 JSON",
                query: [
                    ("reference", "the tag or digest"), ("format", "cyclonedx (default) or spdx"),
                    ("platform", "os/arch of a multi-platform image (default: the first)"),
                ]
            ) { request, context, caller in
                let name = try repository(context)
                try await access.requireRepositoryRead(name, by: caller.identity)
                let digest = try await Self.resolve(request, in: name, storage.registry)
                guard let record = try await storage.registry.metadata.scanRecord(digest), record.status == .complete,
                    let text = record.result, let stored = try? JSONDecoder().decode(StoredScanResult.self, from: Data(text.utf8))
                else {
                    throw AccessError.notFound("\(digest) has no completed scan; POST …/scan?reference= first")
                }
                let result = try await storage.scans.vex.applied(to: stored, in: name)
                let query = request.uri.queryParameters
                let wanted = query.get("platform")
                guard let platform = wanted.map({ p in result.platforms.first { $0.platform == p } }) ?? result.platforms.first else {
                    throw AccessError.notFound("the image has no platform \(wanted ?? "")")
                }
                let subject = SBOMWriter.Subject(name: "\(name.value)@\(platform.manifestDigest)", digest: platform.manifestDigest)
                let bytes: [UInt8]
                let mediaType: String
                switch query.get("format") ?? "cyclonedx" {
                case "cyclonedx":
                    bytes = try SBOMWriter.cycloneDX(platform.inventory, subject: subject, findings: platform.findings)
                    mediaType = SBOMWriter.cycloneDXMediaType
                case "spdx":
                    bytes = try SBOMWriter.spdx(platform.inventory, subject: subject)
                    mediaType = SBOMWriter.spdxMediaType
                case let other:
                    throw AccessError.invalid("format '\(other)' is not cyclonedx or spdx")
                }
                return Response(status: .ok, headers: [.contentType: mediaType], body: .init(byteBuffer: ByteBuffer(bytes: bytes)))
            },
            Route(
                .get, "/scanner/database",
                "The vulnerability database: records per ecosystem, import time and version, sources, and the state of automatic updates",
                response: "AdvisoryDatabase"
            ) { _, _, caller in
                // The server's file layout is for administrators only.
                var body = API.AdvisoryDatabaseState(
                    path: caller.identity.isAdmin ? storage.scans.settings.databasePath : nil,
                    update: storage.advisories.status)
                do {
                    let database = try await AdvisoryDatabase.open(storage.scans.settings.databasePath)
                    body.summary = try? await database.summary()
                    try? await database.close()
                } catch {
                    body.error = "\(error)"
                }
                return try Self.json(body)
            },
            Route(
                .get, "/encryption/keys",
                "Keys of encryption at rest: the built-in key service's (state, versions) and the KMS keys in use, with the encrypted copies each wraps (system administrators)",
                response: "[EncryptionKey]"
            ) { _, _, caller in
                try access.requireSystemAdministrator(caller.identity)
                return try Self.json(try await storage.encryptionKeys.list())
            },
            Route(
                .post, "/encryption/keys/rotate",
                "Rotate a key: a built-in key gets a new version; every data key it wraps is re-wrapped under the current version, no blob is rewritten",
                request: "KeyRequest", response: "KeyRotation"
            ) { request, _, caller in
                try access.requireSystemAdministrator(caller.identity)
                let body = try await Self.decode(API.KeyRequest.self, request)
                return try Self.json(try await storage.encryptionKeys.rotate(body.keyId, by: caller.requester))
            },
            Route(
                .post, "/encryption/keys/disable",
                "Disable a key of the built-in key service: pushes and pulls of its repositories are refused until it is enabled",
                request: "KeyRequest", response: "EncryptionKey"
            ) { request, _, caller in
                try access.requireSystemAdministrator(caller.identity)
                let body = try await Self.decode(API.KeyRequest.self, request)
                return try Self.json(try await storage.encryptionKeys.setEnabled(body.keyId, false, by: caller.requester))
            },
            Route(.post, "/encryption/keys/enable", "Enable a key of the built-in key service", request: "KeyRequest", response: "EncryptionKey") {
                request, _, caller in
                try access.requireSystemAdministrator(caller.identity)
                let body = try await Self.decode(API.KeyRequest.self, request)
                return try Self.json(try await storage.encryptionKeys.setEnabled(body.keyId, true, by: caller.requester))
            },
            Route(.get, "/lifecycle-policies", "Registry-wide lifecycle policies (system administrators)", response: "[RegistryPolicy]") { _, _, caller in
                try access.requireSystemAdministrator(caller.identity)
                return try Self.json(
                    try await storage.registry.metadata.registryLifecyclePolicies().map {
                        API.RegistryPolicy(scope: $0.scope, policy: $0.policy, createdBy: $0.createdBy, updatedAt: API.time($0.updatedAt))
                    })
            },
            Route(
                .put, "/lifecycle-policies",
                "Set the registry-wide policy for repositories whose name matches a scope such as team/* or * (a repository's own policy wins)",
                request: "RegistryPolicy", status: .noContent
            ) { request, _, caller in
                try access.requireSystemAdministrator(caller.identity)
                let body = try await Self.decode(API.RegistryPolicy.self, request)
                guard !body.scope.isEmpty, body.scope.allSatisfy({ $0 == "*" || $0 == "/" || $0.isLowercase || $0.isNumber || "._-".contains($0) }) else {
                    throw AccessError.invalid("scope '\(body.scope)' must be a repository name pattern such as team/* or *")
                }
                try RepositorySettingsChanges.validateLifecyclePolicy(body.policy)
                try await storage.registry.metadata.putRegistryLifecyclePolicy(scope: body.scope, policy: body.policy, by: caller.identity.name)
                access.audit.record(AuditEvent(actor: caller.identity, action: "lifecycle.policy.set", target: body.scope, source: caller.source))
                return Response(status: .noContent)
            },
            Route(.delete, "/lifecycle-policies", "Remove a registry-wide policy", status: .noContent, query: [("scope", "the policy's scope")]) {
                request, _, caller in
                try access.requireSystemAdministrator(caller.identity)
                guard let scope = request.uri.queryParameters.get("scope"), try await storage.registry.metadata.deleteRegistryLifecyclePolicy(scope: scope)
                else {
                    throw AccessError.notFound("no registry-wide policy has that scope")
                }
                access.audit.record(AuditEvent(actor: caller.identity, action: "lifecycle.policy.delete", target: scope, source: caller.source))
                return Response(status: .noContent)
            },
            Route(.post, "/lifecycle/run", "Evaluate every governed repository now (system administrators)", response: "[Expiry]") { _, _, caller in
                try access.requireSystemAdministrator(caller.identity)
                return try Self.json(try await storage.lifecycle.applyAll().map(API.Expiry.init))
            },
            Route(.get, "/namespaces/{name}/usage", "Bytes a namespace stores (each blob counted once) and its quota", response: "Usage") {
                _, context, caller in
                let namespace = try Self.parameter(context, "name")
                guard try await access.store.namespace(named: namespace) != nil else { throw AccessError.notFound("namespace '\(namespace)' does not exist") }
                try await access.requireNamespaceMember(namespace, by: caller.identity)
                return try Self.json(
                    API.Usage(
                        namespace: namespace, usageBytes: try await storage.registry.metadata.namespaceUsage(namespace),
                        quotaBytes: try await storage.registry.metadata.namespaceQuota(namespace)))
            },
            Route(.get, "/namespaces/{name}/pull-policy", "The namespace's pull gate: which scan results refuse a pull", response: "PullPolicy") {
                _, context, caller in
                let namespace = try Self.parameter(context, "name")
                guard try await access.store.namespace(named: namespace) != nil else { throw AccessError.notFound("namespace '\(namespace)' does not exist") }
                try await access.requireNamespaceMember(namespace, by: caller.identity)
                guard let policy = try await storage.scans.pullGate.policy(for: namespace) else {
                    throw AccessError.notFound("namespace '\(namespace)' has no pull policy")
                }
                return Self.pullPolicyResponse(policy)
            },
            Route(
                .put, "/namespaces/{name}/pull-policy",
                "Refuse pulls of images with findings at or above a severity, or not yet scanned; allowlisted vulnerabilities (until they expire) do not count. Robots with the scan or replicate permission pass (namespace admins)",
                request: "PullPolicy", response: "PullPolicy"
            ) { request, context, caller in
                let namespace = try Self.parameter(context, "name")
                try await access.requireNamespaceAdministration(namespace, by: caller.identity)
                let body = try await request.body.collect(upTo: 1 << 20)
                let policy: PullPolicy
                do {
                    policy = try PullPolicy.decoder().decode(PullPolicy.self, from: Data(body.readableBytesView))
                    try policy.validate()
                } catch let error as PullPolicyError {
                    throw AccessError.invalid(error.description)
                } catch {
                    throw AccessError.invalid(
                        "the body is not a pull policy: \(Self.describeDecoding(error)) (severity is CRITICAL, HIGH, MEDIUM or LOW; expiresAt is RFC 3339)")
                }
                try await storage.scanPolicies.setPullPolicy(policy, of: namespace, by: caller.requester)
                return Self.pullPolicyResponse(policy)
            },
            Route(.delete, "/namespaces/{name}/pull-policy", "Remove the namespace's pull gate (namespace admins)", status: .noContent) { _, context, caller in
                let namespace = try Self.parameter(context, "name")
                try await access.requireNamespaceAdministration(namespace, by: caller.identity)
                guard try await storage.scanPolicies.deletePullPolicy(of: namespace, by: caller.requester) else {
                    throw AccessError.notFound("namespace '\(namespace)' has no pull policy")
                }
                return Response(status: .noContent)
            },
            Route(
                .get, "/namespaces/{name}/signature-policy", "The namespace's signature policy: which keys' cosign signatures its images need",
                response: "SignaturePolicy"
            ) { _, context, caller in
                let namespace = try Self.parameter(context, "name")
                guard try await access.store.namespace(named: namespace) != nil else { throw AccessError.notFound("namespace '\(namespace)' does not exist") }
                try await access.requireNamespaceMember(namespace, by: caller.identity)
                guard let policy = try await storage.signatures.policy(for: namespace) else {
                    throw AccessError.notFound("namespace '\(namespace)' has no signature policy")
                }
                return try Self.json(policy)
            },
            Route(
                .put, "/namespaces/{name}/signature-policy",
                "Signed-only pulls: images must carry a cosign signature (tag sha256-<hex>.sig or a referrer) that one of the keys verifies; enforce refuses others, audit serves and logs them. Robots with the scan or replicate permission pass (namespace admins)",
                request: "SignaturePolicy", response: "SignaturePolicy"
            ) { request, context, caller in
                let namespace = try Self.parameter(context, "name")
                guard try await access.store.namespace(named: namespace) != nil else { throw AccessError.notFound("namespace '\(namespace)' does not exist") }
                try await access.requireNamespaceAdministration(namespace, by: caller.identity)
                let policy = try await Self.decode(SignaturePolicy.self, request)
                try await storage.signaturePolicies.set(policy, of: namespace, by: caller.requester)
                return try Self.json(policy)
            },
            Route(.delete, "/namespaces/{name}/signature-policy", "Remove the namespace's signature policy (namespace admins)", status: .noContent) {
                _, context, caller in
                let namespace = try Self.parameter(context, "name")
                try await access.requireNamespaceAdministration(namespace, by: caller.identity)
                guard try await storage.signaturePolicies.delete(of: namespace, by: caller.requester) else {
                    throw AccessError.notFound("namespace '\(namespace)' has no signature policy")
                }
                return Response(status: .noContent)
            },
            Route(
                .get, Self.repositoryPrefix + "signatures", "An image's signature verdict under its namespace's signature policy",
                response: "SignatureVerdict", query: [("reference", "the tag or digest")]
            ) { request, context, caller in
                let name = try repository(context)
                try await access.requireRepositoryRead(name, by: caller.identity)
                let digest = try await Self.resolve(request, in: name, storage.registry)
                guard let policy = try await storage.signatures.policy(for: String(name.namespace)) else {
                    throw AccessError.notFound("namespace '\(name.namespace)' has no signature policy to judge signatures by")
                }
                switch try await storage.signatures.imageVerdict(digest, in: name, policy: policy) {
                case .verified(let key, let signature):
                    return try Self.json(API.SignatureVerdict(digest: digest.description, verified: true, key: key, signature: signature, reason: nil))
                case .unverified(let reason):
                    return try Self.json(API.SignatureVerdict(digest: digest.description, verified: false, key: nil, signature: nil, reason: reason))
                }
            },
            Route(.get, "/namespaces/{name}/tag-rules", "The namespace's tag rules: which tags pushes may write", response: "TagRules") {
                _, context, caller in
                let namespace = try Self.parameter(context, "name")
                guard try await access.store.namespace(named: namespace) != nil else { throw AccessError.notFound("namespace '\(namespace)' does not exist") }
                try await access.requireNamespaceMember(namespace, by: caller.identity)
                guard let rules = try await storage.registry.tagRules.rules(for: namespace) else {
                    throw AccessError.notFound("namespace '\(namespace)' has no tag rules")
                }
                return try Self.json(rules)
            },
            Route(
                .put, "/namespaces/{name}/tag-rules",
                "Refuse pushes of tags matching a deny pattern (e.g. latest), or not matching any require pattern (wildcards, or semver); pushes by digest are never refused (namespace admins)",
                request: "TagRules", response: "TagRules"
            ) { request, context, caller in
                let namespace = try Self.parameter(context, "name")
                guard try await access.store.namespace(named: namespace) != nil else { throw AccessError.notFound("namespace '\(namespace)' does not exist") }
                try await access.requireNamespaceAdministration(namespace, by: caller.identity)
                let rules = try await Self.decode(TagRules.self, request)
                try await storage.tagRuleChanges.set(rules, of: namespace, by: caller.requester)
                return try Self.json(rules)
            },
            Route(.delete, "/namespaces/{name}/tag-rules", "Remove the namespace's tag rules (namespace admins)", status: .noContent) {
                _, context, caller in
                let namespace = try Self.parameter(context, "name")
                try await access.requireNamespaceAdministration(namespace, by: caller.identity)
                guard try await storage.tagRuleChanges.delete(of: namespace, by: caller.requester) else {
                    throw AccessError.notFound("namespace '\(namespace)' has no tag rules")
                }
                return Response(status: .noContent)
            },
            Route(
                .get, "/namespaces/{name}/vex", "The namespace's VEX documents (OpenVEX or CycloneDX VEX), applied to every image's findings",
                response: "[VEXDocument]"
            ) { _, context, caller in
                let namespace = try Self.parameter(context, "name")
                guard try await access.store.namespace(named: namespace) != nil else { throw AccessError.notFound("namespace '\(namespace)' does not exist") }
                try await access.requireNamespaceMember(namespace, by: caller.identity)
                return try Self.json(try await storage.scans.vex.documents(of: namespace))
            },
            Route(
                .put, "/namespaces/{name}/vex/{document}",
                "Store or replace a VEX document (the OpenVEX or CycloneDX VEX JSON itself, up to 4 MiB): findings it marks not_affected or fixed stay visible as suppressed and no longer count for the pull gate or ECR's findings (namespace admins)",
                request: "VEXDocumentBody", response: "VEXDocument"
            ) { request, context, caller in
                let namespace = try Self.parameter(context, "name")
                let name = try Self.parameter(context, "document")
                guard try await access.store.namespace(named: namespace) != nil else { throw AccessError.notFound("namespace '\(namespace)' does not exist") }
                try await access.requireNamespaceAdministration(namespace, by: caller.identity)
                let body = try await request.body.collect(upTo: VEXDocument.maximumSize + 1)
                return try Self.json(try await storage.scanPolicies.putVEX(Array(body.readableBytesView), named: name, in: namespace, by: caller.requester))
            },
            Route(.delete, "/namespaces/{name}/vex/{document}", "Remove a VEX document (namespace admins)", status: .noContent) { _, context, caller in
                let namespace = try Self.parameter(context, "name")
                let name = try Self.parameter(context, "document")
                try await access.requireNamespaceAdministration(namespace, by: caller.identity)
                guard try await storage.scanPolicies.deleteVEX(named: name, in: namespace, by: caller.requester) else {
                    throw AccessError.notFound("namespace '\(namespace)' has no VEX document '\(name)'")
                }
                return Response(status: .noContent)
            },
            Route(
                .put, "/namespaces/{name}/quota", "Set or remove a namespace's storage quota in bytes (system administrators)", request: "SetQuota",
                response: "Usage"
            ) { request, context, caller in
                try access.requireSystemAdministrator(caller.identity)
                let namespace = try Self.parameter(context, "name")
                let body = try await Self.decode(API.SetQuota.self, request)
                if let bytes = body.quotaBytes, bytes < 0 { throw AccessError.invalid("quotaBytes must not be negative") }
                guard try await storage.registry.metadata.setNamespaceQuota(namespace, bytes: body.quotaBytes) else {
                    throw AccessError.notFound("namespace '\(namespace)' does not exist")
                }
                access.audit.record(
                    AuditEvent(
                        actor: caller.identity, action: "namespace.quota", namespace: namespace, source: caller.source,
                        detail: AccessControlJSON.object(["quotaBytes": body.quotaBytes.map(String.init) ?? "none"])))
                return try Self.json(
                    API.Usage(namespace: namespace, usageBytes: try await storage.registry.metadata.namespaceUsage(namespace), quotaBytes: body.quotaBytes))
            },
            Route(
                .post, "/gc", "Run a complete garbage collection now; dryRun=true only reports", response: "GarbageCollectionReport",
                query: [("dryRun", "true to report without deleting"), ("graceSeconds", "override the grace window for this run")]
            ) { request, _, caller in
                try access.requireSystemAdministrator(caller.identity)
                let query = request.uri.queryParameters
                let grace = try query.get("graceSeconds").map { value -> Duration in
                    guard let seconds = ClientNumber.parse(value, in: 0...ClientNumber.maximumSeconds) else {
                        throw AccessError.invalid("graceSeconds must be an integer from 0 to \(ClientNumber.maximumSeconds)")
                    }
                    return .seconds(seconds)
                }
                do {
                    let report = try await storage.collector.collect(
                        dryRun: query.get("dryRun") == "true", trigger: "api:\(caller.identity.name)", grace: grace)
                    access.audit.record(
                        AuditEvent(
                            actor: caller.identity, action: "gc.run", source: caller.source,
                            detail: AccessControlJSON.object([
                                "dryRun": String(report.dryRun), "deletedBlobs": String(report.deletedBlobs),
                                "reclaimedBytes": String(report.reclaimedBytes + report.orphanBytes),
                            ])))
                    return try Self.json(report)
                } catch GarbageCollector.CollectionError.alreadyRunning {
                    throw AccessError.conflict("a garbage collection is already running; GET /api/v1/gc shows its progress")
                }
            },
            Route(.get, "/cluster", "This node, and which node runs each piece of scheduled work", response: "ClusterStatus") { _, _, caller in
                try access.requireSystemAdministrator(caller.identity)
                return try Self.json(
                    API.ClusterStatus(
                        node: storage.leases.holder, database: storage.registry.metadata.database.dialect.rawValue, storage: storage.storageKind,
                        leases: try await storage.leases.current()))
            },
            Route(.get, "/gc", "The collection in progress (if any) and the latest reports", response: "GarbageCollectionStatus") { _, _, caller in
                try access.requireSystemAdministrator(caller.identity)
                let recent = try await storage.registry.metadata.recentGCRuns(limit: 10).compactMap {
                    try? JSONDecoder().decode(GarbageCollectionReport.self, from: Data($0.utf8))
                }
                return try Self.json(API.GarbageCollectionStatus(running: storage.collector.progress, recent: recent))
            },
        ]
    }

    /// The digest `?reference=` names in a repository (a tag is resolved).
    static func resolve(_ request: Request, in repository: RepositoryName, _ registry: Registry) async throws -> Digest {
        guard let text = request.uri.queryParameters.get("reference"), let reference = try? Reference(parsing: text) else {
            throw AccessError.invalid("give ?reference= with a tag or a digest")
        }
        do {
            return try await registry.manifest(reference, in: repository, recordPull: false).digest
        } catch is RegistryError {
            throw AccessError.notFound("\(text) is not in repository \(repository)")
        }
    }

    static func pullPolicyResponse(_ policy: PullPolicy) -> Response {
        let bytes = (try? PullPolicy.encoder().encode(policy)) ?? Data("{}".utf8)
        return Response(status: .ok, headers: [.contentType: "application/json"], body: .init(byteBuffer: ByteBuffer(bytes: bytes)))
    }

    static func describeDecoding(_ error: any Error) -> String {
        switch error {
        case DecodingError.dataCorrupted(let context), DecodingError.typeMismatch(_, let context), DecodingError.valueNotFound(_, let context):
            let path = context.codingPath.map(\.stringValue).joined(separator: ".")
            return path.isEmpty ? context.debugDescription : "\(path): \(context.debugDescription)"
        case DecodingError.keyNotFound(let key, _):
            return "\(key.stringValue) is missing"
        default:
            return "\(error)"
        }
    }
}
