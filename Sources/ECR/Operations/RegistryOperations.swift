import Access
import Foundation
import Metadata
import OCI
import Registry
import Replication
import Scanner
import Scanning
import UseCases

#if canImport(FoundationEssentials)
import FoundationEssentials
#else
import Foundation
#endif

extension ECRService {
    static let replicationSetting = ReplicationRules.settingName

    /// A 12-hour registry login: `base64("AWS:<token>")`, good as Basic credentials on `/v2`.
    func getAuthorizationToken(_ call: ECRCall) async throws -> JSONValue {
        let (token, expiresAt) = try await access.issueRegistryLoginToken(for: call.identity, credential: .accessKey(id: call.accessKeyID), source: call.source)
        let encoded = Data("AWS:\(token)".utf8).base64EncodedString()
        return [
            "authorizationData": [
                [
                    "authorizationToken": .string(encoded),
                    "expiresAt": .timestamp(millis: expiresAt),
                    "proxyEndpoint": .string("\(call.scheme)://\(call.host)"),
                ]
            ]
        ]
    }

    /// The replication configuration is the administrators' business, as PutReplicationConfiguration is.
    func describeRegistry(_ call: ECRCall) async throws -> JSONValue {
        try await authorize(call, .systemAdministrator, on: nil)
        let stored = try await metadata.registrySetting(Self.replicationSetting).flatMap { JSONValue.parse($0) }
        return ["registryId": .string(registryID), "replicationConfiguration": stored ?? ["rules": []]]
    }

    /// Stored and validated; from the next push on, the replicator copies by it (a destination
    /// region with no `replication.destinations` entry shows as FAILED with that reason).
    func putReplicationConfiguration(_ call: ECRCall) async throws -> JSONValue {
        try await authorize(call, .systemAdministrator, on: nil)
        guard let configuration = call.input["replicationConfiguration"], let rules = configuration["rules"]?.array else {
            throw ECRError.invalidParameter("Invalid parameter at 'replicationConfiguration' failed to satisfy constraint: 'Member must not be null'")
        }
        var destinations = 0
        for (index, rule) in rules.enumerated() {
            let ruleDestinations = rule["destinations"]?.array ?? []
            guard !ruleDestinations.isEmpty else {
                throw ECRError.invalidParameter(
                    "Invalid parameter at 'replicationConfiguration.rules.\(index + 1).destinations' failed to satisfy constraint: 'a rule needs at least one destination'"
                )
            }
            destinations += ruleDestinations.count
            var seen = Set<String>()
            for destination in ruleDestinations {
                if let replication, let region = replication.ownRegion, destination["region"]?.string == region,
                    destination["registryId"]?.string == registryID
                {
                    throw ECRError.invalidParameter(
                        "Invalid parameter at 'replicationConfiguration.rules.\(index + 1).destinations' failed to satisfy constraint: 'a destination cannot be this registry in its own region (\(region))'"
                    )
                }
                let key = "\(destination["region"]?.string ?? "")/\(destination["registryId"]?.string ?? "")"
                guard seen.insert(key).inserted else {
                    throw ECRError.invalidParameter(
                        "Invalid parameter at 'replicationConfiguration.rules.\(index + 1).destinations' failed to satisfy constraint: 'destination \(key) is listed twice'"
                    )
                }
            }
        }
        guard destinations <= 25 else {
            throw ECRError.invalidParameter(
                "Invalid parameter at 'replicationConfiguration' failed to satisfy constraint: 'at most 25 destinations in all rules together'")
        }
        try await metadata.putRegistrySetting(Self.replicationSetting, String(decoding: configuration.encoded(), as: UTF8.self))
        return ["replicationConfiguration": configuration]
    }

    // MARK: Registry scanning configuration

    /// The scan type and rules: when there are rules they decide which pushes are scanned (the
    /// repositories' own scanOnPush is ignored, as ECR does).
    func putRegistryScanningConfiguration(_ call: ECRCall) async throws -> JSONValue {
        try await authorize(call, .systemAdministrator, on: nil)
        let scanType = call.input["scanType"]?.string ?? "BASIC"
        guard let allowed = RegistryScanningConfiguration.frequencies[scanType] else {
            throw ECRError.validation("scanType must be BASIC or ENHANCED")
        }
        var rules: [RegistryScanningConfiguration.Rule] = []
        for (index, rule) in (call.input["rules"]?.array ?? []).enumerated() {
            let frequency = rule["scanFrequency"]?.string ?? ""
            guard allowed.contains(frequency) else {
                throw ECRError.validation(
                    "rules.\(index + 1).scanFrequency \(frequency) is not available with \(scanType) scanning: use \(allowed.sorted().joined(separator: " or "))"
                )
            }
            let filters = (rule["repositoryFilters"]?.array ?? []).map {
                RegistryScanningConfiguration.Filter(filter: $0["filter"]?.string ?? "", filterType: $0["filterType"]?.string ?? "WILDCARD")
            }
            guard !filters.isEmpty else { throw ECRError.validation("rules.\(index + 1).repositoryFilters needs at least one filter (e.g. '*')") }
            rules.append(.init(scanFrequency: frequency, repositoryFilters: filters))
        }
        let configuration = RegistryScanningConfiguration(scanType: scanType, rules: rules)
        try await registry.settings.setScanningConfiguration(configuration)
        return ["registryScanningConfiguration": Self.scanningJSON(configuration)]
    }

