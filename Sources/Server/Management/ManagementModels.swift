import Access
import Foundation
import Metadata

/// The JSON shapes of the management API (`/api/v1`). Times are RFC 3339 strings.
enum API {
    static func time(_ millis: Int64?) -> String? {
        millis.map { ISO8601DateFormatter().string(from: Date(timeIntervalSince1970: TimeInterval($0) / 1000)) }
    }

    static func parseTime(_ string: String?, field: String) throws -> Int64? {
        guard let string else { return nil }
        guard let date = ISO8601DateFormatter().date(from: string) else {
            throw AccessError.invalid("\(field) must be an RFC 3339 time such as 2027-01-31T00:00:00Z")
        }
        return Int64(date.timeIntervalSince1970 * 1000)
    }

    struct User: Codable {
        var name: String
        var email: String?
        var admin: Bool
        var disabled: Bool
        var createdAt: String?
        var lastLoginAt: String?

        init(_ record: UserRecord) {
            name = record.name
            email = record.email
            admin = record.isAdmin
            disabled = record.disabled
            createdAt = API.time(record.createdAt)
            lastLoginAt = API.time(record.lastLoginAt)
        }
    }

    struct CreateUser: Codable {
        var name: String
        /// Exactly one of these two: a new password, or an existing bcrypt hash (htpasswd import).
        var password: String?
        var passwordHash: String?
        var email: String?
        var admin: Bool?
    }

    struct UpdateUser: Codable {
        var email: String?
        var admin: Bool?
        var disabled: Bool?
    }

    struct SetPassword: Codable {
        var password: String
        var currentPassword: String?
    }

    struct AccessToken: Codable {
        var name: String
        var createdAt: String?
        var expiresAt: String?
        var lastUsedAt: String?
        /// Only in the response that creates it: shown once.
        var token: String?

        init(_ record: AccessTokenRecord, token: String? = nil) {
            name = record.name
            createdAt = API.time(record.createdAt)
            expiresAt = API.time(record.expiresAt)
            lastUsedAt = API.time(record.lastUsedAt)
            self.token = token
        }
    }

    struct CreateAccessToken: Codable {
        var name: String
        var expiresAt: String?
    }

    /// A SigV4 access key for the ECR API (`aws ecr`, boto3).
    struct AccessKey: Codable {
        var accessKeyId: String
        var owner: String
        var ownerKind: String
        var description: String?
        var disabled: Bool
        var createdAt: String?
        var lastUsedAt: String?
        /// Only in the response that creates it: shown once.
        var secretAccessKey: String?

        init(_ record: AccessKeyRecord, secret: String? = nil) {
            accessKeyId = record.keyID
            owner = record.owner.name
            ownerKind = record.owner.kind.rawValue
            description = record.description
            disabled = record.disabled
            createdAt = API.time(record.createdAt)
            lastUsedAt = API.time(record.lastUsedAt)
            secretAccessKey = secret
        }
    }

    struct CreateAccessKey: Codable {
        var description: String?
    }

    struct UpdateAccessKey: Codable {
        var disabled: Bool
    }

    struct Permission: Codable {
        var scope: RobotPermission.Scope
        var name: String
        var actions: [String]

        init(_ permission: RobotPermission) {
            scope = permission.scope
            name = permission.name
            actions = permission.actions.sorted().map(\.rawValue)
        }

        func model() throws -> RobotPermission {
            guard let actions = Action.parseList(actions.joined(separator: ",")) else {
                throw AccessError.invalid("unknown action in \(actions); use pull, push, delete or *")
            }
            return RobotPermission(scope: scope, name: name, actions: actions)
        }
    }

    struct Robot: Codable {
        var name: String
        var description: String?
        var expiresAt: String?
        var disabled: Bool
        var createdBy: String?
        var createdAt: String?
        var lastUsedAt: String?
        var permissions: [Permission]
        /// Only when created or rotated: shown once.
        var secret: String?

        init(_ record: RobotRecord, secret: String? = nil) {
            name = record.name
            description = record.description
            expiresAt = API.time(record.expiresAt)
            disabled = record.disabled
            createdBy = record.createdBy
            createdAt = API.time(record.createdAt)
            lastUsedAt = API.time(record.lastUsedAt)
            permissions = record.permissions.map(Permission.init)
            self.secret = secret
        }
    }

    struct CreateRobot: Codable {
        var name: String
        var description: String?
        var expiresAt: String?
        var permissions: [Permission]
    }

    struct UpdateRobot: Codable {
        var description: String?
        var expiresAt: String?
        var disabled: Bool?
        var permissions: [Permission]?
    }

    struct Namespace: Codable {
        var name: String
        var `public`: Bool
        var createdBy: String?
        var createdAt: String?

        init(_ record: NamespaceRecord) {
            name = record.name
            `public` = record.isPublic
            createdBy = record.createdBy
            createdAt = API.time(record.createdAt)
        }
    }

    struct CreateNamespace: Codable {
        var name: String
        var `public`: Bool?
    }

    struct UpdateNamespace: Codable {
        var `public`: Bool
    }

    struct Member: Codable {
        var user: String
        var role: Role
        var addedAt: String?

        init(_ record: MemberRecord) {
            user = record.user
            role = record.role
            addedAt = API.time(record.addedAt)
        }
    }

    struct SetMember: Codable {
        var role: Role
    }

    struct Identity: Codable {
        var name: String
        var kind: String
        var admin: Bool
    }

    struct Event: Codable {
        var id: Int64?
        var at: String?
        var actor: String?
        var actorKind: String
        var action: String
        var namespace: String?
        var repository: String?
        var target: String?
        var result: String
        var source: String?
        var detail: String?
        var count: Int64
        var requestId: String?

        init(_ event: AuditEvent) {
            requestId = event.requestID
            id = event.id
            at = API.time(event.at)
            actor = event.actor
            actorKind = event.actorKind
            action = event.action
            namespace = event.namespace
            repository = event.repository
            target = event.target
            result = event.result.rawValue
            source = event.source
            detail = event.detail
            count = event.count
        }
    }

    struct SigningKey: Codable {
        var kid: String
    }

    struct ErrorBody: Codable {
        struct Detail: Codable {
            var code: String
            var message: String
        }

        var error: Detail
    }
}
