import AWSSigning
import AsyncHTTPClient
import Crypto
import Foundation
import Logging
import NIOCore

/// Where and how Wharf reaches its bucket (`storage.s3` in the configuration).
public struct S3Settings: Sendable, Equatable {
    public var bucket: String
    public var region: String
    /// `http(s)://host[:port]` of an S3-compatible server; nil means AWS (`https://s3.<region>.amazonaws.com`).
    public var endpoint: String?
    /// `https://endpoint/bucket/key` instead of `https://bucket.endpoint/key` (what most S3-compatible servers need).
    public var pathStyle: Bool
    /// Prepended to every key, so several registries (or other data) can share a bucket.
    public var prefix: String
    /// `x-amz-storage-class` of published blobs (STANDARD when nil).
    public var storageClass: String?
    public var credentials: AWSCredentials
    /// Size of the objects an upload is cut into, and so of the parts of the final multipart copy:
    /// S3 wants at least 5 MiB per part but the last, and at most 10,000 parts.
    public var partSize: Int
    /// Answer blob GETs with a redirect to a presigned URL of the bucket (clients must reach it).
    public var redirect: Bool
    /// How long a presigned URL stays valid.
    public var redirectExpirySeconds: Int
    /// Attempts per request (the first included) before an S3 error (throttling, 5xx, timeout) is reported.
    public var maximumAttempts: Int

    public static let minimumPartSize = 5 << 20
    public static let maximumPartSize = 1 << 30

    public init(
        bucket: String, region: String = "us-east-1", endpoint: String? = nil, pathStyle: Bool = false, prefix: String = "",
        storageClass: String? = nil, credentials: AWSCredentials, partSize: Int = 16 << 20, redirect: Bool = false,
        redirectExpirySeconds: Int = 1200, maximumAttempts: Int = 5
    ) {
        self.bucket = bucket
        self.region = region
        self.endpoint = endpoint
        self.pathStyle = pathStyle
        self.prefix = prefix
        self.storageClass = storageClass
        self.credentials = credentials
        self.partSize = partSize
        self.redirect = redirect
        self.redirectExpirySeconds = redirectExpirySeconds
        self.maximumAttempts = maximumAttempts
    }

    /// The reasons these settings cannot work, or an empty list.
    public func problems() -> [String] {
        var problems: [String] = []
        let bucketCharacters = Set("abcdefghijklmnopqrstuvwxyz0123456789.-")
        if bucket.count < 3 || bucket.count > 63 || !bucket.allSatisfy(bucketCharacters.contains) {
            problems.append("storage.s3.bucket must be 3 to 63 characters of lower-case letters, digits, '.' and '-'")
        }
        let keyCharacters = Set("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789.-_/")
        if !prefix.allSatisfy(keyCharacters.contains) || prefix.hasPrefix("/") || prefix.contains("//") || prefix.count > 200 {
            problems.append("storage.s3.prefix may hold letters, digits, '.', '-', '_' and '/' (not leading, not doubled), at most 200")
        }
        if let endpoint, S3Endpoint(endpoint) == nil {
            problems.append("storage.s3.endpoint must be http://host[:port] or https://host[:port], not \(endpoint)")
        }
        if region.isEmpty || !region.allSatisfy(keyCharacters.contains) { problems.append("storage.s3.region is not a region name") }
        if partSize < Self.minimumPartSize || partSize > Self.maximumPartSize {
            problems.append("storage.s3.partSizeMiB must be between 5 and 1024")
        }
        if maximumAttempts < 1 || maximumAttempts > 20 { problems.append("storage.s3.maximumAttempts must be between 1 and 20") }
        if redirectExpirySeconds < 60 || redirectExpirySeconds > 604_800 {
            problems.append("storage.s3.redirectExpirySeconds must be between 60 and 604800 (S3's limit)")
        }
        return problems
    }
}

/// The parsed endpoint: scheme, host and port.
struct S3Endpoint: Sendable, Equatable {
    var secure: Bool
    var host: String
    var port: Int?

    init?(_ text: String) {
        let trimmed = text.hasSuffix("/") ? String(text.dropLast()) : text
        if trimmed.hasPrefix("https://") {
            secure = true
        } else if trimmed.hasPrefix("http://") {
            secure = false
        } else {
            return nil
        }
        let authority = trimmed.drop { $0 != "/" }.dropFirst(2)
        guard !authority.isEmpty, !authority.contains("/"), !authority.contains("@") else { return nil }
        if let colon = authority.lastIndex(of: ":"), !authority.hasSuffix("]") {
            guard let number = Int(authority[authority.index(after: colon)...]), (1...65535).contains(number) else { return nil }
            host = String(authority[..<colon])
            port = number
        } else {
            host = String(authority)
            port = nil
        }
        guard !host.isEmpty else { return nil }
    }