    func getRegistryScanningConfiguration(_ call: ECRCall) async throws -> JSONValue {
        try await authorize(call, .systemAdministrator, on: nil)
        return ["registryId": .string(registryID), "scanningConfiguration": Self.scanningJSON(try await registry.settings.scanningConfiguration())]
    }

    /// Each repository's effective scanning: the registry rule that applies (with its matching
    /// filters) or, without registry rules, the repository's scanOnPush. Unknown or unreadable
    /// repositories are failures, not errors.
    func batchGetRepositoryScanningConfiguration(_ call: ECRCall) async throws -> JSONValue {
        let configuration = try await registry.settings.scanningConfiguration()
        var found: [JSONValue] = []
        var failures: [JSONValue] = []
        for name in (call.input["repositoryNames"]?.array ?? []).compactMap(\.string) {
            guard let repository = RepositoryName(name), try await metadata.repositoryExists(repository),
                (try? await authorize(call, .pull, on: repository)) != nil
            else {
                failures.append(
                    [
                        "repositoryName": .string(name), "failureCode": "REPOSITORY_NOT_FOUND",
                        "failureReason": .string("The repository with name '\(name)' does not exist in the registry with id '\(registryID)'"),
                    ])
                continue
            }
            let own = try await metadata.settings(of: repository).scanOnPush
            let frequency: String
            var filters: [JSONValue] = []
            if configuration.rules.isEmpty {
                frequency = own ? "SCAN_ON_PUSH" : "MANUAL"
            } else if let rule = configuration.rule(for: name) {
                frequency = rule.frequency
                filters = rule.filters.map { ["filter": .string($0.filter), "filterType": .string($0.filterType)] }
            } else {
                frequency = "MANUAL"
            }
            found.append(
                [
                    "repositoryArn": .string(arn(of: name, call)), "repositoryName": .string(name),
                    "scanOnPush": .bool(configuration.scansOnPush(name, repositorySetting: own)), "scanFrequency": .string(frequency),
                    "appliedScanFilters": .array(filters),
                ])
        }
        return ["scanningConfigurations": .array(found), "failures": .array(failures)]
    }

    static func scanningJSON(_ configuration: RegistryScanningConfiguration) -> JSONValue {
        [
            "scanType": .string(configuration.scanType),
            "rules": .array(
                configuration.rules.map { rule in
                    [
                        "scanFrequency": .string(rule.scanFrequency),
                        "repositoryFilters": .array(rule.repositoryFilters.map { ["filter": .string($0.filter), "filterType": .string($0.filterType)] }),
                    ]
                }),
        ]
    }

    /// Where an image has been copied: per destination of the rules, IN_PROGRESS (waiting or being
    /// copied), COMPLETE or FAILED with the reason in `failureCode`.
    func describeImageReplicationStatus(_ call: ECRCall) async throws -> JSONValue {
        let name = try repositoryName(call)
        try await authorize(call, .pull, on: name)
        let id = call.input["imageId"] ?? [:]
        guard let image = try find(id, in: try await images(name)) else { throw imageNotFound(id, in: name) }
        let statuses: [JSONValue] = try await metadata.replicationStatus(repository: name.value, digest: image.digest.description).compactMap { task in
            guard let target = replication?.target(ofDestination: task.destination) else { return nil }
            var status: [String: JSONValue] = [
                "region": .string(target.region), "registryId": .string(target.registryID),
                "status": .string(task.status == .pending ? "IN_PROGRESS" : task.status.rawValue),
            ]
            if task.status == .failed { status["failureCode"] = .string(task.lastError ?? "FAILED") }
            return .object(status)
        }
        return [
            "repositoryName": .string(name.value), "imageId": Self.imageID(digest: image.digest, tag: id["imageTag"]?.string),
            "replicationStatuses": .array(statuses),
        ]
    }

