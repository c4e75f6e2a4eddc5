import ArgumentParser
import Logging
import Server

#if canImport(Glibc)
import Glibc

/// glibc's `mallopt` (malloc.h is not part of the Glibc module).
@_silgen_name("mallopt")
func glibcMallopt(_ parameter: Int32, _ value: Int32) -> Int32
#endif

#if canImport(FoundationEssentials)
import FoundationEssentials
#else
import Foundation
#endif

@main
struct Wharf: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "wharf",
        abstract: "Wharf: a self-hosted OCI container registry.",
        version: WharfVersion.current,
        subcommands: [Serve.self, Admin.self, CollectGarbage.self, Fsck.self, Scan.self, Advisories.self],
        defaultSubcommand: nil
    )
}

enum WharfVersion {
    static let current = "0.1.0"
}

/// Options shared by every command that reads the configuration.
struct ConfigurationOptions: ParsableArguments {
    @Option(name: .long, help: "YAML configuration file.")
    var config: String?

    @Option(name: .long, help: "Address to listen on, HOST:PORT (default 127.0.0.1:5000; env WHARF_LISTEN).")
    var listen: String?

    @Option(name: .long, help: "Data folder (default ./wharf-data; env WHARF_DATA).")
    var data: String?

    @Option(name: .customLong("database-url"), help: "sqlite:PATH or postgres://user:password@host:port/db (env WHARF_DATABASE_URL).")
    var databaseURL: String?

    @Option(name: .customLong("log-level"), help: "trace, debug, info, notice, warning, error or critical (env WHARF_LOG_LEVEL).")
    var logLevel: String?

    /// Defaults, then the file, then the environment, then flags.
    func resolve() throws -> WharfConfiguration {
        var configuration = WharfConfiguration()
        if let config {
            guard let data = FileManager.default.contents(atPath: config) else {
                throw ValidationError("cannot read configuration file \(config)")
            }
            try configuration.apply(yaml: String(decoding: data, as: UTF8.self), source: config)
        }
        try configuration.apply(environment: ProcessInfo.processInfo.environment)
        if let listen { configuration.listen = listen }
        if let data { configuration.dataDirectory = data }
        if let databaseURL { configuration.databaseURL = databaseURL }
        if let logLevel { configuration.logLevel = try WharfConfiguration.parseLogLevel(logLevel, source: "--log-level") }
        try configuration.validate()
        return configuration
    }
}

struct Serve: AsyncParsableCommand {
    static let configuration = CommandConfiguration(abstract: "Run the registry server.")

    @OptionGroup var options: ConfigurationOptions

    func run() async throws {
        #if canImport(Glibc)
        // glibc gives every thread that allocates its own malloc arena; with NIO's event loops and
        // I/O threads that multiplies idle memory and fragmentation. Two arenas suffice for a server
        // whose threads spend their time in I/O.
        _ = glibcMallopt(-8 /* M_ARENA_MAX */, 2)
        #endif
        let configuration = try options.resolve()
        let level = configuration.logLevel
        let format = configuration.logFormat
        LoggingSystem.bootstrap { label in
            switch format {
            case .text:
                var handler = StreamLogHandler.standardError(label: label)
                handler.logLevel = level
                return handler
            case .json:
                var handler = JSONLogHandler(label: label)
                handler.logLevel = level
                return handler
            }
        }
        var logger = Logger(label: "wharf")
        logger.logLevel = level
        let server = try await WharfServer.open(configuration: configuration, logger: logger)
        if let password = server.generatedAdministratorPassword {
            // Shown once, on stdout (not in the log); also kept in a 0600 file for automation.
            print(
                """
                Created the system administrator "admin" with password: \(password)
                It is saved in \(configuration.dataDirectory)/admin-password (readable only by this user). Change it with `wharf admin user password admin`.
                """)
            fflush(nil)  // flushes every output stream; stdout to a pipe is block-buffered
        }
        try await server.run()
    }
}
