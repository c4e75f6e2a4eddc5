import Foundation

/// What a VEX statement says of a vulnerability in a product, in OpenVEX's words (CycloneDX's
/// analysis states are mapped onto them).
public enum VEXStatus: String, Sendable, Codable, Equatable {
    case notAffected = "not_affected"
    case affected
    case fixed
    case underInvestigation = "under_investigation"

    /// A finding with this status is shown but neither blocks a pull nor fails a scan.
    public var suppresses: Bool { self == .notAffected || self == .fixed }
}

/// The statement that decided a finding: kept on the finding, so a suppressed one says why.
public struct VEXVerdict: Sendable, Codable, Equatable, Hashable {
    public var status: VEXStatus
    public var justification: String?
    /// OpenVEX's impact or action statement, CycloneDX's analysis detail.
    public var statement: String?
    /// Where the statement came from: the document's id, and where Wharf found it.
    public var source: String
    public var timestamp: String?
}

/// One statement of a VEX document: which vulnerability, in which products, with what status.
public struct VEXStatement: Sendable, Equatable {
    /// The vulnerability's name and aliases (CVE-…, GHSA-…), matched against a finding's ids.
    public var vulnerabilities: [String]
    /// Products the statement covers; empty means every product where the document applies
    /// (the image it is attached to, the namespace it is set for, the scan it is given to).
    public var products: [Product]
    public var status: VEXStatus
    public var justification: String?
    public var statement: String?
    public var timestamp: String?
    public var source: String

    public struct Product: Sendable, Equatable {
        /// Purls or digests naming the product: a package (`pkg:maven/…@1.2`) or an image
        /// (`pkg:oci/app@sha256%3A…`, `sha256:…`).
        public var identifiers: [String]
        /// For an image product, the packages inside it the statement is about (empty: all).
        public var subcomponents: [String]
    }
}

public struct VEXError: Error, CustomStringConvertible, Equatable {
    public let description: String
    public init(_ description: String) { self.description = description }
}

/// Reads OpenVEX (0.0.x and 0.2.x) and CycloneDX VEX (1.4–1.6 `vulnerabilities[].analysis`)
/// documents into statements, refusing what the specifications forbid so that a mistyped
/// document is reported, not silently ignored.
public enum VEXDocument {
    public static let openVEXMediaType = "application/vnd.openvex+json"
    public static let maximumSize = 4 << 20

    public static func statements(from bytes: [UInt8], origin: String) throws(VEXError) -> [VEXStatement] {
        guard bytes.count <= maximumSize else { throw VEXError("the VEX document is larger than \(maximumSize >> 20) MiB") }
        guard let object = try? JSONSerialization.jsonObject(with: Data(bytes)), let document = object as? [String: Any] else {
            throw VEXError("the VEX document is not a JSON object")
        }
        do {
            if let context = document["@context"] as? String, context.contains("openvex") {
                return try openVEX(document, origin: origin)
            }
            if document["bomFormat"] as? String == "CycloneDX" {
                return try cycloneDX(document, origin: origin)
            }
        } catch let error as VEXError {
            throw error
        } catch {
            throw VEXError("\(error)")
        }
        throw VEXError("not an OpenVEX document (no openvex @context) nor a CycloneDX one (no bomFormat)")
    }

