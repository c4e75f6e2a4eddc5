import Foundation
import Testing

/// The shared test data folder (`../shared/testdata` beside the repository, or `WHARF_TESTDATA`).
/// A missing folder fails the test with a message saying where it was looked for.
enum TestData {
    static var root: URL {
        if let configured = ProcessInfo.processInfo.environment["WHARF_TESTDATA"] { return URL(fileURLWithPath: configured) }
        let repository = URL(fileURLWithPath: #filePath).deletingLastPathComponent().deletingLastPathComponent().deletingLastPathComponent()
        return repository.deletingLastPathComponent().appendingPathComponent("shared/testdata")
    }

    static func url(_ parts: String...) throws -> URL {
        let url = parts.reduce(root) { $0.appendingPathComponent($1) }
        guard FileManager.default.fileExists(atPath: url.path) else {
            Issue.record("shared test data is missing: \(url.path) (expected ../shared/testdata next to the repository; set WHARF_TESTDATA to its location)")
            throw CocoaError(.fileNoSuchFile)
        }
        return url
    }
}
