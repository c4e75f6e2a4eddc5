import Crypto
import NIOCore

/// The hash algorithms Wharf accepts in digests. The OCI image spec registers exactly these two.
public enum DigestAlgorithm: String, Sendable, Hashable, CaseIterable, Codable {
    case sha256
    case sha512

    /// Length of the lowercase hex encoding of a hash of this algorithm.
    public var encodedLength: Int {
        switch self {
        case .sha256: 64
        case .sha512: 128
        }
    }
}

/// A content digest such as `sha256:6c3c…`: the identity of a blob or manifest.
public struct Digest: Hashable, Sendable, Comparable, CustomStringConvertible, Codable {
    public let algorithm: DigestAlgorithm
    /// Lowercase hex, exactly `algorithm.encodedLength` characters.
    public let encoded: String

    public enum ParseError: Error, Equatable, Sendable, CustomStringConvertible {
        /// Does not match `algorithm ":" encoded` of the OCI digest grammar.
        case malformed(String)
        /// Grammatically fine, but an algorithm Wharf does not implement (for example `sha384`, `blake3`).
        case unsupportedAlgorithm(String)
        /// The encoded part has the wrong length or characters for its algorithm.
        case invalidEncoding(String)

        public var description: String {
            switch self {
            case .malformed(let s): "'\(s)' is not a digest (expected algorithm:hex, e.g. sha256:<64 hex digits>)"
            case .unsupportedAlgorithm(let a): "digest algorithm '\(a)' is not supported (use sha256 or sha512)"
            case .invalidEncoding(let s): "'\(s)' has an invalid encoded part for its algorithm (lowercase hex of the right length)"
            }
        }
    }

    /// Builds a digest from parts already known to be valid (for example, a hash just computed).
    init(uncheckedAlgorithm algorithm: DigestAlgorithm, encoded: String) {
        self.algorithm = algorithm
        self.encoded = encoded
    }

    /// Parses and validates a digest string.
    public init(parsing string: some StringProtocol) throws(ParseError) {
        let utf8 = Array(string.utf8)
        guard let colon = utf8.firstIndex(of: UInt8(ascii: ":")), colon > 0, colon < utf8.count - 1 else {
            throw .malformed(String(string))
        }
        let algorithmBytes = utf8[..<colon]
        let encodedBytes = utf8[(colon + 1)...]
        // Grammar (image-spec descriptor.md): algorithm-component ([+._-] algorithm-component)*
        guard Self.isValidAlgorithmGrammar(algorithmBytes) else { throw .malformed(String(string)) }
        guard encodedBytes.allSatisfy(Self.isEncodedGrammarByte) else { throw .malformed(String(string)) }
        let algorithmName = String(decoding: algorithmBytes, as: UTF8.self)
        guard let algorithm = DigestAlgorithm(rawValue: algorithmName) else {
            throw .unsupportedAlgorithm(algorithmName)
        }
        guard encodedBytes.count == algorithm.encodedLength,
            encodedBytes.allSatisfy({ ($0 >= 0x30 && $0 <= 0x39) || ($0 >= 0x61 && $0 <= 0x66) })
        else { throw .invalidEncoding(String(string)) }
        self.algorithm = algorithm
        self.encoded = String(decoding: encodedBytes, as: UTF8.self)
    }

    /// Returns nil instead of throwing; for places where an invalid digest simply means "not a digest".
    public init?(_ string: some StringProtocol) {
        guard let parsed = try? Digest(parsing: string) else { return nil }
        self = parsed
    }

    public var description: String { "\(algorithm.rawValue):\(encoded)" }

    public static func < (lhs: Digest, rhs: Digest) -> Bool { lhs.description < rhs.description }

    public init(from decoder: any Decoder) throws {
        let container = try decoder.singleValueContainer()
        let string = try container.decode(String.self)
        do {
            self = try Digest(parsing: string)
        } catch {
            throw DecodingError.dataCorruptedError(in: container, debugDescription: error.description)
        }
    }

    public func encode(to encoder: any Encoder) throws {
        var container = encoder.singleValueContainer()
        try container.encode(description)
    }

    private static func isValidAlgorithmGrammar(_ bytes: ArraySlice<UInt8>) -> Bool {
        var previousWasSeparator = true  // a separator may not start the algorithm
        for byte in bytes {
            let isComponent = (byte >= 0x61 && byte <= 0x7A) || (byte >= 0x30 && byte <= 0x39)
            let isSeparator =
                byte == UInt8(ascii: "+") || byte == UInt8(ascii: ".")
                || byte == UInt8(ascii: "_") || byte == UInt8(ascii: "-")
            if isComponent {
                previousWasSeparator = false
            } else if isSeparator, !previousWasSeparator {
                previousWasSeparator = true
            } else {
                return false
            }
        }
        return !previousWasSeparator
    }

    private static func isEncodedGrammarByte(_ byte: UInt8) -> Bool {
        (byte >= 0x61 && byte <= 0x7A) || (byte >= 0x41 && byte <= 0x5A) || (byte >= 0x30 && byte <= 0x39)
            || byte == UInt8(ascii: "=") || byte == UInt8(ascii: "_") || byte == UInt8(ascii: "-")
    }
}

// MARK: - Hashing

/// Incremental hashing of a byte stream into a `Digest`. Streams are hashed as they arrive, never buffered.
public struct DigestHasher: Sendable {
    private enum State: Sendable {
        case sha256(SHA256)
        case sha512(SHA512)
    }

    private var state: State
    public let algorithm: DigestAlgorithm

    public init(_ algorithm: DigestAlgorithm = .sha256) {
        self.algorithm = algorithm
        switch algorithm {
        case .sha256: state = .sha256(SHA256())
        case .sha512: state = .sha512(SHA512())
        }
    }

    public mutating func update(_ buffer: ByteBuffer) {
        buffer.withUnsafeReadableBytes { update(bufferPointer: $0) }
    }

    public mutating func update(bufferPointer: UnsafeRawBufferPointer) {
        switch state {
        case .sha256(var hasher):
            hasher.update(bufferPointer: bufferPointer)
            state = .sha256(hasher)
        case .sha512(var hasher):
            hasher.update(bufferPointer: bufferPointer)
            state = .sha512(hasher)
        }
    }

    public mutating func update(_ bytes: some Sequence<UInt8>) {
        let array = Array(bytes)
        array.withUnsafeBytes { update(bufferPointer: $0) }
    }

    public func finalize() -> Digest {
        switch state {
        case .sha256(let hasher):
            return Digest(uncheckedAlgorithm: .sha256, encoded: hexEncode(hasher.finalize()))
        case .sha512(let hasher):
            return Digest(uncheckedAlgorithm: .sha512, encoded: hexEncode(hasher.finalize()))
        }
    }
}

extension Digest {
    /// The digest of a complete byte sequence.
    public static func of(_ bytes: some Sequence<UInt8>, algorithm: DigestAlgorithm = .sha256) -> Digest {
        var hasher = DigestHasher(algorithm)
        hasher.update(bytes)
        return hasher.finalize()
    }

    public static func of(_ buffer: ByteBuffer, algorithm: DigestAlgorithm = .sha256) -> Digest {
        var hasher = DigestHasher(algorithm)
        hasher.update(buffer)
        return hasher.finalize()
    }

    /// The digest of the empty byte string, for each algorithm.
    public static func ofEmpty(_ algorithm: DigestAlgorithm) -> Digest { .of([UInt8](), algorithm: algorithm) }
}

private func hexEncode(_ digest: some Sequence<UInt8>) -> String { Hex.encode(digest) }
