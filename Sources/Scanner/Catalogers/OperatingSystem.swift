/// The distribution an image is built on, from `/etc/os-release` (or `/usr/lib/os-release`),
/// falling back to `/etc/alpine-release`, `/etc/debian_version` and `/etc/lsb-release`.
public struct OperatingSystem: Sendable, Equatable, Codable {
    /// `ID` of os-release: `debian`, `alpine`, `ubuntu`, `rhel`, …
    public var id: String
    /// `VERSION_ID`: `12`, `3.18.4`, …
    public var versionID: String?
    public var versionCodename: String?
    public var prettyName: String?

    public init(id: String, versionID: String? = nil, versionCodename: String? = nil, prettyName: String? = nil) {
        self.id = id
        self.versionID = versionID
        self.versionCodename = versionCodename
        self.prettyName = prettyName
    }

    /// os-release's `KEY=value` lines; values may be quoted (`"…"` or `'…'`) with backslash escapes.
    public static func fields(osRelease text: String) -> [String: String] {
        var values: [String: String] = [:]
        for rawLine in text.split(separator: "\n") {
            let line = rawLine.trimmingASCIIWhitespace()
            guard !line.hasPrefix("#"), let equals = line.firstIndex(of: "=") else { continue }
            let key = String(line[..<equals])
            var value = line[line.index(after: equals)...]
            if let quote = value.first, quote == "\"" || quote == "'", value.count >= 2, value.last == quote {
                value = value.dropFirst().dropLast()
            }
            var unescaped = ""
            var escaping = false
            for character in value {
                if escaping {
                    unescaped.append(character)
                    escaping = false
                } else if character == "\\" {
                    escaping = true
                } else {
                    unescaped.append(character)
                }
            }
            values[key] = unescaped
        }
        return values
    }

    public static func parse(osRelease text: String) -> OperatingSystem? {
        let values = fields(osRelease: text)
        guard let id = values["ID"], !id.isEmpty else { return nil }
        return OperatingSystem(
            id: id.lowercased(), versionID: values["VERSION_ID"].flatMap { $0.isEmpty ? nil : $0 },
            versionCodename: values["VERSION_CODENAME"].flatMap { $0.isEmpty ? nil : $0 }, prettyName: values["PRETTY_NAME"])
    }

    /// `/etc/lsb-release`: `DISTRIB_ID`, `DISTRIB_RELEASE`, `DISTRIB_CODENAME`.
    public static func parse(lsbRelease text: String) -> OperatingSystem? {
        var values: [String: String] = [:]
        for line in text.split(separator: "\n") {
            guard let equals = line.firstIndex(of: "=") else { continue }
            values[String(line[..<equals])] = String(line[line.index(after: equals)...]).trimmingCharacters(in: "\"")
        }
        guard let id = values["DISTRIB_ID"], !id.isEmpty else { return nil }
        return OperatingSystem(
            id: id.lowercased(), versionID: values["DISTRIB_RELEASE"], versionCodename: values["DISTRIB_CODENAME"], prettyName: values["DISTRIB_DESCRIPTION"])
    }

    /// The OSV ecosystem of this distribution's packages, with the release OSV uses
    /// (`Debian:12`, `Alpine:v3.18`, `Ubuntu:22.04`), if OSV covers it.
    public var osvEcosystem: String? {
        guard let version = versionID else { return nil }
        switch id {
        case "debian": return "Debian:\(version.split(separator: ".").first ?? Substring(version))"
        case "alpine":
            let parts = version.split(separator: ".")
            return parts.count >= 2 ? "Alpine:v\(parts[0]).\(parts[1])" : nil
        case "ubuntu": return "Ubuntu:\(version)"
        case "rocky": return "Rocky Linux:\(version.split(separator: ".").first ?? Substring(version))"
        case "almalinux": return "AlmaLinux:\(version.split(separator: ".").first ?? Substring(version))"
        default: return nil
        }
    }

    /// Finds the distribution from the files an image holds (`read` returns a file's text, if present).
    public static func detect(_ read: (String) -> String?) -> OperatingSystem? {
        for path in ["etc/os-release", "usr/lib/os-release"] {
            if let text = read(path), let os = parse(osRelease: text) { return os }
        }
        if let text = read("etc/alpine-release") {
            return OperatingSystem(id: "alpine", versionID: String(text.trimmingASCIIWhitespace()))
        }
        if let text = read("etc/lsb-release"), let os = parse(lsbRelease: text) { return os }
        if let text = read("etc/debian_version") {
            // `12.4`, or `bookworm/sid` on testing: only a numeric release names a version.
            let version = text.trimmingASCIIWhitespace()
            return OperatingSystem(
                id: "debian", versionID: version.first?.isNumber == true ? String(version) : nil,
                versionCodename: version.first?.isNumber == true ? nil : String(version))
        }
        return nil
    }
}

extension String {
    func trimmingCharacters(in set: String) -> String {
        var text = Substring(self)
        while let first = text.first, set.contains(first) { text = text.dropFirst() }
        while let last = text.last, set.contains(last) { text = text.dropLast() }
        return String(text)
    }
}
