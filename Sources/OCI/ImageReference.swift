/// An image reference as Docker and skopeo read them: `[HOST[:PORT]/]REPOSITORY[:TAG|@DIGEST]`.
/// A first component without a dot or a colon (and other than `localhost`) is not a host, so
/// `alpine:3.19` means Docker Hub's `library/alpine`, whose API lives at `registry-1.docker.io`.
public struct ImageReference: Sendable, Equatable {
    /// Where the Distribution API answers (`registry-1.docker.io` for Docker Hub).
    public var host: String
    public var repository: String
    /// A tag or a digest; `latest` when none is given.
    public var reference: String

    public init?(_ text: some StringProtocol) {
        var rest = String(text)
        guard !rest.isEmpty, !rest.contains("://") else { return nil }
        var host = "docker.io"
        if let slash = rest.firstIndex(of: "/") {
            let first = rest[..<slash]
            if first.contains(".") || first.contains(":") || first == "localhost" {
                host = String(first)
                rest = String(rest[rest.index(after: slash)...])
            }
        }
        var reference = "latest"
        if let at = rest.firstIndex(of: "@") {
            reference = String(rest[rest.index(after: at)...])
            rest = String(rest[..<at])
        } else if let colon = rest.lastIndex(of: ":") {
            reference = String(rest[rest.index(after: colon)...])
            rest = String(rest[..<colon])
        }
        if host == "docker.io" || host == "index.docker.io" {
            host = "registry-1.docker.io"
            if !rest.contains("/") { rest = "library/" + rest }
        }
        guard !host.isEmpty, RepositoryName(rest) != nil, Digest(reference) != nil || Tag(reference) != nil else { return nil }
        self.host = host
        repository = rest
        self.reference = reference
    }

    /// Loopback registries speak plain HTTP, as Docker allows without configuration.
    public var isLoopback: Bool {
        let name = host.hasPrefix("[") ? String(host.prefix { $0 != "]" }) + "]" : String(host.split(separator: ":").first ?? "")
        return name == "localhost" || name.hasPrefix("127.") || name == "[::1]"
    }
}
