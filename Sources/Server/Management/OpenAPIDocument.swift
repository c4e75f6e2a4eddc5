import Foundation

/// Builds the OpenAPI 3.1 description of the management API from its route table.
enum OpenAPIDocument {
    static func make(routes: [ManagementAPI.Route]) -> [UInt8] {
        var paths: [String: [String: Any]] = [:]
        for route in routes {
            var operation: [String: Any] = [
                "summary": route.summary,
                "operationId": operationID(route),
                "responses": responses(route),
            ]
            var parameters: [[String: Any]] = pathParameters(route.path).map {
                ["name": $0, "in": "path", "required": true, "schema": ["type": "string"]]
            }
            parameters += route.query.map { ["name": $0.name, "in": "query", "required": false, "description": $0.description, "schema": ["type": "string"]] }
            if !parameters.isEmpty { operation["parameters"] = parameters }
            if let request = route.requestSchema {
                operation["requestBody"] = ["required": true, "content": ["application/json": ["schema": ref(request)]]]
            }
            paths[route.path, default: [:]][route.method.rawValue.lowercased()] = operation
        }
        let document: [String: Any] = [
            "openapi": "3.1.0",
            "info": [
                "title": "Wharf management API",
                "version": "1",
                "description":
                    "Users, access tokens, robot accounts, namespaces, members, the audit log and token signing keys. Errors are {\"error\":{\"code\",\"message\"}}.",
            ],
            "servers": [["url": "/api/v1"]],
            "security": [["basic": []], ["bearer": []]],
            "paths": paths,
            "components": [
                "securitySchemes": [
                    "basic": ["type": "http", "scheme": "basic", "description": "user and password, or user and access token (wharf_pat_…)"],
                    "bearer": ["type": "http", "scheme": "bearer", "bearerFormat": "JWT", "description": "a token from /auth/token"],
                ],
                "schemas": schemas,
            ],
        ]
        let data = (try? JSONSerialization.data(withJSONObject: document, options: [.sortedKeys, .withoutEscapingSlashes])) ?? Data()
        return Array(data)
    }

    private static func operationID(_ route: ManagementAPI.Route) -> String {
        let words = route.path.split(separator: "/").map { $0.hasPrefix("{") ? "By" + $0.dropFirst().dropLast().capitalized : $0.capitalized }
        return route.method.rawValue.lowercased() + words.joined()
    }

    private static func pathParameters(_ path: String) -> [String] {
        path.split(separator: "/").filter { $0.hasPrefix("{") }.map { String($0.dropFirst().dropLast()) }
    }

    private static func ref(_ schema: String) -> [String: Any] {
        if schema.hasPrefix("[") {
            return ["type": "array", "items": ["$ref": "#/components/schemas/\(schema.dropFirst().dropLast())"]]
        }
        return ["$ref": "#/components/schemas/\(schema)"]
    }

    private static func responses(_ route: ManagementAPI.Route) -> [String: Any] {
        var success: [String: Any] = ["description": "success"]
        if let schema = route.responseSchema {
            let mediaType = route.path.hasSuffix("/export") ? "application/x-ndjson" : "application/json"
            success["content"] = [mediaType: ["schema": ref(schema)]]
        }
        let error: [String: Any] = ["content": ["application/json": ["schema": ref("Error")]]]
        var result: [String: Any] = [String(route.status.code): success]
        for (code, description) in [("400", "invalid request"), ("401", "not signed in"), ("403", "not allowed"), ("404", "not found"), ("409", "conflict")] {
            result[code] = error.merging(["description": description]) { $1 }
        }
        return result
    }

    private static func object(_ properties: [String: [String: Any]], required: [String]) -> [String: Any] {
        ["type": "object", "properties": properties, "required": required]
    }

    private static var string: [String: Any] { ["type": "string"] }
    private static var time: [String: Any] { ["type": "string", "format": "date-time"] }
    private static var boolean: [String: Any] { ["type": "boolean"] }
    private static var integer: [String: Any] { ["type": "integer", "format": "int64"] }
    private static var actions: [String: Any] { ["type": "array", "items": ["type": "string", "enum": ["pull", "push", "delete", "*"]]] }

