import Access
import Metadata
import OCI

extension ECRService {
    func checkedResourcePolicy(_ text: String) throws -> String {
        do {
            _ = try ResourcePolicy(parsing: text, registryID: registryID, knownActions: Self.knownActions)
            return text
        } catch {
            throw ECRError.invalidParameter("Invalid parameter at 'PolicyText' failed to satisfy constraint: 'Invalid repository policy provided: \(error)'")
        }
    }

    func setRepositoryPolicy(_ call: ECRCall) async throws -> JSONValue {
        let name = try repositoryName(call)
        try await authorize(call, .administer, on: name)
        _ = try await existingRepository(name)
        let text = try checkedResourcePolicy(call.string("policyText") ?? "")
        _ = try await metadata.updateSettings(of: name) { $0.repositoryPolicy = text }
        access.authorizer.invalidateCache()
        return ["registryId": .string(registryID), "repositoryName": .string(name.value), "policyText": .string(text)]
    }

    private func repositoryPolicyNotFound(_ name: RepositoryName) -> ECRError {
        ECRError(
            "RepositoryPolicyNotFoundException",
            "Repository policy does not exist for the repository with name '\(name)' in the registry with id '\(registryID)'")
    }

    func getRepositoryPolicy(_ call: ECRCall) async throws -> JSONValue {
        let name = try repositoryName(call)
        try await authorize(call, .pull, on: name)
        guard let text = try await existingRepository(name).settings.repositoryPolicy else { throw repositoryPolicyNotFound(name) }
        return ["registryId": .string(registryID), "repositoryName": .string(name.value), "policyText": .string(text)]
    }

    func deleteRepositoryPolicy(_ call: ECRCall) async throws -> JSONValue {
        let name = try repositoryName(call)
        try await authorize(call, .administer, on: name)
        guard let text = try await existingRepository(name).settings.repositoryPolicy else { throw repositoryPolicyNotFound(name) }
        _ = try await metadata.updateSettings(of: name) { $0.repositoryPolicy = nil }
        access.authorizer.invalidateCache()
        return ["registryId": .string(registryID), "repositoryName": .string(name.value), "policyText": .string(text)]
    }

    func putRegistryPolicy(_ call: ECRCall) async throws -> JSONValue {
        try await authorize(call, .systemAdministrator, on: nil)
        let text = try checkedResourcePolicy(call.string("policyText") ?? "")
        try await metadata.putRegistrySetting(PolicyStore.registryPolicySetting, text)
        access.authorizer.invalidateCache()
        return ["registryId": .string(registryID), "policyText": .string(text)]
    }

    private var registryPolicyNotFound: ECRError {
        ECRError("RegistryPolicyNotFoundException", "Registry policy does not exist in the registry with id '\(registryID)'")
    }

    func getRegistryPolicy(_ call: ECRCall) async throws -> JSONValue {
        try await authorize(call, .systemAdministrator, on: nil)
        guard let text = try await metadata.registrySetting(PolicyStore.registryPolicySetting) else { throw registryPolicyNotFound }
        return ["registryId": .string(registryID), "policyText": .string(text)]
    }

    func deleteRegistryPolicy(_ call: ECRCall) async throws -> JSONValue {
        try await authorize(call, .systemAdministrator, on: nil)
        guard let text = try await metadata.registrySetting(PolicyStore.registryPolicySetting) else { throw registryPolicyNotFound }
        _ = try await metadata.deleteRegistrySetting(PolicyStore.registryPolicySetting)
        access.authorizer.invalidateCache()
        return ["registryId": .string(registryID), "policyText": .string(text)]
    }
}
