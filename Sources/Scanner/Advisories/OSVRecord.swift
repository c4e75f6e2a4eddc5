/// An advisory in the OSV format (https://ossf.github.io/osv-schema/), Wharf's internal format for
/// vulnerability data whatever the source. Only the fields matching and reporting use are decoded;
/// everything else in a record is ignored.
public struct OSVRecord: Codable, Sendable, Equatable {
    public var id: String
    public var modified: String?
    public var published: String?
    public var withdrawn: String?
    public var aliases: [String]?
    public var related: [String]?
    public var summary: String?
    public var details: String?
    public var severity: [Severity]?
    public var affected: [Affected]?
    public var databaseSpecific: JSONObject?

    enum CodingKeys: String, CodingKey {
        case id, modified, published, withdrawn, aliases, related, summary, details, severity, affected
        case databaseSpecific = "database_specific"
    }

    public init(id: String) { self.id = id }

    public struct Severity: Codable, Sendable, Equatable {
        public var type: String
        public var score: String
    }

    public struct Package: Codable, Sendable, Equatable {
        public var ecosystem: String
        public var name: String
        public var purl: String?

        public init(ecosystem: String, name: String) {
            self.ecosystem = ecosystem
            self.name = name
        }
    }

    public struct Event: Codable, Sendable, Equatable {
        public var introduced: String?
        public var fixed: String?
        public var lastAffected: String?
        public var limit: String?

        enum CodingKeys: String, CodingKey {
            case introduced, fixed, limit
            case lastAffected = "last_affected"
        }

        public init(introduced: String? = nil, fixed: String? = nil, lastAffected: String? = nil, limit: String? = nil) {
            self.introduced = introduced
            self.fixed = fixed
            self.lastAffected = lastAffected
            self.limit = limit
        }
    }

    public struct Range: Codable, Sendable, Equatable {
        public var type: String
        public var repo: String?
        public var events: [Event]

        public init(type: String, events: [Event]) {
            self.type = type
            self.events = events
        }
    }

    public struct Affected: Codable, Sendable, Equatable {
        public var package: Package?
        public var ranges: [Range]?
        public var versions: [String]?
        public var ecosystemSpecific: JSONObject?
        public var databaseSpecific: JSONObject?

        enum CodingKeys: String, CodingKey {
            case package, ranges, versions
            case ecosystemSpecific = "ecosystem_specific"
            case databaseSpecific = "database_specific"
        }

        public init(package: Package?, ranges: [Range]? = nil, versions: [String]? = nil) {
            self.package = package
            self.ranges = ranges
            self.versions = versions
        }
    }

    /// Whether the record is withdrawn (it then matches nothing).
    public var isWithdrawn: Bool { withdrawn.map { !$0.isEmpty } ?? false }
}

/// Any JSON object, kept as it came (severity hints and such in `database_specific`).
public struct JSONObject: Codable, Sendable, Equatable {
    public let json: String

    public init(from decoder: any Decoder) throws {
        let value = try decoder.singleValueContainer().decode(AnyJSON.self)
        json = value.text
    }

    public func encode(to encoder: any Encoder) throws {
        var container = encoder.singleValueContainer()
        try container.encode(json)
    }
}

/// A minimal JSON value that re-serialises itself (for opaque members).
indirect enum AnyJSON: Decodable {
    case null, bool(Bool), number(Double), string(String), array([AnyJSON]), object([(String, AnyJSON)])

    init(from decoder: any Decoder) throws {
        let container = try decoder.singleValueContainer()
        if container.decodeNil() { self = .null; return }
        if let value = try? container.decode(Bool.self) { self = .bool(value); return }
        if let value = try? container.decode(Double.self) { self = .number(value); return }
        if let value = try? container.decode(String.self) { self = .string(value); return }
        if let value = try? container.decode([AnyJSON].self) { self = .array(value); return }
        let object = try container.decode([String: AnyJSON].self)
        self = .object(object.sorted { $0.key < $1.key }.map { ($0.key, $0.value) })
    }

    var text: String {
        switch self {
        case .null: "null"
        case .bool(let value): value ? "true" : "false"
        case .number(let value): value.rounded() == value && abs(value) < 1e15 ? String(Int64(value)) : String(value)
        case .string(let value): "\"" + value.jsonEscaped + "\""
        case .array(let items): "[" + items.map(\.text).joined(separator: ",") + "]"
        case .object(let members): "{" + members.map { "\"\($0.0.jsonEscaped)\":\($0.1.text)" }.joined(separator: ",") + "}"
        }
    }
}

extension String {
    var jsonEscaped: String {
        var out = ""
        for scalar in unicodeScalars {
            switch scalar {
            case "\"": out += "\\\""
            case "\\": out += "\\\\"
            case "\n": out += "\\n"
            case "\r": out += "\\r"
            case "\t": out += "\\t"
            default:
                if scalar.value < 0x20 {
                    let hex = String(scalar.value, radix: 16)
                    out += "\\u" + String(repeating: "0", count: 4 - hex.count) + hex
                } else {
                    out.unicodeScalars.append(scalar)
                }
            }
        }
        return out
    }
}
