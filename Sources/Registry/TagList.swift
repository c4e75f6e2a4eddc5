import NIOCore
import OCI

/// One page of a repository's tag list, ready to serve.
public struct TagPage: Sendable {
    /// The page's tags as the elements of a JSON array: `"a","b"` (no brackets).
    public let elements: ByteBuffer
    public let count: Int
    /// The page's last tag: the `last` of the next page's link.
    public let last: String?
    /// More tags follow this page.
    public let hasMore: Bool
}

/// A repository's tags in byte order together with their JSON encoding, made once when the list is
/// read. Any page is then a slice of those bytes: serving 1,000 tags costs one copy instead of
/// escaping and joining 1,000 strings per request.
struct EncodedTagList: Sendable {
    let tags: [String]
    /// `"a","b",…`: every tag as a JSON array element.
    let json: ByteBuffer
    /// Where each tag's element starts in `json`.
    private let starts: [Int]

    init(sorted tags: [String]) {
        var json = ByteBuffer()
        json.reserveCapacity(tags.reduce(0) { $0 + $1.utf8.count + 3 })
        var starts: [Int] = []
        starts.reserveCapacity(tags.count)
        for (index, tag) in tags.enumerated() {
            if index > 0 { json.writeInteger(UInt8(ascii: ",")) }
            starts.append(json.writerIndex)
            JSONString.write(tag, to: &json)  // tags need no escapes; rows written by other tools might
        }
        self.tags = tags
        self.json = json
        self.starts = starts
    }

    /// Up to `limit` tags after `last` (all of them when `last` is nil).
    func page(after last: String?, limit: Int) -> TagPage {
        let first = last.map { Self.firstIndex(in: tags, after: $0) } ?? 0
        let end = Swift.min(tags.count, first + Swift.max(0, limit))
        guard first < end else { return TagPage(elements: ByteBuffer(), count: 0, last: nil, hasMore: first < tags.count) }
        let byteEnd = end < tags.count ? starts[end] - 1 : json.writerIndex  // drop the comma before the next element
        return TagPage(
            elements: json.getSlice(at: starts[first], length: byteEnd - starts[first]) ?? ByteBuffer(),
            count: end - first, last: tags[end - 1], hasMore: end < tags.count
        )
    }

    /// Encodes tags read straight from the database (a list too long to keep).
    static func page(_ tags: [String], hasMore: Bool) -> TagPage {
        let list = EncodedTagList(sorted: tags)
        return TagPage(elements: list.json, count: tags.count, last: tags.last, hasMore: hasMore)
    }

    /// The index of the first tag that sorts byte-wise after `last`.
    static func firstIndex(in sorted: [String], after last: String) -> Int {
        var low = 0, high = sorted.count
        while low < high {
            let middle = (low + high) / 2
            if sorted[middle].utf8.lexicographicallyPrecedes(last.utf8) || sorted[middle] == last { low = middle + 1 } else { high = middle }
        }
        return low
    }
}