    static func openVEX(_ document: [String: Any], origin: String) throws -> [VEXStatement] {
        guard let statements = document["statements"] as? [[String: Any]] else { throw VEXError("OpenVEX: `statements` must be an array of objects") }
        let source = [document["@id"] as? String, origin].compactMap { $0 }.joined(separator: " in ")
        let documentTimestamp = document["timestamp"] as? String
        return try statements.enumerated().map { (index, statement) throws -> VEXStatement in
            let at = "OpenVEX statement \(index + 1)"
            var names: [String] = []
            if let name = statement["vulnerability"] as? String {
                names = [name]  // 0.0.x
            } else if let vulnerability = statement["vulnerability"] as? [String: Any] {
                names =
                    ([vulnerability["name"] as? String, vulnerability["@id"] as? String].compactMap { $0 })
                    + (vulnerability["aliases"] as? [String] ?? [])
            }
            guard !names.isEmpty else { throw VEXError("\(at): `vulnerability` needs a name") }
            guard let word = statement["status"] as? String, let status = VEXStatus(rawValue: word) else {
                throw VEXError("\(at): `status` must be not_affected, affected, fixed or under_investigation")
            }
            let justification = statement["justification"] as? String
            let impact = statement["impact_statement"] as? String
            let action = statement["action_statement"] as? String
            if let justification, !openVEXJustifications.contains(justification) {
                throw VEXError("\(at): unknown justification '\(justification)'")
            }
            if status == .notAffected, justification == nil, impact == nil {
                throw VEXError("\(at): not_affected needs a justification or an impact_statement")
            }
            var products: [VEXStatement.Product] = []
            for entry in statement["products"] as? [Any] ?? [] {
                if let identifier = entry as? String {
                    products.append(.init(identifiers: [identifier], subcomponents: []))  // 0.0.x
                } else if let product = entry as? [String: Any] {
                    var identifiers = [product["@id"] as? String].compactMap { $0 }
                    if let ids = product["identifiers"] as? [String: Any] { identifiers += ids.values.compactMap { $0 as? String } }
                    if let hashes = product["hashes"] as? [String: Any], let sha256 = hashes["sha-256"] as? String {
                        identifiers.append("sha256:" + sha256)
                    }
                    let subcomponents = (product["subcomponents"] as? [[String: Any]] ?? []).flatMap { component in
                        [component["@id"] as? String].compactMap { $0 }
                            + ((component["identifiers"] as? [String: Any])?.values.compactMap { $0 as? String } ?? [])
                    }
                    guard !identifiers.isEmpty else { throw VEXError("\(at): a product has no @id, identifiers or hashes") }
                    products.append(.init(identifiers: identifiers, subcomponents: subcomponents))
                }
            }
            return VEXStatement(
                vulnerabilities: names, products: products, status: status, justification: justification,
                statement: impact ?? action ?? statement["status_notes"] as? String,
                timestamp: statement["timestamp"] as? String ?? documentTimestamp, source: source)
        }
    }

    static let openVEXJustifications: Set<String> = [
        "component_not_present", "vulnerable_code_not_present", "vulnerable_code_not_in_execute_path",
        "vulnerable_code_cannot_be_controlled_by_adversary", "inline_mitigations_already_exist",
    ]

    /// CycloneDX's analysis states in OpenVEX's vocabulary.
    static let cycloneDXStates: [String: VEXStatus] = [
        "not_affected": .notAffected, "false_positive": .notAffected, "resolved": .fixed, "resolved_with_pedigree": .fixed,
        "exploitable": .affected, "in_triage": .underInvestigation,
    ]