    /// The `Host` header: the port only when it is not the scheme's default.
    var hostHeader: String {
        guard let port, port != (secure ? 443 : 80) else { return host }
        return "\(host):\(port)"
    }
}

/// An S3 error answer (or a transport failure after every retry), with what was being done.
public struct S3Error: Error, Sendable, CustomStringConvertible {
    public var operation: String
    public var key: String
    public var status: Int
    public var code: String
    public var message: String

    public var description: String {
        "S3 \(operation) of \(key.isEmpty ? "the bucket" : key) failed: \(status == 0 ? "" : "HTTP \(status) ")\(code)\(message.isEmpty ? "" : ": \(message)")"
    }

    /// Worth another attempt: throttling, server errors, timeouts and broken connections.
    var isTransient: Bool {
        status == 0 || status == 429 || status >= 500 || ["SlowDown", "RequestTimeout", "InternalError", "ServiceUnavailable"].contains(code)
    }
}

/// One object of a listing.
struct S3Object: Sendable, Equatable {
    var key: String
    var size: Int64
    /// Unix milliseconds.
    var lastModified: Int64
}

/// The S3 calls the blob store needs, signed with SigV4 and retried with backoff and jitter when S3
/// is busy or failing. Bodies sent are held in memory (the blob store never sends more than one
/// part at a time); bodies received stream.
final class S3Client: Sendable {
    let settings: S3Settings
    private let endpoint: S3Endpoint
    private let signer: SigV4Signer
    private let http: HTTPClient
    private let logger: Logger

    init(settings: S3Settings, http: HTTPClient, logger: Logger) throws {
        let problems = settings.problems()
        guard problems.isEmpty else {
            throw S3Error(operation: "configuration", key: "", status: 0, code: "InvalidSettings", message: problems.joined(separator: "; "))
        }
        self.settings = settings
        self.endpoint = settings.endpoint.flatMap(S3Endpoint.init) ?? S3Endpoint("https://s3.\(settings.region).amazonaws.com")!
        self.signer = SigV4Signer(credentials: settings.credentials, region: settings.region, service: "s3")
        self.http = http
        self.logger = logger
    }

    private var host: String { settings.pathStyle ? endpoint.hostHeader : "\(settings.bucket).\(endpoint.hostHeader)" }

    /// The request path of `key` (encoded per segment, as SigV4 signs it), or of the bucket when nil.
    private func path(_ key: String?) -> String {
        let encodedKey = key.map { $0.split(separator: "/", omittingEmptySubsequences: false).map { SigV4.uriEncode(String($0)) }.joined(separator: "/") }
        switch (settings.pathStyle, encodedKey) {
        case (true, let key?): return "/\(settings.bucket)/\(key)"
        case (true, nil): return "/\(settings.bucket)"
        case (false, let key?): return "/\(key)"
        case (false, nil): return "/"
        }
    }

    /// `x-amz-copy-source`: the bucket and the encoded key, whatever the addressing style.
    private func copySource(_ key: String) -> String { settings.pathStyle ? path(key) : "/\(settings.bucket)\(path(key))" }

    private func url(path: String, query: String) -> String {
        "\(endpoint.secure ? "https" : "http")://\(host)\(path)\(query.isEmpty ? "" : "?" + query)"
    }

    private static func query(_ parameters: [(String, String)]) -> String {
        parameters.map { "\(SigV4.uriEncode($0.0))=\(SigV4.uriEncode($0.1))" }.joined(separator: "&")
    }

    // MARK: Objects

    func putObject(_ key: String, body: ByteBuffer, storageClass: String? = nil) async throws {
        var headers: [(String, String)] = []
        if let storageClass { headers.append(("x-amz-storage-class", storageClass)) }
        _ = try await send("PutObject", "PUT", key: key, headers: headers, body: body)
    }

    /// Size and modification time, or nil when there is no such object.
    func headObject(_ key: String) async throws -> S3Object? {
        do {
            let response = try await send("HeadObject", "HEAD", key: key)
            let size = response.header("content-length").flatMap { Int64($0) } ?? 0
            let modified = response.header("last-modified").flatMap(HTTPDate.millis) ?? 0
            return S3Object(key: key, size: size, lastModified: modified)
        } catch let error as S3Error where error.status == 404 {
            return nil
        }
    }

