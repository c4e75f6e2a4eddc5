import Foundation

/// Software bills of materials of an inventory: CycloneDX 1.5 JSON and SPDX 2.3 JSON, the two
/// formats registries exchange (`oras discover` lists them as referrers of the image).
public enum SBOMWriter {
    public static let cycloneDXMediaType = "application/vnd.cyclonedx+json"
    public static let spdxMediaType = "application/spdx+json"

    public struct Subject: Sendable {
        public var name: String
        public var digest: String?
        public init(name: String, digest: String? = nil) {
            self.name = name
            self.digest = digest
        }
    }

    /// The package URL (github.com/package-url/purl-spec) of a package, given its distribution.
    public static func purl(_ package: DetectedPackage, os: OperatingSystem?) -> String {
        func encode(_ text: String) -> String {
            text.addingPercentEncoding(withAllowedCharacters: .alphanumerics.union(CharacterSet(charactersIn: "-._~"))) ?? text
        }
        var qualifiers: [String] = []
        if let architecture = package.architecture { qualifiers.append("arch=\(encode(architecture))") }
        if let os, [.apk, .dpkg, .rpm].contains(package.kind) {
            qualifiers.append("distro=\(encode(os.id + (os.versionID.map { "-" + $0 } ?? "")))")
        }
        var version = "@" + encode(package.version)
        // purl puts an rpm's epoch in a qualifier, not in the version.
        if package.kind == .rpm, let colon = package.version.firstIndex(of: ":"), package.version[..<colon].allSatisfy(\.isNumber) {
            qualifiers.append("epoch=\(package.version[..<colon])")
            version = "@" + encode(String(package.version[package.version.index(after: colon)...]))
        }
        // The source package a distribution's advisories name (`upstream`, as Syft and Trivy
        // write it): its name, and its version when that differs from the binary's.
        if [.apk, .dpkg, .rpm].contains(package.kind), let source = package.sourceName,
            source != package.name || (package.sourceVersion.map { $0 != package.version } ?? false)
        {
            let sourceVersion = package.sourceVersion.flatMap { $0 == package.version ? nil : $0 }
            qualifiers.append("upstream=\(encode(source + (sourceVersion.map { "@" + $0 } ?? "")))")
        }
        let suffix = qualifiers.isEmpty ? "" : "?" + qualifiers.joined(separator: "&")
        switch package.kind {
        case .apk: return "pkg:apk/\(encode(os?.id ?? "alpine"))/\(encode(package.name))\(version)\(suffix)"
        case .dpkg: return "pkg:deb/\(encode(os?.id ?? "debian"))/\(encode(package.name))\(version)\(suffix)"
        case .rpm: return "pkg:rpm/\(encode(os?.id ?? "redhat"))/\(encode(package.name))\(version)\(suffix)"
        case .python: return "pkg:pypi/\(encode(AdvisoryDatabase.key(package.name, .pypi)))\(version)"
        case .npm:
            if package.name.hasPrefix("@"), let slash = package.name.firstIndex(of: "/") {
                return "pkg:npm/\(encode(String(package.name[..<slash])))/\(encode(String(package.name[package.name.index(after: slash)...])))\(version)"
            }
            return "pkg:npm/\(encode(package.name))\(version)"
        case .rust: return "pkg:cargo/\(encode(package.name))\(version)"
        case .go: return "pkg:golang/\(package.name.split(separator: "/").map { encode(String($0)) }.joined(separator: "/"))\(version)"
        case .java:
            let parts = package.name.split(separator: ":")
            return parts.count == 2
                ? "pkg:maven/\(encode(String(parts[0])))/\(encode(String(parts[1])))\(version)" : "pkg:maven/\(encode(package.name))\(version)"
        }
    }

    /// Packages by purl, in inventory order: one library found in several places is one
    /// component with several occurrences.
    static func grouped(_ inventory: ImageInventory) -> [(String, [DetectedPackage])] {
        var order: [String] = []
        var byPurl: [String: [DetectedPackage]] = [:]
        for package in inventory.packages {
            let purl = purl(package, os: inventory.operatingSystem)
            if byPurl[purl] == nil { order.append(purl) }
            byPurl[purl, default: []].append(package)
        }
        return order.map { ($0, byPurl[$0]!) }
    }