    static func cycloneDX(_ document: [String: Any], origin: String) throws -> [VEXStatement] {
        // A BOM with no vulnerabilities says nothing (an SBOM attached by another tool).
        guard let vulnerabilities = document["vulnerabilities"].map({ $0 as? [[String: Any]] }) ?? [] else {
            throw VEXError("CycloneDX VEX: `vulnerabilities` must be an array of objects")
        }
        // bom-refs of the document's own components, so `affects[].ref` can name them.
        var purlOfReference: [String: String] = [:]
        func collect(_ components: [[String: Any]]) {
            for component in components {
                if let reference = component["bom-ref"] as? String, let purl = component["purl"] as? String { purlOfReference[reference] = purl }
                collect(component["components"] as? [[String: Any]] ?? [])
            }
        }
        collect(document["components"] as? [[String: Any]] ?? [])
        // A VEX about one image names it as the BOM's subject.
        let metadataComponent = (document["metadata"] as? [String: Any])?["component"] as? [String: Any]
        var image: [String] = []
        if let component = metadataComponent, ["container", "application"].contains(component["type"] as? String ?? "") {
            if let purl = component["purl"] as? String { image.append(purl) }
            for hash in component["hashes"] as? [[String: Any]] ?? [] where (hash["alg"] as? String) == "SHA-256" {
                if let content = hash["content"] as? String { image.append("sha256:" + content) }
            }
            if let version = component["version"] as? String, version.hasPrefix("sha256:") { image.append(version) }
        }
        let source = [document["serialNumber"] as? String, origin].compactMap { $0 }.joined(separator: " in ")
        let timestamp = (document["metadata"] as? [String: Any])?["timestamp"] as? String
        return try vulnerabilities.enumerated().compactMap { (index, vulnerability) throws -> VEXStatement? in
            let at = "CycloneDX vulnerability \(index + 1)"
            guard let id = vulnerability["id"] as? String, !id.isEmpty else { throw VEXError("\(at): `id` is required") }
            // A plain BOM's vulnerabilities (a scanner's findings) carry no analysis: not VEX.
            guard let analysis = vulnerability["analysis"] as? [String: Any], let state = analysis["state"] as? String else { return nil }
            guard let status = cycloneDXStates[state] else { throw VEXError("\(at): unknown analysis state '\(state)'") }
            let names = [id] + (vulnerability["references"] as? [[String: Any]] ?? []).compactMap { $0["id"] as? String }
            let packages = (vulnerability["affects"] as? [[String: Any]] ?? []).compactMap { affected -> String? in
                guard let reference = affected["ref"] as? String else { return nil }
                // A BOM-Link (`urn:cdx:serial/version#bom-ref`) names a component of this or another BOM.
                let local = reference.hasPrefix("urn:cdx:") ? String(reference.split(separator: "#", maxSplits: 1).last ?? "") : reference
                return purlOfReference[local] ?? (local.hasPrefix("pkg:") ? local : nil)
            }
            let products: [VEXStatement.Product] =
                image.isEmpty
                ? packages.map { .init(identifiers: [$0], subcomponents: []) }
                : [.init(identifiers: image, subcomponents: packages)]
            return VEXStatement(
                vulnerabilities: names, products: products, status: status, justification: analysis["justification"] as? String,
                statement: analysis["detail"] as? String, timestamp: vulnerability["updated"] as? String ?? timestamp, source: source)
        }
    }
}

/// Applies VEX statements to an image's findings: the most recent statement that names a
/// finding's vulnerability (by id or alias) for a product covering it decides its status.
public enum VEXApplication {
    public static func apply(
        _ statements: [VEXStatement], to findings: [Finding], inventory: ImageInventory, image: ImageIdentity
    ) -> [Finding] {
        guard !statements.isEmpty else { return findings }
        return findings.map { finding in
            var finding = finding
            let ids = Set(([finding.id] + finding.aliases).map { $0.uppercased() })
            let package = inventory.packages.first {
                $0.name == finding.packageName && $0.version == finding.installedVersion && $0.location == finding.location
            }
            let purl = package.map { PackageURL(SBOMWriter.purl($0, os: inventory.operatingSystem)) }
            let deciding =
                statements
                .enumerated()
                .filter { _, statement in
                    statement.vulnerabilities.contains { ids.contains($0.uppercased()) } && covers(statement, purl: purl, image: image)
                }
                .max { ($0.element.timestamp ?? "", $0.offset) < ($1.element.timestamp ?? "", $1.offset) }?
                .element
            if let deciding {
                finding.vex = VEXVerdict(
                    status: deciding.status, justification: deciding.justification, statement: deciding.statement,
                    source: deciding.source, timestamp: deciding.timestamp)
            }
            return finding
        }
    }

    /// The image a scan is about: its manifest digest and repository, for statements naming images.
    public struct ImageIdentity: Sendable {
        public var digest: String?
        public var repository: String?
        public init(digest: String?, repository: String?) {
            self.digest = digest
            self.repository = repository
        }
    }

