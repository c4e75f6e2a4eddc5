import Foundation
import Metadata
import OCI
import Scanner
import Synchronization

/// A namespace's rule for which images may be pulled, judged on their stored scan results:
/// refuse images with findings at or above a severity, or images not scanned yet. Allowlisted
/// vulnerabilities (by id or alias, until their expiry) do not count.
public struct PullPolicy: Codable, Sendable, Equatable {
    public struct AllowedVulnerability: Codable, Sendable, Equatable {
        /// A vulnerability id or alias: CVE-…, GHSA-…, DSA-….
        public var id: String
        /// When the exception ends (RFC 3339); none means it never does.
        public var expiresAt: Date?
        public var reason: String?

        public init(id: String, expiresAt: Date? = nil, reason: String? = nil) {
            self.id = id
            self.expiresAt = expiresAt
            self.reason = reason
        }
    }

    /// Refuse images with a finding of this severity or worse (CRITICAL, HIGH, MEDIUM, LOW); none
    /// leaves findings alone.
    public var severity: Severity?
    /// Refuse images whose scan has not completed (never scanned, queued, running or failed).
    public var blockUnscanned: Bool
    public var allowlist: [AllowedVulnerability]

    public init(severity: Severity? = nil, blockUnscanned: Bool = false, allowlist: [AllowedVulnerability] = []) {
        self.severity = severity
        self.blockUnscanned = blockUnscanned
        self.allowlist = allowlist
    }

    enum CodingKeys: String, CodingKey { case severity, blockUnscanned, allowlist }

    public init(from decoder: any Decoder) throws {
        let container = try decoder.container(keyedBy: CodingKeys.self)
        severity = try container.decodeIfPresent(Severity.self, forKey: .severity)
        blockUnscanned = try container.decodeIfPresent(Bool.self, forKey: .blockUnscanned) ?? false
        allowlist = try container.decodeIfPresent([AllowedVulnerability].self, forKey: .allowlist) ?? []
    }

    /// Checks what JSON decoding cannot: a threshold that means something, ids that are not empty.
    public func validate() throws(PullPolicyError) {
        if let severity, ![.critical, .high, .medium, .low].contains(severity) {
            throw PullPolicyError("severity must be CRITICAL, HIGH, MEDIUM or LOW, not \(severity.rawValue)")
        }
        if severity == nil, !blockUnscanned {
            throw PullPolicyError("the policy blocks nothing: give a severity, set blockUnscanned, or delete the policy")
        }
        for entry in allowlist where entry.id.trimmingCharacters(in: .whitespaces).isEmpty {
            throw PullPolicyError("an allowlist entry has an empty id")
        }
    }

    public static func decoder() -> JSONDecoder {
        let decoder = JSONDecoder()
        decoder.dateDecodingStrategy = .iso8601
        return decoder
    }

    public static func encoder() -> JSONEncoder {
        let encoder = JSONEncoder()
        encoder.dateEncodingStrategy = .iso8601
        encoder.outputFormatting = [.sortedKeys]
        return encoder
    }
}

public struct PullPolicyError: Error, CustomStringConvertible {
    public let description: String
    init(_ description: String) { self.description = description }
}

/// Enforces namespaces' pull policies on manifest pulls. Only container images are judged:
/// indexes pass (each platform is judged when it is pulled), and so do artifacts such as
/// signatures and SBOMs, which clients must be able to fetch to verify an image.
/// Policies and scan verdicts are cached for a few seconds, so a busy tag costs no query.
public final class PullGate: Sendable {
    public enum Verdict: Sendable, Equatable {
        case allow
        /// Allowed only because VEX statements suppress the findings that would refuse it; the
        /// detail names them, for the audit log.
        case allowByVEX(detail: String)
        case deny(message: String, detail: String)
    }

