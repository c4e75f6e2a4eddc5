import Access
import Lifecycle
import Metadata
import OCI
import UseCases

#if canImport(FoundationEssentials)
import FoundationEssentials
#else
import Foundation
#endif

extension ECRService {
    func checkedLifecyclePolicy(_ text: String) throws -> String {
        do {
            try RepositorySettingsChanges.validateLifecyclePolicy(text)
            return text
        } catch {
            throw map(error)
        }
    }

    private func lifecyclePolicyNotFound(_ name: RepositoryName) -> ECRError {
        ECRError(
            "LifecyclePolicyNotFoundException", "Lifecycle policy does not exist for the repository with name '\(name)' in the registry with id '\(registryID)'"
        )
    }

    func putLifecyclePolicy(_ call: ECRCall) async throws -> JSONValue {
        let name = try repositoryName(call)
        try await authorize(call, .administer, on: name)
        let text = call.string("lifecyclePolicyText") ?? ""
        _ = try await settingsChanges.setLifecyclePolicy(text, of: name, by: call.requester, ifMissing: .refuse)
        return ["registryId": .string(registryID), "repositoryName": .string(name.value), "lifecyclePolicyText": .string(text)]
    }

    func getLifecyclePolicy(_ call: ECRCall) async throws -> JSONValue {
        let name = try repositoryName(call)
        try await authorize(call, .pull, on: name)
        guard let text = try await existingRepository(name).settings.lifecyclePolicy else { throw lifecyclePolicyNotFound(name) }
        return ["registryId": .string(registryID), "repositoryName": .string(name.value), "lifecyclePolicyText": .string(text)]
    }

    func deleteLifecyclePolicy(_ call: ECRCall) async throws -> JSONValue {
        let name = try repositoryName(call)
        try await authorize(call, .administer, on: name)
        guard let text = try await settingsChanges.deleteLifecyclePolicy(of: name, by: call.requester, ifMissing: .refuse) else {
            throw lifecyclePolicyNotFound(name)
        }
        return ["registryId": .string(registryID), "repositoryName": .string(name.value), "lifecyclePolicyText": .string(text)]
    }

    /// Runs the evaluator as a dry run and keeps the result for GetLifecyclePolicyPreview. The
    /// evaluation is fast enough to finish before answering, so the status is COMPLETE at once.
    /// The preview is stored for everyone who reads the repository, so starting one takes the same
    /// right as changing the policy: a reader must not overwrite an administrator's dry run.
    func startLifecyclePolicyPreview(_ call: ECRCall) async throws -> JSONValue {
        let name = try repositoryName(call)
        try await authorize(call, .administer, on: name)
        let record = try await existingRepository(name)
        let text: String
        if let given = call.string("lifecyclePolicyText") {
            text = try checkedLifecyclePolicy(given)
        } else if let own = record.settings.lifecyclePolicy {
            text = own
        } else {
            throw lifecyclePolicyNotFound(name)
        }
        let expiries = try await lifecycle.preview(name, policyText: text)
        let result = try JSONEncoder().encode(expiries)
        _ = try await metadata.saveLifecyclePreview(
            StoredLifecyclePreview(policy: text, status: "COMPLETE", result: String(decoding: result, as: UTF8.self), createdAt: Timestamp.nowMillis()),
            for: name)
        return ["registryId": .string(registryID), "repositoryName": .string(name.value), "lifecyclePolicyText": .string(text), "status": "COMPLETE"]
    }

    func getLifecyclePolicyPreview(_ call: ECRCall) async throws -> JSONValue {
        let name = try repositoryName(call)
        try await authorize(call, .pull, on: name)
        _ = try await existingRepository(name)
        guard let stored = try await metadata.lifecyclePreview(for: name) else {
            throw ECRError(
                "LifecyclePolicyPreviewNotFoundException",
                "There is no dry run for this repository with name '\(name)' in the registry with id '\(registryID)'; call StartLifecyclePolicyPreview first")
        }
        let expiries = try JSONDecoder().decode([PlannedExpiry].self, from: Data(stored.result.utf8))
        var selected = expiries
        let tagStatus = call.input["filter"]?["tagStatus"]?.string
        selected = selected.filter {
            switch tagStatus {
            case "TAGGED": !$0.tags.isEmpty
            case "UNTAGGED": $0.tags.isEmpty
            default: true
            }
        }
        if let ids = call.input["imageIds"]?.array {
            selected = selected.filter { expiry in
                ids.contains { id in
                    (id["imageDigest"]?.string.map { $0 == expiry.digest } ?? true) && (id["imageTag"]?.string.map { expiry.tags.contains($0) } ?? true)
                }
            }
        }
        let page = try Self.page(selected, call, size: pageSize(call, default: 100))
        let results: [JSONValue] = page.items.map { expiry in
            .compact([
                "imageTags": expiry.tags.isEmpty ? nil : .array(expiry.tags.map(JSONValue.string)),
                "imageDigest": .string(expiry.digest),
                "imagePushedAt": .timestamp(millis: expiry.pushedAt),
                "action": ["type": "EXPIRE"],
                "appliedRulePriority": .integer(expiry.rulePriority),
            ])
        }
        return .compact([
            "registryId": .string(registryID),
            "repositoryName": .string(name.value),
            "lifecyclePolicyText": .string(stored.policy),
            "status": .string(stored.status),
            "previewResults": .array(results),
            "summary": ["expiringImageTotalCount": .integer(expiries.count)],
            "nextToken": page.nextToken.map(JSONValue.string),
        ])
    }
}
