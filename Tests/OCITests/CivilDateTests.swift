import OCI
import Testing

@Suite struct CivilDateTests {
    /// Days since 1970-01-01 as Python's `datetime.date` counts them.
    @Test(arguments: [
        (2000, 3, 1, 11_017), (1969, 12, 31, -1), (1970, 1, 1, 0), (2026, 12, 7, 20_794), (1600, 2, 29, -135_081), (9999, 12, 31, 2_932_896),
    ])
    func knownDates(year: Int64, month: Int64, day: Int64, days: Int64) {
        #expect(CivilDate.days(year: year, month: month, day: day) == days)
        #expect(CivilDate.date(days: days) == (year, month, day))
    }

    @Test func everyDayOfFourCenturiesRoundTrips() {
        var previous: (year: Int64, month: Int64, day: Int64)?
        for days in Int64(-200_000)...Int64(200_000) {
            let date = CivilDate.date(days: days)
            #expect(CivilDate.days(year: date.year, month: date.month, day: date.day) == days)
            if let previous, previous.year == date.year, previous.month == date.month { #expect(date.day == previous.day + 1) }
            previous = date
        }
        #expect(CivilDate.floorDivide(-1, 86_400) == -1)
        #expect(CivilDate.floorDivide(86_399, 86_400) == 0)
        #expect(CivilDate.floorDivide(-86_400, 86_400) == -1)
    }
}