    static let settingPrefix = "pull_policy:"
    private let metadata: MetadataStore
    private let policies = TTLCache<String, PullPolicy?>(timeToLive: .seconds(5))
    private let scans = TTLCache<String, ScanSummary>(timeToLive: .seconds(5))
    /// VEX statements applied to findings before they are judged; nil judges findings as stored.
    let vex: VEXStore?

    /// What the gate needs of a scan: its state, and each finding's ids, severity and VEX verdict.
    struct ScanSummary: Sendable {
        var status: ImageScanRecord.Status?
        var statusDescription: String?
        var findings: [(ids: [String], severity: Severity, vex: VEXVerdict?)]
    }

    public init(metadata: MetadataStore, vex: VEXStore? = nil) {
        self.metadata = metadata
        self.vex = vex
    }

    /// Forgets a namespace's cached policy (the namespace was deleted along with its policy).
    public func forgetPolicy(of namespace: String) { policies.remove(namespace) }

    /// Drops cached verdicts (their scan results changed).
    public func forgetScans() { scans.removeAll() }

    /// A referrer of `subject` (every image when nil) was pushed or deleted: its VEX statements
    /// and the verdicts they shaped are read again on the next pull.
    public func referrersChanged(of subject: Digest?, in repository: RepositoryName) {
        if let subject {
            scans.remove("\(repository.value)@\(subject)")
        } else {
            scans.removeAll()
        }
        vex?.forgetReferrers(of: subject, in: repository)
    }

    public func policy(for namespace: String) async throws -> PullPolicy? {
        if let cached = policies.get(namespace) { return cached }
        let policy = try await metadata.registrySetting(Self.settingPrefix + namespace).flatMap {
            try? PullPolicy.decoder().decode(PullPolicy.self, from: Data($0.utf8))
        }
        policies.set(namespace, policy)
        return policy
    }

    public func setPolicy(_ policy: PullPolicy, for namespace: String) async throws {
        try policy.validate()
        let text = String(decoding: try PullPolicy.encoder().encode(policy), as: UTF8.self)
        try await metadata.putRegistrySetting(Self.settingPrefix + namespace, text)
        policies.set(namespace, policy)
    }

    @discardableResult
    public func deletePolicy(for namespace: String) async throws -> Bool {
        defer { policies.set(namespace, nil) }
        return try await metadata.deleteRegistrySetting(Self.settingPrefix + namespace)
    }

    /// The verdict on pulling `manifest` (its bytes and media type) from `repository`.
    public func verdict(
        repository: RepositoryName, digest: Digest, mediaType: String, content: [UInt8],
        now: Date = Date()
    ) async throws -> Verdict {
        let namespace = String(repository.namespace)
        guard let policy = try await policy(for: namespace) else { return .allow }
        guard MediaType.imageManifests.contains(mediaType),
            let manifest = try? ManifestParser.parse(content, contentType: mediaType),
            // cosign's tag-scheme signatures and attestations have an image config but no filesystem
            // layer: verification must never be blocked by the gate it is meant to satisfy.
            manifest.isRunnableImage
        else { return .allow }
        let scan = try await summary(of: digest, in: repository)
        let policyName = "the pull policy of namespace '\(namespace)'"
        guard scan.status == .complete else {
            guard policy.blockUnscanned else { return .allow }
            let state =
                switch scan.status {
                case nil: "has not been scanned"
                case .pending, .inProgress: "is still being scanned"
                case .failed: "could not be scanned (\(scan.statusDescription ?? "scan failed"))"
                case .complete: ""
                }
            return .deny(
                message: "\(repository)@\(digest) \(state); \(policyName) refuses images without a completed scan",
                detail: Self.detail(namespace: namespace, policy: policy, reason: "not-scanned", counts: [:], allowlisted: 0))
        }
        guard let threshold = policy.severity else { return .allow }
        let allowed = Set(policy.allowlist.filter { ($0.expiresAt ?? .distantFuture) > now }.map { $0.id.uppercased() })
        var counts: [Severity: Int] = [:]
        var allowlisted = 0
        var suppressed: [(ids: [String], severity: Severity, vex: VEXVerdict?)] = []
        for finding in scan.findings where finding.severity >= threshold {
            if finding.ids.contains(where: { allowed.contains($0.uppercased()) }) {
                allowlisted += 1
            } else if finding.vex?.status.suppresses == true {
                suppressed.append(finding)
            } else {
                counts[finding.severity, default: 0] += 1
            }
        }
        if counts.isEmpty, !suppressed.isEmpty {
            return .allowByVEX(detail: Self.vexDetail(namespace: namespace, suppressed: suppressed))
        }
        guard !counts.isEmpty else { return .allow }
        let listed = Severity.allCases.reversed().compactMap { severity in counts[severity].map { "\($0) \(severity.rawValue)" } }
        var message = "\(repository)@\(digest) has \(listed.joined(separator: ", ")) vulnerabilities; \(policyName) refuses \(threshold.rawValue) or worse"
        if allowlisted > 0 { message += " (\(allowlisted) more allowlisted)" }
        return .deny(
            message: message,
            detail: Self.detail(
                namespace: namespace, policy: policy, reason: "vulnerabilities",
                counts: counts, allowlisted: allowlisted))
    }

