import Crypto
import Foundation  // trimmingCharacters, removingPercentEncoding
import OCI

/// AWS Signature Version 4: the pieces both sides share. ECR verifies what `aws` and boto3 send with
/// every call; the S3 blob store and the KMS client sign their own requests (`SigV4Signer`).
public enum SigV4 {
    /// The parsed `Authorization: AWS4-HMAC-SHA256 Credential=…, SignedHeaders=…, Signature=…` header.
    public struct Authorization: Sendable, Equatable {
        public var accessKeyID: String
        /// `yyyymmdd` from the credential scope.
        public var date: String
        public var region: String
        public var service: String
        public var signedHeaders: [String]
        public var signature: String

        public var scope: String { "\(date)/\(region)/\(service)/aws4_request" }

        public init?(header: String) {
            let prefix = "AWS4-HMAC-SHA256 "
            guard header.hasPrefix(prefix) else { return nil }
            var fields: [String: String] = [:]
            for part in header.dropFirst(prefix.count).split(separator: ",") {
                let pair = part.split(separator: "=", maxSplits: 1)
                guard pair.count == 2 else { return nil }
                fields[String(pair[0]).trimmingCharacters(in: .whitespaces)] = String(pair[1]).trimmingCharacters(in: .whitespaces)
            }
            guard let credential = fields["Credential"], let signed = fields["SignedHeaders"], let signature = fields["Signature"] else { return nil }
            let scope = credential.split(separator: "/", omittingEmptySubsequences: false).map(String.init)
            guard scope.count == 5, scope[4] == "aws4_request", scope[1].count == 8, !scope[0].isEmpty else { return nil }
            accessKeyID = scope[0]
            date = scope[1]
            region = scope[2]
            service = scope[3]
            signedHeaders = signed.split(separator: ";").map { $0.lowercased() }
            self.signature = signature.lowercased()
        }
    }

    /// The canonical request: method, path, query, signed headers, their names, the payload hash.
    public static func canonicalRequest(
        method: String, path: String, query: String, headers: [(String, String)],
        signedHeaders: [String], payloadHash: String
    ) -> String {
        var lines = [method, canonicalPath(path), canonicalQuery(query)]
        for name in signedHeaders {
            // Repeated headers join with commas; values are trimmed and inner runs of spaces collapse.
            let values = headers.filter { $0.0.lowercased() == name }.map { collapse($0.1) }
            lines.append("\(name):\(values.joined(separator: ","))")
        }
        lines.append("")
        lines.append(signedHeaders.joined(separator: ";"))
        lines.append(payloadHash)
        return lines.joined(separator: "\n")
    }

    public static func stringToSign(amzDate: String, scope: String, canonicalRequest: String) -> String {
        ["AWS4-HMAC-SHA256", amzDate, scope, hex(SHA256.hash(data: Array(canonicalRequest.utf8)))].joined(separator: "\n")
    }

    public static func signingKey(secret: String, date: String, region: String, service: String) -> SymmetricKey {
        var key = SymmetricKey(data: Array(("AWS4" + secret).utf8))
        for part in [date, region, service, "aws4_request"] {
            key = SymmetricKey(data: Data(HMAC<SHA256>.authenticationCode(for: Array(part.utf8), using: key)))
        }
        return key
    }

    public static func signature(key: SymmetricKey, stringToSign: String) -> String {
        hex(HMAC<SHA256>.authenticationCode(for: Array(stringToSign.utf8), using: key))
    }

    public static func sha256Hex(_ bytes: some DataProtocol) -> String { hex(SHA256.hash(data: bytes)) }

    public static func hex(_ bytes: some Sequence<UInt8>) -> String { Hex.encode(bytes) }

    /// Compares signatures in time independent of where they differ.
    public static func constantTimeEqual(_ a: String, _ b: String) -> Bool { ConstantTime.equals(a, b) }

    public static func collapse(_ value: String) -> String {
        var result = ""
        var previousSpace = false
        for character in value.trimmingCharacters(in: .whitespaces) {
            if character == " " || character == "\t" {
                if !previousSpace { result.append(" ") }
                previousSpace = true
            } else {
                result.append(character)
                previousSpace = false
            }
        }
        return result
    }

    /// Each path segment URI-encoded as AWS does (ECR only ever uses `/`).
    public static func canonicalPath(_ path: String) -> String {
        path.isEmpty
            ? "/"
            : path.split(separator: "/", omittingEmptySubsequences: false).map { uriEncode(String($0).removingPercentEncoding ?? String($0)) }.joined(
                separator: "/")
    }

    /// Parameters sorted by name then value, each URI-encoded.
    public static func canonicalQuery(_ query: String) -> String {
        guard !query.isEmpty else { return "" }
        let pairs = query.split(separator: "&").map { item -> (String, String) in
            let parts = item.split(separator: "=", maxSplits: 1, omittingEmptySubsequences: false)
            let name = String(parts[0]).removingPercentEncoding ?? String(parts[0])
            let value = parts.count > 1 ? (String(parts[1]).removingPercentEncoding ?? String(parts[1])) : ""
            return (uriEncode(name), uriEncode(value))
        }
        return pairs.sorted { $0.0 == $1.0 ? $0.1 < $1.1 : $0.0 < $1.0 }.map { "\($0.0)=\($0.1)" }.joined(separator: "&")
    }

    public static func uriEncode(_ value: String) -> String {
        var out = ""
        for byte in value.utf8 {
            switch byte {
            case UInt8(ascii: "A")...UInt8(ascii: "Z"), UInt8(ascii: "a")...UInt8(ascii: "z"), UInt8(ascii: "0")...UInt8(ascii: "9"),
                UInt8(ascii: "-"), UInt8(ascii: "_"), UInt8(ascii: "."), UInt8(ascii: "~"):
                out.unicodeScalars.append(Unicode.Scalar(byte))
            default:
                out += "%" + String(byte, radix: 16, uppercase: true).leftPadded(to: 2)
            }
        }
        return out
    }
}

extension String {
    func leftPadded(to length: Int) -> String { count >= length ? self : String(repeating: "0", count: length - count) + self }
}
