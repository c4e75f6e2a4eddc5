/// Whether a package version is affected, by OSV's evaluation rules: listed in `versions`, or
/// inside a range. A range's events, ordered by version (an `introduced` of `0` first), open
/// (`introduced`) and close (`fixed`, or just after `last_affected`) affected spans; `limit`
/// events bound the range from above. `GIT` ranges name commits, not versions, and are skipped.
public enum AffectedVersions {
    public static func contains(_ version: String, in affected: OSVRecord.Affected, ecosystem: Ecosystem) -> Bool {
        if let versions = affected.versions, versions.contains(where: { ecosystem.compare($0, version) == 0 }) { return true }
        for range in affected.ranges ?? [] where range.type == "ECOSYSTEM" || range.type == "SEMVER" {
            if contains(version, in: range, ecosystem: ecosystem) { return true }
        }
        return false
    }

    /// The spec's evaluation (events in version order), or, for records whose spans overlap, the
    /// spans as the record lists them (each `introduced` up to the next `fixed`/`last_affected`):
    /// a version either reading puts inside is affected, so contradictory records never hide one.
    public static func contains(_ version: String, in range: OSVRecord.Range, ecosystem: Ecosystem) -> Bool {
        let limits = range.events.compactMap(\.limit)
        if !limits.isEmpty, !limits.contains(where: { $0 == "*" || ecosystem.compare(version, $0) < 0 }) { return false }
        return inSortedSpans(version, range.events, ecosystem) || inListedSpans(version, range.events, ecosystem)
    }

    /// The listed reading applies only to records written as well-formed pairs (each close after
    /// its own `introduced`, and above it); anything else is merely unsorted and left to the spec's.
    static func inListedSpans(_ version: String, _ events: [OSVRecord.Event], _ ecosystem: Ecosystem) -> Bool {
        var start: String?
        var inside = false
        for event in events {
            if let introduced = event.introduced {
                if start != nil { return false }  // two opens in a row: not pairs
                start = introduced
                continue
            }
            guard let close = event.fixed ?? event.lastAffected else { continue }
            guard let opened = start, opened == "0" || ecosystem.compare(close, opened) > 0 else { return false }
            let above = opened == "0" || ecosystem.compare(version, opened) >= 0
            let below = event.fixed != nil ? ecosystem.compare(version, close) < 0 : ecosystem.compare(version, close) <= 0
            if above && below { inside = true }
            start = nil
        }
        if let opened = start, opened == "0" || ecosystem.compare(version, opened) >= 0 { inside = true }
        return inside
    }

    static func inSortedSpans(_ version: String, _ events: [OSVRecord.Event], _ ecosystem: Ecosystem) -> Bool {
        var affected = false
        for event in sorted(events, ecosystem: ecosystem) {
            if let introduced = event.introduced {
                if introduced == "0" || ecosystem.compare(version, introduced) >= 0 { affected = true }
            } else if let fixed = event.fixed {
                if ecosystem.compare(version, fixed) >= 0 { affected = false }
            } else if let lastAffected = event.lastAffected {
                if ecosystem.compare(version, lastAffected) > 0 { affected = false }
            }
        }
        return affected
    }

    /// Events in version order; `introduced: 0` before everything. For equal versions the
    /// original order is kept, so an `introduced` and a `fixed` at one version close the span.
    static func sorted(_ events: [OSVRecord.Event], ecosystem: Ecosystem) -> [OSVRecord.Event] {
        func key(_ event: OSVRecord.Event) -> String? {
            event.introduced ?? event.fixed ?? event.lastAffected
        }
        let indexed = events.enumerated().filter { key($0.element) != nil }
        return indexed.sorted { a, b in
            let x = key(a.element)!, y = key(b.element)!
            let xZero = a.element.introduced == "0", yZero = b.element.introduced == "0"
            if xZero != yZero { return xZero }
            if xZero && yZero { return a.offset < b.offset }
            let order = ecosystem.compare(x, y)
            return order != 0 ? order < 0 : a.offset < b.offset
        }.map(\.element)
    }

    /// The fixed versions a record names for a package (the lowest first), for reports.
    public static func fixedVersions(in affected: OSVRecord.Affected, ecosystem: Ecosystem) -> [String] {
        let fixed = (affected.ranges ?? []).filter { $0.type != "GIT" }.flatMap { $0.events.compactMap(\.fixed) }
        return Array(Set(fixed)).sorted { ecosystem.compare($0, $1) < 0 }
    }
}
