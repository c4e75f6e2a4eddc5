import ECR
import HTTPTypes
import Hummingbird
import NIOCore
import OCI
import Registry

/// The HTTP side of the ECR control plane: `POST /` requests go to `ECRService`, and layer
/// download URLs (`GET /ecr/layers/<token>`) stream the blob they grant.
struct ECREndpoint: Sendable {
    /// JSON bodies are buffered (they are signed as a whole); UploadLayerPart parts are the largest.
    static let maximumBodySize = 64 * 1024 * 1024

    let service: ECRService
    let registry: Registry
    /// `https` when the server serves TLS itself (layer download URLs name it).
    var scheme = "http"

    func respond(to request: Request, context: WharfRequestContext) async -> Response {
        let body: ByteBuffer
        do {
            body = try await request.body.collect(upTo: Self.maximumBodySize)
        } catch {
            return Self.awsError(
                413, "RequestEntityTooLargeException", "the request body exceeds \(Self.maximumBodySize) bytes; upload layers in smaller parts")
        }
        var headers = request.headers.map { (name: $0.name.rawName, value: $0.value) }
        let host = request.head.authority ?? "localhost"
        // HTTP/1's Host header arrives as the authority, but it was signed as a header.
        if !headers.contains(where: { $0.name.lowercased() == "host" }) { headers.append((name: "host", value: host)) }
        let forwardedProto = request.headers[HTTPField.Name("X-Forwarded-Proto")!]
        let message = AWSJSONRequest(
            method: request.method.rawValue, path: request.uri.path, query: request.uri.query ?? "", headers: headers,
            body: Array(body.readableBytesView), scheme: forwardedProto ?? scheme,
            host: request.headers[HTTPField.Name("X-Forwarded-Host")!] ?? host, source: context.sourceAddress,
            requestID: context.logger[metadataKey: "hb.request.id"].map { "\($0)" })
        let answer = await service.handle(message)
        var fields = HTTPFields()
        for (name, value) in answer.headers { if let field = HTTPField.Name(name) { fields.append(HTTPField(name: field, value: value)) } }
        return Response(status: .init(code: answer.status), headers: fields, body: .init(byteBuffer: ByteBuffer(bytes: answer.body)))
    }

    /// A download URL from GetDownloadUrlForLayer: the token is the credential.
    func download(_ request: Request, token: String) async -> Response {
        do {
            guard let (repository, digest) = try await service.downloads.verify(token) else {
                throw RegistryError(.denied, "this download URL is invalid or has expired; ask GetDownloadUrlForLayer for a new one", status: 403)
            }
            let pulls = registry.pulls
            return try await BlobResponse.make(request, reader: try await registry.openBlob(digest, in: repository), digest: digest) {
                pulls.recordEgress($0, in: repository.value)
            }
        } catch let error as RegistryError {
            return ErrorResponse.make(error, method: request.method)
        } catch {
            return ErrorResponse.json(
                status: .internalServerError, code: "UNKNOWN", message: "internal server error; see the server log", method: request.method)
        }
    }

    static func awsError(_ status: Int, _ type: String, _ message: String) -> Response {
        var headers = HTTPFields()
        headers[.contentType] = "application/x-amz-json-1.1"
        let body: JSONValue = ["__type": .string(type), "message": .string(message)]
        return Response(status: .init(code: status), headers: headers, body: .init(byteBuffer: ByteBuffer(bytes: body.encoded())))
    }
}