    static func covers(_ statement: VEXStatement, purl: PackageURL?, image: ImageIdentity) -> Bool {
        if statement.products.isEmpty { return true }
        return statement.products.contains { product in
            let imageIdentifiers = product.identifiers.filter(isImageIdentifier)
            if !imageIdentifiers.isEmpty {
                guard imageIdentifiers.contains(where: { names(image, $0) }) else { return false }
                guard !product.subcomponents.isEmpty else { return true }
                guard let purl else { return false }
                return product.subcomponents.contains { PackageURL($0).covers(purl) }
            }
            guard let purl else { return false }
            return product.identifiers.contains { PackageURL($0).covers(purl) }
        }
    }

    static func isImageIdentifier(_ identifier: String) -> Bool {
        identifier.hasPrefix("sha256:") || identifier.hasPrefix("pkg:oci/") || identifier.hasPrefix("pkg:docker/")
    }

    /// Whether an image identifier (`sha256:…`, `pkg:oci/name@sha256%3A…`) names this image; a
    /// `pkg:oci` purl without a digest names every image of a repository of that name.
    static func names(_ image: ImageIdentity, _ identifier: String) -> Bool {
        if identifier.hasPrefix("sha256:") { return identifier.lowercased() == image.digest?.lowercased() }
        let purl = PackageURL(identifier)
        if let version = purl.version { return version.lowercased() == image.digest?.lowercased() }
        guard let repository = image.repository else { return false }
        return repository == purl.name || repository.hasSuffix("/" + purl.name)
    }
}

/// A package URL taken apart (github.com/package-url/purl-spec), for matching: a statement's purl
/// covers a package's when type, namespace and name agree, its version (if any) is the package's,
/// and each qualifier it gives has the package's value.
public struct PackageURL: Equatable, Sendable {
    public var type = ""
    public var namespace = ""
    public var name = ""
    public var version: String?
    public var qualifiers: [String: String] = [:]

    public init(_ text: String) {
        guard text.hasPrefix("pkg:") else { return }
        var rest = Substring(text.dropFirst(4))
        if let hash = rest.firstIndex(of: "#") { rest = rest[..<hash] }
        if let question = rest.firstIndex(of: "?") {
            for pair in rest[rest.index(after: question)...].split(separator: "&") {
                let parts = pair.split(separator: "=", maxSplits: 1)
                if parts.count == 2 { qualifiers[parts[0].lowercased()] = Self.decode(parts[1]) }
            }
            rest = rest[..<question]
        }
        if let at = rest.lastIndex(of: "@"), let slash = rest.lastIndex(of: "/"), at > slash {
            version = Self.decode(rest[rest.index(after: at)...])
            rest = rest[..<at]
        } else if let at = rest.lastIndex(of: "@"), !rest.contains("/") {
            version = Self.decode(rest[rest.index(after: at)...])
            rest = rest[..<at]
        }
        let segments = rest.split(separator: "/", omittingEmptySubsequences: true).map { Self.decode($0) }
        guard let first = segments.first else { return }
        type = first.lowercased()
        name = segments.count > 1 ? segments.last! : ""
        namespace = segments.count > 2 ? segments[1..<(segments.count - 1)].joined(separator: "/") : ""
        // purl-spec: these types' names and namespaces are case-insensitive.
        if ["pypi", "npm", "deb", "apk", "golang", "github"].contains(type) {
            name = name.lowercased()
            namespace = namespace.lowercased()
        }
        if type == "pypi" { name = name.replacingOccurrences(of: "_", with: "-") }
    }

    static func decode<S: StringProtocol>(_ text: S) -> String { String(text).removingPercentEncoding ?? String(text) }

    public func covers(_ other: PackageURL) -> Bool {
        guard !type.isEmpty, type == other.type, namespace == other.namespace, name == other.name else { return false }
        if let version, version != other.version { return false }
        return qualifiers.allSatisfy { other.qualifiers[$0.key] == $0.value }
    }
}
