import ArgumentParser
import Foundation
import Scanner

/// `wharf scan IMAGE`: packages, vulnerabilities and SBOMs of an image, offline.
struct Scan: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Scan an image for vulnerable packages, or write its SBOM.",
        discussion: """
            IMAGE is docker://[HOST/]REPOSITORY[:TAG|@DIGEST] (an image in a registry, read over the \
            Distribution API with --creds), docker-archive:FILE[:REFERENCE] (docker save output, plain \
            or gzip) or oci:DIR[:TAG] (an OCI image layout, as skopeo writes). Findings come from the \
            vulnerability database that `wharf advisories import` builds; no advisory is downloaded.
            Exit status: 0, or 3 when --fail-on is given and a finding reaches that severity.
            """)

    enum Format: String, ExpressibleByArgument, CaseIterable {
        case table, json, cyclonedx, spdx
    }

    @Argument(help: "The image: docker://[HOST/]REPOSITORY[:TAG|@DIGEST], docker-archive:FILE[:REFERENCE] or oci:DIR[:TAG].")
    var image: String

    @Option(name: .long, help: "table (default), json, cyclonedx or spdx.")
    var format: Format = .table

    @Option(name: .long, help: "The vulnerability database (default DATA/advisories/osv.sqlite).")
    var db: String?

    @Option(name: .long, help: "Data folder, for the default database (default ./wharf-data; env WHARF_DATA).")
    var data: String?

    @Option(name: .long, help: "Platform to take from a multi-platform image, os/arch[/variant].")
    var platform = "linux/amd64"

    @Option(name: .customLong("fail-on"), help: "Exit with status 3 if a finding is at least this severe (low, medium, high, critical).")
    var failOn: String?

    @Option(
        name: .customLong("vex"),
        help:
            "An OpenVEX or CycloneDX VEX document (repeatable): findings it marks not_affected or fixed are shown as suppressed and do not count for --fail-on."
    )
    var vex: [String] = []

    @Flag(name: .customLong("packages-only"), help: "List packages without matching (no database needed).")
    var packagesOnly = false

    @Flag(name: .customLong("no-secrets"), help: "Skip looking for secrets in files and the image config.")
    var noSecrets = false

    @Option(name: .long, help: "Registry credentials USER:PASSWORD for docker:// images (env WHARF_SCAN_CREDS).")
    var creds: String?

    @Flag(name: .customLong("plain-http"), help: "Speak HTTP, not HTTPS, to the registry (loopback hosts always do).")
    var plainHTTP = false

    func run() async throws {
        guard LocalImage.isLocal(image) || RegistryImage.isRegistry(image) else {
            throw ValidationError("\(image): expected docker://[HOST/]REPOSITORY[:TAG|@DIGEST], oci:DIR[:TAG] or docker-archive:FILE[:REFERENCE]")
        }
        let threshold = try failOn.map { word -> Severity in
            guard let severity = Severity(word: word) else { throw ValidationError("--fail-on: expected low, medium, high or critical") }
            return severity
        }
        // Read before the scan, so a broken document fails fast.
        var statements: [VEXStatement] = []
        for path in vex {
            guard let bytes = FileManager.default.contents(atPath: path) else { throw ValidationError("--vex: cannot read \(path)") }
            do { statements += try VEXDocument.statements(from: Array(bytes), origin: path) } catch {
                throw ValidationError("--vex \(path): \(error)")
            }
        }
        let started = ContinuousClock.now
        var inventory: ImageInventory
        var imageDigest: String?
        var imageRepository: String?
        if RegistryImage.isRegistry(image) {
            var remote = try RegistryImage(image, credentials: creds ?? ProcessInfo.processInfo.environment["WHARF_SCAN_CREDS"], plainHTTP: plainHTTP)
            let (config, layers) = try await remote.resolve(platform: platform)
            inventory = try await Inventory.of(
                layers: layers.map { remote.layer($0.digest) }, config: config,
                detectSecrets: !noSecrets && !packagesOnly)
            inventory.layerDigests = layers.map { "\($0.digest)" }
            imageDigest = remote.manifestDigest
            imageRepository = remote.repository
        } else {
            let local = try await LocalImage.open(image, platform: platform)
            defer { local.close() }
            inventory = try await Inventory.of(
                layers: try local.layers.map { try $0.chunks() }, config: local.config,
                detectSecrets: !noSecrets && !packagesOnly)
            let digests = local.layers.compactMap(\.digest)
            if digests.count == local.layers.count { inventory.layerDigests = digests }
            imageDigest = local.manifestDigest
        }
        let subject = SBOMWriter.Subject(name: image)
        var findings: [Finding] = []
        let matchesNeeded = !packagesOnly && format != .spdx
        if matchesNeeded {
            let path = db ?? "\(data ?? ProcessInfo.processInfo.environment["WHARF_DATA"] ?? "./wharf-data")/advisories/osv.sqlite"
            let database = try await AdvisoryDatabase.open(path)
            findings = try await VulnerabilityMatcher.match(inventory, database: database)
            try await database.close()
            findings = VEXApplication.apply(
                statements, to: findings, inventory: inventory, image: .init(digest: imageDigest, repository: imageRepository))
        }
        let elapsed = ContinuousClock.now - started
        switch format {
        case .cyclonedx:
            try write(try SBOMWriter.cycloneDX(inventory, subject: subject, findings: packagesOnly ? nil : findings))
        case .spdx:
            try write(try SBOMWriter.spdx(inventory, subject: subject))
        case .json:
            let encoder = JSONEncoder()
            encoder.outputFormatting = [.prettyPrinted, .sortedKeys, .withoutEscapingSlashes]
            try write([UInt8](try encoder.encode(ScanReport(image: image, inventory: inventory, findings: findings))))
        case .table:
            print(table(inventory, findings: findings, elapsed: elapsed))
        }
        if let threshold,
            findings.contains(where: { $0.severity >= threshold && !$0.isSuppressed }) || inventory.secrets.contains(where: { $0.severity >= threshold })
        {
            throw ExitCode(3)
        }
    }

    private func write(_ bytes: [UInt8]) throws {
        FileHandle.standardOutput.write(Data(bytes + [0x0A]))
    }

    private func table(_ inventory: ImageInventory, findings: [Finding], elapsed: Duration) -> String {
        var lines: [String] = []
        let os = inventory.operatingSystem.map { "\($0.id) \($0.versionID ?? $0.versionCodename ?? "")" } ?? "unknown distribution"
        lines.append("\(image): \(os), \(inventory.packages.count) packages in \(inventory.layers) layers")
        if packagesOnly {
            let rows = inventory.packages.map { [$0.kind.rawValue, $0.name, $0.version, $0.location] }
            lines += render([["TYPE", "PACKAGE", "VERSION", "FOUND IN"]] + rows)
            return lines.joined(separator: "\n")
        }
        let counted = findings.filter { !$0.isSuppressed }
        let counts = Dictionary(grouping: counted, by: \.severity).mapValues(\.count)
        let summary = Severity.allCases.reversed().compactMap { severity in counts[severity].map { "\(severity.rawValue): \($0)" } }
        let suppressed = findings.count - counted.count
        lines.append(
            "\(counted.count) vulnerabilities" + (summary.isEmpty ? "" : " (" + summary.joined(separator: ", ") + ")")
                + (suppressed > 0 ? ", \(suppressed) suppressed by VEX" : "")
                + String(format: ", scanned in %.2f s", Double(elapsed.components.seconds) + Double(elapsed.components.attoseconds) / 1e18))
        if !findings.isEmpty {
            let rows = findings.map {
                [
                    $0.severity.rawValue, $0.id, $0.packageName, $0.installedVersion, $0.fixedVersion ?? "(no fix)",
                    $0.vex.map { verdict in verdict.status.rawValue + (verdict.justification.map { " (\($0))" } ?? "") } ?? "",
                ]
            }
            lines += render([["SEVERITY", "VULNERABILITY", "PACKAGE", "INSTALLED", "FIXED IN", "VEX"]] + rows)
        }
        if !noSecrets {
            lines.append("\(inventory.secrets.count) secrets")
            if !inventory.secrets.isEmpty {
                let rows = inventory.secrets.map { secret in
                    [
                        secret.severity.rawValue, secret.title, secret.location + (secret.line.map { ":\($0)" } ?? ""),
                        secret.layer.map { "layer \($0)" } ?? "config", secret.redacted,
                    ]
                }
                lines += render([["SEVERITY", "SECRET", "WHERE", "IN", "MATCH (REDACTED)"]] + rows)
            }
        }
        return lines.joined(separator: "\n")
    }

    private func render(_ rows: [[String]]) -> [String] {
        let widths = (0..<(rows.first?.count ?? 0)).map { column in rows.map { $0[column].count }.max() ?? 0 }
        return rows.map { row in
            zip(row, widths).map { $0.padding(toLength: $1, withPad: " ", startingAt: 0) }.joined(separator: "  ")
                .trimmingCharacters(in: .whitespaces)
        }
    }
}

