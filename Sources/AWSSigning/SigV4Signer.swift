import Crypto
import OCI

/// Credentials for signing: an access key id, its secret, and the session token of temporary keys.
public struct AWSCredentials: Sendable, Equatable {
    public var accessKeyID: String
    public var secretAccessKey: String
    public var sessionToken: String?

    public init(accessKeyID: String, secretAccessKey: String, sessionToken: String? = nil) {
        self.accessKeyID = accessKeyID
        self.secretAccessKey = secretAccessKey
        self.sessionToken = sessionToken
    }

    /// The standard variables every AWS SDK reads (`AWS_ACCESS_KEY_ID`, `AWS_SECRET_ACCESS_KEY`,
    /// `AWS_SESSION_TOKEN`), or nil when the first two are not both set.
    public static func fromEnvironment(_ environment: [String: String]) -> AWSCredentials? {
        guard let id = environment["AWS_ACCESS_KEY_ID"], !id.isEmpty, let secret = environment["AWS_SECRET_ACCESS_KEY"], !secret.isEmpty else {
            return nil
        }
        let token = environment["AWS_SESSION_TOKEN"].flatMap { $0.isEmpty ? nil : $0 }
        return AWSCredentials(accessKeyID: id, secretAccessKey: secret, sessionToken: token)
    }
}

/// The signing side of SigV4, for Wharf's own calls to S3 and KMS.
public struct SigV4Signer: Sendable {
    public var credentials: AWSCredentials
    public var region: String
    public var service: String

    public init(credentials: AWSCredentials, region: String, service: String) {
        self.credentials = credentials
        self.region = region
        self.service = service
    }

    /// The payload hash S3 accepts for a body it should not hash-check (presigned URLs).
    public static let unsignedPayload = "UNSIGNED-PAYLOAD"

    /// The headers to add to a request: `x-amz-date`, `x-amz-content-sha256` (S3 wants it on every
    /// request), the session token when there is one, and `authorization`. `headers` must hold
    /// `host`; every header given is signed.
    public func sign(
        method: String, path: String, query: String, headers: [(String, String)], payloadHash: String, now epochSeconds: Int64
    ) -> [(String, String)] {
        let (amzDate, day) = Self.timestamps(epochSeconds)
        var added: [(String, String)] = [("x-amz-date", amzDate), ("x-amz-content-sha256", payloadHash)]
        if let token = credentials.sessionToken { added.append(("x-amz-security-token", token)) }
        let all = (headers + added).map { ($0.0.lowercased(), $0.1) }
        let signedHeaders = Array(Set(all.map(\.0))).sorted()
        let scope = "\(day)/\(region)/\(service)/aws4_request"
        let canonical = SigV4.canonicalRequest(
            method: method, path: path, query: query, headers: all, signedHeaders: signedHeaders, payloadHash: payloadHash)
        let key = SigV4.signingKey(secret: credentials.secretAccessKey, date: day, region: region, service: service)
        let signature = SigV4.signature(key: key, stringToSign: SigV4.stringToSign(amzDate: amzDate, scope: scope, canonicalRequest: canonical))
        added.append(
            (
                "authorization",
                "AWS4-HMAC-SHA256 Credential=\(credentials.accessKeyID)/\(scope), SignedHeaders=\(signedHeaders.joined(separator: ";")), Signature=\(signature)"
            ))
        return added
    }

    /// A presigned URL's query (the `X-Amz-*` parameters appended to `query`), valid for `expires`
    /// seconds: only the host is signed and the payload is not, as S3 expects of a GET by browser or client.
    public func presignedQuery(method: String, host: String, path: String, query: String, expires: Int, now epochSeconds: Int64) -> String {
        let (amzDate, day) = Self.timestamps(epochSeconds)
        let scope = "\(day)/\(region)/\(service)/aws4_request"
        var parameters = [
            ("X-Amz-Algorithm", "AWS4-HMAC-SHA256"), ("X-Amz-Credential", "\(credentials.accessKeyID)/\(scope)"),
            ("X-Amz-Date", amzDate), ("X-Amz-Expires", String(expires)), ("X-Amz-SignedHeaders", "host"),
        ]
        if let token = credentials.sessionToken { parameters.append(("X-Amz-Security-Token", token)) }
        var full = parameters.map { "\(SigV4.uriEncode($0.0))=\(SigV4.uriEncode($0.1))" }.joined(separator: "&")
        if !query.isEmpty { full = query + "&" + full }
        let canonical = SigV4.canonicalRequest(
            method: method, path: path, query: full, headers: [("host", host)], signedHeaders: ["host"], payloadHash: Self.unsignedPayload)
        let key = SigV4.signingKey(secret: credentials.secretAccessKey, date: day, region: region, service: service)
        let signature = SigV4.signature(key: key, stringToSign: SigV4.stringToSign(amzDate: amzDate, scope: scope, canonicalRequest: canonical))
        return full + "&X-Amz-Signature=" + signature
    }

    /// `yyyyMMdd'T'HHmmss'Z'` and `yyyyMMdd` in UTC, computed from the epoch without a date formatter.
    public static func timestamps(_ epochSeconds: Int64) -> (amzDate: String, day: String) {
        let days = CivilDate.floorDivide(epochSeconds, 86_400)
        let secondOfDay = epochSeconds - days * 86_400
        let (year, month, day) = CivilDate.date(days: days)
        func two(_ value: Int64) -> String { value < 10 ? "0\(value)" : "\(value)" }
        let date = "\(year)\(two(month))\(two(day))"
        let time = "\(two(secondOfDay / 3600))\(two(secondOfDay / 60 % 60))\(two(secondOfDay % 60))"
        return ("\(date)T\(time)Z", date)
    }
}
