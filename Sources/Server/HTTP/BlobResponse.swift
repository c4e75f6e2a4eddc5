import BlobStore
import Hummingbird
import OCI

/// A blob as an HTTP response: streamed, with `Range` support (206, or 416 when unsatisfiable).
/// Shared by `/v2/…/blobs/…` and ECR's layer download URLs.
enum BlobResponse {
    /// `sent` is told how many body bytes went out (egress), also when the client went away early.
    static func make(
        _ request: Request, reader: any BlobReader, digest: Digest, sent: @escaping @Sendable (Int64) -> Void = { _ in }
    ) async throws -> Response {
        var headers = self.headers(digest)
        if request.method == .get, let location = reader.redirectURL {
            // The object store serves the bytes (and any Range) itself, as Distribution's `redirect` option does.
            try? await reader.close()
            headers[.location] = location
            headers[.cacheControl] = nil  // the URL expires; the bytes behind it do not
            sent(reader.size)
            return Response(status: .temporaryRedirect, headers: headers, body: .init())
        }
        let range: ClosedRange<Int64>?
        let status: HTTPResponse.Status
        switch ByteRanges.resolve(request.headers[.range], size: reader.size) {
        case .whole:
            range = nil
            status = .ok
        case .partial(let partial):
            range = partial
            status = .partialContent
            headers[.contentRange] = "bytes \(partial.lowerBound)-\(partial.upperBound)/\(reader.size)"
        case .unsatisfiable:
            try? await reader.close()
            throw RegistryError(
                .sizeInvalid, "requested range is not satisfiable for a blob of \(reader.size) bytes",
                status: 416, headers: [("Content-Range", "bytes */\(reader.size)")])
        }
        let length = range.map { Int($0.upperBound - $0.lowerBound + 1) } ?? Int(reader.size)
        if request.method == .head {
            try? await reader.close()
            headers[.contentLength] = String(length)
            return Response(status: status, headers: headers, body: .init())
        }
        let body = ResponseBody(contentLength: length) { writer in
            var count: Int64 = 0
            defer { sent(count) }
            try await reader.stream(range: range) { chunk in
                try await writer.write(chunk)
                count += Int64(chunk.readableBytes)
            }
            try await writer.finish(nil)
        }
        return Response(status: status, headers: headers, body: body)
    }

    static func headers(_ digest: Digest) -> HTTPFields {
        var headers = HTTPFields()
        headers[.contentType] = "application/octet-stream"
        headers[.dockerContentDigest] = digest.description
        headers[.acceptRanges] = "bytes"
        headers[.eTag] = "\"\(digest)\""
        // Content-addressed bytes never change.
        headers[.cacheControl] = "max-age=31536000"
        return headers
    }
}