    /// Streams `range` (inclusive) of an object to `consume`. A connection that breaks mid-body is
    /// resumed from the next byte, so a long download survives a hiccup of the object store.
    func getObject(_ key: String, range: ClosedRange<Int64>?, consume: (ByteBuffer) async throws -> Void) async throws {
        var delivered: Int64 = 0
        var resumes = 0
        while true {
            var headers: [(String, String)] = []
            if let range {
                headers.append(("range", "bytes=\(range.lowerBound + delivered)-\(range.upperBound)"))
            } else if delivered > 0 {
                headers.append(("range", "bytes=\(delivered)-"))
            }
            let response = try await open("GetObject", "GET", key: key, headers: headers)
            var chunks = response.body.makeAsyncIterator()
            while true {
                let next: ByteBuffer?
                do {
                    next = try await chunks.next()
                } catch  where !(error is CancellationError) && resumes + 1 < settings.maximumAttempts {
                    // Only the object store's side is resumed; an error of `consume` ends the download.
                    resumes += 1
                    logger.warning("S3 download interrupted; resuming", metadata: ["key": "\(key)", "at": "\(delivered)", "error": "\(error)"])
                    break
                }
                guard let chunk = next else { return }
                delivered += Int64(chunk.readableBytes)
                try await consume(chunk)
            }
        }
    }

    /// A whole (small) object in memory: the tail of an upload, at most one part.
    func getObjectBytes(_ key: String, range: ClosedRange<Int64>? = nil) async throws -> ByteBuffer {
        var collected = ByteBuffer()
        try await getObject(key, range: range) { chunk in
            var chunk = chunk
            collected.writeBuffer(&chunk)
        }
        return collected
    }

    func deleteObject(_ key: String) async throws {
        do {
            _ = try await send("DeleteObject", "DELETE", key: key)
        } catch let error as S3Error where error.status == 404 {
            return  // S3 answers 204 for a missing key; some compatible servers answer 404
        }
    }

    /// Deletes many keys, 1,000 per request (S3's limit).
    func deleteObjects(_ keys: [String]) async throws {
        for start in stride(from: 0, to: keys.count, by: 1000) {
            let batch = keys[start..<min(keys.count, start + 1000)]
            if batch.count == 1 {
                try await deleteObject(batch[batch.startIndex])
                continue
            }
            var xml = "<?xml version=\"1.0\" encoding=\"UTF-8\"?><Delete><Quiet>true</Quiet>"
            for key in batch { xml += "<Object><Key>\(Self.xmlEscaped(key))</Key></Object>" }
            xml += "</Delete>"
            let body = ByteBuffer(string: xml)
            let md5 = Data(Insecure.MD5.hash(data: Array(xml.utf8))).base64EncodedString()
            let response = try await send(
                "DeleteObjects", "POST", key: nil, query: [("delete", "")], headers: [("content-md5", md5), ("content-type", "application/xml")],
                body: body)
            // A 200 can still carry per-key failures.
            if let root = XMLElement.parse(Data(response.body.readableBytesView)), let failure = root.all("Error").first {
                throw S3Error(
                    operation: "DeleteObjects", key: failure.value("Key") ?? "", status: 200, code: failure.value("Code") ?? "Error",
                    message: failure.value("Message") ?? "")
            }
        }
    }

    /// Server-side copy (objects up to 5 GiB: the blob store copies single parts only).
    func copyObject(from source: String, to destination: String, storageClass: String? = nil) async throws {
        var headers = [("x-amz-copy-source", copySource(source))]
        if let storageClass { headers.append(("x-amz-storage-class", storageClass)) }
        let response = try await send("CopyObject", "PUT", key: destination, headers: headers)
        try Self.checkEmbeddedError(response.body, operation: "CopyObject", key: destination)
    }

    /// Every object under `prefix`, in key order (S3 lists in UTF-8 binary order), page by page.
    func list(prefix: String) async throws -> [S3Object] {
        var objects: [S3Object] = []
        try await listPages(prefix: prefix, delimiter: nil) { page, _ in objects += page }
        return objects
    }

    /// The "folders" directly under `prefix` (common prefixes with delimiter `/`).
    func listFolders(prefix: String) async throws -> [String] {
        var folders: [String] = []
        try await listPages(prefix: prefix, delimiter: "/") { _, prefixes in folders += prefixes }
        return folders
    }