    func startImageScan(_ call: ECRCall) async throws -> JSONValue {
        let name = try repositoryName(call)
        try await authorize(call, .push, on: name)
        let id = call.input["imageId"] ?? [:]
        guard let image = try find(id, in: try await images(name)) else { throw imageNotFound(id, in: name) }
        guard let scans else {
            throw ECRError("UnsupportedImageTypeException", "image scanning is turned off on this registry (scanner.enabled: false)")
        }
        do {
            try await ScanRequests(scans: scans, audit: access.audit).request(image.digest, in: name, by: call.requester)
        } catch let refused as RescanRefused {
            throw ECRError("LimitExceededException", "The scan quota per image has been exceeded. \(refused.message)")
        }
        return .compact([
            "registryId": .string(registryID), "repositoryName": .string(name.value),
            "imageId": Self.imageID(digest: image.digest, tag: id["imageTag"]?.string),
            "imageScanStatus": .object(["status": .string("IN_PROGRESS"), "description": .string("The scan is queued.")]),
        ])
    }

    /// ECR's status words for a stored scan (a queued scan is IN_PROGRESS, as ECR's basic scanning says).
    static func scanStatus(_ record: ImageScanRecord) -> JSONValue {
        let status =
            switch record.status {
            case .pending, .inProgress: "IN_PROGRESS"
            case .complete: "COMPLETE"
            case .failed: "FAILED"
            }
        return .compact(["status": .string(status), "description": record.description.map(JSONValue.string)])
    }

    /// The stored scan with the VEX statements of the image's namespace and referrers applied:
    /// ECR has no "suppressed" state, so suppressed findings are left out of its answers, as the
    /// pull gate leaves them out of its count.
    func storedResult(_ record: ImageScanRecord, in repository: RepositoryName) async throws -> StoredScanResult? {
        guard let stored = record.result.flatMap({ try? JSONDecoder().decode(StoredScanResult.self, from: Data($0.utf8)) }) else { return nil }
        guard let vex = scans?.vex else { return stored }
        return try await vex.applied(to: stored, in: repository)
    }

    static func millis(_ iso: String?) -> Int64? {
        iso.flatMap { ISO8601DateFormatter().date(from: $0) }.map { Int64($0.timeIntervalSince1970 * 1000) }
    }

    func describeImageScanFindings(_ call: ECRCall) async throws -> JSONValue {
        let name = try repositoryName(call)
        try await authorize(call, .pull, on: name)
        let id = call.input["imageId"] ?? [:]
        guard let image = try find(id, in: try await images(name)) else { throw imageNotFound(id, in: name) }
        guard let record = try await metadata.scanRecord(image.digest) else {
            throw ECRError(
                "ScanNotFoundException",
                "Image scan does not exist for the image with '\(Self.describe(id))' in the repository with name '\(name)' in the registry with id '\(registryID)'"
            )
        }
        var response: [String: JSONValue?] = [
            "registryId": .string(registryID), "repositoryName": .string(name.value),
            "imageId": Self.imageID(digest: image.digest, tag: id["imageTag"]?.string),
            "imageScanStatus": Self.scanStatus(record),
        ]
        if let result = try await storedResult(record, in: name) {
            let page = try Self.page(result.findings.filter { !$0.isSuppressed }, call, size: pageSize(call))
            let findings: [JSONValue] = page.items.map { finding in
                var attributes: [JSONValue] = [
                    .object(["key": .string("package_name"), "value": .string(finding.packageName)]),
                    .object(["key": .string("package_version"), "value": .string(finding.installedVersion)]),
                ]
                if let fixed = finding.fixedVersion { attributes.append(.object(["key": .string("fixed_version"), "value": .string(fixed)])) }
                if let vector = finding.cvssVector { attributes.append(.object(["key": .string("CVSS3_VECTOR"), "value": .string(vector)])) }
                if let score = finding.cvssScore { attributes.append(.object(["key": .string("CVSS3_SCORE"), "value": .string(String(score))])) }
                return .compact([
                    "name": .string(finding.id), "description": finding.summary.map(JSONValue.string),
                    "uri": .string(
                        finding.id.hasPrefix("CVE-") ? "https://nvd.nist.gov/vuln/detail/\(finding.id)" : "https://osv.dev/vulnerability/\(finding.id)"),
                    "severity": .string(finding.severity.rawValue), "attributes": .array(attributes),
                ])
            }
            response["imageScanFindings"] = .compact([
                "imageScanCompletedAt": record.completedAt.map { .timestamp(millis: $0) },
                "vulnerabilitySourceUpdatedAt": Self.millis(result.databaseImportedAt).map { .timestamp(millis: $0) },
                "findingSeverityCounts": .object(result.severityCounts.mapValues { .integer($0) }),
                "findings": .array(findings),
            ])
            response["nextToken"] = page.nextToken.map(JSONValue.string)
        }
        return .compact(response)
    }
}
