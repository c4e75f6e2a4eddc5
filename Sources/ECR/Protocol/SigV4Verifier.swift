import AWSSigning
import Access
import Crypto
import OCI

/// Checks the SigV4 signature of an incoming request against the access key's secret.
struct SigV4Verifier: Sendable {
    /// The longest a signed request may be early or late (AWS's 15 minutes).
    static let allowedSkew: Int64 = 15 * 60
    static let service = "ecr"

    let lookUp: @Sendable (String) async throws -> (secret: String, owner: Identity)?

    struct Verified: Sendable {
        let identity: Identity
        let accessKeyID: String
        let region: String
    }

    func verify(_ request: AWSJSONRequest, now: Int64) async throws -> Verified {
        guard let header = request.header("Authorization") else {
            throw ECRError(
                "MissingAuthenticationTokenException", "Missing Authentication Token: sign requests with an access key (wharf admin access-key create)")
        }
        guard let authorization = SigV4.Authorization(header: header) else {
            throw ECRError(
                "IncompleteSignatureException", "Authorization header requires 'Credential', 'Signature' and 'SignedHeaders' parameters (AWS4-HMAC-SHA256)")
        }
        guard authorization.service == Self.service else {
            throw ECRError("InvalidSignatureException", "Credential should be scoped to correct service: '\(Self.service)'.")
        }
        guard authorization.signedHeaders.contains("host") else {
            throw ECRError("InvalidSignatureException", "'Host' must be a signed header.")
        }
        // The target names the operation: unsigned, a captured request could be replayed as another one.
        guard request.header("X-Amz-Target") == nil || authorization.signedHeaders.contains("x-amz-target") else {
            throw ECRError("InvalidSignatureException", "'X-Amz-Target' must be a signed header.")
        }
        guard let amzDate = request.header("X-Amz-Date"), authorization.signedHeaders.contains("x-amz-date"),
            let signedAt = Self.parseAmzDate(amzDate)
        else {
            throw ECRError("IncompleteSignatureException", "the request needs a signed X-Amz-Date header (yyyyMMdd'T'HHmmss'Z')")
        }
        guard amzDate.hasPrefix(authorization.date) else {
            throw ECRError(
                "InvalidSignatureException",
                "Date in Credential scope does not match YYYYMMDD from ISO-8601 version of date from HTTP: '\(authorization.date)' != '\(amzDate.prefix(8))'")
        }
        if signedAt < now - Self.allowedSkew {
            throw ECRError(
                "InvalidSignatureException",
                "Signature expired: \(amzDate) is now earlier than \(Self.formatAmzDate(now - Self.allowedSkew)) (\(Self.formatAmzDate(now)) - 15 min.)")
        }
        if signedAt > now + Self.allowedSkew {
            throw ECRError(
                "InvalidSignatureException",
                "Signature not yet current: \(amzDate) is still later than \(Self.formatAmzDate(now + Self.allowedSkew)) (\(Self.formatAmzDate(now)) + 15 min.)"
            )
        }
        guard let key = try await lookUp(authorization.accessKeyID) else {
            throw ECRError("UnrecognizedClientException", "The security token included in the request is invalid.")
        }
        let bodyHash = SigV4.sha256Hex(request.body)
        var payloadHash = bodyHash
        if let declared = request.header("x-amz-content-sha256"), authorization.signedHeaders.contains("x-amz-content-sha256") {
            // The signature covers the declared hash; the body must then be what was declared.
            guard declared.lowercased() == bodyHash else {
                throw ECRError("InvalidSignatureException", "The provided 'x-amz-content-sha256' header does not match what was computed.")
            }
            payloadHash = declared.lowercased()
        }
        let canonical = SigV4.canonicalRequest(
            method: request.method, path: request.path, query: request.query,
            headers: request.headers.map { ($0.name, $0.value) },
            signedHeaders: authorization.signedHeaders, payloadHash: payloadHash)
        let toSign = SigV4.stringToSign(amzDate: amzDate, scope: authorization.scope, canonicalRequest: canonical)
        let signingKey = SigV4.signingKey(secret: key.secret, date: authorization.date, region: authorization.region, service: authorization.service)
        guard SigV4.constantTimeEqual(SigV4.signature(key: signingKey, stringToSign: toSign), authorization.signature) else {
            throw ECRError(
                "InvalidSignatureException",
                "The request signature we calculated does not match the signature you provided. Check your AWS Secret Access Key and signing method. Consult the service documentation for details."
            )
        }
        return Verified(identity: key.owner, accessKeyID: authorization.accessKeyID, region: authorization.region)
    }

    /// `20150830T123600Z` as Unix seconds.
    static func parseAmzDate(_ text: String) -> Int64? {
        let bytes = Array(text.utf8)
        guard bytes.count == 16, bytes[8] == UInt8(ascii: "T"), bytes[15] == UInt8(ascii: "Z") else { return nil }
        func number(_ range: Range<Int>) -> Int64? {
            var value: Int64 = 0
            for byte in bytes[range] {
                guard byte >= 48, byte <= 57 else { return nil }
                value = value * 10 + Int64(byte - 48)
            }
            return value
        }
        guard let year = number(0..<4), let month = number(4..<6), let day = number(6..<8),
            let hour = number(9..<11), let minute = number(11..<13), let second = number(13..<15),
            (1...12).contains(month), (1...31).contains(day), hour < 24, minute < 60, second < 61
        else { return nil }
        return CivilDate.days(year: year, month: month, day: day) * 86400 + hour * 3600 + minute * 60 + second
    }

    static func formatAmzDate(_ seconds: Int64) -> String {
        let days = CivilDate.floorDivide(seconds, 86400)
        let (year, month, day) = CivilDate.date(days: days)
        let rest = seconds - days * 86400
        func two(_ n: Int64) -> String { n < 10 ? "0\(n)" : "\(n)" }
        return "\(year)\(two(month))\(two(day))T\(two(rest / 3600))\(two(rest / 60 % 60))\(two(rest % 60))Z"
    }
}
