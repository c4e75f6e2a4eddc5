/// A package found in an image: what it is, its version, and where the evidence lies.
public struct DetectedPackage: Sendable, Equatable, Codable, Hashable {
    public enum Kind: String, Sendable, Codable {
        case dpkg, apk, rpm, python, npm, go, java, rust
    }

    public var kind: Kind
    public var name: String
    public var version: String
    /// The source package (dpkg `Source:`, apk `origin`), which advisories often name instead.
    public var sourceName: String?
    public var sourceVersion: String?
    public var architecture: String?
    /// The file the package was read from, inside the image.
    public var location: String
    /// How the package was identified, where more than one way exists (Java archives); nil means
    /// from the package manager's own record.
    public var identifiedBy: Identification?
    /// How sure that identification is.
    public var confidence: Confidence?
    /// Index of the image layer (bottom first) that holds the file the package was read from.
    public var layer: Int?

    /// The evidence a Java library was named from, best first.
    public enum Identification: String, Sendable, Codable {
        case pomProperties = "pom.properties"
        case manifest = "MANIFEST.MF"
        case fileName = "file-name"
    }

    public enum Confidence: String, Sendable, Codable {
        /// The build tool's own record (pom.properties).
        case high
        /// The manifest names the version, and the group is known or stated.
        case medium
        /// Inferred from the file name or a partial manifest.
        case low
    }

    public init(
        kind: Kind, name: String, version: String, sourceName: String? = nil, sourceVersion: String? = nil,
        architecture: String? = nil, location: String, identifiedBy: Identification? = nil, confidence: Confidence? = nil
    ) {
        self.kind = kind
        self.name = name
        self.version = version
        self.sourceName = sourceName
        self.sourceVersion = sourceVersion
        self.architecture = architecture
        self.location = location
        self.identifiedBy = identifiedBy
        self.confidence = confidence
    }
}

/// RFC 822-style stanzas, as dpkg's status file and Python's METADATA use: `Field: value`,
/// continuation lines starting with a space or tab, stanzas separated by blank lines.
enum ControlFile {
    static func stanzas(_ text: String) -> [[String: String]] {
        var result: [[String: String]] = []
        var current: [String: String] = [:]
        var lastField: String?
        for rawLine in text.split(separator: "\n", omittingEmptySubsequences: false) {
            let line = rawLine.hasSuffix("\r") ? rawLine.dropLast() : rawLine
            if line.allSatisfy({ $0 == " " || $0 == "\t" }) {
                if !current.isEmpty { result.append(current) }
                current = [:]
                lastField = nil
                continue
            }
            if line.first == " " || line.first == "\t" {
                if let field = lastField { current[field, default: ""] += "\n" + line.trimmingASCIIWhitespace() }
                continue
            }
            guard let colon = line.firstIndex(of: ":") else { continue }
            let field = String(line[..<colon]).lowercased()
            current[field] = String(line[line.index(after: colon)...].trimmingASCIIWhitespace())
            lastField = field
        }
        if !current.isEmpty { result.append(current) }
        return result
    }
}

/// Debian's package database: `/var/lib/dpkg/status` and, in distroless images, one file per
/// package under `/var/lib/dpkg/status.d/`. Only installed packages count.
public enum DpkgCataloger {
    public static func packages(status text: String, location: String) -> [DetectedPackage] {
        ControlFile.stanzas(text).compactMap { stanza in
            guard let name = stanza["package"], let version = stanza["version"] else { return nil }
            // status.d files have no Status field; in the main file only "install ok installed" counts.
            if let status = stanza["status"],
                !status.split(separator: " ").contains("installed") || status.hasSuffix("not-installed") || status.contains("config-files")
            {
                return nil
            }
            var sourceName: String?, sourceVersion: String?
            if let source = stanza["source"] {
                // `Source: name (version)` when the source version differs from the binary's.
                if let open = source.firstIndex(of: "("), let close = source.lastIndex(of: ")"), open < close {
                    sourceName = String(source[..<open].trimmingASCIIWhitespace())
                    sourceVersion = String(source[source.index(after: open)..<close].trimmingASCIIWhitespace())
                } else {
                    sourceName = source
                }
            }
            return DetectedPackage(
                kind: .dpkg, name: name, version: version, sourceName: sourceName ?? name,
                sourceVersion: sourceVersion ?? version, architecture: stanza["architecture"], location: location)
        }
    }
}

/// Alpine's package database, `/lib/apk/db/installed`: `P:` name, `V:` version, `A:` arch,
/// `o:` origin (the source package advisories name), one block per package.
public enum ApkCataloger {
    public static func packages(installed text: String, location: String) -> [DetectedPackage] {
        var packages: [DetectedPackage] = []
        var fields: [Character: String] = [:]
        func flush() {
            if let name = fields["P"], let version = fields["V"] {
                packages.append(
                    DetectedPackage(
                        kind: .apk, name: name, version: version, sourceName: fields["o"] ?? name,
                        sourceVersion: version, architecture: fields["A"], location: location))
            }
            fields = [:]
        }
        for line in text.split(separator: "\n", omittingEmptySubsequences: false) {
            if line.isEmpty { flush(); continue }
            guard line.count >= 2, line[line.index(after: line.startIndex)] == ":", let key = line.first else { continue }
            if fields[key] == nil { fields[key] = String(line.dropFirst(2)) }
        }
        flush()
        return packages
    }
}
