import Access
import Metadata
import OCI
import Registry

/// Listing repositories, for every front end: `/v2/_catalog` and ECR's DescribeRepositories
/// (without names). A listing shows exactly the repositories the requester may pull: the roles'
/// view (namespaces and grants, as a database filter), then, when any resource policy exists,
/// each candidate checked against the policies, so an explicit Deny hides a repository from
/// the listing as it refuses its pulls.
public struct RepositoryListings: Sendable {
    let registry: Registry
    /// Nil when authentication is off: everything is listed.
    let authorizer: Authorizer?

    public init(registry: Registry, authorizer: Authorizer?) {
        self.registry = registry
        self.authorizer = authorizer
    }

    /// Up to `limit` repository names after `last`, in order, and whether more follow.
    public func names(after last: String?, limit: Int, by requester: Requester) async throws -> (names: [String], more: Bool) {
        guard limit > 0 else { return ([], false) }
        guard let authorizer else {
            let names = try await registry.catalog(after: last, limit: limit + 1)
            return (Array(names.prefix(limit)), names.count > limit)
        }
        let filter = try await authorizer.catalogFilter(for: requester.identity)
        let checkPolicies = try await authorizer.policies.anyPolicy()
        let wanted = limit + 1  // one more than a page says whether another follows
        var names: [String] = []
        var cursor = last
        while names.count < wanted {
            let batch = try await registry.catalog(after: cursor, limit: wanted, filter: filter)
            for name in batch where names.count < wanted {
                if checkPolicies {
                    guard let repository = RepositoryName(name),
                        try await authorizer.actions(for: requester.identity, on: repository).contains(.pull)
                    else { continue }
                }
                names.append(name)
            }
            guard batch.count == wanted, let next = batch.last else { break }
            cursor = next
        }
        return (Array(names.prefix(limit)), names.count > limit)
    }
}