    func listPages(prefix: String, delimiter: String?, page: ([S3Object], [String]) async throws -> Void) async throws {
        var token: String?
        repeat {
            var parameters = [("list-type", "2"), ("prefix", prefix)]
            if let delimiter { parameters.append(("delimiter", delimiter)) }
            if let token { parameters.append(("continuation-token", token)) }
            let response = try await send("ListObjectsV2", "GET", key: nil, query: parameters)
            guard let listing = Self.parseListing(Data(response.body.readableBytesView)) else {
                throw S3Error(operation: "ListObjectsV2", key: prefix, status: 200, code: "MalformedResponse", message: "the listing is not XML")
            }
            try await page(listing.objects, listing.prefixes)
            token = listing.continuation
        } while token != nil
    }

    /// One page of ListObjectsV2: objects, common prefixes and the token of the next page (nil on the last).
    static func parseListing(_ data: Data) -> (objects: [S3Object], prefixes: [String], continuation: String?)? {
        guard let root = XMLElement.parse(data) else { return nil }
        let objects = root.all("Contents").compactMap { item -> S3Object? in
            guard let key = item.value("Key") else { return nil }
            return S3Object(
                key: key, size: item.value("Size").flatMap { Int64($0) } ?? 0, lastModified: item.value("LastModified").flatMap(ISODate.millis) ?? 0)
        }
        let prefixes = root.all("CommonPrefixes").compactMap { $0.value("Prefix") }
        let token = root.value("IsTruncated") == "true" ? root.value("NextContinuationToken") : nil
        return (objects, prefixes, token)
    }

    // MARK: Multipart copy

    func createMultipartUpload(_ key: String, storageClass: String?) async throws -> String {
        var headers: [(String, String)] = []
        if let storageClass { headers.append(("x-amz-storage-class", storageClass)) }
        let response = try await send("CreateMultipartUpload", "POST", key: key, query: [("uploads", "")], headers: headers)
        guard let id = XMLElement.parse(Data(response.body.readableBytesView))?.value("UploadId"), !id.isEmpty else {
            throw S3Error(operation: "CreateMultipartUpload", key: key, status: 200, code: "MalformedResponse", message: "no UploadId")
        }
        return id
    }

    /// Copies the object `source` (or its `range`, inclusive) into part `number`; returns the part's ETag.
    func uploadPartCopy(_ key: String, uploadID: String, number: Int, source: String, range: ClosedRange<Int64>? = nil) async throws -> String {
        var headers = [("x-amz-copy-source", copySource(source))]
        if let range { headers.append(("x-amz-copy-source-range", "bytes=\(range.lowerBound)-\(range.upperBound)")) }
        let response = try await send(
            "UploadPartCopy", "PUT", key: key, query: [("partNumber", String(number)), ("uploadId", uploadID)], headers: headers)
        try Self.checkEmbeddedError(response.body, operation: "UploadPartCopy", key: key)
        guard let etag = XMLElement.parse(Data(response.body.readableBytesView))?.value("ETag") else {
            throw S3Error(operation: "UploadPartCopy", key: key, status: 200, code: "MalformedResponse", message: "no ETag")
        }
        return etag
    }

    func completeMultipartUpload(_ key: String, uploadID: String, etags: [String]) async throws {
        var xml = "<CompleteMultipartUpload>"
        for (index, etag) in etags.enumerated() { xml += "<Part><PartNumber>\(index + 1)</PartNumber><ETag>\(Self.xmlEscaped(etag))</ETag></Part>" }
        xml += "</CompleteMultipartUpload>"
        let response = try await send("CompleteMultipartUpload", "POST", key: key, query: [("uploadId", uploadID)], body: ByteBuffer(string: xml))
        try Self.checkEmbeddedError(response.body, operation: "CompleteMultipartUpload", key: key)
    }

    func abortMultipartUpload(_ key: String, uploadID: String) async throws {
        _ = try await send("AbortMultipartUpload", "DELETE", key: key, query: [("uploadId", uploadID)])
    }

    /// A URL anyone holding it may GET `key` with, for `settings.redirectExpirySeconds`.
    func presignedGetURL(_ key: String) -> String {
        let path = path(key)
        let query = signer.presignedQuery(
            method: "GET", host: host, path: path, query: "", expires: settings.redirectExpirySeconds, now: Int64(Date().timeIntervalSince1970))
        return url(path: path, query: query)
    }

    // MARK: Sending

    struct Response {
        var status: Int
        var headers: [(String, String)]
        var body: ByteBuffer

