import OCI

/// HTTP byte ranges, as used by blob downloads (`Range`) and chunked uploads (`Content-Range`).
enum ByteRanges {
    enum Resolution: Equatable {
        /// No usable `Range` header: send the whole content.
        case whole
        /// Send these bytes (inclusive) with 206.
        case partial(ClosedRange<Int64>)
        /// Nothing of the content matches: 416 with `Content-Range: bytes */size`.
        case unsatisfiable
    }

    /// Resolves a `Range` request header against a content of `size` bytes (RFC 9110 §14.2).
    /// Several ranges in one header are served as the whole content, which the RFC allows.
    static func resolve(_ header: String?, size: Int64) -> Resolution {
        guard let header else { return .whole }
        let trimmed = header.trimmingCharacters(in: " ")
        guard trimmed.lowercased().hasPrefix("bytes=") else { return .whole }
        let spec = trimmed.dropFirst("bytes=".count)
        guard !spec.contains(",") else { return .whole }
        let parts = spec.split(separator: "-", maxSplits: 1, omittingEmptySubsequences: false)
        guard parts.count == 2 else { return .whole }
        let first = parts[0].trimmingCharacters(in: " ")
        let last = parts[1].trimmingCharacters(in: " ")
        if first.isEmpty {
            // Suffix range: the last N bytes.
            guard let suffix = ClientNumber.parse(last, in: 0...Int64.max) else { return .whole }
            guard suffix > 0, size > 0 else { return .unsatisfiable }
            return .partial(max(0, size - suffix)...(size - 1))
        }
        guard let start = ClientNumber.parse(first, in: 0...Int64.max) else { return .whole }
        let end: Int64
        if last.isEmpty {
            end = size - 1
        } else {
            guard let parsed = ClientNumber.parse(last, in: start...Int64.max) else { return .whole }
            end = min(parsed, size - 1)
        }
        guard start < size else { return .unsatisfiable }
        return .partial(start...end)
    }

    /// Parses an upload chunk's `Content-Range`. The spec's form is `<start>-<end>`; Docker-era
    /// clients also send `bytes <start>-<end>/<total>` or `bytes=<start>-<end>`. Nil when malformed
    /// or beyond `ClientNumber.maximumByteOffset`.
    static func parseChunkRange(_ header: String) -> ClientByteRange? {
        var value = Substring(header.trimmingCharacters(in: " "))
        if value.lowercased().hasPrefix("bytes=") {
            value = value.dropFirst(6)
        } else if value.lowercased().hasPrefix("bytes ") {
            value = value.dropFirst(6)
        }
        if let slash = value.firstIndex(of: "/") { value = value[..<slash] }
        let parts = value.split(separator: "-", maxSplits: 1, omittingEmptySubsequences: false)
        guard parts.count == 2, let start = ClientNumber.parse(parts[0], in: 0...ClientNumber.maximumByteOffset),
            let end = ClientNumber.parse(parts[1], in: 0...ClientNumber.maximumByteOffset)
        else { return nil }
        return ClientByteRange(first: start, last: end)
    }

    /// The `Range` header of upload responses: `0-<last byte>`, and `0-0` for an empty upload, as
    /// Distribution answers (clients parse the end value; none sends a negative one).
    static func uploadRange(size: Int64) -> String {
        "0-\(max(0, size - 1))"
    }
}

extension StringProtocol {
    func trimmingCharacters(in character: Character) -> String {
        var slice = Substring(self)
        while slice.first == character { slice.removeFirst() }
        while slice.last == character { slice.removeLast() }
        return String(slice)
    }
}
