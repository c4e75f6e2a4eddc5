import Access
import Foundation
import Hummingbird
import Metadata
import OCI
import UseCases

extension API {
    struct ReplicationDestination: Encodable {
        var name: String
        var region: String?
        var registryId: String?
        var url: String?
        var configured: Bool
        var pending: Int
        var failed: Int
        var complete: Int
        var lagSeconds: Double
        var lastCompletedAt: Date?

        init(_ destination: ReplicationOverview.Destination) {
            name = destination.name
            region = destination.region
            registryId = destination.registryID
            url = destination.url
            configured = destination.url != nil
            pending = destination.pending
            failed = destination.failed
            complete = destination.complete
            lagSeconds = destination.lagSeconds
            lastCompletedAt = destination.lastCompletedAt.map { Date(timeIntervalSince1970: Double($0) / 1000) }
        }
    }

    struct ReplicationTask: Encodable {
        var id: Int64
        var destination: String
        var repository: String
        var digest: String
        var tag: String?
        /// PENDING (waiting or being copied), COMPLETE or FAILED.
        var status: String
        var attempts: Int
        var lastError: String?
        var createdAt: Date
        var nextAttemptAt: Date?
        var completedAt: Date?
        var bytesCopied: Int64?
        /// The repository's name at the destination when a rule's prefix changes it.
        var targetRepository: String?
        /// copy or delete.
        var action: String

        init(_ task: Metadata.ReplicationTask) {
            targetRepository = task.targetRepository
            action = task.action.rawValue
            id = task.id
            destination = task.destination
            repository = task.repository
            digest = task.digest
            tag = task.tag
            status = task.status.rawValue
            attempts = task.attempts
            lastError = task.lastError
            createdAt = Date(timeIntervalSince1970: Double(task.createdAt) / 1000)
            nextAttemptAt = task.status == .pending ? Date(timeIntervalSince1970: Double(task.nextAttemptAt) / 1000) : nil
            completedAt = task.completedAt.map { Date(timeIntervalSince1970: Double($0) / 1000) }
            bytesCopied = task.bytesCopied
        }
    }

    struct ImageReplicationStatus: Encodable {
        var repository: String
        var digest: String
        var destinations: [ReplicationTask]
    }

    struct ReplicationRule: Encodable {
        var name: String
        var enabled: Bool
        var repositories: [String]
        var tags: [String]
        var destinations: [String]
        var trigger: String
        var scheduleSeconds: Int?
        var propagateDeletes: Bool
        var destinationPrefix: String
        var createdAt: Date
        var updatedAt: Date

        init(_ rule: ReplicationRuleRecord) {
            name = rule.name
            enabled = rule.enabled
            repositories = rule.repositories
            tags = rule.tags
            destinations = rule.destinations
            trigger = rule.trigger.rawValue
            scheduleSeconds = rule.scheduleSeconds
            propagateDeletes = rule.propagateDeletes
            destinationPrefix = rule.destinationPrefix
            createdAt = Date(timeIntervalSince1970: Double(rule.createdAt) / 1000)
            updatedAt = Date(timeIntervalSince1970: Double(rule.updatedAt) / 1000)
        }
    }

    struct ReplicateImage: Decodable {
        var repository: String
        var reference: String
        var destination: String
    }
}

