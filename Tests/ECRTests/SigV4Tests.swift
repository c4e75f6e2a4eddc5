import AWSSigning
import Crypto
import Testing

@testable import ECR

/// The AWS SigV4 test suite's vectors (AKID `AKIDEXAMPLE`, region us-east-1, 2015-08-30T12:36:00Z),
/// plus a real ECR CreateRepository request as awscli signs it.
@Suite("SigV4 test vectors")
struct SigV4Tests {
    let secret = "wJalrXUtnFEMI/K7MDENG+bPxRfiCYEXAMPLEKEY"
    let amzDate = "20150830T123600Z"
    let emptyHash = SigV4.sha256Hex([UInt8]())

    func sign(
        method: String, headers: [(String, String)], signed: [String], payloadHash: String, service: String = "service"
    ) -> (canonicalHash: String, signature: String) {
        let canonical = SigV4.canonicalRequest(method: method, path: "/", query: "", headers: headers, signedHeaders: signed, payloadHash: payloadHash)
        let toSign = SigV4.stringToSign(amzDate: amzDate, scope: "20150830/us-east-1/\(service)/aws4_request", canonicalRequest: canonical)
        let key = SigV4.signingKey(secret: secret, date: "20150830", region: "us-east-1", service: service)
        return (SigV4.sha256Hex(Array(canonical.utf8)), SigV4.signature(key: key, stringToSign: toSign))
    }

    @Test("get-vanilla: canonical request hash, signing key and signature")
    func getVanilla() {
        let result = sign(
            method: "GET", headers: [("Host", "example.amazonaws.com"), ("X-Amz-Date", amzDate)], signed: ["host", "x-amz-date"], payloadHash: emptyHash)
        #expect(result.canonicalHash == "bb579772317eb040ac9ed261061d46c1f17a8133879d6129b6e1c25292927e63")
        let key = SigV4.signingKey(secret: secret, date: "20150830", region: "us-east-1", service: "service")
        #expect(key.withUnsafeBytes { SigV4.hex($0) } == "938127b5336810ddb6a5d6af445fcac9e371f9ed418ed386b022aed82901be75")
        #expect(result.signature == "5fa00fa31553b73ebf1942676e86291e8372ff2a2260956d9b8aae1d763fbf31")
    }

    @Test("post-vanilla")
    func postVanilla() {
        let result = sign(
            method: "POST", headers: [("Host", "example.amazonaws.com"), ("X-Amz-Date", amzDate)], signed: ["host", "x-amz-date"], payloadHash: emptyHash)
        #expect(result.signature == "5da7c1a2acd57cee7505fc6676e4e544621c30862966e37dddb68e92efbe5d6b")
    }

    @Test("get-header-value-trim: values trimmed, inner spaces collapsed")
    func headerValueTrim() {
        let headers = [("Host", "example.amazonaws.com"), ("My-Header1", " value1"), ("My-Header2", " \"a   b   c\""), ("X-Amz-Date", amzDate)]
        let result = sign(method: "GET", headers: headers, signed: ["host", "my-header1", "my-header2", "x-amz-date"], payloadHash: emptyHash)
        #expect(result.signature == "acc3ed3afb60bb290fc8d2dd0098b9911fcaa05412b367055dee359757a9c736")
    }

    @Test("duplicate headers join with commas in the canonical request")
    func duplicateHeaders() {
        let canonical = SigV4.canonicalRequest(
            method: "GET", path: "/", query: "", headers: [("My-Header1", "value2"), ("My-Header1", "value1")],
            signedHeaders: ["my-header1"], payloadHash: emptyHash)
        #expect(canonical.contains("my-header1:value2,value1\n"))
    }

    @Test("an ECR CreateRepository request as awscli signs it")
    func ecrCreateRepository() {
        let body = #"{"repositoryName": "myapp", "imageTagMutability": "IMMUTABLE", "imageScanningConfiguration": {"scanOnPush": true}}"#
        #expect(body.utf8.count == 114)
        let bodyHash = SigV4.sha256Hex(Array(body.utf8))
        #expect(bodyHash == "737fd18d84fe46118ebb3eb80daf6a6f8814ae482c82300cf3e3c51680b15c17")
        let headers = [
            ("Content-Type", "application/x-amz-json-1.1"), ("Host", "127.0.0.1:5000"), ("X-Amz-Date", amzDate),
            ("X-Amz-Target", "AmazonEC2ContainerRegistry_V20150921.CreateRepository"),
        ]
        let result = sign(
            method: "POST", headers: headers, signed: ["content-type", "host", "x-amz-date", "x-amz-target"], payloadHash: bodyHash, service: "ecr")
        #expect(result.canonicalHash == "1612e35bec06d25029cccd92b89e0b7a045ea24546b4bad5b61782921d11d8d7")
        let key = SigV4.signingKey(secret: secret, date: "20150830", region: "us-east-1", service: "ecr")
        #expect(key.withUnsafeBytes { SigV4.hex($0) } == "68ce73d35403d53a9f776a559e665298d12bf3a0b3404de623a49073e6efe760")
        #expect(result.signature == "436a3507d8642e966d7a7c8add272318ed0c0aa6e63ad9225958fa03aee31237")
    }

    @Test("Authorization headers parse; malformed ones do not")
    func parsing() throws {
        let header =
            "AWS4-HMAC-SHA256 Credential=AKIDEXAMPLE/20150830/us-east-1/ecr/aws4_request, SignedHeaders=content-type;host;x-amz-date;x-amz-target, Signature=436a3507d8642e966d7a7c8add272318ed0c0aa6e63ad9225958fa03aee31237"
        let parsed = try #require(SigV4.Authorization(header: header))
        #expect(parsed.accessKeyID == "AKIDEXAMPLE")
        #expect(parsed.region == "us-east-1")
        #expect(parsed.service == "ecr")
        #expect(parsed.signedHeaders == ["content-type", "host", "x-amz-date", "x-amz-target"])
        for bad in [
            "Basic abc", "AWS4-HMAC-SHA256 Credential=AKID/2015/us-east-1/ecr/aws4_request, SignedHeaders=host, Signature=x",
            "AWS4-HMAC-SHA256 SignedHeaders=host, Signature=x",
            "AWS4-HMAC-SHA256 Credential=AKID/20150830/us-east-1/ecr/other, SignedHeaders=host, Signature=x",
        ] {
            #expect(SigV4.Authorization(header: bad) == nil, "\(bad)")
        }
    }
}
