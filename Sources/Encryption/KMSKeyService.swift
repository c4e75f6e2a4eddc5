import AWSSigning
import AsyncHTTPClient
import Crypto
import Foundation
import Logging
import NIOCore
import Synchronization

/// Where Wharf reaches AWS KMS or a compatible service (`encryption.kms` in the configuration).
public struct KMSSettings: Sendable, Equatable {
    /// `http(s)://host[:port]`; nil means AWS's regional endpoint of each key (`https://kms.<region>.amazonaws.com`).
    public var endpoint: String?
    public var credentials: AWSCredentials
    /// How long an unwrapped data key is reused before KMS is asked again. Bounds both the calls
    /// per pull and how long a disabled key keeps serving what was recently read.
    public var dataKeyCacheLifetime: Duration
    public var maximumAttempts: Int

    public init(endpoint: String? = nil, credentials: AWSCredentials, dataKeyCacheLifetime: Duration = .seconds(60), maximumAttempts: Int = 4) {
        self.endpoint = endpoint
        self.credentials = credentials
        self.dataKeyCacheLifetime = dataKeyCacheLifetime
        self.maximumAttempts = maximumAttempts
    }
}

/// AWS KMS over its JSON 1.1 API, signed with SigV4: `GenerateDataKey`, `Decrypt`, `ReEncrypt`
/// and `DescribeKey` are all the registry needs. Each key is addressed at its ARN's region.
public final class KMSKeyService: KeyService {
    private let settings: KMSSettings
    private let http: HTTPClient
    private let logger: Logger
    private let unwrapped = Mutex<[String: (key: SymmetricKey, until: ContinuousClock.Instant)]>([:])
    private let usable = Mutex<[String: ContinuousClock.Instant]>([:])

    public init(settings: KMSSettings, http: HTTPClient, logger: Logger) {
        self.settings = settings
        self.http = http
        self.logger = logger
    }

    public func generateDataKey(keyID: String) async throws -> (key: SymmetricKey, wrapped: [UInt8]) {
        try await checkUsable(keyID: keyID)
        let answer = try await call("GenerateDataKey", keyID: keyID, ["KeyId": keyID, "KeySpec": "AES_256"])
        guard let plaintext = Self.bytes(answer["Plaintext"]), plaintext.count == 32, let wrapped = Self.bytes(answer["CiphertextBlob"]) else {
            throw EncryptionError.serviceFailed("GenerateDataKey answered without a 256-bit key")
        }
        return (SymmetricKey(data: plaintext), wrapped)
    }

    public func decrypt(_ wrapped: [UInt8], keyID: String) async throws -> SymmetricKey {
        // The key's state first: a disabled key stops reads even of data keys unwrapped a moment
        // ago (and KMS-compatible services that do not refuse disabled keys themselves are covered).
        try await checkUsable(keyID: keyID)
        let cacheKey = keyID + "\u{0}" + Data(SHA256.hash(data: wrapped)).base64EncodedString()
        let now = ContinuousClock.now
        if let cached = unwrapped.withLock({ $0[cacheKey] }), cached.until > now { return cached.key }
        let answer = try await call("Decrypt", keyID: keyID, ["KeyId": keyID, "CiphertextBlob": Data(wrapped).base64EncodedString()])
        guard let plaintext = Self.bytes(answer["Plaintext"]), plaintext.count == 32 else {
            throw EncryptionError.serviceFailed("Decrypt answered without a 256-bit key")
        }
        let key = SymmetricKey(data: plaintext)
        unwrapped.withLock { cache in
            if cache.count > 10_000 { cache = cache.filter { $0.value.until > now } }
            if cache.count < 10_000 { cache[cacheKey] = (key, now + settings.dataKeyCacheLifetime) }
        }
        return key
    }

    public func rewrap(_ wrapped: [UInt8], keyID: String) async throws -> [UInt8] {
        try await checkUsable(keyID: keyID)
        let answer = try await call(
            "ReEncrypt", keyID: keyID,
            ["CiphertextBlob": Data(wrapped).base64EncodedString(), "SourceKeyId": keyID, "DestinationKeyId": keyID])
        guard let result = Self.bytes(answer["CiphertextBlob"]) else { throw EncryptionError.serviceFailed("ReEncrypt answered without a ciphertext") }
        return result
    }

