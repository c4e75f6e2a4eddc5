import Foundation
import Logging
import Metadata
import Testing

/// The metadata engines a test runs against: SQLite always, PostgreSQL when the test script started
/// one (`WHARF_TEST_POSTGRES_URL`). Under `CI=true` a missing PostgreSQL is a failure, not a skip.
enum Engine: String, CaseIterable, CustomTestStringConvertible, Sendable {
    case sqlite
    case postgres

    var testDescription: String { rawValue }

    static var available: [Engine] {
        let environment = ProcessInfo.processInfo.environment
        if environment["WHARF_TEST_POSTGRES_URL"] != nil || environment["CI"] == "true" { return [.sqlite, .postgres] }
        return [.sqlite]
    }
}

enum TestDatabases {
    static let logger: Logger = {
        var logger = Logger(label: "test")
        logger.logLevel = .warning
        return logger
    }()

    /// A fresh, migrated, empty metadata store on `engine`, dropped after `body`.
    static func withStore<T>(_ engine: Engine, _ body: (MetadataStore) async throws -> T) async throws -> T {
        switch engine {
        case .sqlite:
            let directory = FileManager.default.temporaryDirectory.appendingPathComponent("wharf-test-\(UUID().uuidString)")
            try FileManager.default.createDirectory(at: directory, withIntermediateDirectories: true)
            defer { try? FileManager.default.removeItem(at: directory) }
            let store = try await MetadataStore.open(url: "sqlite:\(directory.path)/wharf.db", logger: logger)
            do {
                let result = try await body(store)
                await store.close()
                return result
            } catch {
                await store.close()
                throw error
            }
        case .postgres:
            guard let adminURL = ProcessInfo.processInfo.environment["WHARF_TEST_POSTGRES_URL"] else {
                throw TestSetupError("CI=true but WHARF_TEST_POSTGRES_URL is not set: the test script must start PostgreSQL")
            }
            let name = "wharf_test_\(UUID().uuidString.replacingOccurrences(of: "-", with: "").lowercased().prefix(16))"
            let admin = try await Database.open(url: adminURL, logger: logger)
            _ = try await admin.read { try await $0.raw("CREATE DATABASE \(unsafeRaw: name)").run() }
            let url = replacingDatabase(in: adminURL, with: name)
            do {
                let store = try await MetadataStore.open(url: url, logger: logger)
                let result: T
                do {
                    result = try await body(store)
                } catch {
                    await store.close()
                    throw error
                }
                await store.close()
                _ = try? await admin.read { try await $0.raw("DROP DATABASE \(unsafeRaw: name) WITH (FORCE)").run() }
                await admin.close()
                return result
            } catch {
                _ = try? await admin.read { try await $0.raw("DROP DATABASE \(unsafeRaw: name) WITH (FORCE)").run() }
                await admin.close()
                throw error
            }
        }
    }

    static func replacingDatabase(in url: String, with database: String) -> String {
        var components = URLComponents(string: url)!
        components.path = "/" + database
        return components.string!
    }
}

struct TestSetupError: Error, CustomStringConvertible {
    let description: String
    init(_ description: String) { self.description = description }
}
