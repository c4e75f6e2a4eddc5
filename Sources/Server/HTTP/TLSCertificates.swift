import Dispatch
import Logging
import NIOSSL
import Synchronization

#if canImport(Glibc)
import Glibc
#endif

/// The certificate chain and key Wharf serves HTTPS with, read from PEM files and read again on
/// SIGHUP. A new certificate applies to new connections (through NIOSSL's per-handshake context
/// callback); connections already open keep theirs, so a renewal drops nothing. A reload that
/// fails (a half-written file, a key that does not match) is logged and the old pair stays.
final class TLSCertificates: Sendable {
    let certificateFile: String
    let keyFile: String
    private let logger: Logger
    private let current: Mutex<(chain: [NIOSSLCertificate], key: NIOSSLPrivateKey)>
    /// Keeps the SIGHUP source alive; set once, from `reloadOnHangUp`.
    private final class SignalSourceBox: @unchecked Sendable {
        var source: (any DispatchSourceSignal)?
    }
    private let signalSource = SignalSourceBox()

    init(certificateFile: String, keyFile: String, logger: Logger) throws {
        self.certificateFile = certificateFile
        self.keyFile = keyFile
        self.logger = logger
        self.current = Mutex(try Self.load(certificateFile: certificateFile, keyFile: keyFile))
    }

    struct LoadError: Error, CustomStringConvertible {
        let description: String
    }

    static func load(certificateFile: String, keyFile: String) throws -> (chain: [NIOSSLCertificate], key: NIOSSLPrivateKey) {
        let chain: [NIOSSLCertificate]
        let key: NIOSSLPrivateKey
        do {
            chain = try NIOSSLCertificate.fromPEMFile(certificateFile)
        } catch {
            throw LoadError(description: "cannot read the TLS certificate chain \(certificateFile): \(error)")
        }
        do {
            key = try NIOSSLPrivateKey(file: keyFile, format: .pem)
        } catch {
            throw LoadError(description: "cannot read the TLS private key \(keyFile): \(error)")
        }
        guard !chain.isEmpty else { throw LoadError(description: "\(certificateFile) holds no certificate") }
        // A key that does not match the certificate would fail every handshake: refuse it here.
        var probe = TLSConfiguration.makeServerConfiguration(certificateChain: chain.map { .certificate($0) }, privateKey: .privateKey(key))
        probe.minimumTLSVersion = .tlsv12
        do {
            _ = try NIOSSLContext(configuration: probe)
        } catch {
            throw LoadError(description: "the TLS private key \(keyFile) does not fit the certificate in \(certificateFile): \(error)")
        }
        return (chain, key)
    }

    /// The server configuration: TLS 1.2 and 1.3, and the current pair chosen at each handshake.
    func configuration() -> TLSConfiguration {
        let (chain, key) = current.withLock { $0 }
        var configuration = TLSConfiguration.makeServerConfiguration(certificateChain: chain.map { .certificate($0) }, privateKey: .privateKey(key))
        configuration.minimumTLSVersion = .tlsv12
        configuration.sslContextCallback = { [self] _, promise in
            let (chain, key) = current.withLock { $0 }
            var override = NIOSSLContextConfigurationOverride()
            override.certificateChain = chain.map { .certificate($0) }
            override.privateKey = .privateKey(key)
            promise.succeed(override)
        }
        return configuration
    }

    /// Reads the files again; keeps the current pair when they do not load.
    @discardableResult
    func reload() -> Bool {
        do {
            let loaded = try Self.load(certificateFile: certificateFile, keyFile: keyFile)
            current.withLock { $0 = loaded }
            logger.notice("reloaded the TLS certificate", metadata: ["certificate": "\(certificateFile)"])
            return true
        } catch {
            logger.error("TLS certificate reload failed; still serving the previous one", metadata: ["error": "\(error)"])
            return false
        }
    }

    /// Reloads on SIGHUP (what `systemctl reload` and certificate renewal hooks send).
    func reloadOnHangUp() {
        signal(SIGHUP, SIG_IGN)
        let source = DispatchSource.makeSignalSource(signal: SIGHUP, queue: .global())
        source.setEventHandler { [self] in reload() }
        source.resume()
        signalSource.source = source
    }
}