    private static var schemas: [String: Any] {
        [
            "Error": object(["error": object(["code": string, "message": string], required: ["code", "message"])], required: ["error"]),
            "Identity": object(
                ["name": string, "kind": ["type": "string", "enum": ["user", "robot", "anonymous"]], "admin": boolean], required: ["name", "kind", "admin"]),
            "User": object(
                ["name": string, "email": string, "admin": boolean, "disabled": boolean, "createdAt": time, "lastLoginAt": time],
                required: ["name", "admin", "disabled"]),
            "CreateUser": object(
                [
                    "name": string, "password": ["type": "string", "minLength": 12, "maxLength": 72],
                    "passwordHash": ["type": "string", "description": "instead of password: a bcrypt hash from an htpasswd file ($2a$, $2b$ or $2y$)"],
                    "email": string, "admin": boolean,
                ], required: ["name"]),
            "UpdateUser": object(["email": string, "admin": boolean, "disabled": boolean], required: []),
            "SetPassword": object(["password": ["type": "string", "minLength": 12, "maxLength": 72], "currentPassword": string], required: ["password"]),
            "AccessToken": object(
                ["name": string, "createdAt": time, "expiresAt": time, "lastUsedAt": time, "token": ["type": "string", "description": "only when created"]],
                required: ["name"]),
            "CreateAccessToken": object(["name": string, "expiresAt": time], required: ["name"]),
            "AccessKey": object(
                [
                    "accessKeyId": string, "owner": string, "ownerKind": ["type": "string", "enum": ["user", "robot"]], "description": string,
                    "disabled": boolean, "createdAt": time, "lastUsedAt": time,
                    "secretAccessKey": ["type": "string", "description": "only when created"],
                ], required: ["accessKeyId", "owner", "ownerKind", "disabled"]),
            "CreateAccessKey": object(["description": string], required: []),
            "UpdateAccessKey": object(["disabled": boolean], required: ["disabled"]),
            "Permission": object(
                ["scope": ["type": "string", "enum": ["registry", "namespace", "repository"]], "name": string, "actions": actions],
                required: ["scope", "name", "actions"]),
            "Robot": object(
                [
                    "name": string, "description": string, "expiresAt": time, "disabled": boolean, "createdBy": string, "createdAt": time,
                    "lastUsedAt": time, "permissions": ["type": "array", "items": ["$ref": "#/components/schemas/Permission"]],
                    "secret": ["type": "string", "description": "only when created or rotated"],
                ], required: ["name", "disabled", "permissions"]),
            "CreateRobot": object(
                [
                    "name": string, "description": string, "expiresAt": time,
                    "permissions": ["type": "array", "items": ["$ref": "#/components/schemas/Permission"]],
                ], required: ["name", "permissions"]),
            "UpdateRobot": object(
                [
                    "description": string, "expiresAt": time, "disabled": boolean,
                    "permissions": ["type": "array", "items": ["$ref": "#/components/schemas/Permission"]],
                ], required: []),
            "Namespace": object(["name": string, "public": boolean, "createdBy": string, "createdAt": time], required: ["name", "public"]),
            "CreateNamespace": object(["name": string, "public": boolean], required: ["name"]),
            "UpdateNamespace": object(["public": boolean], required: ["public"]),
            "Member": object(
                ["user": string, "role": ["type": "string", "enum": ["reader", "developer", "maintainer", "admin"]], "addedAt": time],
                required: ["user", "role"]),
            "SetMember": object(["role": ["type": "string", "enum": ["reader", "developer", "maintainer", "admin"]]], required: ["role"]),
            "Event": object(
                [
                    "id": integer, "at": time, "actor": string, "actorKind": string, "action": string, "namespace": string, "repository": string,
                    "target": string, "result": ["type": "string", "enum": ["success", "denied", "failure"]], "source": string, "detail": string,
                    "count": integer, "requestId": ["type": "string", "description": "the X-Request-Id of the request that caused it"],
                ], required: ["actorKind", "action", "result", "count"]),
            "SigningKey": object(["kid": string], required: ["kid"]),
            "RepositorySettings": object(
                [
                    "tagMutability": ["type": "string", "enum": ["MUTABLE", "IMMUTABLE", "IMMUTABLE_WITH_EXCLUSION", "MUTABLE_WITH_EXCLUSION"]],
                    "tagMutabilityExclusions": ["type": "array", "items": string], "lifecyclePolicy": string, "lifecyclePolicySource": string,
                ], required: ["tagMutability", "tagMutabilityExclusions"]),
            "UpdateRepositorySettings": object(
                [
                    "tagMutability": ["type": "string", "enum": ["MUTABLE", "IMMUTABLE", "IMMUTABLE_WITH_EXCLUSION", "MUTABLE_WITH_EXCLUSION"]],
                    "tagMutabilityExclusions": ["type": "array", "items": string],
                ], required: ["tagMutability"]),
            "LifecyclePolicyText": object(["policy": ["type": "string", "description": "the policy in ECR's JSON language, as text"]], required: ["policy"]),
            "RegistryPolicy": object(["scope": string, "policy": string, "createdBy": string, "updatedAt": time], required: ["scope", "policy"]),
            "KeyRequest": object(
                ["keyId": ["type": "string", "description": "a KMS key ARN, or wharf/aes256 (the registry's AES256 key)"]], required: ["keyId"]),
            "EncryptionKey": object(
                [
                    "keyId": string, "service": ["type": "string", "enum": ["local", "kms"]], "state": ["type": "string", "enum": ["ENABLED", "DISABLED"]],
                    "versions": integer, "encryptedCopies": integer,
                ], required: ["keyId", "service", "encryptedCopies"]),
            "KeyRotation": object(
                [
                    "keyId": string, "versions": integer, "rewrappedCopies": integer, "rewrappedUploads": integer, "unchangedCopies": integer,
                    "failures": ["type": "array", "items": string],
                ], required: ["keyId", "rewrappedCopies", "rewrappedUploads", "unchangedCopies", "failures"]),
            "Expiry": object(
                [
                    "repository": string, "digest": string, "tags": ["type": "array", "items": string], "pushedAt": time, "lastPulledAt": time,
                    "rulePriority": integer, "ruleDescription": string, "alsoDeleted": ["type": "array", "items": string],
                ], required: ["repository", "digest", "tags", "rulePriority", "alsoDeleted"]),
            "Usage": object(["namespace": string, "usageBytes": integer, "quotaBytes": integer], required: ["namespace", "usageBytes"]),
            "SetQuota": object(["quotaBytes": ["type": ["integer", "null"], "format": "int64"]], required: []),
            "GarbageCollectionReport": object(
                [
                    "trigger": string, "dryRun": boolean, "startedAt": integer, "finishedAt": integer, "phase": string,
                    "deletedUploads": integer, "deletedManifests": integer, "removedLinks": integer, "deletedBlobs": integer,
                    "reclaimedBytes": integer, "orphanFiles": integer, "orphanBytes": integer, "deletedScans": integer, "deletedEncryptedCopies": integer,
                    "deletedPlainCopies": integer,
                    "candidates": ["type": "array", "items": string], "errors": ["type": "array", "items": string],
                    "node": ["type": "string", "description": "the node that ran it"],
                ], required: ["trigger", "dryRun", "startedAt", "phase"]),
            "ClusterStatus": object(
                [
                    "node": ["type": "string", "description": "the node that answered (host/pid/random, new at every start)"],
                    "database": ["type": "string", "enum": ["sqlite", "postgres"]],
                    "storage": ["type": "string", "enum": ["filesystem", "s3"]],
                    "leases": [
                        "type": "array", "description": "scheduled work and the node running it (garbage-collection, lifecycle, webhooks)",
                        "items": object(["name": string, "holder": string, "expiresAt": integer], required: ["name", "holder", "expiresAt"]),
                    ],
                ], required: ["node", "database", "storage", "leases"]),
            "ImageScan": object(
                [
                    "digest": string, "status": ["type": "string", "enum": ["PENDING", "IN_PROGRESS", "COMPLETE", "FAILED"]],
                    "description": string, "requestedAt": time, "completedAt": time,
                    "severityCounts": ["type": "object", "additionalProperties": integer],
                    "suppressedCount": ["type": "integer", "description": "findings VEX statements mark not_affected or fixed (not in severityCounts)"],
                    "result": [
                        "type": "object",
                        "description": "platforms (each with inventory: operatingSystem, packages, secrets; and findings), databaseImportedAt, scannedAt",
                    ],
                ], required: ["digest", "status"]),
            "AdvisoryDatabase": object(
                [
                    "path": string, "error": string,
                    "summary": object(
                        [
                            "records": integer, "packages": integer, "ecosystems": ["type": "object", "additionalProperties": integer],
                            "importedAt": string, "version": string, "sources": ["type": "array", "items": string],
                        ], required: ["records"]),
                    "update": object(
                        ["lastCheckAt": string, "lastUpdateAt": string, "lastError": string, "installedArtifact": string, "publishedArtifact": string],
                        required: []),
                ], required: ["update"]),
            "SignaturePolicy": object(
                [
                    "mode": ["type": "string", "enum": ["enforce", "audit"], "description": "enforce refuses unsigned pulls; audit serves and logs them"],
                    "keys": [
                        "type": "array",
                        "items": object(
                            ["name": string, "publicKey": ["type": "string", "description": "PEM public key: ECDSA P-256/P-384, Ed25519 or RSA"]],
                            required: ["name", "publicKey"]),
                    ],
                ], required: ["mode", "keys"]),
            "SignatureVerdict": object(
                ["digest": string, "verified": boolean, "key": string, "signature": string, "reason": string], required: ["digest", "verified"]),
            "StorageReport": [
                "type": "object",
                "description":
                    "registry totals (physical, logical, deduplication, unreferenced), namespaces, repositories, largestImages, largestLayers, recommendations; bytes are integers, costs in prices.currency per month",
            ],
            "CreateWebhook": object(
                [
                    "namespace": ["type": "string", "description": "this namespace's events only; leave out for every namespace (system administrators)"],
                    "url": ["type": "string", "description": "http or https URL that receives POSTs"],
                    "secret": [
                        "type": "string", "minLength": 16, "maxLength": 256, "description": "HMAC-SHA256 key of X-Wharf-Signature; generated when left out",
                    ],
                    "format": ["type": "string", "enum": ["distribution", "cloudevents"]],
                    "events": ["type": "array", "items": ["type": "string", "enum": ["push", "tag", "delete", "scan", "vulnerability", "alert"]]],
                    "minimumSeverity": [
                        "type": "string", "enum": ["UNDEFINED", "INFORMATIONAL", "LOW", "MEDIUM", "HIGH", "CRITICAL"],
                        "description": "for vulnerability events: the lowest severity that triggers one (default HIGH)",
                    ],
                ], required: ["url", "events"]),
            "Webhook": object(
                [
                    "id": integer, "namespace": string, "url": string, "format": string, "events": ["type": "array", "items": string], "enabled": boolean,
                    "createdAt": time, "minimumSeverity": string, "secret": ["type": "string", "description": "only in the answer to the creation"],
                ], required: ["id", "url", "format", "events", "enabled", "createdAt"]),
            "UpdateWebhook": object(["enabled": boolean], required: ["enabled"]),
            "ReplicationDestination": object(
                [
                    "name": string, "region": string, "registryId": string, "url": string,
                    "configured": ["type": "boolean", "description": "false: ECR rules name it but this node has no replication.destinations entry"],
                    "pending": integer, "failed": integer, "complete": integer,
                    "lagSeconds": ["type": "number", "description": "age of the oldest change still waiting (0: none)"], "lastCompletedAt": time,
                ], required: ["name", "configured", "pending", "failed", "complete", "lagSeconds"]),
            "ReplicationTask": object(
                [
                    "id": integer, "destination": string, "repository": string, "digest": string, "tag": string,
                    "status": ["type": "string", "enum": ["PENDING", "COMPLETE", "FAILED"]], "attempts": integer, "lastError": string,
                    "createdAt": time, "nextAttemptAt": time, "completedAt": time, "bytesCopied": integer, "targetRepository": string,
                    "action": ["type": "string", "enum": ["copy", "delete"]],
                ], required: ["id", "destination", "repository", "digest", "status", "attempts", "createdAt", "action"]),
            "ImageReplicationStatus": object(
                ["repository": string, "digest": string, "destinations": ["type": "array", "items": ["$ref": "#/components/schemas/ReplicationTask"]]],
                required: ["repository", "digest", "destinations"]),
            "ReplicateImage": object(
                ["repository": string, "reference": ["type": "string", "description": "a tag or digest"], "destination": string],
                required: ["repository", "reference", "destination"]),
            "ReplicationRetry": object(["requeued": integer], required: ["requeued"]),
            "ReplicationRuleDefinition": object(
                [
                    "enabled": boolean,
                    "repositories": ["type": "array", "items": string, "description": "repository name patterns, * matching any run of characters"],
                    "tags": ["type": "array", "items": string, "description": "tag patterns; none: every tag and images pushed by digest"],
                    "destinations": ["type": "array", "items": string, "description": "names of configured destinations"],
                    "trigger": ["type": "string", "enum": ["push", "manual"]],
                    "scheduleSeconds": ["type": "integer", "minimum": 60, "maximum": 604800, "description": "also compared and repaired this often"],
                    "propagateDeletes": ["type": "boolean", "description": "deletions of images and tags follow"],
                    "destinationPrefix": ["type": "string", "description": "put before repository names at the destinations"],
                ], required: ["repositories", "destinations"]),
            "ReplicationRule": object(
                [
                    "name": string, "enabled": boolean, "repositories": ["type": "array", "items": string], "tags": ["type": "array", "items": string],
                    "destinations": ["type": "array", "items": string], "trigger": string, "scheduleSeconds": integer, "propagateDeletes": boolean,
                    "destinationPrefix": string, "createdAt": time, "updatedAt": time,
                ], required: ["name", "enabled", "repositories", "tags", "destinations", "trigger", "propagateDeletes", "destinationPrefix"]),
            "ReplicationReconcile": object(
                [
                    "checked": ["type": "integer", "description": "tags and referrers compared"],
                    "queued": ["type": "integer", "description": "copies queued to repair differences"],
                    "unreachable": ["type": "object", "description": "destinations that could not be asked, with why"],
                ], required: ["checked", "queued", "unreachable"]),
            "WebhookDelivery": object(
                [
                    "id": integer, "event": string, "repository": string,
                    "status": ["type": "string", "enum": ["PENDING", "DELIVERED", "FAILED"]], "attempts": integer, "lastStatus": integer,
                    "lastError": string, "createdAt": time, "nextAttemptAt": time, "deliveredAt": time, "body": string,
                ], required: ["id", "event", "repository", "status", "attempts", "createdAt", "body"]),
            "TagRules": object(
                [
                    "deny": [
                        "type": "array", "items": string,
                        "description": "tags matching any of these are refused: wildcard patterns (*) or semver",
                    ],
                    "require": [
                        "type": "array", "items": string,
                        "description": "when given, a tag must match one of these: wildcard patterns (*) or semver (1.2.3, v1.2.3-rc.1)",
                    ],
                ], required: []),
            "VEXDocument": object(
                [
                    "name": string, "document": ["type": "string", "description": "the OpenVEX or CycloneDX VEX JSON as stored"],
                    "statements": integer, "updatedBy": string, "updatedAt": time,
                ], required: ["name", "document", "statements", "updatedAt"]),
            "VEXDocumentBody": [
                "type": "object",
                "description": "an OpenVEX document (@context https://openvex.dev/ns/…, statements) or a CycloneDX BOM whose vulnerabilities carry an analysis",
            ],
            "PullPolicy": object(
                [
                    "severity": [
                        "type": "string", "enum": ["CRITICAL", "HIGH", "MEDIUM", "LOW"], "description": "refuse images with a finding this severe or worse",
                    ],
                    "blockUnscanned": ["type": "boolean", "description": "refuse images whose scan has not completed"],
                    "allowlist": [
                        "type": "array",
                        "items": object(
                            [
                                "id": ["type": "string", "description": "vulnerability id or alias (CVE-…, GHSA-…)"], "expiresAt": time, "reason": string,
                            ], required: ["id"]),
                    ],
                ], required: []),
            "GarbageCollectionStatus": object(
                [
                    "running": ["$ref": "#/components/schemas/GarbageCollectionReport"],
                    "recent": ["type": "array", "items": ["$ref": "#/components/schemas/GarbageCollectionReport"]],
                ], required: ["recent"]),
        ]
    }
}
