import Foundation
import Metadata
import Testing

/// `database.url`'s PostgreSQL forms (issue 24: "sslmode"): each mode behaves as documented, and a
/// server that cannot be used fails the start at once, saying why, instead of hanging while the
/// connection pool retries forever (what Wharf did before: a wrong port or sslmode=require against
/// a server without TLS never started and never said so).
@Suite("Database URLs")
struct DatabaseURLTests {
    static var postgresURL: String? { ProcessInfo.processInfo.environment["WHARF_TEST_POSTGRES_URL"] }

    static func opening(_ url: String) async -> Result<Void, any Error> {
        do {
            let database = try await Database.open(url: url, logger: TestDatabases.logger)
            await database.close()
            return .success(())
        } catch {
            return .failure(error)
        }
    }

    @Test(
        "sslmode: disable and prefer connect to a server without TLS; require fails at once naming the cause; unknown modes are refused",
        .enabled(if: Engine.available.contains(.postgres)), .timeLimit(.minutes(1)))
    func sslModes() async throws {
        let url = try #require(Self.postgresURL, "CI=true but WHARF_TEST_POSTGRES_URL is not set")
        for mode in ["disable", "prefer", "allow"] {
            if case .failure(let error) = await Self.opening(url + "?sslmode=\(mode)") { Issue.record("sslmode=\(mode) failed: \(error)") }
        }
        let started = ContinuousClock.now
        guard case .failure(let error) = await Self.opening(url + "?sslmode=require") else {
            Issue.record("sslmode=require connected to a server without TLS")
            return
        }
        #expect("\(error)".contains("the server does not offer TLS, and sslmode=require requires it"))
        // Alone this takes milliseconds; the bound only has to tell "failed" from "retried forever"
        // (the pool's behaviour before), also while the parallel suite loads both cores.
        #expect(ContinuousClock.now - started < .seconds(45))
        guard case .failure(let unknown) = await Self.opening(url + "?sslmode=bogus") else {
            Issue.record("an unknown sslmode was accepted")
            return
        }
        #expect("\(unknown)".contains("unknown sslmode 'bogus'"))
    }

    @Test("a server that does not answer fails the start within the connect timeout", .timeLimit(.minutes(1)))
    func unreachable() async {
        let started = ContinuousClock.now
        guard case .failure(let error) = await Self.opening("postgres://postgres@127.0.0.1:1/postgres") else {
            Issue.record("connected to a closed port")
            return
        }
        #expect("\(error)".contains("cannot connect to postgres://postgres@127.0.0.1:1/postgres"))
        // Alone this takes milliseconds; the bound only has to tell "failed" from "retried forever"
        // (the pool's behaviour before), also while the parallel suite loads both cores.
        #expect(ContinuousClock.now - started < .seconds(45))
    }
}
