/// A validated repository name such as `team/app`.
///
/// Grammar (distribution-spec): path components matching `[a-z0-9]+((\.|_|__|-+)[a-z0-9]+)*`
/// joined by `/`, at most 255 characters. Hand-written rather than a regular expression because
/// it runs on every request.
public struct RepositoryName: Hashable, Sendable, Comparable, CustomStringConvertible {
    public static let maximumLength = 255

    public let value: String

    @inlinable
    public init?(_ string: some StringProtocol) {
        guard Self.isValid(string) else { return nil }
        value = String(string)
    }

    public var description: String { value }

    /// The first path component; Wharf's namespace (like a Harbor project).
    public var namespace: Substring {
        value.split(separator: "/", maxSplits: 1).first ?? Substring(value)
    }

    public static func < (lhs: RepositoryName, rhs: RepositoryName) -> Bool { lhs.value < rhs.value }

    // Inlinable so callers in other modules get a version specialised for String or Substring:
    // unspecialised generic code over StringProtocol costs more than the check itself.
    @inlinable
    public static func isValid(_ string: some StringProtocol) -> Bool {
        let bytes = string.utf8
        guard !bytes.isEmpty, bytes.count <= maximumLength else { return false }
        var index = bytes.startIndex
        while true {
            guard parseComponent(bytes, &index) else { return false }
            if index == bytes.endIndex { return true }
            guard bytes[index] == UInt8(ascii: "/") else { return false }
            bytes.formIndex(after: &index)
        }
    }

    @usableFromInline
    static func isLowerAlnum(_ b: UInt8) -> Bool {
        (b >= 0x61 && b <= 0x7A) || (b >= 0x30 && b <= 0x39)
    }

    /// One component: alnum+ (separator alnum+)*, where separator is `.`, `_`, `__` or `-+`.
    @inlinable
    static func parseComponent<C: Collection>(_ bytes: C, _ index: inout C.Index) -> Bool where C.Element == UInt8 {
        func alnumRun() -> Bool {
            var count = 0
            while index != bytes.endIndex, isLowerAlnum(bytes[index]) {
                bytes.formIndex(after: &index)
                count += 1
            }
            return count > 0
        }
        guard alnumRun() else { return false }
        while index != bytes.endIndex {
            switch bytes[index] {
            case UInt8(ascii: "."):
                bytes.formIndex(after: &index)
            case UInt8(ascii: "_"):
                bytes.formIndex(after: &index)
                if index != bytes.endIndex, bytes[index] == UInt8(ascii: "_") { bytes.formIndex(after: &index) }
            case UInt8(ascii: "-"):
                while index != bytes.endIndex, bytes[index] == UInt8(ascii: "-") { bytes.formIndex(after: &index) }
            default:
                return true  // end of this component (a slash, or an invalid byte the caller rejects)
            }
            guard alnumRun() else { return false }
        }
        return true
    }
}

/// A validated tag: `[a-zA-Z0-9_][a-zA-Z0-9._-]{0,127}`.
public struct Tag: Hashable, Sendable, Comparable, CustomStringConvertible {
    public static let maximumLength = 128

    public let value: String

    @inlinable
    public init?(_ string: some StringProtocol) {
        guard Self.isValid(string) else { return nil }
        value = String(string)
    }

    public var description: String { value }

    public static func < (lhs: Tag, rhs: Tag) -> Bool { lhs.value < rhs.value }

    @inlinable
    public static func isValid(_ string: some StringProtocol) -> Bool {
        let bytes = string.utf8
        guard let first = bytes.first, bytes.count <= maximumLength else { return false }
        func isWordByte(_ b: UInt8) -> Bool {
            (b >= 0x61 && b <= 0x7A) || (b >= 0x41 && b <= 0x5A) || (b >= 0x30 && b <= 0x39) || b == UInt8(ascii: "_")
        }
        guard isWordByte(first) else { return false }
        return bytes.dropFirst().allSatisfy { isWordByte($0) || $0 == UInt8(ascii: ".") || $0 == UInt8(ascii: "-") }
    }
}

/// What follows `/manifests/`: a tag or a digest.
public enum Reference: Hashable, Sendable, CustomStringConvertible {
    case tag(Tag)
    case digest(Digest)

    public enum ParseError: Error, Sendable {
        case invalidTag(String)
        case invalidDigest(Digest.ParseError)
    }

    /// A reference containing `:` is a digest; anything else must be a tag.
    @inlinable
    public init(parsing string: some StringProtocol) throws(ParseError) {
        if string.utf8.contains(UInt8(ascii: ":")) {
            do {
                self = .digest(try Digest(parsing: string))
            } catch {
                throw .invalidDigest(error)
            }
        } else if let tag = Tag(string) {
            self = .tag(tag)
        } else {
            throw .invalidTag(String(string))
        }
    }

    public var description: String {
        switch self {
        case .tag(let tag): tag.value
        case .digest(let digest): digest.description
        }
    }
}
