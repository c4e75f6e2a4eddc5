import Foundation
import Metadata
import OCI
import Testing

/// The replication queue on both engines: tasks are written with the event's fan-out (never
/// without it), due tasks keep each tag's moves in order, attempts are recorded, and an image's
/// status is its newest task per destination.
@Suite("Replication queue", .timeLimit(.minutes(2)))
struct ReplicationQueueTests {
    static func event(_ repository: String, _ digest: String, tag: String?, kind: RegistryEvent.Kind = .push, at time: Int64 = 1_000) -> RegistryEvent {
        RegistryEvent(kind: kind, repository: repository, digest: digest, tag: tag, actor: "alice", occurredAt: time)
    }

    @Test("the fan-out writes one task per destination named, with the event's repository, digest, tag and commit time", arguments: Engine.available)
    func fanOutWritesTasks(engine: Engine) async throws {
        try await TestDatabases.withStore(engine) { store in
            try await store.appendEvent(Self.event("team/app", "sha256:aa", tag: "v1"))
            try await store.appendEvent(Self.event("team/app", "sha256:bb", tag: nil, kind: .delete))
            try await store.appendEvent(Self.event("other/app", "sha256:cc", tag: "v1"))
            let taken = try await store.fanOutEvents(
                limit: 10, plan: { _ in [] },
                replicate: { event in
                    event.repository.hasPrefix("team/") && event.kind == .push
                        ? [PlannedReplication(destination: "eu"), PlannedReplication(destination: "ap", targetRepository: "mirror/team/app")] : []
                })
            #expect(taken == 3)
            let tasks = try await store.replicationTasks(destination: nil, status: nil, limit: 10)
            #expect(Set(tasks.map(\.destination)) == ["eu", "ap"] && tasks.count == 2)
            for task in tasks {
                #expect(task.repository == "team/app" && task.digest == "sha256:aa" && task.tag == "v1" && task.action == .copy)
                #expect(task.status == .pending && task.attempts == 0 && task.createdAt == 1_000)
            }
            #expect(tasks.first { $0.destination == "ap" }?.destinationRepository == "mirror/team/app")
            #expect(tasks.first { $0.destination == "eu" }?.destinationRepository == "team/app")
            // The outbox is empty: a second pass takes nothing and writes nothing.
            #expect(try await store.fanOutEvents(limit: 10, plan: { _ in [] }, replicate: { _ in [PlannedReplication(destination: "eu")] }) == 0)
            #expect(try await store.replicationTasks(destination: nil, status: nil, limit: 10).count == 2)
        }
    }

    @Test("a tag's later move waits for its earlier one at the same destination; untagged copies and other tags do not wait", arguments: Engine.available)
    func dueTasksKeepTagOrder(engine: Engine) async throws {
        try await TestDatabases.withStore(engine) { store in
            for (digest, tag) in [("sha256:01", "stable"), ("sha256:02", "stable"), ("sha256:03", nil), ("sha256:04", "beta")] {
                try await store.enqueueReplication(destination: "eu", repository: "team/app", digest: digest, tag: tag)
            }
            try await store.enqueueReplication(destination: "ap", repository: "team/app", digest: "sha256:02", tag: "stable")
            let now = Timestamp.nowMillis() + 1
            var due = try await store.dueReplicationTasks(now: now, limit: 10, running: [])
            #expect(due.map(\.digest) == ["sha256:01", "sha256:03", "sha256:04", "sha256:02"])
            #expect(due.last?.destination == "ap")
            // Running tasks are left out, but still hold back their tag's later moves.
            let first = due[0]
            due = try await store.dueReplicationTasks(now: now, limit: 10, running: [first.id])
            #expect(!due.contains { $0.id == first.id } && !due.contains { $0.digest == "sha256:02" && $0.destination == "eu" })
            try await store.recordReplicationAttempt(first.id, .complete(bytes: 42))
            due = try await store.dueReplicationTasks(now: now, limit: 10, running: [])
            #expect(due.contains { $0.digest == "sha256:02" && $0.destination == "eu" })
            // A retry waits for its time; a limit is a limit.
            try await store.recordReplicationAttempt(due[0].id, .retry(at: now + 60_000, error: "connection refused"))
            #expect(try await store.dueReplicationTasks(now: now, limit: 10, running: []).count == due.count - 1)
            #expect(try await store.dueReplicationTasks(now: now, limit: 1, running: []).count == 1)
        }
    }

