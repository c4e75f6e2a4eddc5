import OCI
import Testing

/// Numbers from clients are parsed into bounded values: never a trap, whatever the text.
@Suite("Client numbers")
struct ClientNumberTests {
    @Test("decimal digits only, inside the range")
    func parsing() {
        #expect(ClientNumber.parse("0", in: 0...10) == 0)
        #expect(ClientNumber.parse("10", in: 0...10) == 10)
        #expect(ClientNumber.parse("11", in: 0...10) == nil)
        for bad in ["", "-1", "+1", " 1", "1 ", "1e3", "0x10", "１", "1.0", "--1"] {
            #expect(ClientNumber.parse(bad, in: Int64.min...Int64.max) == nil, "\(bad)")
        }
        #expect(ClientNumber.parse("9223372036854775807", in: 0...Int64.max) == Int64.max)
        #expect(ClientNumber.parse("9223372036854775808", in: 0...Int64.max) == nil)
        #expect(ClientNumber.parse("99999999999999999999999", in: 0...Int64.max) == nil)
        #expect(ClientNumber.parse("00000000000000000000001", in: 0...Int64.max) == nil, "more than 19 digits")
        #expect(ClientNumber.parse("300", in: UInt8.min...UInt8.max) == nil)
    }

    @Test("JSON numbers become exact integers or nothing")
    func exactIntegers() {
        #expect(ClientNumber.exactInteger(5, in: 0...10) == 5)
        #expect(ClientNumber.exactInteger(5.5, in: 0...10) == nil)
        #expect(ClientNumber.exactInteger(.nan, in: Int.min...Int.max) == nil)
        #expect(ClientNumber.exactInteger(.infinity, in: Int.min...Int.max) == nil)
        // 2^63 - 1 is 2^63 as a double: outside Int64, where Int(_:) traps.
        #expect(ClientNumber.exactInteger(9_223_372_036_854_775_807.0, in: Int64.min...Int64.max) == nil)
        #expect(ClientNumber.exactInteger(1e30, in: Int.min...Int.max) == nil)
    }

    @Test("byte ranges are bounded so their length cannot overflow")
    func byteRanges() {
        #expect(ClientByteRange(first: 0, last: 9)?.length == 10)
        #expect(ClientByteRange(first: 0, last: Int64.max) == nil)
        #expect(ClientByteRange(first: 5, last: 4) == nil)
        #expect(ClientByteRange(first: -1, last: 4) == nil)
        #expect(ClientByteRange(first: 0, last: ClientNumber.maximumByteOffset)?.length == ClientNumber.maximumByteOffset + 1)
    }

    @Test("time arithmetic saturates instead of trapping")
    func saturatingTime() {
        #expect(ClientNumber.millis(10_000, minusSeconds: 3) == 7_000)
        #expect(ClientNumber.millis(10_000, minusSeconds: Int64.max) == Int64.min)
        #expect(ClientNumber.millis(Int64.min + 5, minusSeconds: 1) == Int64.min)
        #expect(ClientNumber.millis(0, minusSeconds: Int64.min) == Int64.max)
    }
}