    /// What the scan knows of a package beyond its purl, as (name, value) pairs in Wharf's
    /// property namespace; the CycloneDX properties and the SPDX sourceInfo both carry them.
    static func properties(_ package: DetectedPackage, inventory: ImageInventory) -> [(String, String)] {
        var result = [("wharf:package:type", package.kind.rawValue), ("wharf:location", package.location)]
        if let source = package.sourceName { result.append(("wharf:source-package", source)) }
        if let version = package.sourceVersion { result.append(("wharf:source-version", version)) }
        if let layer = package.layer {
            result.append(("wharf:layer-index", String(layer)))
            if let digests = inventory.layerDigests, digests.indices.contains(layer) { result.append(("wharf:layer", digests[layer])) }
        }
        if let method = package.identifiedBy { result.append(("wharf:identified-by", method.rawValue)) }
        if let confidence = package.confidence { result.append(("wharf:confidence", confidence.rawValue)) }
        return result
    }

    /// A VEX verdict as CycloneDX's vulnerability analysis (its states and justifications are
    /// its own words; OpenVEX's justifications are mapped to the nearest, and kept in the detail).
    static func analysis(_ verdict: VEXVerdict) -> [String: Any] {
        let state: String =
            switch verdict.status {
            case .notAffected: "not_affected"
            case .fixed: "resolved"
            case .affected: "exploitable"
            case .underInvestigation: "in_triage"
            }
        let cycloneDXJustifications: Set<String> = [
            "code_not_present", "code_not_reachable", "requires_configuration", "requires_dependency", "requires_environment",
            "protected_by_compiler", "protected_at_runtime", "protected_at_perimeter", "protected_by_mitigating_control",
        ]
        let fromOpenVEX = [
            "component_not_present": "code_not_present", "vulnerable_code_not_present": "code_not_present",
            "vulnerable_code_not_in_execute_path": "code_not_reachable",
            "vulnerable_code_cannot_be_controlled_by_adversary": "requires_environment",
            "inline_mitigations_already_exist": "protected_by_mitigating_control",
        ]
        var result: [String: Any] = ["state": state]
        if let justification = verdict.justification {
            if cycloneDXJustifications.contains(justification) {
                result["justification"] = justification
            } else if let mapped = fromOpenVEX[justification] {
                result["justification"] = mapped
            }
        }
        let detail = [verdict.statement, verdict.justification.map { "justification: \($0)" }, "source: \(verdict.source)"].compactMap { $0 }
        result["detail"] = detail.joined(separator: "; ")
        return result
    }

    static func confidenceValue(_ confidence: DetectedPackage.Confidence?) -> Double {
        switch confidence {
        case .high, nil: 1
        case .medium: 0.7
        case .low: 0.4
        }
    }

    static func timestamp(_ date: Date) -> String {
        let formatter = ISO8601DateFormatter()
        formatter.formatOptions = [.withInternetDateTime]
        return formatter.string(from: date)
    }

    /// CycloneDX 1.5: the image as the described component, each package a library (the
    /// distribution an operating-system component), and findings as `vulnerabilities` when given.
    public static func cycloneDX(
        _ inventory: ImageInventory, subject: Subject, findings: [Finding]? = nil,
        date: Date = Date(), serial: UUID = UUID()
    ) throws -> [UInt8] {
        var components: [[String: Any]] = []
        if let os = inventory.operatingSystem {
            components.append(["type": "operating-system", "bom-ref": "os:\(os.id)", "name": os.id, "version": os.versionID ?? ""])
        }
        for (purl, packages) in grouped(inventory) {
            let package = packages[0]
            var evidence: [String: Any] = ["occurrences": packages.map { ["location": $0.location] }]
            if let method = package.identifiedBy {
                let confidence = confidenceValue(package.confidence)
                evidence["identity"] = [
                    "field": "purl", "confidence": confidence,
                    "methods": [["technique": method == .fileName ? "filename" : "manifest-analysis", "confidence": confidence, "value": method.rawValue]],
                ]
            }
            components.append([
                "type": "library", "bom-ref": purl, "name": package.name, "version": package.version, "purl": purl,
                "properties": properties(package, inventory: inventory).map { ["name": $0.0, "value": $0.1] },
                "evidence": evidence,
            ])
        }
        var metadataComponent: [String: Any] = ["type": "container", "bom-ref": "image", "name": subject.name]
        if let digest = subject.digest { metadataComponent["version"] = digest }
        var document: [String: Any] = [
            "bomFormat": "CycloneDX", "specVersion": "1.5", "version": 1,
            "serialNumber": "urn:uuid:\(serial.uuidString.lowercased())",
            "metadata": [
                "timestamp": timestamp(date),
                "tools": ["components": [["type": "application", "name": "wharf", "version": ScannerVersion.current]]],
                "component": metadataComponent,
            ] as [String: Any],
            "components": components,
        ]
        if let findings {
            var vulnerabilities: [[String: Any]] = []
            for finding in findings {
                let package = inventory.packages.first { $0.name == finding.packageName && $0.version == finding.installedVersion }
                let reference = package.map { purl($0, os: inventory.operatingSystem) } ?? finding.packageName
                var rating: [String: Any] = ["severity": finding.severity == .undefined ? "unknown" : finding.severity.rawValue.lowercased()]
                if let score = finding.cvssScore { rating["score"] = score; rating["method"] = "CVSSv31" }
                if let vector = finding.cvssVector { rating["vector"] = vector }
                var entry: [String: Any] = [
                    "id": finding.id, "ratings": [rating],
                    "affects": [["ref": reference]],
                ]
                if !finding.aliases.isEmpty { entry["references"] = finding.aliases.map { ["id": $0, "source": ["name": "OSV"]] } }
                if let summary = finding.summary { entry["description"] = summary }
                if let fixed = finding.fixedVersion { entry["recommendation"] = "Upgrade \(finding.packageName) to \(fixed)" }
                if let verdict = finding.vex { entry["analysis"] = analysis(verdict) }
                vulnerabilities.append(entry)
            }
            document["vulnerabilities"] = vulnerabilities
        }
        return [UInt8](try JSONSerialization.data(withJSONObject: document, options: [.sortedKeys, .prettyPrinted, .withoutEscapingSlashes]))
    }