    private func summary(of digest: Digest, in repository: RepositoryName) async throws -> ScanSummary {
        // Per repository: VEX referrers and namespace documents differ between repositories.
        let key = "\(repository.value)@\(digest)"
        if let cached = scans.get(key) { return cached }
        let record = try await metadata.scanRecord(digest)
        var summary = ScanSummary(status: record?.status, statusDescription: record?.description, findings: [])
        if record?.status == .complete, let text = record?.result {
            var result = try JSONDecoder().decode(StoredScanResult.self, from: Data(text.utf8))
            if let vex { result = try await vex.applied(to: result, in: repository) }
            summary.findings = result.findings.map { ([$0.id] + $0.aliases, $0.severity, $0.vex) }
        }
        scans.set(key, summary)
        return summary
    }

    /// The audit detail of a pull VEX let through: which findings, and which statements.
    static func vexDetail(namespace: String, suppressed: [(ids: [String], severity: Severity, vex: VEXVerdict?)]) -> String {
        struct Suppressed: Encodable {
            var vulnerability: String
            var severity: String
            var status: String
            var justification: String?
            var source: String
        }
        struct Detail: Encodable {
            var policy: String
            var reason = "allowed-by-vex"
            var suppressed: [Suppressed]
        }
        let detail = Detail(
            policy: "namespace:\(namespace)",
            suppressed: suppressed.prefix(50).map {
                Suppressed(
                    vulnerability: $0.ids.first ?? "", severity: $0.severity.rawValue, status: $0.vex?.status.rawValue ?? "",
                    justification: $0.vex?.justification, source: $0.vex?.source ?? "")
            })
        let encoder = JSONEncoder()
        encoder.outputFormatting = [.sortedKeys, .withoutEscapingSlashes]  // document ids are URLs
        return String(decoding: (try? encoder.encode(detail)) ?? Data(), as: UTF8.self)
    }

    /// The OCI error's `detail`: which policy refused, why, and the counts, for tools to read.
    static func detail(namespace: String, policy: PullPolicy, reason: String, counts: [Severity: Int], allowlisted: Int) -> String {
        struct Detail: Encodable {
            var policy: String
            var reason: String
            var severity: String?
            var blockUnscanned: Bool
            var counts: [String: Int]
            var allowlisted: Int
        }
        let detail = Detail(
            policy: "namespace:\(namespace)", reason: reason, severity: policy.severity?.rawValue,
            blockUnscanned: policy.blockUnscanned,
            counts: Dictionary(uniqueKeysWithValues: counts.map { ($0.key.rawValue, $0.value) }), allowlisted: allowlisted)
        return String(decoding: (try? PullPolicy.encoder().encode(detail)) ?? Data(), as: UTF8.self)
    }
}
