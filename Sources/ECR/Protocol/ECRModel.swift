import OCI
import Synchronization

#if canImport(FoundationEssentials)
import FoundationEssentials
#else
import Foundation
#endif

/// The part of botocore's ECR service model that validation needs: every operation's input shape,
/// and each shape's type and constraints. The JSON comes from `ECRModel.generated.swift`.
final class ECRModel: Sendable {
    struct Shape: Sendable, Decodable {
        var type: String
        var required: [String]?
        var min: Double?
        var max: Double?
        var pattern: String?
        var `enum`: [String]?
        var members: [String: String]?
        var member: String?
        var key: String?
        var value: String?
    }

    struct Document: Sendable, Decodable {
        var botocore: String
        /// Operation name → input shape name (nil for operations without input).
        var operations: [String: String?]
        var shapes: [String: Shape]
    }

    let document: Document
    /// Each shape's pattern, compiled on its first use (compiling all 40-odd at start costs time and
    /// touches the regex engine's code in every server, ECR callers or not); a pattern must match the
    /// whole value. Behind a lock because `Regex` is not `Sendable` (validation is a handful of
    /// matches per request, so the lock is never contended long).
    private let patterns = Mutex<[String: Regex<AnyRegexOutput>]>([:])

    static let shared: ECRModel = {
        do {
            return try ECRModel(json: json)
        } catch {
            fatalError("the generated ECR model does not parse: \(error)")
        }
    }()

    init(json: String) throws {
        document = try JSONDecoder().decode(Document.self, from: Data(json.utf8))
    }

    /// Compiles every pattern now (the tests call this, so a model whose patterns Swift cannot
    /// parse fails there rather than on a user's request).
    func compileAllPatterns() throws {
        for (name, shape) in document.shapes where shape.pattern != nil {
            _ = try patterns.withLock { patterns in try Self.compiled(name, shape, in: &patterns) }
        }
    }

    private static func compiled(_ name: String, _ shape: Shape, in patterns: inout [String: Regex<AnyRegexOutput>]) throws -> Regex<AnyRegexOutput>? {
        guard let pattern = shape.pattern else { return nil }
        if let regex = patterns[name] { return regex }
        let regex = try Regex("(?:\(pattern))")
        patterns[name] = regex
        return regex
    }

    var operationNames: Dictionary<String, String?>.Keys { document.operations.keys }

    func inputShape(of operation: String) -> String?? { document.operations[operation] }

    /// Checks `input` against the operation's input shape: required members, types, lengths, ranges,
    /// patterns and enums. Unknown members are ignored, as AWS services do.
    func validate(_ input: JSONValue, operation: String) throws(ECRError) {
        guard let shapeName = document.operations[operation] ?? nil else { return }
        try validate(input, shapeName: shapeName, path: "")
    }

    private func validate(_ value: JSONValue, shapeName: String, path: String) throws(ECRError) {
        guard let shape = document.shapes[shapeName] else { return }
        let at = path.isEmpty ? "request" : path
        if case .null = value { return }  // an explicit null is an absent member
        switch shape.type {
        case "structure":
            guard let object = value.object else { throw .serialization("\(at) must be an object") }
            for name in shape.required ?? [] where object[name] == nil || object[name] == .null {
                throw .invalidParameter("Invalid parameter at '\(join(path, name))' failed to satisfy constraint: 'Member must not be null'")
            }
            for (name, member) in object {
                guard let memberShape = shape.members?[name] else { continue }
                try validate(member, shapeName: memberShape, path: join(path, name))
            }
        case "list":
            guard let items = value.array else { throw .serialization("\(at) must be a list") }
            try checkRange(Double(items.count), shape, path: at, what: "Member must have length")
            for (index, item) in items.enumerated() {
                try validate(item, shapeName: shape.member ?? "", path: "\(at).\(index + 1)")
            }
        case "map":
            guard let entries = value.object else { throw .serialization("\(at) must be a map") }
            try checkRange(Double(entries.count), shape, path: at, what: "Member must have length")
            for (key, entry) in entries {
                try validate(.string(key), shapeName: shape.key ?? "", path: "\(at).key")
                try validate(entry, shapeName: shape.value ?? "", path: "\(at).\(key)")
            }
        case "string":
            guard let string = value.string else { throw .serialization("\(at) must be a string") }
            try checkRange(Double(string.count), shape, path: at, what: "Member must have length")
            if let allowed = shape.enum, !allowed.contains(string) {
                throw .invalidParameter(
                    "Invalid parameter at '\(at)' failed to satisfy constraint: 'Member must satisfy enum value set: [\(allowed.joined(separator: ", "))]'")
            }
            let matches = patterns.withLock { patterns in
                // A pattern Swift cannot compile is skipped here; compileAllPatterns() in the tests rules that out.
                guard let regex = try? Self.compiled(shapeName, shape, in: &patterns) else { return true }
                return (try? regex.wholeMatch(in: string)) != nil
            }
            if !matches {
                throw .invalidParameter("Invalid parameter at '\(at)' failed to satisfy constraint: 'must satisfy regular expression '\(shape.pattern ?? "")''")
            }
        case "integer", "long":
            guard let number = value.double, number.rounded() == number else { throw .serialization("\(at) must be an integer") }
            // AWS integers are 32-bit and longs 64-bit; a value past them is a serialization error
            // there, and here it must never reach an `Int(_:)` conversion, which would trap.
            let fits =
                shape.type == "integer"
                ? ClientNumber.exactInteger(number, in: Int32.min...Int32.max) != nil
                : ClientNumber.exactInteger(number, in: Int64.min...Int64.max) != nil
            guard fits else { throw .serialization("\(at) is out of range for a \(shape.type)") }
            try checkRange(number, shape, path: at, what: "Member must have value")
        case "boolean":
            guard value.bool != nil else { throw .serialization("\(at) must be a boolean") }
        case "timestamp", "double", "float":
            guard value.double != nil else { throw .serialization("\(at) must be a number") }
        case "blob":
            guard let string = value.string, Data(base64Encoded: string) != nil else { throw .serialization("\(at) must be base64") }
            try checkRange(Double(string.count / 4 * 3), shape, path: at, what: "Member must have length")
        default:
            return
        }
    }

    private func checkRange(_ value: Double, _ shape: Shape, path: String, what: String) throws(ECRError) {
        if let min = shape.min, value < min {
            throw .invalidParameter("Invalid parameter at '\(path)' failed to satisfy constraint: '\(what) greater than or equal to \(Int(min))'")
        }
        if let max = shape.max, value > max {
            throw .invalidParameter("Invalid parameter at '\(path)' failed to satisfy constraint: '\(what) less than or equal to \(Int(max))'")
        }
    }

    private func join(_ path: String, _ name: String) -> String { path.isEmpty ? name : "\(path).\(name)" }
}