        func header(_ name: String) -> String? { headers.first { $0.0 == name }?.1 }
    }

    /// A request whose answer is small (at most 16 MiB is read), retried while S3 says it is transient.
    private func send(
        _ operation: String, _ method: String, key: String?, query: [(String, String)] = [], headers: [(String, String)] = [],
        body: ByteBuffer? = nil
    ) async throws -> Response {
        try await retrying(operation, key: key) {
            let response = try await self.execute(operation, method, key: key, query: query, headers: headers, body: body)
            let collected = try await response.body.collect(upTo: 16 << 20)
            let status = Int(response.status.code)
            guard (200..<300).contains(status) else { throw Self.error(operation, key: key ?? "", status: status, body: collected) }
            return Response(status: status, headers: response.headers.map { ($0.name.lowercased(), $0.value) }, body: collected)
        }
    }

    /// A request whose body the caller streams; only the head is retried.
    private func open(_ operation: String, _ method: String, key: String, headers: [(String, String)]) async throws -> HTTPClientResponse {
        try await retrying(operation, key: key) {
            let response = try await self.execute(operation, method, key: key, query: [], headers: headers, body: nil)
            let status = Int(response.status.code)
            guard (200..<300).contains(status) else {
                let collected = try await response.body.collect(upTo: 1 << 20)
                throw Self.error(operation, key: key, status: status, body: collected)
            }
            return response
        }
    }

    private func execute(
        _ operation: String, _ method: String, key: String?, query: [(String, String)], headers: [(String, String)], body: ByteBuffer?
    ) async throws -> HTTPClientResponse {
        let path = path(key)
        let queryString = Self.query(query)
        var request = HTTPClientRequest(url: url(path: path, query: queryString))
        request.method = .init(rawValue: method)
        let payloadHash = body.map { buffer in buffer.withUnsafeReadableBytes { SigV4.sha256Hex($0) } } ?? SigV4.sha256Hex([UInt8]())
        var all = headers
        all.append(("host", host))
        if let body { all.append(("content-length", String(body.readableBytes))) }
        let signature = signer.sign(
            method: method, path: path, query: queryString, headers: all, payloadHash: payloadHash, now: Int64(Date().timeIntervalSince1970))
        for (name, value) in all + signature { request.headers.add(name: name, value: value) }
        if let body { request.body = .bytes(body) }
        do {
            return try await http.execute(request, timeout: .seconds(60), logger: logger)
        } catch {
            throw S3Error(operation: operation, key: key ?? "", status: 0, code: "ConnectionFailed", message: "\(error)")
        }
    }

    private func retrying<T>(_ operation: String, key: String?, _ attempt: () async throws -> T) async throws -> T {
        var failures = 0
        while true {
            do {
                return try await attempt()
            } catch let error as S3Error where error.isTransient && failures + 1 < settings.maximumAttempts {
                failures += 1
                // Exponential backoff with full jitter: 100 ms, 200 ms, … capped at 5 s.
                let ceiling = min(5_000, 100 << min(failures - 1, 6))
                let delay = Int.random(in: ceiling / 2...ceiling)
                logger.notice(
                    "S3 request failed; retrying",
                    metadata: ["operation": "\(operation)", "key": "\(key ?? "")", "attempt": "\(failures)", "error": "\(error)", "delayMs": "\(delay)"])
                try await Task.sleep(for: .milliseconds(delay))
            }
        }
    }

    private static func error(_ operation: String, key: String, status: Int, body: ByteBuffer) -> S3Error {
        let root = XMLElement.parse(Data(body.readableBytesView))
        let code = root?.value("Code") ?? (status == 404 ? "NoSuchKey" : "HTTP\(status)")
        return S3Error(operation: operation, key: key, status: status, code: code, message: root?.value("Message") ?? "")
    }

    /// S3 may answer 200 to a copy or a completion and put the error in the body.
    private static func checkEmbeddedError(_ body: ByteBuffer, operation: String, key: String) throws {
        guard body.readableBytes > 0, let root = XMLElement.parse(Data(body.readableBytesView)), root.name == "Error" else { return }
        throw S3Error(operation: operation, key: key, status: 200, code: root.value("Code") ?? "InternalError", message: root.value("Message") ?? "")
    }

    static func xmlEscaped(_ text: String) -> String {
        text.replacingOccurrences(of: "&", with: "&amp;").replacingOccurrences(of: "<", with: "&lt;").replacingOccurrences(of: ">", with: "&gt;")
            .replacingOccurrences(of: "\"", with: "&quot;")
    }
}
