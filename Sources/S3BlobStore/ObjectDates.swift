import OCI

/// Dates as S3 writes them, to Unix milliseconds. Parsed by hand because they come in two fixed
/// shapes and a malformed one must give nil, never a trap.
enum ISODate {
    /// `2026-12-07T18:24:47.000Z` (listings).
    static func millis(_ text: String) -> Int64? {
        let bytes = Array(text.utf8)
        guard bytes.count >= 20, bytes[4] == UInt8(ascii: "-"), bytes[7] == UInt8(ascii: "-"), bytes[10] == UInt8(ascii: "T"),
            bytes[13] == UInt8(ascii: ":"), bytes[16] == UInt8(ascii: ":"), bytes.last == UInt8(ascii: "Z"),
            let year = number(bytes, 0, 4), let month = number(bytes, 5, 2), let day = number(bytes, 8, 2),
            let hour = number(bytes, 11, 2), let minute = number(bytes, 14, 2), let second = number(bytes, 17, 2)
        else { return nil }
        var millis: Int64 = 0
        if bytes.count >= 24, bytes[19] == UInt8(ascii: "."), let fraction = number(bytes, 20, 3) { millis = fraction }
        return CivilTime.millis(year: year, month: month, day: day, hour: hour, minute: minute, second: second).map { $0 + millis }
    }

    static func number(_ bytes: [UInt8], _ start: Int, _ length: Int) -> Int64? {
        guard start + length <= bytes.count else { return nil }
        var value: Int64 = 0
        for byte in bytes[start..<start + length] {
            guard byte >= UInt8(ascii: "0"), byte <= UInt8(ascii: "9") else { return nil }
            value = value * 10 + Int64(byte - UInt8(ascii: "0"))
        }
        return value
    }
}

enum HTTPDate {
    static let months = ["Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec"]

    /// `Mon, 07 Dec 2026 18:24:47 GMT` (the `Last-Modified` header).
    static func millis(_ text: String) -> Int64? {
        let parts = text.split(separator: " ")
        guard parts.count == 6, parts[5] == "GMT", let monthIndex = months.firstIndex(of: String(parts[2])) else { return nil }
        let time = parts[4].split(separator: ":")
        guard time.count == 3, let day = Int64(parts[1]), let year = Int64(parts[3]), let hour = Int64(time[0]), let minute = Int64(time[1]),
            let second = Int64(time[2])
        else { return nil }
        return CivilTime.millis(year: year, month: Int64(monthIndex + 1), day: day, hour: hour, minute: minute, second: second)
    }
}

enum CivilTime {
    /// Milliseconds since the epoch of a UTC date and time, or nil when a field is out of range.
    static func millis(year: Int64, month: Int64, day: Int64, hour: Int64, minute: Int64, second: Int64) -> Int64? {
        guard (1970...9999).contains(year), (1...12).contains(month), (1...31).contains(day), (0...23).contains(hour), (0...59).contains(minute),
            (0...60).contains(second)
        else { return nil }
        let days = CivilDate.days(year: year, month: month, day: day)
        return ((days * 24 + hour) * 60 + minute) * 60_000 + second * 1000
    }
}
