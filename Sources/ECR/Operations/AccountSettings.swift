import Access
import Metadata
import OCI
import Registry

/// Registry-wide settings ECR calls account settings, and the pull time update exclusion list.
/// Both are the system administrators' business, like the registry policy.
extension ECRService {
    /// The principal ARN of a request, checked to name a user or robot of this registry.
    private func principalARN(_ call: ECRCall) throws -> String {
        let arn = call.string("principalArn") ?? ""
        let prefix = "arn:aws:iam::\(registryID):"
        guard arn.hasPrefix(prefix) else {
            throw ECRError.invalidParameter(
                "Invalid parameter at 'principalArn' failed to satisfy constraint: 'the principal must belong to this registry (account \(registryID)): "
                    + "users are \(prefix)user/<name>, robots \(prefix)role/robot/<name>'")
        }
        return arn
    }

    func registerPullTimeUpdateExclusion(_ call: ECRCall) async throws -> JSONValue {
        try await authorize(call, .systemAdministrator, on: nil)
        let arn = try principalARN(call)
        switch try await registry.settings.addPullTimeExclusion(arn) {
        case .added(let exclusion):
            return ["principalArn": .string(exclusion.principalARN), "createdAt": .timestamp(millis: exclusion.createdAt)]
        case .alreadyExists:
            throw ECRError("ExclusionAlreadyExistsException", "the principal '\(arn)' is already excluded from pull time updates")
        case .limitReached:
            throw ECRError(
                "LimitExceededException",
                "the registry already excludes \(RegistryWideSettings.maximumPullTimeExclusions) principals from pull time updates; deregister one first")
        }
    }

    func deregisterPullTimeUpdateExclusion(_ call: ECRCall) async throws -> JSONValue {
        try await authorize(call, .systemAdministrator, on: nil)
        let arn = try principalARN(call)
        guard try await registry.settings.removePullTimeExclusion(arn) else {
            throw ECRError("ExclusionNotFoundException", "the principal '\(arn)' is not on the pull time update exclusion list")
        }
        return ["principalArn": .string(arn)]
    }

    func listPullTimeUpdateExclusions(_ call: ECRCall) async throws -> JSONValue {
        try await authorize(call, .systemAdministrator, on: nil)
        let all = try await registry.settings.pullTimeExclusions().map(\.principalARN)
        let (page, nextToken) = try Self.page(all, call, size: call.int("maxResults", in: 1...1000) ?? 100)
        var output: [String: JSONValue] = ["pullTimeUpdateExclusions": .array(page.map { .string($0) })]
        if let nextToken { output["nextToken"] = .string(nextToken) }
        return .object(output)
    }

    private func accountSetting(_ call: ECRCall) throws -> RegistryWideSettings.AccountSetting {
        let name = call.string("name") ?? ""
        guard let setting = RegistryWideSettings.AccountSetting(rawValue: name) else {
            let known = RegistryWideSettings.AccountSetting.allCases.map(\.rawValue).joined(separator: ", ")
            throw ECRError.invalidParameter("Invalid parameter at 'name' failed to satisfy constraint: 'Wharf supports the account settings \(known)'")
        }
        return setting
    }

    func getAccountSetting(_ call: ECRCall) async throws -> JSONValue {
        try await authorize(call, .systemAdministrator, on: nil)
        let setting = try accountSetting(call)
        return ["name": .string(setting.rawValue), "value": .string(try await registry.settings.value(of: setting))]
    }

    func putAccountSetting(_ call: ECRCall) async throws -> JSONValue {
        try await authorize(call, .systemAdministrator, on: nil)
        let setting = try accountSetting(call)
        let value = call.string("value") ?? ""
        guard setting.allowedValues.contains(value) else {
            let why =
                switch setting {
                case .registryPolicyScope: "Wharf's registry policy governs every ECR action, which is scope V2"
                case .basicScanTypeVersion: "Wharf scans with its own in-process scanner, AWS_NATIVE"
                case .blobMounting: "ENABLED or DISABLED"
                }
            throw ECRError.invalidParameter(
                "Invalid parameter at 'value' failed to satisfy constraint: '\(setting.rawValue) takes \(setting.allowedValues.joined(separator: " or ")): \(why)'"
            )
        }
        try await registry.settings.set(setting, to: value)
        return ["name": .string(setting.rawValue), "value": .string(value)]
    }
}