extension ManagementAPI {
    /// Replication: destinations and their queues, tasks, one image's status, copies by hand. All
    /// for system administrators.
    func replicationRoutes(_ storage: StorageManagement) -> [Route] {
        let access = self.access
        let replication = storage.replication
        @Sendable func image(_ request: Request) throws -> (RepositoryName, Reference) {
            guard let name = request.uri.queryParameters.get("repository"), let repository = RepositoryName(name) else {
                throw AccessError.invalid("give ?repository= with a repository name")
            }
            guard let text = request.uri.queryParameters.get("reference"), let reference = try? Reference(parsing: text) else {
                throw AccessError.invalid("give ?reference= with a tag or a digest")
            }
            return (repository, reference)
        }
        return [
            Route(
                .get, "/replication/destinations",
                "Every replication destination with its queue: images waiting, failed and copied, and the lag (age of the oldest waiting change)",
                response: "[ReplicationDestination]"
            ) { _, _, caller in
                try access.requireSystemAdministrator(caller.identity)
                return try Self.json(try await replication.destinations().map(API.ReplicationDestination.init))
            },
            Route(
                .get, "/replication/tasks", "Replication tasks, newest first", response: "[ReplicationTask]",
                query: [
                    ("destination", "only this destination's"), ("status", "PENDING, COMPLETE or FAILED"),
                    ("limit", "at most this many (default 100, at most 1000)"),
                ]
            ) { request, _, caller in
                try access.requireSystemAdministrator(caller.identity)
                let query = request.uri.queryParameters
                var status: ReplicationTask.Status?
                if let text = query.get("status") {
                    guard let parsed = ReplicationTask.Status(rawValue: text) else { throw AccessError.invalid("status must be PENDING, COMPLETE or FAILED") }
                    status = parsed
                }
                var limit = 100
                if let text = query.get("limit") {
                    guard let parsed = ClientNumber.parse(text, in: 1...1000) else { throw AccessError.invalid("limit must be 1 to 1000") }
                    limit = parsed
                }
                let tasks = try await replication.tasks(destination: query.get("destination"), status: status, limit: limit)
                return try Self.json(tasks.map(API.ReplicationTask.init))
            },
            Route(
                .get, "/replication/status", "One image's replication status: the newest task of each destination", response: "ImageReplicationStatus",
                query: [("repository", "the repository"), ("reference", "a tag or digest")]
            ) { request, _, caller in
                try access.requireSystemAdministrator(caller.identity)
                let (repository, reference) = try image(request)
                do {
                    let (digest, tasks) = try await replication.status(of: reference, in: repository)
                    return try Self.json(
                        API.ImageReplicationStatus(
                            repository: repository.value, digest: digest.description, destinations: tasks.map(API.ReplicationTask.init)))
                } catch is RegistryError {
                    throw AccessError.notFound("\(reference) is not in repository \(repository)")
                }
            },
            Route(
                .post, "/replication/images", "Copy one image (and its tag, when named by tag) to a destination now", request: "ReplicateImage",
                response: "ImageReplicationStatus", status: .accepted
            ) { request, _, caller in
                try access.requireSystemAdministrator(caller.identity)
                let body = try await Self.decode(API.ReplicateImage.self, request)
                guard let repository = RepositoryName(body.repository), let reference = try? Reference(parsing: body.reference) else {
                    throw AccessError.invalid("repository must be a repository name and reference a tag or digest")
                }
                do {
                    let digest = try await replication.replicate(reference, in: repository, to: body.destination, by: caller.requester)
                    let tasks = try await replication.status(of: .digest(digest), in: repository).tasks
                    return try Self.json(
                        API.ImageReplicationStatus(repository: repository.value, digest: digest.description, destinations: tasks.map(API.ReplicationTask.init)),
                        status: .accepted)
                } catch is RegistryError {
                    throw AccessError.notFound("\(body.reference) is not in repository \(repository)")
                }
            },
            Route(.get, "/replication/rules", "Wharf's own replication rules (ECR's configuration is DescribeRegistry's)", response: "[ReplicationRule]") {
                _, _, caller in
                try access.requireSystemAdministrator(caller.identity)
                return try Self.json(try await replication.rules().map(API.ReplicationRule.init))
            },
            Route(
                .put, "/replication/rules/{name}",
                "Create or replace a rule: repository and tag patterns, destinations, push or manual trigger, schedule, deletions, a name prefix",
                request: "ReplicationRuleDefinition", response: "ReplicationRule"
            ) { request, context, caller in
                try access.requireSystemAdministrator(caller.identity)
                let body = try await Self.decode(ReplicationOverview.RuleDefinition.self, request)
                let rule = try await replication.putRule(named: try Self.parameter(context, "name"), body, by: caller.requester)
                return try Self.json(API.ReplicationRule(rule))
            },
            Route(.delete, "/replication/rules/{name}", "Delete a rule (copies already queued still run)", status: .noContent) { _, context, caller in
                try access.requireSystemAdministrator(caller.identity)
                let name = try Self.parameter(context, "name")
                guard try await replication.deleteRule(named: name, by: caller.requester) else {
                    throw AccessError.notFound("no replication rule named '\(name)'")
                }
                return Response(status: .noContent)
            },
            Route(
                .post, "/replication/rules/{name}/run", "Run a rule now: compare its repositories with its destinations and queue what differs",
                response: "ReplicationReconcile"
            ) { _, context, caller in
                try access.requireSystemAdministrator(caller.identity)
                let name = try Self.parameter(context, "name")
                guard try await replication.rules().contains(where: { $0.name == name }) else {
                    throw AccessError.notFound("no replication rule named '\(name)'")
                }
                return try Self.json(try await replication.runRule(named: name, by: caller.requester))
            },
            Route(
                .post, "/replication/reconcile",
                "Compare every replicated repository's tags and referrers with each destination now, and queue copies of what differs",
                response: "ReplicationReconcile"
            ) { _, _, caller in
                try access.requireSystemAdministrator(caller.identity)
                guard let report = try await replication.reconcile(by: caller.requester) else {
                    throw AccessError.conflict("a reconcile pass is running already")
                }
                return try Self.json(report)
            },
            Route(
                .post, "/replication/retry", "Send failed copies (all, or one destination's) back to the queue", response: "ReplicationRetry",
                query: [("destination", "only this destination's")]
            ) { request, _, caller in
                try access.requireSystemAdministrator(caller.identity)
                let count = try await replication.retryFailed(destination: request.uri.queryParameters.get("destination"), by: caller.requester)
                return try Self.json(["requeued": count])
            },
        ]
    }
}