    @Test("a deletion waits for the copies of its image before it, and a re-push waits for the deletion", arguments: Engine.available)
    func deletionsKeepImageOrder(engine: Engine) async throws {
        try await TestDatabases.withStore(engine) { store in
            try await store.enqueueReplication(destination: "eu", repository: "team/app", digest: "sha256:01", tag: nil)
            try await store.appendEvent(Self.event("team/app", "sha256:01", tag: nil, kind: .delete))
            try await store.appendEvent(Self.event("team/app", "sha256:01", tag: nil))
            _ = try await store.fanOutEvents(
                limit: 10, plan: { _ in [] },
                replicate: { event in [PlannedReplication(destination: "eu", action: event.kind == .delete ? .delete : .copy)] })
            let now = Timestamp.nowMillis() + 1
            var due = try await store.dueReplicationTasks(now: now, limit: 10, running: [])
            #expect(due.count == 1 && due[0].action == .copy)
            try await store.recordReplicationAttempt(due[0].id, .complete(bytes: 1))
            due = try await store.dueReplicationTasks(now: now, limit: 10, running: [])
            #expect(due.count == 1 && due[0].action == .delete)
            try await store.recordReplicationAttempt(due[0].id, .complete(bytes: 0))
            due = try await store.dueReplicationTasks(now: now, limit: 10, running: [])
            #expect(due.count == 1 && due[0].action == .copy)
        }
    }

    @Test("rules are stored, replaced by name and deleted", arguments: Engine.available)
    func rules(engine: Engine) async throws {
        try await TestDatabases.withStore(engine) { store in
            let rule = ReplicationRuleRecord(
                name: "mirror", repositories: ["apps/*", "team/app"], tags: ["v*"], destinations: ["eu", "ap"], trigger: .manual, scheduleSeconds: 600,
                propagateDeletes: true, destinationPrefix: "mirror/")
            let stored = try await store.putReplicationRule(rule)
            #expect(stored.id > 0 && stored.createdAt > 0 && stored.repositories == ["apps/*", "team/app"] && stored.tags == ["v*"])
            #expect(stored.trigger == .manual && stored.scheduleSeconds == 600 && stored.propagateDeletes && stored.destinationPrefix == "mirror/")
            var changed = rule
            changed.tags = []
            changed.enabled = false
            try await store.putReplicationRule(changed)
            let all = try await store.replicationRules()
            #expect(all.count == 1 && all[0].tags == [] && !all[0].enabled && all[0].id == stored.id)
            #expect(try await store.deleteReplicationRule(named: "mirror"))
            #expect(try await !store.deleteReplicationRule(named: "mirror"))
            #expect(try await store.replicationRules().isEmpty)
        }
    }

    @Test("status is each destination's newest task; failures keep their reason, can be retried, and queues count them", arguments: Engine.available)
    func statusRetryAndQueues(engine: Engine) async throws {
        try await TestDatabases.withStore(engine) { store in
            try await store.enqueueReplication(destination: "eu", repository: "team/app", digest: "sha256:aa", tag: "v1")
            try await store.enqueueReplication(destination: "ap", repository: "team/app", digest: "sha256:aa", tag: "v1")
            let tasks = try await store.replicationTasks(destination: nil, status: nil, limit: 10)
            let eu = try #require(tasks.first { $0.destination == "eu" })
            let ap = try #require(tasks.first { $0.destination == "ap" })
            try await store.recordReplicationAttempt(eu.id, .complete(bytes: 1_000))
            try await store.recordReplicationAttempt(ap.id, .failed(error: "the destination refused: DENIED"))
            var status = try await store.replicationStatus(repository: "team/app", digest: "sha256:aa")
            #expect(status.map(\.destination) == ["ap", "eu"])
            #expect(status[0].status == .failed && status[0].lastError == "the destination refused: DENIED" && status[0].attempts == 1)
            #expect(status[1].status == .complete && status[1].bytesCopied == 1_000 && status[1].completedAt != nil)

            var queues = try await store.replicationQueues()
            #expect(queues.map(\.destination) == ["ap", "eu"])
            #expect(queues[0].failed == 1 && queues[0].pending == 0 && queues[1].complete == 1 && queues[1].oldestPendingCreatedAt == nil)

            #expect(try await store.retryFailedReplications(destination: "eu") == 0)
            #expect(try await store.retryFailedReplications(destination: nil) == 1)
            status = try await store.replicationStatus(repository: "team/app", digest: "sha256:aa")
            #expect(status[0].status == .pending && status[0].attempts == 0)
            queues = try await store.replicationQueues()
            #expect(queues[0].pending == 1 && queues[0].oldestPendingCreatedAt != nil)

            // A newer copy of the same image becomes its status; pruning keeps the newest of each.
            try await store.enqueueReplication(destination: "eu", repository: "team/app", digest: "sha256:aa", tag: "v1")
            status = try await store.replicationStatus(repository: "team/app", digest: "sha256:aa")
            #expect(status[1].status == .pending)
            try await store.pruneReplicationTasks(finishedBefore: Timestamp.nowMillis() + 1)
            let left = try await store.replicationTasks(destination: "eu", status: nil, limit: 10)
            #expect(left.count == 1 && left[0].status == .pending)
        }
    }
}
