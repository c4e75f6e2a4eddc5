/// Numbers a client controls (byte ranges, sizes, counts, days, seconds, page sizes), parsed at the
/// edge into bounded values.
///
/// Why: Swift traps on integer overflow, and a trap kills the whole server, so one request carrying
/// `Content-Range: 0-9223372036854775807` used to take Wharf down. Every bound here is chosen so
/// that the arithmetic the registry then does on the value (adding two offsets, turning days into
/// milliseconds, subtracting from the current time) cannot overflow `Int64`.
public enum ClientNumber {
    /// The largest byte offset or blob size Wharf accepts: 2^50 bytes (1 PiB). Sums and differences
    /// of two such values, and such a value times 1,000, fit `Int64` with room to spare.
    public static let maximumByteOffset: Int64 = 1 << 50

    /// The longest duration a client may name in seconds: 100 years. In milliseconds (×1,000) and
    /// subtracted from the current time it stays far inside `Int64`.
    public static let maximumSeconds: Int64 = 100 * 366 * 86_400

    /// The longest duration a client may name in days (lifecycle rules): 100 years.
    public static let maximumDays: Int = 100 * 366

    /// Parses ASCII decimal digits (no sign, no spaces, no `+`, at most 19 digits) into `range`.
    /// Nil for anything else, never a trap.
    public static func parse<T: FixedWidthInteger>(_ text: some StringProtocol, in range: ClosedRange<T>) -> T? {
        let utf8 = text.utf8
        guard !utf8.isEmpty, utf8.count <= 19 else { return nil }
        var value: Int64 = 0
        for byte in utf8 {
            guard byte >= UInt8(ascii: "0"), byte <= UInt8(ascii: "9") else { return nil }
            // 19 digits of at most 9 fit Int64 only up to 9,223,372,036,854,775,807: check each step.
            let (shifted, overflow1) = value.multipliedReportingOverflow(by: 10)
            let (next, overflow2) = shifted.addingReportingOverflow(Int64(byte - UInt8(ascii: "0")))
            guard !overflow1, !overflow2 else { return nil }
            value = next
        }
        guard let converted = T(exactly: value), range.contains(converted) else { return nil }
        return converted
    }

    /// A JSON number as an exact integer in `range`: nil for fractions, NaN, infinities and values
    /// outside it (`Int(someDouble)` traps on those).
    public static func exactInteger<T: FixedWidthInteger>(_ number: Double, in range: ClosedRange<T>) -> T? {
        guard number.isFinite, let value = T(exactly: number), range.contains(value) else { return nil }
        return value
    }

    /// `now` minus `seconds`, in Unix milliseconds, saturating instead of trapping.
    public static func millis(_ now: Int64, minusSeconds seconds: Int64) -> Int64 {
        let (millis, overflow1) = seconds.multipliedReportingOverflow(by: 1000)
        guard !overflow1 else { return seconds >= 0 ? Int64.min : Int64.max }
        let (result, overflow2) = now.subtractingReportingOverflow(millis)
        guard !overflow2 else { return millis >= 0 ? Int64.min : Int64.max }
        return result
    }
}

/// An inclusive byte range a client named (an upload chunk's `Content-Range`, an ECR layer part):
/// both ends inside `0...ClientNumber.maximumByteOffset`, so its length and any offset computed
/// from it cannot overflow.
public struct ClientByteRange: Sendable, Equatable {
    public let first: Int64
    public let last: Int64

    /// Nil unless `0 <= first <= last <= ClientNumber.maximumByteOffset`.
    public init?(first: Int64, last: Int64) {
        guard first >= 0, last >= first, last <= ClientNumber.maximumByteOffset else { return nil }
        self.first = first
        self.last = last
    }

    /// The number of bytes, at least 1.
    public var length: Int64 { last - first + 1 }
}
