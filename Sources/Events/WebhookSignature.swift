import Crypto
import Foundation
import OCI

/// How a receiver knows a delivery came from this registry and is not a replay: the body is signed
/// with HMAC-SHA256 under the webhook's secret together with the time of sending,
/// `X-Wharf-Signature: t=<unix seconds>,v1=<hex of HMAC(secret, "<t>.<body>")>`. A receiver
/// recomputes it and refuses a `t` older than a few minutes.
public enum WebhookSignature {
    public static let header = "X-Wharf-Signature"

    public static func value(body: String, secret: String, timestamp: Int64) -> String {
        let mac = HMAC<SHA256>.authenticationCode(for: Data("\(timestamp).\(body)".utf8), using: SymmetricKey(data: Data(secret.utf8)))
        return "t=\(timestamp),v1=" + Hex.encode(mac)
    }
}
