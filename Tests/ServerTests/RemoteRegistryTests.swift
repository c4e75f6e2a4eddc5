import AsyncHTTPClient
import Foundation
import Hummingbird
import HummingbirdTesting
import NIOCore
import OCI
import Replication
import Synchronization
import Testing

/// Replication's client against a scripted registry: what real registries answer is covered by the
/// e2e tests (Wharf, CNCF Distribution); here the answers no well-behaved registry gives.
@Suite("Replication client: token auth and origins", .timeLimit(.minutes(1)))
struct RemoteRegistryTests {
    @Test("a bearer challenge is answered with a token fetched with Basic credentials, then cached; another origin never gets credentials")
    func tokenAuthAndOrigins() async throws {
        let seen = Mutex<[String]>([])
        let ports = Mutex<(origin: Int, elsewhere: Int)>((0, 0))
        let elsewhere = Router()
        elsewhere.put("/upload") { request, _ -> Response in
            seen.withLock { $0.append("elsewhere PUT \(request.headers[.authorization] ?? "none")") }
            return Response(status: .created)
        }
        let router = Router()
        router.get("/token") { request, _ -> Response in
            seen.withLock { $0.append("token \(request.uri.query ?? "")") }
            let expected = "Basic " + Data("robot:secret".utf8).base64EncodedString()
            guard request.headers[.authorization] == expected else { return Response(status: .unauthorized) }
            return Response(
                status: .ok, headers: [.contentType: "application/json"], body: .init(byteBuffer: ByteBuffer(string: #"{"token":"t1","expires_in":300}"#)))
        }
        router.post("/v2/team/app/blobs/uploads/") { request, _ -> Response in
            let (origin, other) = ports.withLock { ($0.origin, $0.elsewhere) }
            guard request.headers[.authorization] == "Bearer t1" else {
                seen.withLock { $0.append("challenged \(request.headers[.authorization] ?? "none")") }
                return Response(
                    status: .unauthorized,
                    headers: [.wwwAuthenticate: #"Bearer realm="http://127.0.0.1:\#(origin)/token",service="scripted""#])
            }
            seen.withLock { $0.append("POST with token") }
            return Response(status: .accepted, headers: [.location: "http://127.0.0.1:\(other)/upload"])
        }
        let originResponder = router.buildResponder()
        try await Application(router: elsewhere, configuration: .init(address: .hostname("127.0.0.1", port: 0))).test(.live) { other in
            try await Application(responder: originResponder, configuration: .init(address: .hostname("127.0.0.1", port: 0))).test(.live) { origin in
                let originPort = try #require(origin.port)
                ports.withLock { $0 = (originPort, try! #require(other.port)) }
                let http = HTTPClient(eventLoopGroupProvider: .singleton)
                do {
                    let remote = RemoteRegistry(
                        baseURL: "http://127.0.0.1:\(originPort)", credentials: .basic(username: "robot", password: "secret"), http: http)
                    let location = try #require(try await remote.startUpload(in: "team/app"))
                    #expect(location.hasSuffix("/upload") && !location.contains(":\(originPort)/"))
                    let bytes = ByteBuffer(string: "layer")
                    try await remote.finishUpload(location, digest: Digest.of(bytes), lastBytes: bytes, in: "team/app")
                    // The token is cached for the scope: a second upload asks the token service nothing.
                    _ = try await remote.startUpload(in: "team/app")
                } catch {
                    try await http.shutdown()
                    throw error
                }
                try await http.shutdown()
            }
        }
        let log = seen.withLock { $0 }
        #expect(log.first == "challenged none")
        #expect(log.filter { $0.hasPrefix("token ") } == ["token service=scripted&scope=repository%3Ateam%2Fapp%3Apull%2Cpush"])
        #expect(log.filter { $0 == "POST with token" }.count == 2)
        #expect(log.contains("elsewhere PUT none"))
    }
}