struct ScanReport: Encodable {
    var image: String
    var inventory: ImageInventory
    var findings: [Finding]
}

/// `wharf advisories import|show`: the offline vulnerability database.
struct Advisories: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Build and inspect the vulnerability database.",
        subcommands: [Import.self, Show.self, Export.self])

    struct DatabaseOptions: ParsableArguments {
        @Option(name: .long, help: "The database file (default DATA/advisories/osv.sqlite).")
        var db: String?

        @Option(name: .long, help: "Data folder (default ./wharf-data; env WHARF_DATA).")
        var data: String?

        var path: String {
            db ?? "\(data ?? ProcessInfo.processInfo.environment["WHARF_DATA"] ?? "./wharf-data")/advisories/osv.sqlite"
        }
    }

    struct Import: AsyncParsableCommand {
        static let configuration = CommandConfiguration(
            abstract: "Build a new database from OSV folders, zips (osv.dev's all.zip) or Alpine secdb files; it replaces the old one atomically.")

        @Argument(help: "Sources: folders of OSV JSON, .zip files, OSV .json files, Alpine secdb .yaml/.json files.")
        var sources: [String]

        @OptionGroup var options: DatabaseOptions

        func run() async throws {
            guard !sources.isEmpty else { throw ValidationError("give at least one source") }
            let started = ContinuousClock.now
            let builder = try await AdvisoryDatabaseBuilder.create(at: options.path)
            do {
                for source in sources {
                    let added = try await AdvisorySources.importPath(source, into: builder)
                    print("\(source): \(added) records")
                }
                try await builder.commit()
            } catch {
                await builder.discard()
                throw error
            }
            let elapsed = ContinuousClock.now - started
            print("\(builder.imported) records imported into \(options.path) in \(elapsed); \(builder.skippedWithdrawn) withdrawn skipped")
            for unreadable in builder.skippedUnreadable.prefix(20) { print("not an OSV record, skipped: \(unreadable)") }
        }
    }

    struct Export: AsyncParsableCommand {
        static let configuration = CommandConfiguration(
            abstract: "Write the database as an OCI artifact in an image layout, for mirroring into an offline Wharf.",
            discussion: """
                Push the layout with `skopeo copy oci:DIR:TAG docker://HOST/REPOSITORY:TAG`; a Wharf whose \
                scanner.databaseArtifact names REPOSITORY:TAG installs each new push and re-matches stored scans.
                """)

        @Option(name: .long, help: "The OCI layout to write, DIR[:TAG] (default tag: latest).")
        var oci: String

        @OptionGroup var options: DatabaseOptions

        func run() async throws {
            let parts = oci.split(separator: ":", maxSplits: 1).map(String.init)
            guard let directory = parts.first, !directory.isEmpty else { throw ValidationError("--oci: expected DIR[:TAG]") }
            let tag = parts.count == 2 ? parts[1] : "latest"
            let database = try await AdvisoryDatabase.open(options.path)
            let summary = try await database.summary()
            try await database.close()
            let digest = try AdvisoryArtifact.exportLayout(database: options.path, directory: directory, tag: tag, summary: summary)
            print("\(options.path) (\(summary.records) records, version \(summary.version ?? "?")) written to oci:\(directory):\(tag) as \(digest)")
        }
    }

    struct Show: AsyncParsableCommand {
        static let configuration = CommandConfiguration(abstract: "Summarise the database: records per ecosystem, import time, sources.")

        @OptionGroup var options: DatabaseOptions

        func run() async throws {
            let database = try await AdvisoryDatabase.open(options.path)
            let summary = try await database.summary()
            try await database.close()
            print(
                "\(options.path): \(summary.records) records, \(summary.packages) packages, imported \(summary.importedAt ?? "?"), version \(summary.version ?? "?")"
            )
            for (ecosystem, count) in summary.ecosystems.sorted(by: { $0.key < $1.key }) { print("  \(ecosystem): \(count)") }
            for source in summary.sources { print("  from \(source)") }
        }
    }
}
