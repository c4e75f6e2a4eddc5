import Logging
import SQLKit

/// Versioned schema migrations. Each runs once, in order, inside a transaction that also records it
/// in `schema_migrations`; on PostgreSQL an advisory lock keeps nodes starting together from racing.
///
/// The SQL is shared by both engines; these placeholders cover their differences:
/// - `{id}`: an auto-incrementing 64-bit primary key
/// - `{name}`: text compared byte-wise (repository names, tags, digests sort in ASCII order on both)
/// - `{bytes}`: binary content
struct Migration: Sendable {
    let version: Int
    let name: String
    let statements: [String]
}

enum Migrations {
    static let all: [Migration] = [
        Migration(
            version: 1, name: "core registry",
            statements: [
                """
                CREATE TABLE repositories (
                    id {id},
                    name {name} NOT NULL UNIQUE,
                    namespace {name} NOT NULL,
                    created_at BIGINT NOT NULL
                )
                """,
                "CREATE INDEX repositories_by_namespace ON repositories (namespace, name)",
                // Blob bytes live in the blob store; this row says they are committed and how big they are.
                """
                CREATE TABLE blobs (
                    digest {name} PRIMARY KEY,
                    size BIGINT NOT NULL,
                    created_at BIGINT NOT NULL
                )
                """,
                // Which repositories may see which blobs (pushed, mounted or referenced there).
                """
                CREATE TABLE repository_blobs (
                    repository_id BIGINT NOT NULL REFERENCES repositories(id) ON DELETE CASCADE,
                    digest {name} NOT NULL REFERENCES blobs(digest),
                    linked_at BIGINT NOT NULL,
                    PRIMARY KEY (repository_id, digest)
                )
                """,
                "CREATE INDEX repository_blobs_by_digest ON repository_blobs (digest)",
                """
                CREATE TABLE manifests (
                    repository_id BIGINT NOT NULL REFERENCES repositories(id) ON DELETE CASCADE,
                    digest {name} NOT NULL,
                    media_type TEXT NOT NULL,
                    artifact_type TEXT,
                    size BIGINT NOT NULL,
                    content {bytes} NOT NULL,
                    subject_digest {name},
                    annotations TEXT,
                    pushed_at BIGINT NOT NULL,
                    last_pulled_at BIGINT,
                    PRIMARY KEY (repository_id, digest)
                )
                """,
                "CREATE INDEX manifests_by_subject ON manifests (repository_id, subject_digest)",
                // Everything a manifest points at: blobs (config, layers) and, for indexes, child manifests.
                """
                CREATE TABLE manifest_references (
                    repository_id BIGINT NOT NULL,
                    manifest_digest {name} NOT NULL,
                    child_digest {name} NOT NULL,
                    kind TEXT NOT NULL,
                    PRIMARY KEY (repository_id, manifest_digest, child_digest, kind),
                    FOREIGN KEY (repository_id, manifest_digest) REFERENCES manifests (repository_id, digest) ON DELETE CASCADE
                )
                """,
                "CREATE INDEX manifest_references_by_child ON manifest_references (child_digest, repository_id)",
                """
                CREATE TABLE tags (
                    repository_id BIGINT NOT NULL REFERENCES repositories(id) ON DELETE CASCADE,
                    name {name} NOT NULL,
                    digest {name} NOT NULL,
                    updated_at BIGINT NOT NULL,
                    PRIMARY KEY (repository_id, name),
                    FOREIGN KEY (repository_id, digest) REFERENCES manifests (repository_id, digest)
                )
                """,
                "CREATE INDEX tags_by_digest ON tags (repository_id, digest)",
                // Every move of every tag, so "what did prod point at last Tuesday" has an answer.
                """
                CREATE TABLE tag_history (
                    id {id},
                    repository_id BIGINT NOT NULL REFERENCES repositories(id) ON DELETE CASCADE,
                    tag {name} NOT NULL,
                    digest {name},
                    previous_digest {name},
                    changed_at BIGINT NOT NULL
                )
                """,
                "CREATE INDEX tag_history_by_tag ON tag_history (repository_id, tag, id)",
                """
                CREATE TABLE upload_sessions (
                    id {name} PRIMARY KEY,
                    repository {name} NOT NULL,
                    size BIGINT NOT NULL,
                    algorithm TEXT NOT NULL,
                    created_at BIGINT NOT NULL,
                    updated_at BIGINT NOT NULL
                )
                """,
                "CREATE INDEX upload_sessions_by_age ON upload_sessions (updated_at)",
            ]),
        Migration(
            version: 2, name: "access control",
            statements: [
                """
                CREATE TABLE users (
                    id {id},
                    name {name} NOT NULL UNIQUE,
                    password_hash TEXT,
                    email TEXT,
                    is_admin BOOLEAN NOT NULL DEFAULT FALSE,
                    disabled BOOLEAN NOT NULL DEFAULT FALSE,
                    created_at BIGINT NOT NULL,
                    updated_at BIGINT NOT NULL,
                    last_login_at BIGINT
                )
                """,
                // Robot accounts: non-human identities with a high-entropy secret (stored as its SHA-256).
                """
                CREATE TABLE robots (
                    id {id},
                    name {name} NOT NULL UNIQUE,
                    description TEXT,
                    secret_hash TEXT NOT NULL,
                    expires_at BIGINT,
                    disabled BOOLEAN NOT NULL DEFAULT FALSE,
                    created_by TEXT,
                    created_at BIGINT NOT NULL,
                    updated_at BIGINT NOT NULL,
                    last_used_at BIGINT
                )
                """,
                // scope_kind: registry (scope_name '*'), namespace or repository; actions: comma-separated.
                """
                CREATE TABLE robot_permissions (
                    robot_id BIGINT NOT NULL REFERENCES robots(id) ON DELETE CASCADE,
                    scope_kind TEXT NOT NULL,
                    scope_name {name} NOT NULL,
                    actions TEXT NOT NULL,
                    PRIMARY KEY (robot_id, scope_kind, scope_name)
                )
                """,
                // Personal access tokens: stand in for a user's password on the command line.
                """
                CREATE TABLE access_tokens (
                    id {id},
                    user_id BIGINT NOT NULL REFERENCES users(id) ON DELETE CASCADE,
                    name TEXT NOT NULL,
                    token_hash TEXT NOT NULL UNIQUE,
                    expires_at BIGINT,
                    created_at BIGINT NOT NULL,
                    last_used_at BIGINT,
                    UNIQUE (user_id, name)
                )
                """,
                // OAuth2 refresh tokens (docker login keeps one as its identity token).
                """
                CREATE TABLE refresh_tokens (
                    id {id},
                    user_id BIGINT NOT NULL REFERENCES users(id) ON DELETE CASCADE,
                    token_hash TEXT NOT NULL UNIQUE,
                    client_id TEXT,
                    created_at BIGINT NOT NULL,
                    expires_at BIGINT NOT NULL,
                    last_used_at BIGINT
                )
                """,
                """
                CREATE TABLE namespaces (
                    id {id},
                    name {name} NOT NULL UNIQUE,
                    public BOOLEAN NOT NULL DEFAULT FALSE,
                    created_by TEXT,
                    created_at BIGINT NOT NULL
                )
                """,
                """
                CREATE TABLE namespace_members (
                    namespace_id BIGINT NOT NULL REFERENCES namespaces(id) ON DELETE CASCADE,
                    user_id BIGINT NOT NULL REFERENCES users(id) ON DELETE CASCADE,
                    role TEXT NOT NULL,
                    added_at BIGINT NOT NULL,
                    PRIMARY KEY (namespace_id, user_id)
                )
                """,
                "CREATE INDEX namespace_members_by_user ON namespace_members (user_id)",
                // Token-signing keys, in the database so every node signs and verifies alike.
                """
                CREATE TABLE signing_keys (
                    kid TEXT PRIMARY KEY,
                    private_key_pem TEXT NOT NULL,
                    created_at BIGINT NOT NULL,
                    retired_at BIGINT
                )
                """,
                """
                CREATE TABLE audit_events (
                    id {id},
                    at BIGINT NOT NULL,
                    actor {name},
                    actor_kind TEXT NOT NULL,
                    action TEXT NOT NULL,
                    namespace {name},
                    repository {name},
                    target TEXT,
                    result TEXT NOT NULL,
                    source TEXT,
                    detail TEXT,
                    count BIGINT NOT NULL DEFAULT 1
                )
                """,
                "CREATE INDEX audit_events_by_time ON audit_events (at)",
                "CREATE INDEX audit_events_by_actor ON audit_events (actor, at)",
                "CREATE INDEX audit_events_by_namespace ON audit_events (namespace, at)",
                "CREATE INDEX audit_events_by_action ON audit_events (action, at)",
            ]),
        Migration(
            version: 3, name: "lifecycle, immutability, quotas, garbage collection",
            statements: [
                """
                CREATE TABLE repository_settings (
                    repository_id BIGINT PRIMARY KEY REFERENCES repositories(id) ON DELETE CASCADE,
                    tag_mutability TEXT NOT NULL DEFAULT 'MUTABLE',
                    mutability_exclusions TEXT,
                    lifecycle_policy TEXT,
                    updated_at BIGINT NOT NULL
                )
                """,
                // Registry-wide lifecycle policies, applied to repositories whose name matches `scope` (with * wildcards).
                """
                CREATE TABLE lifecycle_policies (
                    id {id},
                    scope {name} NOT NULL UNIQUE,
                    policy TEXT NOT NULL,
                    created_by TEXT,
                    updated_at BIGINT NOT NULL
                )
                """,
                "ALTER TABLE namespaces ADD COLUMN quota_bytes BIGINT",
                // When a blob was last linked, unlinked or asked about: the garbage collector's grace clock.
                "ALTER TABLE blobs ADD COLUMN touched_at BIGINT",
                "CREATE INDEX manifest_references_by_repository_child ON manifest_references (repository_id, child_digest, kind)",
                """
                CREATE TABLE gc_runs (
                    id {id},
                    started_at BIGINT NOT NULL,
                    finished_at BIGINT,
                    trigger TEXT NOT NULL,
                    dry_run BOOLEAN NOT NULL,
                    report TEXT
                )
                """,
            ]),
        Migration(
            version: 4, name: "ECR control plane",
            statements: [
                // SigV4 access keys of users and robots. The secret is kept: HMAC verification needs it.
                """
                CREATE TABLE access_keys (
                    key_id {name} PRIMARY KEY,
                    secret TEXT NOT NULL,
                    user_id BIGINT REFERENCES users(id) ON DELETE CASCADE,
                    robot_id BIGINT REFERENCES robots(id) ON DELETE CASCADE,
                    description TEXT,
                    disabled BOOLEAN NOT NULL DEFAULT FALSE,
                    created_at BIGINT NOT NULL,
                    last_used_at BIGINT
                )
                """,
                "CREATE INDEX access_keys_by_user ON access_keys (user_id)",
                "CREATE INDEX access_keys_by_robot ON access_keys (robot_id)",
                // GetAuthorizationToken's 12-hour registry logins (Basic `AWS:<token>` on /v2).
                """
                CREATE TABLE registry_login_tokens (
                    token_hash {name} PRIMARY KEY,
                    user_id BIGINT REFERENCES users(id) ON DELETE CASCADE,
                    robot_id BIGINT REFERENCES robots(id) ON DELETE CASCADE,
                    created_at BIGINT NOT NULL,
                    expires_at BIGINT NOT NULL
                )
                """,
                "CREATE INDEX registry_login_tokens_by_expiry ON registry_login_tokens (expires_at)",
                "ALTER TABLE repository_settings ADD COLUMN scan_on_push BOOLEAN NOT NULL DEFAULT FALSE",
                "ALTER TABLE repository_settings ADD COLUMN encryption_type TEXT",
                "ALTER TABLE repository_settings ADD COLUMN kms_key TEXT",
                "ALTER TABLE repository_settings ADD COLUMN repository_policy TEXT",
                // Resource tags (TagResource): key/value labels on repositories.
                """
                CREATE TABLE repository_labels (
                    repository_id BIGINT NOT NULL REFERENCES repositories(id) ON DELETE CASCADE,
                    label_key TEXT NOT NULL,
                    label_value TEXT NOT NULL,
                    PRIMARY KEY (repository_id, label_key)
                )
                """,
                // Registry-wide settings as JSON documents: the registry policy, replication configuration, registry id.
                """
                CREATE TABLE registry_settings (
                    name {name} PRIMARY KEY,
                    value TEXT NOT NULL,
                    updated_at BIGINT NOT NULL
                )
                """,
                // The latest lifecycle policy preview per repository (StartLifecyclePolicyPreview).
                """
                CREATE TABLE lifecycle_previews (
                    repository_id BIGINT PRIMARY KEY REFERENCES repositories(id) ON DELETE CASCADE,
                    policy TEXT NOT NULL,
                    status TEXT NOT NULL,
                    result TEXT NOT NULL,
                    created_at BIGINT NOT NULL
                )
                """,
            ]),
        Migration(
            version: 5, name: "image scanning",
            statements: [
                // One row per scanned manifest: the job (PENDING → IN_PROGRESS → COMPLETE/FAILED) and its result.
                // Rows are the job queue, so a restart loses no requested scan.
                """
                CREATE TABLE image_scans (
                    digest {name} PRIMARY KEY,
                    repository TEXT NOT NULL,
                    status TEXT NOT NULL,
                    requested_at BIGINT NOT NULL,
                    started_at BIGINT,
                    completed_at BIGINT,
                    description TEXT,
                    result TEXT
                )
                """,
                "CREATE INDEX image_scans_by_status ON image_scans (status, requested_at)",
            ]),
        Migration(
            version: 6, name: "scan results by manifest digest",
            statements: [
                // Garbage collection drops the scans of manifests no repository holds; this finds them.
                "CREATE INDEX manifests_by_digest ON manifests (digest)"
            ]),
        Migration(
            version: 7, name: "scan results record their database version",
            statements: [
                // Lets a new vulnerability database find the results to re-match without reading them all.
                "ALTER TABLE image_scans ADD COLUMN database_version TEXT"
            ]),
        Migration(
            version: 8, name: "credentials remember what minted them",
            statements: [
                // Deleting an access token or an access key revokes what was minted with it.
                "ALTER TABLE refresh_tokens ADD COLUMN access_token_id BIGINT REFERENCES access_tokens(id) ON DELETE CASCADE",
                "ALTER TABLE registry_login_tokens ADD COLUMN access_key_id {name} REFERENCES access_keys(key_id) ON DELETE CASCADE",
            ]),
        Migration(
            version: 9, name: "upload sessions know who opened them",
            statements: [
                // Bounds the sessions one identity may hold open; in-flight bytes count against quotas.
                "ALTER TABLE upload_sessions ADD COLUMN owner TEXT",
                "CREATE INDEX upload_sessions_by_owner ON upload_sessions (owner)",
            ]),
        Migration(
            version: 10, name: "pull time update exclusions",
            statements: [
                // Principals (ECR-style ARNs) whose pulls leave an image's last-pull time alone:
                // scanners and replicators must not keep stale images looking used.
                """
                CREATE TABLE pull_time_exclusions (
                    principal_arn {name} PRIMARY KEY,
                    created_at BIGINT NOT NULL
                )
                """
            ]),
        Migration(
            version: 11, name: "events and webhooks",
            statements: [
                // The outbox: a push, tag move or delete writes its event in the transaction that
                // commits the change, so a crash can never lose one. The dispatcher turns each
                // event into deliveries and deletes it.
                """
                CREATE TABLE event_outbox (
                    id {id},
                    kind TEXT NOT NULL,
                    namespace {name} NOT NULL,
                    repository {name} NOT NULL,
                    digest TEXT,
                    tag TEXT,
                    media_type TEXT,
                    size BIGINT,
                    actor TEXT,
                    occurred_at BIGINT NOT NULL
                )
                """,
                // Receivers: registry-wide (namespace NULL) or one namespace's. The secret is sealed.
                """
                CREATE TABLE webhooks (
                    id {id},
                    namespace {name},
                    url TEXT NOT NULL,
                    secret TEXT NOT NULL,
                    format TEXT NOT NULL,
                    events TEXT NOT NULL,
                    enabled BOOLEAN NOT NULL,
                    created_at BIGINT NOT NULL
                )
                """,
                """
                CREATE TABLE webhook_deliveries (
                    id {id},
                    webhook_id BIGINT NOT NULL REFERENCES webhooks(id) ON DELETE CASCADE,
                    event_kind TEXT NOT NULL,
                    repository {name} NOT NULL,
                    body TEXT NOT NULL,
                    status TEXT NOT NULL,
                    attempts INTEGER NOT NULL,
                    next_attempt_at BIGINT NOT NULL,
                    last_status INTEGER,
                    last_error TEXT,
                    created_at BIGINT NOT NULL,
                    delivered_at BIGINT
                )
                """,
                "CREATE INDEX webhook_deliveries_due ON webhook_deliveries (status, next_attempt_at)",
                "CREATE INDEX webhook_deliveries_by_webhook ON webhook_deliveries (webhook_id, repository, id)",
            ]),
        Migration(
            version: 12, name: "storage history and egress",
            statements: [
                // One row per day and namespace ('' for the whole registry), the day's latest
                // figures: the storage report's growth over time.
                """
                CREATE TABLE storage_snapshots (
                    day TEXT NOT NULL,
                    namespace {name} NOT NULL,
                    logical_bytes BIGINT NOT NULL,
                    physical_bytes BIGINT NOT NULL,
                    PRIMARY KEY (day, namespace)
                )
                """,
                // Blob bytes served per repository and day (written in batches, like pull times).
                """
                CREATE TABLE repository_egress (
                    day TEXT NOT NULL,
                    repository {name} NOT NULL,
                    bytes BIGINT NOT NULL,
                    PRIMARY KEY (day, repository)
                )
                """,
            ]),
        Migration(
            version: 13, name: "scan events",
            statements: [
                // Facts an event carries beyond its image (a scan's outcome and severity counts), as JSON.
                "ALTER TABLE event_outbox ADD COLUMN detail TEXT",
                // A webhook asking for vulnerability events names the lowest severity it wants.
                "ALTER TABLE webhooks ADD COLUMN minimum_severity TEXT",
            ]),
        Migration(
            version: 14, name: "audit events name their request",
            statements: [
                // The X-Request-Id of the request that caused an event: from a client's error report to what it did.
                "ALTER TABLE audit_events ADD COLUMN request_id TEXT"
            ]),
        Migration(
            version: 15, name: "cluster leases",
            statements: [
                // Background work one node at a time (garbage collection, scheduled lifecycle runs,
                // webhook sending, daily snapshots): the holder renews; a dead node's lease expires.
                "CREATE TABLE cluster_leases (name {name} PRIMARY KEY, holder TEXT NOT NULL, expires_at BIGINT NOT NULL)"
            ]),
        Migration(
            version: 16, name: "encryption at rest",
            statements: [
                // The domain a repository's content is encrypted in (`AES256`, `KMS:<arn>`,
                // `KMS_DSSE:<arn>`), fixed when the repository is created. Repositories created before
                // this version keep NULL: their `encryption_type` was recorded, never applied.
                "ALTER TABLE repository_settings ADD COLUMN encryption_domain TEXT",
                // One encrypted copy of a blob per domain: stored under `object_key`, its data keys
                // wrapped by the domain's keys (a JSON array, innermost layer first).
                """
                CREATE TABLE encrypted_blobs (
                    domain {name} NOT NULL,
                    digest {name} NOT NULL,
                    object_key {name} NOT NULL UNIQUE,
                    wrapped_keys TEXT NOT NULL,
                    segment_size INTEGER NOT NULL,
                    created_at BIGINT NOT NULL,
                    rewrapped_at BIGINT,
                    PRIMARY KEY (domain, digest)
                )
                """,
                "CREATE INDEX encrypted_blobs_by_digest ON encrypted_blobs (digest)",
                // An upload into an encrypted repository: its domain and wrapped data keys, and the
                // partial last segment of the last request, sealed (every stored record stays whole).
                "ALTER TABLE upload_sessions ADD COLUMN encryption TEXT",
                "ALTER TABLE upload_sessions ADD COLUMN sealed_tail TEXT",
                // A manifest of an encrypted repository: `content` is sealed, and this names the
                // domain and wraps its data key (the registry's encoding). Digests, media types and
                // annotations stay readable: the registry indexes and lists by them.
                "ALTER TABLE manifests ADD COLUMN sealed_with TEXT",
                // The built-in key service's keys: state and every version of the material, sealed by the master key.
                """
                CREATE TABLE encryption_keys (
                    key_id {name} PRIMARY KEY,
                    state TEXT NOT NULL,
                    versions TEXT NOT NULL,
                    created_at BIGINT NOT NULL,
                    updated_at BIGINT NOT NULL
                )
                """,
            ]),
        Migration(
            version: 17, name: "replication",
            statements: [
                // One copy of a pushed image (and its tag) to one destination. Made from the event
                // outbox in the transaction that takes the event, so a committed push always has
                // its tasks. PENDING until copied (COMPLETE) or given up (FAILED, with the reason);
                // finished rows stay as the image's replication status.
                """
                CREATE TABLE replication_tasks (
                    id {id},
                    destination {name} NOT NULL,
                    repository {name} NOT NULL,
                    digest {name} NOT NULL,
                    tag {name},
                    status TEXT NOT NULL,
                    attempts INTEGER NOT NULL,
                    next_attempt_at BIGINT NOT NULL,
                    last_error TEXT,
                    created_at BIGINT NOT NULL,
                    completed_at BIGINT,
                    bytes_copied BIGINT
                )
                """,
                "CREATE INDEX replication_tasks_due ON replication_tasks (status, next_attempt_at)",
                "CREATE INDEX replication_tasks_by_image ON replication_tasks (repository, digest)",
            ]),
        Migration(
            version: 18, name: "replication rules",
            statements: [
                // Wharf's own replication rules, beside ECR's configuration: which repositories
                // (wildcards) and tags go to which destinations, under what name, on what trigger,
                // and whether deletions follow. Lists are comma-separated (patterns hold no commas).
                """
                CREATE TABLE replication_rules (
                    id {id},
                    name {name} NOT NULL UNIQUE,
                    enabled BOOLEAN NOT NULL,
                    repositories TEXT NOT NULL,
                    tags TEXT NOT NULL,
                    destinations TEXT NOT NULL,
                    trigger TEXT NOT NULL,
                    schedule_seconds INTEGER,
                    propagate_deletes BOOLEAN NOT NULL,
                    destination_prefix TEXT NOT NULL,
                    created_at BIGINT NOT NULL,
                    updated_at BIGINT NOT NULL
                )
                """,
                // A task's name at the destination when it differs (a rule's prefix), and whether it
                // copies or deletes there.
                "ALTER TABLE replication_tasks ADD COLUMN target_repository TEXT",
                "ALTER TABLE replication_tasks ADD COLUMN action TEXT NOT NULL DEFAULT 'copy'",
            ]),
        Migration(
            version: 19, name: "repository creation templates",
            statements: [
                // ECR's repository creation templates: the settings a repository gets when a push
                // (or replication into this registry) creates it, by the longest matching prefix
                // (`ROOT` matches every name). The settings columns are repository_settings' own.
                """
                CREATE TABLE repository_creation_templates (
                    prefix {name} PRIMARY KEY,
                    description TEXT,
                    applied_for TEXT NOT NULL,
                    tag_mutability TEXT NOT NULL,
                    mutability_exclusions TEXT,
                    lifecycle_policy TEXT,
                    scan_on_push BOOLEAN NOT NULL,
                    encryption_type TEXT,
                    kms_key TEXT,
                    encryption_domain TEXT,
                    repository_policy TEXT,
                    resource_tags TEXT NOT NULL,
                    custom_role_arn TEXT,
                    created_at BIGINT NOT NULL,
                    updated_at BIGINT NOT NULL
                )
                """
            ]),
    ]