    /// SPDX 2.3: the image is the described package; it CONTAINS every package found.
    public static func spdx(_ inventory: ImageInventory, subject: Subject, date: Date = Date(), namespace: UUID = UUID()) throws -> [UInt8] {
        var packages: [[String: Any]] = [
            [
                "SPDXID": "SPDXRef-Image", "name": subject.name, "versionInfo": subject.digest ?? "NOASSERTION",
                "downloadLocation": "NOASSERTION", "filesAnalyzed": false, "primaryPackagePurpose": "CONTAINER",
            ]
        ]
        var relationships: [[String: Any]] = [
            ["spdxElementId": "SPDXRef-DOCUMENT", "relationshipType": "DESCRIBES", "relatedSpdxElement": "SPDXRef-Image"]
        ]
        if let os = inventory.operatingSystem {
            packages.append([
                "SPDXID": "SPDXRef-OperatingSystem", "name": os.id, "versionInfo": os.versionID ?? "NOASSERTION",
                "downloadLocation": "NOASSERTION", "filesAnalyzed": false, "primaryPackagePurpose": "OPERATING-SYSTEM",
            ])
            relationships.append(["spdxElementId": "SPDXRef-Image", "relationshipType": "CONTAINS", "relatedSpdxElement": "SPDXRef-OperatingSystem"])
        }
        for (index, (purl, found)) in grouped(inventory).enumerated() {
            let package = found[0]
            let identifier = "SPDXRef-Package-\(index + 1)"
            // SPDX 2.3 has no fields for these; sourceInfo is its place for "how this was found".
            var facts = ["found in " + found.map(\.location).joined(separator: ", ")]
            facts += properties(package, inventory: inventory).filter { $0.0 != "wharf:location" }.map { "\($0.0.dropFirst("wharf:".count)): \($0.1)" }
            packages.append([
                "SPDXID": identifier, "name": package.name, "versionInfo": package.version,
                "downloadLocation": "NOASSERTION", "filesAnalyzed": false, "primaryPackagePurpose": "LIBRARY",
                "sourceInfo": facts.joined(separator: "; "),
                "externalRefs": [["referenceCategory": "PACKAGE-MANAGER", "referenceType": "purl", "referenceLocator": purl]],
            ])
            relationships.append(["spdxElementId": "SPDXRef-Image", "relationshipType": "CONTAINS", "relatedSpdxElement": identifier])
        }
        let document: [String: Any] = [
            "spdxVersion": "SPDX-2.3", "dataLicense": "CC0-1.0", "SPDXID": "SPDXRef-DOCUMENT",
            "name": subject.name,
            "documentNamespace": "https://wharf.invalid/spdx/\(namespace.uuidString.lowercased())",
            "creationInfo": ["created": timestamp(date), "creators": ["Tool: wharf-\(ScannerVersion.current)"]],
            "documentDescribes": ["SPDXRef-Image"],
            "packages": packages,
            "relationships": relationships,
        ]
        return [UInt8](try JSONSerialization.data(withJSONObject: document, options: [.sortedKeys, .prettyPrinted, .withoutEscapingSlashes]))
    }
}

public enum ScannerVersion {
    public static let current = "0.1.0"
}
