import BlobStore
import Metadata
import OCI

extension Registry {
    /// Deletes a repository (with `force`, even when it holds images) and forgets it in the
    /// manifest cache. Its blobs stay until the collector finds them unreferenced.
    public func deleteRepository(_ name: RepositoryName, force: Bool) async throws -> RepositoryDeletion {
        space?.releaseReserveIfLow()  // room for the database to record the deletion on a full disk
        let result = try await metadata.deleteRepository(name, force: force)
        if case .deleted = result { await forget(repository: name.value) }
        return result
    }
}
