import Logging
import Metadata
import OCI
import Synchronization

#if canImport(Glibc)
import Glibc
#endif
#if canImport(FoundationEssentials)
import FoundationEssentials
#else
import Foundation
#endif

/// One JSON object per log line (`log.format: json`), for log shippers: `time` (RFC 3339 UTC,
/// milliseconds), `level`, `logger`, `source` (the module), `message`, then the metadata as
/// string fields. The request id Hummingbird files as `hb.request.id` is written as `requestId`, the
/// same value the client sees in `X-Request-Id`.
public struct JSONLogHandler: LogHandler {
    public var logLevel: Logger.Level = .info
    public var metadata: Logger.Metadata = [:]
    public var metadataProvider: Logger.MetadataProvider?
    private let label: String
    private let write: @Sendable (String) -> Void

    /// Lines go to standard error, like the text format's.
    public init(label: String) {
        self.init(label: label) { line in Self.standardError(line) }
    }

    /// For tests: lines go to `write`.
    public init(label: String, write: @escaping @Sendable (String) -> Void) {
        self.label = label
        self.write = write
    }

    public subscript(metadataKey key: String) -> Logger.Metadata.Value? {
        get { metadata[key] }
        set { metadata[key] = newValue }
    }

    public func log(event: LogEvent) {
        var fields = metadata
        if let provided = metadataProvider?.get() { fields.merge(provided) { _, new in new } }
        if let extra = event.metadata { fields.merge(extra) { _, new in new } }
        var line = "{\"time\":\(JSONString.literal(Timestamp.rfc3339(millis: Timestamp.nowMillis()))),\"level\":\(JSONString.literal(event.level.rawValue))"
        line +=
            ",\"logger\":\(JSONString.literal(label)),\"source\":\(JSONString.literal(event.source)),\"message\":\(JSONString.literal(event.message.description))"
        if let error = event.error { line += ",\"error\":\(JSONString.literal(String(describing: error)))" }
        let fixed: Set<String> = ["time", "level", "logger", "source", "message", "error"]
        for (key, value) in fields.sorted(by: { $0.key < $1.key }) {
            var name = key == "hb.request.id" ? "requestId" : key
            if fixed.contains(name) { name = "metadata." + name }
            line += ",\(JSONString.literal(name)):\(JSONString.literal(value.description))"
        }
        write(line + "}\n")
    }

    private static let outputLock = Mutex(())

    private static func standardError(_ line: String) {
        outputLock.withLock { _ in
            var line = line
            line.withUTF8 { bytes in
                var offset = 0
                while offset < bytes.count {
                    let written = Glibc.write(2, bytes.baseAddress! + offset, bytes.count - offset)
                    if written > 0 {
                        offset += written
                    } else if written < 0, errno == EINTR {
                        continue
                    } else {
                        return
                    }
                }
            }
        }
    }
}
