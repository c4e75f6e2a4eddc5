import OCI

/// One AWS JSON 1.1 request as it arrived over HTTP, independent of the HTTP server.
public struct AWSJSONRequest: Sendable {
    public var method: String
    /// The raw path and query, exactly as sent (they are part of what was signed).
    public var path: String
    public var query: String
    public var headers: [(name: String, value: String)]
    public var body: [UInt8]
    /// `scheme://host` the client used, for `repositoryUri`, `proxyEndpoint` and download URLs.
    public var scheme: String
    public var host: String
    public var source: String?
    /// The id the HTTP edge gave this request (`X-Request-Id`); answered as `x-amzn-RequestId`, so
    /// the log, the audit log and the client all name the same request.
    public var requestID: String?

    public init(
        method: String, path: String, query: String, headers: [(name: String, value: String)], body: [UInt8],
        scheme: String, host: String, source: String?, requestID: String? = nil
    ) {
        self.requestID = requestID
        self.method = method
        self.path = path
        self.query = query
        self.headers = headers
        self.body = body
        self.scheme = scheme
        self.host = host
        self.source = source
    }

    public func header(_ name: String) -> String? {
        let lowered = name.lowercased()
        return headers.first { $0.name.lowercased() == lowered }?.value
    }
}

public struct AWSJSONResponse: Sendable {
    public var status: Int
    public var headers: [(name: String, value: String)]
    public var body: [UInt8]

    static func success(_ output: JSONValue, requestID: String) -> AWSJSONResponse {
        AWSJSONResponse(status: 200, headers: [("Content-Type", "application/x-amz-json-1.1"), ("x-amzn-RequestId", requestID)], body: output.encoded())
    }

    static func failure(_ error: ECRError, requestID: String) -> AWSJSONResponse {
        var members: [String: JSONValue] = ["__type": .string(error.type), "message": .string(error.message)]
        for (name, value) in error.fields { members[name] = .string(value) }
        let body = JSONValue.object(members)
        return AWSJSONResponse(
            status: error.status,
            headers: [
                ("Content-Type", "application/x-amz-json-1.1"), ("x-amzn-RequestId", requestID),
                ("x-amzn-ErrorType", error.type),
            ], body: body.encoded())
    }
}

extension JSONValue {
    /// Epoch seconds with millisecond precision, as AWS JSON timestamps are sent.
    static func timestamp(millis: Int64) -> JSONValue { .number(Double(millis) / 1000) }

    /// An object without the members whose value is nil (absent members, not JSON nulls).
    static func compact(_ members: [String: JSONValue?]) -> JSONValue {
        .object(members.compactMapValues { $0 })
    }
}
