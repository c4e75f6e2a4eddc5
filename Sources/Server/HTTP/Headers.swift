import HTTPTypes
import Hummingbird
import NIOCore
import OCI

extension HTTPField.Name {
    static let dockerDistributionAPIVersion = Self("Docker-Distribution-API-Version")!
    static let dockerContentDigest = Self("Docker-Content-Digest")!
    static let dockerUploadUUID = Self("Docker-Upload-UUID")!
    static let ociChunkMinLength = Self("OCI-Chunk-Min-Length")!
    static let ociSubject = Self("OCI-Subject")!
    static let ociTag = Self("OCI-Tag")!
    static let ociFiltersApplied = Self("OCI-Filters-Applied")!
    static let range = Self("Range")!
    static let requestID = Self("X-Request-Id")!
    static let link = Self("Link")!
}

/// Renders errors in the distribution spec's JSON shape.
enum ErrorResponse {
    /// What a client is told when the disk is full, whichever write found it out.
    static let storageFull =
        "the registry's storage is full (no space left on device): this write failed and changed nothing; "
        + "reads and deletes keep working, and space returns once images are deleted and garbage collection runs"

    static func make(_ error: RegistryError, method: HTTPRequest.Method = .get) -> Response {
        var headers = HTTPFields()
        for (name, value) in error.headers {
            if let field = HTTPField.Name(name) { headers.append(HTTPField(name: field, value: value)) }
        }
        return json(
            status: HTTPResponse.Status(code: error.status), code: error.code.rawValue, message: error.message, detail: error.detail, headers: headers,
            method: method)
    }

    static func json(
        status: HTTPResponse.Status, code: String, message: String, detail: String? = nil,
        headers: HTTPFields = [:], method: HTTPRequest.Method = .get
    ) -> Response {
        var entry = #"{"code":"# + JSONString.literal(code) + #","message":"# + JSONString.literal(message)
        if let detail { entry += #","detail":"# + JSONString.literal(detail) }
        entry += "}"
        let body = #"{"errors":["# + entry + "]}"
        var headers = headers
        headers[.contentType] = "application/json; charset=utf-8"
        let buffer = ByteBuffer(string: body)
        if method == .head {
            // A HEAD answer carries no body; clients read the status (and Docker the error code from GET).
            headers[.contentLength] = String(buffer.readableBytes)
            return Response(status: status, headers: headers, body: .init())
        }
        return Response(status: status, headers: headers, body: .init(byteBuffer: buffer))
    }
}