    static func render(_ statement: String, for dialect: Dialect) -> String {
        switch dialect {
        case .sqlite:
            statement
                .replacing("{id}", with: "INTEGER PRIMARY KEY AUTOINCREMENT")
                .replacing("{name}", with: "TEXT")
                .replacing("{bytes}", with: "BLOB")
        case .postgres:
            statement
                .replacing("{id}", with: "BIGINT GENERATED BY DEFAULT AS IDENTITY PRIMARY KEY")
                .replacing("{name}", with: "TEXT COLLATE \"C\"")
                .replacing("{bytes}", with: "BYTEA")
        }
    }

    /// Brings the schema up to date; returns the versions it applied.
    @discardableResult
    static func run(on database: Database, logger: Logger) async throws -> [Int] {
        try await database.transaction { sql in
            try await sql.raw(
                """
                CREATE TABLE IF NOT EXISTS schema_migrations (
                    version INTEGER PRIMARY KEY, name TEXT NOT NULL, applied_at BIGINT NOT NULL
                )
                """
            ).run()
        }
        var applied: [Int] = []
        for migration in all {
            let didApply = try await database.transaction { sql -> Bool in
                if database.dialect == .postgres {
                    // Serialise concurrent starters; released at COMMIT.
                    try await sql.raw("SELECT pg_advisory_xact_lock(7745120331)").run()
                }
                let existing = try await sql.raw("SELECT version FROM schema_migrations WHERE version = \(bind: migration.version)").first()
                if existing != nil { return false }
                for statement in migration.statements {
                    do {
                        try await sql.raw(SQLQueryString(render(statement, for: database.dialect))).run()
                    } catch {
                        throw DatabaseError.migrationFailed(version: migration.version, underlying: "\(String(reflecting: error))")
                    }
                }
                try await sql.raw(
                    """
                    INSERT INTO schema_migrations (version, name, applied_at)
                    VALUES (\(bind: migration.version), \(bind: migration.name), \(bind: Timestamp.nowMillis()))
                    """
                ).run()
                return true
            }
            if didApply {
                logger.info("applied metadata migration", metadata: ["version": "\(migration.version)", "name": "\(migration.name)"])
                applied.append(migration.version)
            }
        }
        return applied
    }
}
