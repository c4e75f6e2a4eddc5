import Access
import OCI

/// Who asks for an operation, as every front end knows it once the request is authenticated:
/// `/v2` (Basic or bearer), ECR (SigV4) and `/api/v1` all reduce their callers to this.
public struct Requester: Sendable {
    public let identity: Identity
    /// The client's address (after trusted-proxy handling), for the audit log.
    public let source: String?

    public init(identity: Identity, source: String?) {
        self.identity = identity
        self.source = source
    }

    /// The name events carry as their actor; nil for anonymous callers (authentication off).
    var actorName: String? { identity.kind == .anonymous ? nil : identity.name }
}

/// Why a use-case refused, in words every front end translates into its own protocol's error
/// (OCI error JSON, an AWS exception, a management API error).
public enum UseCaseError: Error, Equatable, CustomStringConvertible {
    /// The repository does not exist (and the operation does not create it).
    case repositoryNotFound(String)
    /// A lifecycle policy that does not parse or validate; the reason says where.
    case invalidLifecyclePolicy(String)
    /// Any other invalid input.
    case invalid(String)

    public var description: String {
        switch self {
        case .repositoryNotFound(let name): "repository '\(name)' does not exist"
        case .invalidLifecyclePolicy(let reason): "invalid lifecycle policy: \(reason)"
        case .invalid(let reason): reason
        }
    }
}

/// Small JSON objects for audit event details.
enum AuditDetail {
    static func object(_ fields: [String: String]) -> String {
        "{" + fields.sorted { $0.key < $1.key }.map { "\(JSONString.literal($0.key)):\(JSONString.literal($0.value))" }.joined(separator: ",") + "}"
    }
}
