import Access
import Metadata
import OCI

#if canImport(FoundationEssentials)
import FoundationEssentials
#else
import Foundation
#endif

extension ECRService {
    static let replicationSetting = "replication_configuration"

    /// A 12-hour registry login: `base64("AWS:<token>")`, good as Basic credentials on `/v2`.
    func getAuthorizationToken(_ call: ECRCall) async throws -> JSONValue {
        let (token, expiresAt) = try await access.issueRegistryLoginToken(for: call.identity, source: call.source)
        let encoded = Data("AWS:\(token)".utf8).base64EncodedString()
        return ["authorizationData": [[
            "authorizationToken": .string(encoded),
            "expiresAt": .timestamp(millis: expiresAt),
            "proxyEndpoint": .string("\(call.scheme)://\(call.host)"),
        ]]]
    }

    func describeRegistry(_ call: ECRCall) async throws -> JSONValue {
        let stored = try await metadata.registrySetting(Self.replicationSetting).flatMap { JSONValue.parse($0) }
        return ["registryId": .string(registryID), "replicationConfiguration": stored ?? ["rules": []]]
    }

    /// Stored and validated; the replication engine that acts on it is a separate feature.
    func putReplicationConfiguration(_ call: ECRCall) async throws -> JSONValue {
        try await authorize(call, .systemAdministrator, on: nil)
        guard let configuration = call.input["replicationConfiguration"], let rules = configuration["rules"]?.array else {
            throw ECRError.invalidParameter("Invalid parameter at 'replicationConfiguration' failed to satisfy constraint: 'Member must not be null'")
        }
        var destinations = 0
        for (index, rule) in rules.enumerated() {
            let ruleDestinations = rule["destinations"]?.array ?? []
            guard !ruleDestinations.isEmpty else {
                throw ECRError.invalidParameter("Invalid parameter at 'replicationConfiguration.rules.\(index + 1).destinations' failed to satisfy constraint: 'a rule needs at least one destination'")
            }
            destinations += ruleDestinations.count
            var seen = Set<String>()
            for destination in ruleDestinations {
                let key = "\(destination["region"]?.string ?? "")/\(destination["registryId"]?.string ?? "")"
                guard seen.insert(key).inserted else {
                    throw ECRError.invalidParameter("Invalid parameter at 'replicationConfiguration.rules.\(index + 1).destinations' failed to satisfy constraint: 'destination \(key) is listed twice'")
                }
            }
        }
        guard destinations <= 25 else {
            throw ECRError.invalidParameter("Invalid parameter at 'replicationConfiguration' failed to satisfy constraint: 'at most 25 destinations in all rules together'")
        }
        try await metadata.putRegistrySetting(Self.replicationSetting, String(decoding: configuration.encoded(), as: UTF8.self))
        return ["replicationConfiguration": configuration]
    }

    func startImageScan(_ call: ECRCall) async throws -> JSONValue {
        let name = try repositoryName(call)
        try await authorize(call, .push, on: name)
        throw ECRError.notImplemented(call.operation, "this Wharf has no vulnerability scanner yet, so scans cannot be started")
    }

    /// Until a scanner exists no image has a scan: ECR's answer for an image never scanned.
    func describeImageScanFindings(_ call: ECRCall) async throws -> JSONValue {
        let name = try repositoryName(call)
        try await authorize(call, .pull, on: name)
        let id = call.input["imageId"] ?? [:]
        guard try find(id, in: try await images(name)) != nil else { throw imageNotFound(id, in: name) }
        throw ECRError("ScanNotFoundException", "Image scan does not exist for the image with '\(Self.describe(id))' in the repository with name '\(name)' in the registry with id '\(registryID)'")
    }
}
