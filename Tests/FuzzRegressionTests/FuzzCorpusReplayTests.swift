import Foundation
import FuzzTargets
import Testing

/// Every committed fuzz input runs through its target on every test run: the seed corpora
/// (`Fuzz/corpus/<target>`) and each input that once crashed Wharf (`Fuzz/regressions/<target>`,
/// one file per fixed bug). A trap here kills the test process, which fails the run.
@Suite("Fuzz corpora and crash regressions replay without a trap")
struct FuzzCorpusReplayTests {
    static let root = URL(fileURLWithPath: #filePath).deletingLastPathComponent().deletingLastPathComponent().deletingLastPathComponent()
        .appendingPathComponent("Fuzz")

    static func inputs(_ folder: String, _ target: String) -> [URL] {
        let directory = root.appendingPathComponent(folder).appendingPathComponent(target)
        return ((try? FileManager.default.contentsOfDirectory(at: directory, includingPropertiesForKeys: nil)) ?? [])
            .filter { !$0.lastPathComponent.hasPrefix(".") }.sorted { $0.path < $1.path }
    }

    @Test("every target has a seed corpus, and every corpus folder names a target")
    func corporaExist() throws {
        let folders = try FileManager.default.contentsOfDirectory(atPath: Self.root.appendingPathComponent("corpus").path)
        #expect(Set(folders) == Set(FuzzTargets.all.keys))
        for target in FuzzTargets.all.keys { #expect(!Self.inputs("corpus", target).isEmpty, "\(target) has no seeds") }
    }

    @Test("seeds and crash regressions", arguments: FuzzTargets.all.keys.sorted())
    func replay(_ target: String) async throws {
        let run = try #require(FuzzTargets.all[target])
        let inputs = try (Self.inputs("corpus", target) + Self.inputs("regressions", target)).map { Array(try Data(contentsOf: $0)) }
        // Targets wait for async parsers as libFuzzer needs (a semaphore): run them on a thread of
        // their own, never on the cooperative pool those parsers need.
        await withCheckedContinuation { (done: CheckedContinuation<Void, Never>) in
            Thread.detachNewThread {
                for input in inputs { run(input) }
                done.resume()
            }
        }
    }
}
