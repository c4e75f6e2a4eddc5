import Foundation
import HTTPTypes
import HummingbirdTesting
import NIOCore
import OCI
import Testing

@Suite("Distribution API: base, blobs, uploads")
struct BlobAPITests {
    @Test("GET /v2/ answers 200 with the API version header; other methods are refused")
    func base() async throws {
        try await Harness.withServer { client, _ in
            let response = try await client.request(.get, "/v2/")
            #expect(response.status == .ok)
            #expect(response.header("Docker-Distribution-API-Version") == "registry/2.0")
            #expect(try await client.request(.get, "/v2").status == .ok)
            let post = try await client.request(.post, "/v2/")
            #expect(post.status == .methodNotAllowed)
            #expect(post.errorCode == "UNSUPPORTED")
            #expect(post.header("Docker-Distribution-API-Version") == "registry/2.0")
            let unknown = try await client.request(.get, "/v2/a/b/whatever")
            #expect(unknown.status == .notFound)
        }
    }

    @Test("monolithic POST ?digest=, then GET, HEAD and ranges")
    func monolithicAndRanges() async throws {
        try await Harness.withServer { client, _ in
            let content = "0123456789abcdefghij"
            let digest = Digest.of(Array(content.utf8))
            let push = try await client.request(.post, "/v2/team/app/blobs/uploads/?digest=\(digest)", body: ByteBuffer(string: content))
            #expect(push.status == .created)
            #expect(push.header("Location") == "/v2/team/app/blobs/\(digest)")
            #expect(push.header("Docker-Content-Digest") == digest.description)

            let get = try await client.request(.get, "/v2/team/app/blobs/\(digest)")
            #expect(get.status == .ok)
            #expect(get.text == content)
            #expect(get.header("Docker-Content-Digest") == digest.description)
            #expect(get.header("Content-Length") == "20")

            let head = try await client.request(.head, "/v2/team/app/blobs/\(digest)")
            #expect(head.status == .ok)
            #expect(head.header("Content-Length") == "20")
            #expect(head.body.readableBytes == 0)

            let ranges: [(String, HTTPResponse.Status, String?, String?)] = [
                ("bytes=0-4", .partialContent, "01234", "bytes 0-4/20"),
                ("bytes=15-", .partialContent, "fghij", "bytes 15-19/20"),
                ("bytes=-3", .partialContent, "hij", "bytes 17-19/20"),
                ("bytes=18-100", .partialContent, "ij", "bytes 18-19/20"),
                ("bytes=20-25", .rangeNotSatisfiable, nil, "bytes */20"),
                ("bytes=0-1,5-6", .ok, content, nil),
                ("items=0-1", .ok, content, nil),
            ]
            for (header, status, body, contentRange) in ranges {
                let response = try await client.request(.get, "/v2/team/app/blobs/\(digest)", headers: [.range: header])
                #expect(response.status == status, "\(header)")
                if let body { #expect(response.text == body, "\(header)") }
                #expect(response.header("Content-Range") == contentRange, "\(header)")
            }
        }
    }

    @Test("blobs are per repository; unknown, malformed and mismatching digests are refused")
    func blobErrors() async throws {
        try await Harness.withServer { client, _ in
            let digest = try await client.pushBlob("secret layer", to: "team/app")
            let elsewhere = try await client.request(.get, "/v2/other/app/blobs/\(digest)")
            #expect(elsewhere.status == .notFound)
            #expect(elsewhere.errorCode == "BLOB_UNKNOWN")
            #expect(try await client.request(.head, "/v2/other/app/blobs/\(digest)").status == .notFound)

            let malformed = try await client.request(.get, "/v2/team/app/blobs/sha256:xyz")
            #expect(malformed.status == .badRequest)
            #expect(malformed.errorCode == "DIGEST_INVALID")

            let wrong = Digest.of(Array("something else".utf8))
            let mismatch = try await client.request(.post, "/v2/team/app/blobs/uploads/?digest=\(wrong)", body: ByteBuffer(string: "actual"))
            #expect(mismatch.status == .badRequest)
            #expect(mismatch.errorCode == "DIGEST_INVALID")
            #expect(try await client.request(.head, "/v2/team/app/blobs/\(wrong)").status == .notFound)

            let badName = try await client.request(.get, "/v2/Team/App/blobs/\(digest)")
            #expect(badName.status == .badRequest)
            #expect(badName.errorCode == "NAME_INVALID")
        }
    }

    @Test("POST then PUT with the whole blob")
    func postThenPut() async throws {
        try await Harness.withServer { client, _ in
            let start = try await client.request(.post, "/v2/team/app/blobs/uploads/")
            #expect(start.status == .accepted)
            let location = try #require(start.header("Location"))
            #expect(location.hasPrefix("/v2/team/app/blobs/uploads/"))
            #expect(start.header("Docker-Upload-UUID") == String(location.split(separator: "/").last!))
            #expect(start.header("Range") == "0-0")
            let content = "whole blob in the PUT"
            let digest = Digest.of(Array(content.utf8))
            let put = try await client.request(.put, "\(location)?digest=\(digest)", body: ByteBuffer(string: content))
            #expect(put.status == .created)
            #expect(put.header("Location") == "/v2/team/app/blobs/\(digest)")
            #expect(try await client.request(.get, "/v2/team/app/blobs/\(digest)").text == content)
            // The session is gone once completed: a stale location answers 404 cleanly.
            let stale = try await client.request(.patch, location, body: ByteBuffer(string: "more"))
            #expect(stale.status == .notFound)
            #expect(stale.errorCode == "BLOB_UPLOAD_UNKNOWN")
            #expect(try await client.request(.get, location).errorCode == "BLOB_UPLOAD_UNKNOWN")
        }
    }

    @Test("chunked PATCH with Content-Range: in order 202, out of order and retries 416 with the current Range")
    func chunked() async throws {
        try await Harness.withServer { client, _ in
            let location = try #require(try await client.request(.post, "/v2/team/app/blobs/uploads/").header("Location"))
            let chunks = ["first chunk|", "second chunk|", "third"]
            var offset = 0
            for (i, chunk) in chunks.enumerated() {
                let end = offset + chunk.utf8.count - 1
                let response = try await client.request(
                    .patch, location, headers: [.contentRange: "\(offset)-\(end)", .contentType: "application/octet-stream"], body: ByteBuffer(string: chunk))
                #expect(response.status == .accepted, "chunk \(i): \(response.text)")
                #expect(response.header("Range") == "0-\(end)")
                #expect(response.header("Location") == location)
                offset = end + 1
                if i == 0 {
                    // Retrying the chunk just sent: 416, and the Range tells where to resume.
                    let retry = try await client.request(.patch, location, headers: [.contentRange: "0-\(end)"], body: ByteBuffer(string: chunk))
                    #expect(retry.status == .rangeNotSatisfiable)
                    #expect(retry.header("Range") == "0-\(end)")
                    #expect(retry.header("Location") == location)
                    #expect(retry.errorCode == "BLOB_UPLOAD_INVALID")
                    // Skipping ahead: also 416.
                    let skip = try await client.request(.patch, location, headers: [.contentRange: "\(end + 10)-\(end + 12)"], body: ByteBuffer(string: "xyz"))
                    #expect(skip.status == .rangeNotSatisfiable)
                }
            }
            let status = try await client.request(.get, location)
            #expect(status.status == .noContent)
            #expect(status.header("Range") == "0-\(offset - 1)")
            #expect(status.header("Docker-Upload-UUID") != nil)
            // A Content-Range that disagrees with the body is refused and changes nothing.
            let liar = try await client.request(.patch, location, headers: [.contentRange: "\(offset)-\(offset + 99)"], body: ByteBuffer(string: "short"))
            #expect(liar.status == .badRequest)
            #expect(try await client.request(.get, location).header("Range") == "0-\(offset - 1)")
            let malformed = try await client.request(.patch, location, headers: [.contentRange: "bytes=abc"], body: ByteBuffer(string: "x"))
            #expect(malformed.errorCode == "BLOB_UPLOAD_INVALID")

            let whole = chunks.joined()
            let digest = Digest.of(Array(whole.utf8))
            let wrong = try await client.request(.put, "\(location)?digest=sha256:\(String(repeating: "0", count: 64))")
            #expect(wrong.status == .badRequest)
            #expect(wrong.errorCode == "DIGEST_INVALID")
            // A digest mismatch discards the session.
            #expect(try await client.request(.get, location).status == .notFound)

            // Again, this time finishing correctly, with the last chunk in the PUT.
            let second = try #require(try await client.request(.post, "/v2/team/app/blobs/uploads/").header("Location"))
            let firstPart = String(whole.prefix(10)), rest = String(whole.dropFirst(10))
            #expect(try await client.request(.patch, second, headers: [.contentRange: "0-9"], body: ByteBuffer(string: firstPart)).status == .accepted)
            let put = try await client.request(
                .put, "\(second)?digest=\(digest)", headers: [.contentRange: "10-\(whole.utf8.count - 1)"], body: ByteBuffer(string: rest))
            #expect(put.status == .created)
            #expect(try await client.request(.get, "/v2/team/app/blobs/\(digest)").text == whole)
        }
    }

    @Test("streamed PATCH without Content-Range, then PUT without a body")
    func streamed() async throws {
        try await Harness.withServer { client, _ in
            let location = try #require(try await client.request(.post, "/v2/team/app/blobs/uploads/").header("Location"))
            let big = [UInt8]((0..<3_000_000).map { UInt8(truncatingIfNeeded: $0 &* 7) })
            let patch = try await client.request(.patch, location, body: ByteBuffer(bytes: big))
            #expect(patch.status == .accepted)
            #expect(patch.header("Range") == "0-\(big.count - 1)")
            let more = try await client.request(.patch, location, body: ByteBuffer(bytes: [1, 2, 3]))
            #expect(more.header("Range") == "0-\(big.count + 2)")
            let digest = Digest.of(big + [1, 2, 3])
            #expect(try await client.request(.put, "\(location)?digest=\(digest)").status == .created)
            let get = try await client.request(.get, "/v2/team/app/blobs/\(digest)")
            #expect(Array(get.body.readableBytesView) == big + [1, 2, 3])
        }
    }

    @Test("DELETE cancels an upload session")
    func cancel() async throws {
        try await Harness.withServer { client, server in
            let location = try #require(try await client.request(.post, "/v2/team/app/blobs/uploads/").header("Location"))
            _ = try await client.request(.patch, location, body: ByteBuffer(string: "partial"))
            #expect(try await client.request(.delete, location).status == .noContent)
            #expect(try await client.request(.get, location).status == .notFound)
            #expect(try await client.request(.delete, location).errorCode == "BLOB_UPLOAD_UNKNOWN")
            #expect(try await server.blobStore.allUploads().isEmpty)
            // A session is bound to its repository, and ids are strictly UUIDs.
            let other = try #require(try await client.request(.post, "/v2/team/app/blobs/uploads/").header("Location"))
            let id = other.split(separator: "/").last!
            #expect(try await client.request(.get, "/v2/other/repo/blobs/uploads/\(id)").status == .notFound)
            #expect(try await client.request(.get, "/v2/team/app/blobs/uploads/..%2F..%2Fetc").status == .notFound)
        }
    }

    @Test("cross-repository mount: 201 when the source holds the blob, otherwise an upload session")
    func mount() async throws {
        try await Harness.withServer { client, _ in
            let digest = try await client.pushBlob("shared base layer", to: "base/image")
            let mounted = try await client.request(.post, "/v2/team/app/blobs/uploads/?mount=\(digest)&from=base/image")
            #expect(mounted.status == .created)
            #expect(mounted.header("Location") == "/v2/team/app/blobs/\(digest)")
            #expect(mounted.header("Docker-Content-Digest") == digest.description)
            #expect(try await client.request(.get, "/v2/team/app/blobs/\(digest)").text == "shared base layer")

            let fallback = try await client.request(.post, "/v2/team/other/blobs/uploads/?mount=\(digest)&from=nowhere/else")
            #expect(fallback.status == .accepted)
            #expect(fallback.header("Location")?.hasPrefix("/v2/team/other/blobs/uploads/") == true)
            #expect(try await client.request(.head, "/v2/team/other/blobs/\(digest)").status == .notFound)
        }
    }

    @Test("sha512 everywhere: upload sessions, monolithic pushes, downloads")
    func sha512() async throws {
        try await Harness.withServer { client, _ in
            let content = Array("sha512 content".utf8)
            let digest = Digest.of(content, algorithm: .sha512)
            let start = try await client.request(.post, "/v2/team/app/blobs/uploads/?digest-algorithm=sha512")
            #expect(start.status == .accepted)
            let location = try #require(start.header("Location"))
            #expect(try await client.request(.patch, location, body: ByteBuffer(bytes: content)).status == .accepted)
            #expect(try await client.request(.put, "\(location)?digest=\(digest)").status == .created)
            #expect(Array(try await client.request(.get, "/v2/team/app/blobs/\(digest)").body.readableBytesView) == content)

            // A sha256 session can still be closed with a sha512 digest (the server re-hashes).
            let other = Array("other".utf8)
            let location2 = try #require(try await client.request(.post, "/v2/team/app/blobs/uploads/").header("Location"))
            _ = try await client.request(.patch, location2, body: ByteBuffer(bytes: other))
            #expect(try await client.request(.put, "\(location2)?digest=\(Digest.of(other, algorithm: .sha512))").status == .created)

            try await client.pushBlob(Array("mono512".utf8), to: "team/app", algorithm: .sha512)
            let unsupported = try await client.request(.post, "/v2/team/app/blobs/uploads/?digest-algorithm=md5")
            #expect(unsupported.errorCode == "DIGEST_INVALID")
        }
    }

    @Test("DELETE of a blob unlinks it from the repository")
    func deleteBlob() async throws {
        try await Harness.withServer { client, _ in
            let digest = try await client.pushBlob("to delete", to: "team/app")
            try await client.pushBlob("to delete", to: "team/keep")
            #expect(try await client.request(.delete, "/v2/team/app/blobs/\(digest)").status == .accepted)
            #expect(try await client.request(.head, "/v2/team/app/blobs/\(digest)").status == .notFound)
            #expect(try await client.request(.delete, "/v2/team/app/blobs/\(digest)").errorCode == "BLOB_UNKNOWN")
            #expect(try await client.request(.get, "/v2/team/keep/blobs/\(digest)").text == "to delete")
        }
    }

    @Test("two clients uploading the same blob at once both succeed")
    func concurrentSameBlob() async throws {
        try await Harness.withServer { client, _ in
            let content = String(repeating: "same bytes ", count: 10_000)
            let digest = Digest.of(Array(content.utf8))
            let first = try #require(try await client.request(.post, "/v2/team/a/blobs/uploads/").header("Location"))
            let second = try #require(try await client.request(.post, "/v2/team/b/blobs/uploads/").header("Location"))
            _ = try await client.request(.patch, first, body: ByteBuffer(string: content))
            _ = try await client.request(.patch, second, body: ByteBuffer(string: content))
            #expect(try await client.request(.put, "\(first)?digest=\(digest)").status == .created)
            #expect(try await client.request(.put, "\(second)?digest=\(digest)").status == .created)
            #expect(try await client.request(.get, "/v2/team/a/blobs/\(digest)").text == content)
            #expect(try await client.request(.get, "/v2/team/b/blobs/\(digest)").text == content)
        }
    }

    @Test("pushing a blob the registry already holds links it and keeps the stored file; the copy is deleted")
    func pushAgain() async throws {
        let data = try Harness.temporaryDirectory()
        defer { try? FileManager.default.removeItem(at: data) }
        try await Harness.withServer(data: data) { client, _ in
            let content = String(repeating: "pushed twice ", count: 20_000)
            let digest = try await client.pushBlob(content, to: "team/a")
            let blobFile = data.appendingPathComponent("blobs/sha256/\(digest.encoded.prefix(2))/\(digest.encoded)").path
            let inode = try #require(try FileManager.default.attributesOfItem(atPath: blobFile)[.systemFileNumber] as? Int)

            // Monolithic into a second repository, chunked into a third.
            #expect(try await client.request(.post, "/v2/team/b/blobs/uploads/?digest=\(digest)", body: ByteBuffer(string: content)).status == .created)
            let location = try #require(try await client.request(.post, "/v2/team/c/blobs/uploads/").header("Location"))
            let half = content.utf8.count / 2
            let first = try await client.request(
                .patch, location, headers: [.contentRange: "0-\(half - 1)"], body: ByteBuffer(string: String(content.prefix(half))))
            #expect(first.status == .accepted)
            let next = try #require(first.header("Location"))
            _ = try await client.request(
                .patch, next, headers: [.contentRange: "\(half)-\(content.utf8.count - 1)"], body: ByteBuffer(string: String(content.dropFirst(half))))
            #expect(try await client.request(.put, "\(next)\(next.contains("?") ? "&" : "?")digest=\(digest)").status == .created)

            for repository in ["team/a", "team/b", "team/c"] {
                #expect(try await client.request(.get, "/v2/\(repository)/blobs/\(digest)").text == content)
            }
            #expect(try FileManager.default.attributesOfItem(atPath: blobFile)[.systemFileNumber] as? Int == inode)
            let uploads = data.appendingPathComponent("uploads").path
            var left: [String] = []
            for _ in 0..<500 {
                left = try FileManager.default.contentsOfDirectory(atPath: uploads)
                if left.isEmpty { break }
                try await Task.sleep(for: .milliseconds(10))
            }
            #expect(left.isEmpty)
        }
    }
}
