import Monitoring

/// The endpoint a `/v2` path names. Repository names contain slashes, so the operation is found by
/// matching from the end of the path (`…/manifests/<ref>`, `…/blobs/uploads/<id>`, …) and the
/// rest is the name. References and digests never contain a slash, so this is unambiguous.
enum DistributionRoute: Equatable {
    case base
    case catalog
    case tags(name: String)
    case manifest(name: String, reference: String)
    case blob(name: String, digest: String)
    case uploads(name: String)
    case upload(name: String, id: String)
    case referrers(name: String, digest: String)

    static func parse(path: String) -> DistributionRoute? {
        var components = path.split(separator: "/", omittingEmptySubsequences: false)
        // "/v2/a/b" splits into "", "v2", "a", "b"; a trailing slash adds a final "".
        guard components.count >= 2, components[0].isEmpty, components[1] == "v2" else { return nil }
        components.removeFirst(2)
        if components.last == "" { components.removeLast() }
        let c = components
        let n = c.count
        if n == 0 { return .base }
        if n == 1, c[0] == "_catalog" { return .catalog }
        func name(_ count: Int) -> String { c[0..<count].joined(separator: "/") }
        if n >= 3, c[n - 2] == "tags", c[n - 1] == "list" { return .tags(name: name(n - 2)) }
        if n >= 3, c[n - 2] == "blobs", c[n - 1] == "uploads" { return .uploads(name: name(n - 2)) }
        if n >= 4, c[n - 3] == "blobs", c[n - 2] == "uploads" { return .upload(name: name(n - 3), id: String(c[n - 1])) }
        if n >= 3, c[n - 2] == "manifests" { return .manifest(name: name(n - 2), reference: String(c[n - 1])) }
        if n >= 3, c[n - 2] == "blobs" { return .blob(name: name(n - 2), digest: String(c[n - 1])) }
        if n >= 3, c[n - 2] == "referrers" { return .referrers(name: name(n - 2), digest: String(c[n - 1])) }
        return nil
    }

    /// The metrics route of a `/v2` path, found like `parse` but without building names.
    static func metricRoute(path: String) -> HTTPRoute {
        var components = path.utf8.split(separator: UInt8(ascii: "/"), omittingEmptySubsequences: false)
        guard components.count >= 2 else { return .v2Other }
        components.removeFirst(2)
        if components.last?.isEmpty == true { components.removeLast() }
        let n = components.count
        func isWord(_ index: Int, _ word: String) -> Bool { components[index].elementsEqual(word.utf8) }
        if n == 0 { return .v2Base }
        if n == 1, isWord(0, "_catalog") { return .catalog }
        if n >= 3, isWord(n - 2, "tags"), isWord(n - 1, "list") { return .tags }
        if n >= 3, isWord(n - 2, "blobs"), isWord(n - 1, "uploads") { return .blobUpload }
        if n >= 4, isWord(n - 3, "blobs"), isWord(n - 2, "uploads") { return .blobUpload }
        if n >= 3, isWord(n - 2, "manifests") { return .manifest }
        if n >= 3, isWord(n - 2, "blobs") { return .blob }
        if n >= 3, isWord(n - 2, "referrers") { return .referrers }
        return .v2Other
    }
}
