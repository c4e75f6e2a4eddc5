import AWSSigning
import Access
import Testing

@testable import ECR

/// The verifying side end to end: requests signed here (with the same primitives the vectors pin
/// down) are accepted, and each way a request can be wrong yields AWS's exception.
@Suite("SigV4 verification")
struct SigV4VerifierTests {
    let secret = "wJalrXUtnFEMI/K7MDENG+bPxRfiCYEXAMPLEKEY"
    let owner = Identity(kind: .user, name: "alice", id: 7, isAdmin: false)
    let now = SigV4Verifier.parseAmzDate("20261128T120000Z")!

    var verifier: SigV4Verifier {
        let secret = self.secret, owner = self.owner
        return SigV4Verifier(lookUp: { key in key == "WKIATESTKEY000000000" ? (secret, owner) : nil })
    }

    func signed(
        body: String = "{}", amzDate: String = "20261128T120000Z", secret: String? = nil, service: String = "ecr",
        keyID: String = "WKIATESTKEY000000000", contentHash: String? = nil, tamper: String? = nil,
        signTarget: Bool = true
    ) -> AWSJSONRequest {
        var headers: [(name: String, value: String)] = [
            ("Content-Type", "application/x-amz-json-1.1"), ("host", "127.0.0.1:5000"), ("X-Amz-Date", amzDate),
            ("X-Amz-Target", "AmazonEC2ContainerRegistry_V20150921.DescribeRepositories"),
        ]
        var signedNames = ["content-type", "host", "x-amz-date"] + (signTarget ? ["x-amz-target"] : [])
        if let contentHash {
            headers.append(("X-Amz-Content-Sha256", contentHash))
            signedNames.insert("x-amz-content-sha256", at: 2)
        }
        let payloadHash = contentHash ?? SigV4.sha256Hex(Array(body.utf8))
        let canonical = SigV4.canonicalRequest(
            method: "POST", path: "/", query: "", headers: headers.map { ($0.name, $0.value) },
            signedHeaders: signedNames, payloadHash: payloadHash)
        let scope = "\(amzDate.prefix(8))/eu-west-1/\(service)/aws4_request"
        let key = SigV4.signingKey(secret: secret ?? self.secret, date: String(amzDate.prefix(8)), region: "eu-west-1", service: service)
        let signature = SigV4.signature(key: key, stringToSign: SigV4.stringToSign(amzDate: amzDate, scope: scope, canonicalRequest: canonical))
        headers.append(
            ("Authorization", "AWS4-HMAC-SHA256 Credential=\(keyID)/\(scope), SignedHeaders=\(signedNames.joined(separator: ";")), Signature=\(signature)"))
        return AWSJSONRequest(
            method: "POST", path: "/", query: "", headers: headers, body: Array((tamper ?? body).utf8),
            scheme: "http", host: "127.0.0.1:5000", source: nil)
    }

    func failure(_ request: AWSJSONRequest) async -> ECRError? {
        do {
            _ = try await verifier.verify(request, now: now)
            return nil
        } catch {
            return error as? ECRError
        }
    }

    @Test("a correctly signed request names its owner and region")
    func accepted() async throws {
        let verified = try await verifier.verify(signed(body: #"{"maxResults": 5}"#), now: now)
        #expect(verified.identity == owner)
        #expect(verified.region == "eu-west-1")
        #expect(verified.accessKeyID == "WKIATESTKEY000000000")
    }

    @Test("the wrong secret, an unknown key, another service")
    func rejected() async {
        #expect(await failure(signed(secret: "not-the-secret"))?.type == "InvalidSignatureException")
        #expect(await failure(signed(keyID: "WKIAUNKNOWN000000000"))?.type == "UnrecognizedClientException")
        #expect(await failure(signed(service: "s3"))?.type == "InvalidSignatureException")
    }

    @Test("a body changed after signing fails, whether or not its hash was declared")
    func tamperedBody() async {
        #expect(await failure(signed(body: "{}", tamper: #"{"x":1}"#))?.type == "InvalidSignatureException")
        let declared = SigV4.sha256Hex(Array("{}".utf8))
        #expect(await failure(signed(body: "{}", contentHash: declared)) == nil)
        let error = await failure(signed(body: "{}", contentHash: declared, tamper: #"{"x":1}"#))
        #expect(error?.type == "InvalidSignatureException")
        #expect(error?.message.contains("x-amz-content-sha256") == true)
    }

    @Test("a request that does not sign X-Amz-Target is refused: it could be replayed as another operation")
    func unsignedTarget() async {
        let error = await failure(signed(signTarget: false))
        #expect(error?.type == "InvalidSignatureException")
        #expect(error?.message.contains("X-Amz-Target") == true)
    }

    @Test("15 minutes of clock skew either way, and not a second more")
    func clockSkew() async {
        #expect(await failure(signed(amzDate: "20261128T114500Z")) == nil)
        #expect(await failure(signed(amzDate: "20261128T121500Z")) == nil)
        let late = await failure(signed(amzDate: "20261128T114459Z"))
        #expect(late?.type == "InvalidSignatureException")
        #expect(late?.message.hasPrefix("Signature expired: 20261128T114459Z is now earlier than 20261128T114500Z") == true)
        let early = await failure(signed(amzDate: "20261128T121501Z"))
        #expect(early?.message.hasPrefix("Signature not yet current") == true)
    }

    @Test("missing and malformed Authorization headers")
    func missing() async {
        var request = signed()
        request.headers.removeAll { $0.name == "Authorization" }
        #expect(await failure(request)?.type == "MissingAuthenticationTokenException")
        request.headers.append(("Authorization", "AWS4-HMAC-SHA256 Signature=abc"))
        #expect(await failure(request)?.type == "IncompleteSignatureException")
    }

    @Test("X-Amz-Date parses and formats in UTC, across leap years and centuries")
    func dates() {
        #expect(SigV4Verifier.parseAmzDate("19700101T000000Z") == 0)
        #expect(SigV4Verifier.parseAmzDate("20150830T123600Z") == 1_440_938_160)
        #expect(SigV4Verifier.parseAmzDate("20000229T235959Z") == 951_868_799)
        for seconds: Int64 in [0, 951_868_799, 1_440_938_160, 4_102_444_800, 1_795_894_700] {
            #expect(SigV4Verifier.parseAmzDate(SigV4Verifier.formatAmzDate(seconds)) == seconds)
        }
        for bad in ["2015-08-30T12:36:00Z", "20151330T123600Z", "20150830T123600", "20150830X123600Z"] {
            #expect(SigV4Verifier.parseAmzDate(bad) == nil, "\(bad)")
        }
    }
}
