import Foundation

/// Python distributions: `*.dist-info/METADATA` (wheels, pip) and `*.egg-info/PKG-INFO`
/// (setuptools; also a bare `*.egg-info` file). Both are RFC 822 headers with `Name` and `Version`.
public enum PythonCataloger {
    public static func wants(_ path: String) -> Bool {
        (path.hasSuffix(".dist-info/METADATA") || path.hasSuffix(".egg-info/PKG-INFO") || path.hasSuffix(".egg-info"))
            && (path.contains("site-packages/") || path.contains("dist-packages/"))
    }

    public static func package(metadata text: String, location: String) -> DetectedPackage? {
        // Only the header block: the description that follows may contain anything.
        let header = text.components(separatedBy: "\n\n").first ?? text
        guard let fields = ControlFile.stanzas(header).first, let name = fields["name"], let version = fields["version"],
            !name.isEmpty, !version.isEmpty
        else { return nil }
        return DetectedPackage(kind: .python, name: name, version: version, location: location)
    }
}

/// npm packages: each `package.json` directly inside a `node_modules/<name>` or
/// `node_modules/@scope/<name>` folder. A project's own package.json is not a dependency.
public enum NpmCataloger {
    public static func wants(_ path: String) -> Bool {
        guard path.hasSuffix("/package.json"), let range = path.range(of: "node_modules/", options: .backwards) else { return false }
        let rest = path[range.upperBound...].split(separator: "/")
        return rest.count == 2 || (rest.count == 3 && rest[0].hasPrefix("@"))
    }

    private struct PackageJSON: Decodable {
        var name: String?
        var version: String?
        var `private`: Bool?
    }

    public static func package(json bytes: [UInt8], location: String) -> DetectedPackage? {
        guard let manifest = try? JSONDecoder().decode(PackageJSON.self, from: Data(bytes)),
            let name = manifest.name, let version = manifest.version, !name.isEmpty, !version.isEmpty
        else { return nil }
        return DetectedPackage(kind: .npm, name: name, version: version, location: location)
    }
}

/// Rust: `Cargo.lock` files, which list every crate a build resolved (`[[package]]` tables with
/// `name` and `version`). Workspace members without a `source` are the project itself, not dependencies.
public enum CargoLockCataloger {
    public static func wants(_ path: String) -> Bool { path.hasSuffix("/Cargo.lock") || path == "Cargo.lock" }

    public static func packages(lock text: String, location: String) -> [DetectedPackage] {
        var packages: [DetectedPackage] = []
        var current: [String: String]?
        func flush() {
            if let table = current, let name = table["name"], let version = table["version"], table["source"] != nil {
                packages.append(DetectedPackage(kind: .rust, name: name, version: version, location: location))
            }
            current = nil
        }
        for rawLine in text.split(separator: "\n") {
            let line = rawLine.trimmingASCIIWhitespace()
            if line.hasPrefix("[") {
                flush()
                if line == "[[package]]" { current = [:] }
                continue
            }
            guard current != nil, let equals = line.firstIndex(of: "=") else { continue }
            let key = line[..<equals].trimmingASCIIWhitespace()
            var value = line[line.index(after: equals)...].trimmingASCIIWhitespace()
            guard value.hasPrefix("\""), value.hasSuffix("\""), value.count >= 2 else { continue }
            value = value.dropFirst().dropLast()
            current?[String(key)] = String(value)
        }
        flush()
        return packages
    }
}
