import ArgumentParser
import BlobStore
import Foundation
import Lifecycle
import Logging
import Metadata
import NIOHTTP1
import Server

/// `wharf gc`: a complete garbage collection on a running server, through its API.
struct CollectGarbage: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "gc",
        abstract: "Collect garbage now on a running Wharf (continuous collection runs anyway).",
        discussion: "Needs a system administrator's credentials (see `wharf admin --help`)."
    )

    @OptionGroup var connection: Connection

    @Flag(name: .customLong("dry-run"), help: "Report what would be deleted; delete nothing.")
    var dryRun = false

    @Option(name: .customLong("grace-seconds"), help: "Override the grace window for this run.")
    var graceSeconds: Int?

    func run() async throws {
        let client = try connection.client()
        var query = "?dryRun=\(dryRun)"
        if let graceSeconds { query += "&graceSeconds=\(graceSeconds)" }
        guard let report = try await client.call(.POST, "/gc" + query) as? [String: Any], !connection.json else { return }
        func number(_ key: String) -> Int { (report[key] as? NSNumber)?.intValue ?? 0 }
        let verb = dryRun ? "would delete" : "deleted"
        print(
            """
            \(verb) \(number("deletedBlobs")) blobs (\(number("reclaimedBytes")) bytes), \(number("deletedManifests")) manifests, \
            \(number("deletedUploads")) abandoned uploads, \(number("removedLinks")) repository links, \
            \(number("orphanFiles")) orphan files (\(number("orphanBytes")) bytes), \(number("deletedScans")) scan results
            """)
        if dryRun {
            for candidate in (report["candidates"] as? [String] ?? []).prefix(200) { print("  \(candidate)") }
        }
        for error in report["errors"] as? [String] ?? [] { print("error: \(error)") }
    }
}

/// `wharf fsck`: checks (and repairs) a data folder directly; the server may be stopped.
struct Fsck: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Check that metadata and blob bytes agree; --repair fixes what can be fixed.",
        discussion: """
            Verifies that every recorded blob exists with its size and digest, that every manifest's blobs \
            are present in its repository, and that no file is unaccounted for. Exits non-zero when problems \
            remain. Repairs are best done while the server is stopped.
            """
    )

    @OptionGroup var options: ConfigurationOptions

    @Flag(help: "Fix what can be fixed without guessing.")
    var repair = false

    @Flag(name: .customLong("skip-digests"), help: "Check existence and sizes only (much faster on big registries).")
    var skipDigests = false

    @Flag(help: "Print the report as JSON.")
    var json = false

    func run() async throws {
        let configuration = try options.resolve()
        var logger = Logger(label: "wharf-fsck")
        logger.logLevel = .warning
        let storage = try await BlobStorage.open(configuration: configuration, environment: ProcessInfo.processInfo.environment, logger: logger)
        let metadata: MetadataStore
        do {
            metadata = try await MetadataStore.open(url: configuration.resolvedDatabaseURL, logger: logger)
        } catch {
            await storage.close()
            throw error
        }
        let report: ConsistencyReport
        do {
            let encryption = EncryptionSetup.forMaintenance(configuration: configuration, metadata: metadata, logger: logger)
            report = try await ConsistencyChecker(metadata: metadata, blobs: storage.store, encryption: encryption)
                .check(verifyDigests: !skipDigests, repair: repair)
        } catch {
            await metadata.close()
            await storage.close()
            throw error
        }
        await metadata.close()
        await storage.close()
        if json {
            let encoder = JSONEncoder()
            encoder.outputFormatting = [.prettyPrinted, .sortedKeys]
            print(String(decoding: try encoder.encode(report), as: UTF8.self))
        } else {
            print("checked \(report.checkedBlobs) blobs (\(report.checkedBytes) bytes)\(skipDigests ? ", digests not verified" : "")")
            for (title, items) in [
                ("missing blobs", report.missingBlobs), ("size mismatches", report.sizeMismatches), ("corrupt blobs", report.corruptBlobs),
                ("orphan files", report.orphanFiles), ("orphan uploads", report.orphanUploads), ("dangling references", report.danglingReferences),
                ("encrypted copies not decrypted", report.undecryptedCopies),
            ] {
                guard !items.isEmpty else { continue }
                print("\(title): \(items.count)")
                for item in items.prefix(100) { print("  \(item)") }
            }
            if report.unlinkedBlobs > 0 { print("\(report.unlinkedBlobs) blobs are unreferenced and await garbage collection") }
            for repairLine in report.repairs { print("repaired: \(repairLine)") }
            print(report.isClean ? "clean" : (repair ? "problems found; repairs listed above" : "problems found; run with --repair to fix what can be fixed"))
        }
        if !report.isClean && !repair { throw ExitCode(1) }
    }
}
