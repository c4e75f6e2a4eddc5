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
    static func make(_ error: RegistryError, method: HTTPRequest.Method = .get) -> Response {
        var headers = HTTPFields()
        for (name, value) in error.headers {
            if let field = HTTPField.Name(name) { headers.append(HTTPField(name: field, value: value)) }
        }
        return json(status: HTTPResponse.Status(code: error.status), code: error.code.rawValue, message: error.message, detail: error.detail, headers: headers, method: method)
    }

    static func json(
        status: HTTPResponse.Status, code: String, message: String, detail: String? = nil,
        headers: HTTPFields = [:], method: HTTPRequest.Method = .get
    ) -> Response {
        var entry = #"{"code":"# + jsonString(code) + #","message":"# + jsonString(message)
        if let detail { entry += #","detail":"# + jsonString(detail) }
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

    /// A JSON string literal with the escapes JSON requires.
    static func jsonString(_ value: String) -> String {
        var out = "\""
        for scalar in value.unicodeScalars {
            switch scalar {
            case "\"": out += "\\\""
            case "\\": out += "\\\\"
            case "\n": out += "\\n"
            case "\r": out += "\\r"
            case "\t": out += "\\t"
            case _ where scalar.value < 0x20:
                let hex = String(scalar.value, radix: 16)
                out += "\\u" + String(repeating: "0", count: 4 - hex.count) + hex
            default: out.unicodeScalars.append(scalar)
            }
        }
        return out + "\""
    }
}