    /// `DescribeKey`: the key exists and is enabled. Remembered for up to 5 seconds (not longer than
    /// data keys are), as every push and pull asks.
    public func checkUsable(keyID: String) async throws {
        let now = ContinuousClock.now
        if let until = usable.withLock({ $0[keyID] }), until > now { return }
        let answer = try await call("DescribeKey", keyID: keyID, ["KeyId": keyID])
        guard let metadata = answer["KeyMetadata"] as? [String: Any] else { throw EncryptionError.serviceFailed("DescribeKey answered without KeyMetadata") }
        let state = metadata["KeyState"] as? String ?? ((metadata["Enabled"] as? Bool) == true ? "Enabled" : "Disabled")
        guard state == "Enabled" else {
            throw EncryptionError.keyUnavailable(
                keyID: keyID, code: state == "PendingDeletion" ? "KMSInvalidStateException" : "DisabledException", message: "\(keyID) is \(state).")
        }
        let lifetime = min(Duration.seconds(5), settings.dataKeyCacheLifetime)
        if lifetime > .zero { usable.withLock { $0[keyID] = now + lifetime } }
    }

    // MARK: The wire

    private func endpoint(for keyID: String) throws -> (url: String, host: String, region: String) {
        let region = KMSKeyARN(keyID)?.region ?? "us-east-1"
        let base = settings.endpoint ?? "https://kms.\(region).amazonaws.com"
        guard let url = URL(string: base), let host = url.host, let scheme = url.scheme, scheme == "http" || scheme == "https" else {
            throw EncryptionError.configuration("encryption.kms.endpoint must be http(s)://host[:port], not \(base)")
        }
        let port = url.port
        let defaultPort = scheme == "https" ? 443 : 80
        let hostHeader = port.map { $0 == defaultPort ? host : "\(host):\($0)" } ?? host
        return ("\(scheme)://\(hostHeader)/", hostHeader, region)
    }

    func call(_ operation: String, keyID: String, _ input: [String: String]) async throws -> [String: Any] {
        let (url, host, region) = try endpoint(for: keyID)
        let body = try JSONSerialization.data(withJSONObject: input, options: [.sortedKeys])
        let signer = SigV4Signer(credentials: settings.credentials, region: region, service: "kms")
        var failures = 0
        while true {
            var headers: [(String, String)] = [
                ("host", host), ("content-type", "application/x-amz-json-1.1"), ("x-amz-target", "TrentService.\(operation)"),
                ("content-length", String(body.count)),
            ]
            headers += signer.sign(
                method: "POST", path: "/", query: "", headers: headers, payloadHash: SigV4.sha256Hex(body), now: Int64(Date().timeIntervalSince1970))
            var request = HTTPClientRequest(url: url)
            request.method = .POST
            for (name, value) in headers { request.headers.add(name: name, value: value) }
            request.body = .bytes(ByteBuffer(bytes: body))
            let status: Int
            let answer: ByteBuffer
            do {
                let response = try await http.execute(request, timeout: .seconds(30), logger: logger)
                status = Int(response.status.code)
                answer = try await response.body.collect(upTo: 1 << 20)
            } catch {
                failures += 1
                if failures < settings.maximumAttempts {
                    try await Task.sleep(for: .milliseconds(Int.random(in: 50...(100 << failures))))
                    continue
                }
                throw EncryptionError.serviceFailed("\(operation) could not reach \(url): \(error)")
            }
            let object = (try? JSONSerialization.jsonObject(with: Data(answer.readableBytesView))) as? [String: Any] ?? [:]
            if (200..<300).contains(status) { return object }
            let code = (object["__type"] as? String).map { $0.split(separator: "#").last.map(String.init) ?? $0 } ?? "HTTP\(status)"
            let message = object["message"] as? String ?? object["Message"] as? String ?? ""
            let transient = status >= 500 || code == "ThrottlingException" || code == "KMSInternalException"
            if transient, failures + 1 < settings.maximumAttempts {
                failures += 1
                logger.notice("KMS request failed; retrying", metadata: ["operation": "\(operation)", "code": "\(code)", "attempt": "\(failures)"])
                try await Task.sleep(for: .milliseconds(Int.random(in: 50...(100 << failures))))
                continue
            }
            switch code {
            case "NotFoundException", "DisabledException", "KMSInvalidStateException", "AccessDeniedException", "InvalidKeyUsageException",
                "IncorrectKeyException", "InvalidCiphertextException", "KeyUnavailableException":
                throw EncryptionError.keyUnavailable(keyID: keyID, code: code, message: message)
            default:
                throw EncryptionError.serviceFailed("\(operation) failed: \(code) \(message)")
            }
        }
    }

    private static func bytes(_ value: Any?) -> [UInt8]? {
        (value as? String).flatMap { Data(base64Encoded: $0) }.map(Array.init)
    }
}
