/// The error codes of the OCI distribution spec, with the HTTP status each normally travels with.
public enum ErrorCode: String, Sendable, Codable {
    case blobUnknown = "BLOB_UNKNOWN"
    case blobUploadInvalid = "BLOB_UPLOAD_INVALID"
    case blobUploadUnknown = "BLOB_UPLOAD_UNKNOWN"
    case digestInvalid = "DIGEST_INVALID"
    case manifestBlobUnknown = "MANIFEST_BLOB_UNKNOWN"
    case manifestInvalid = "MANIFEST_INVALID"
    case manifestUnknown = "MANIFEST_UNKNOWN"
    case nameInvalid = "NAME_INVALID"
    case nameUnknown = "NAME_UNKNOWN"
    case sizeInvalid = "SIZE_INVALID"
    case unauthorized = "UNAUTHORIZED"
    case denied = "DENIED"
    case unsupported = "UNSUPPORTED"
    case tooManyRequests = "TOOMANYREQUESTS"
    /// Docker's catch-all for server-side failures (a full disk answers it with 507).
    case unknown = "UNKNOWN"

    public var defaultStatus: Int {
        switch self {
        case .blobUnknown, .blobUploadUnknown, .manifestUnknown, .nameUnknown: 404
        case .blobUploadInvalid, .digestInvalid, .manifestBlobUnknown, .manifestInvalid, .nameInvalid, .sizeInvalid: 400
        case .unauthorized: 401
        case .denied: 403
        case .unsupported: 405
        case .tooManyRequests: 429
        case .unknown: 500
        }
    }
}

/// An error a registry client sees: rendered as the spec's `{"errors":[{code,message,detail}]}` body.
/// Lives in `OCI` so every use-case module can throw it without knowing about HTTP.
public struct RegistryError: Error, Sendable, CustomStringConvertible {
    public var code: ErrorCode
    public var message: String
    public var detail: String?
    public var status: Int
    /// Extra response headers (for example `Range` on a 416, `Retry-After` on a 429).
    public var headers: [(String, String)]

    public init(_ code: ErrorCode, _ message: String, detail: String? = nil, status: Int? = nil, headers: [(String, String)] = []) {
        self.code = code
        self.message = message
        self.detail = detail
        self.status = status ?? code.defaultStatus
        self.headers = headers
    }

    public var description: String { "\(code.rawValue) (\(status)): \(message)" }

    // Frequent constructions, named so call sites read as sentences.
    public static func nameInvalid(_ name: some StringProtocol) -> RegistryError {
        RegistryError(
            .nameInvalid, "invalid repository name '\(name)': components must match [a-z0-9]+((\\.|_|__|-+)[a-z0-9]+)*, joined by '/', at most 255 characters")
    }

    public static func nameUnknown(_ name: some CustomStringConvertible) -> RegistryError {
        RegistryError(.nameUnknown, "repository '\(name)' is not known to this registry")
    }

    public static func blobUnknown(_ digest: Digest) -> RegistryError {
        RegistryError(.blobUnknown, "blob \(digest) is not known to this repository")
    }

    public static func manifestUnknown(_ reference: some CustomStringConvertible) -> RegistryError {
        RegistryError(.manifestUnknown, "manifest '\(reference)' is not known to this repository")
    }

    public static func digestInvalid(_ message: String) -> RegistryError {
        RegistryError(.digestInvalid, message)
    }

    public static func manifestInvalid(_ message: String) -> RegistryError {
        RegistryError(.manifestInvalid, message)
    }

    public static func uploadUnknown(_ id: some StringProtocol) -> RegistryError {
        RegistryError(.blobUploadUnknown, "upload session '\(id)' is not known (it may have completed, been cancelled or expired)")
    }
}
