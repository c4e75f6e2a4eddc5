/// A `WWW-Authenticate` challenge from a registry (RFC 9110 §11.6.1): the scheme and its
/// parameters, e.g. `Bearer realm="https://auth.example/token",service="registry",scope="…"`.
/// Parsed from a remote server's answer, so it is hostile input: bounded, and anything malformed is
/// nil rather than a guess.
public struct AuthChallenge: Sendable, Equatable {
    /// Lowercased: `bearer`, `basic`.
    public var scheme: String
    /// Parameter names lowercased; values unquoted.
    public var parameters: [String: String]

    public var realm: String? { parameters["realm"] }
    public var service: String? { parameters["service"] }
    public var scope: String? { parameters["scope"] }

    /// The first challenge in the header (registries send one). Nil when the header is longer than
    /// 8 KiB or does not parse.
    public static func parse(_ header: String) -> AuthChallenge? {
        guard header.utf8.count <= 8192 else { return nil }
        var rest = Substring(header).drop { $0 == " " }
        let scheme = rest.prefix { $0 != " " && $0 != "," }
        guard !scheme.isEmpty, scheme.allSatisfy(Self.isTokenCharacter) else { return nil }
        rest = rest.dropFirst(scheme.count)
        var parameters: [String: String] = [:]
        while true {
            rest = rest.drop { $0 == " " || $0 == "," }
            if rest.isEmpty { break }
            let name = rest.prefix { $0 != "=" && $0 != " " && $0 != "," }
            guard !name.isEmpty, name.allSatisfy(Self.isTokenCharacter) else { return nil }
            rest = rest.dropFirst(name.count).drop { $0 == " " }
            guard rest.first == "=" else {
                // A second challenge (`Bearer …, Basic realm=…`) or token68: stop at the first challenge.
                break
            }
            rest = rest.dropFirst().drop { $0 == " " }
            var value = ""
            if rest.first == "\"" {
                rest = rest.dropFirst()
                var closed = false
                while let character = rest.first {
                    rest = rest.dropFirst()
                    if character == "\\" {
                        guard let escaped = rest.first else { return nil }
                        value.append(escaped)
                        rest = rest.dropFirst()
                    } else if character == "\"" {
                        closed = true
                        break
                    } else {
                        value.append(character)
                    }
                }
                guard closed else { return nil }
            } else {
                let token = rest.prefix { $0 != "," && $0 != " " }
                value = String(token)
                rest = rest.dropFirst(token.count)
            }
            guard parameters.count < 32 else { return nil }
            parameters[name.lowercased()] = value
        }
        return AuthChallenge(scheme: scheme.lowercased(), parameters: parameters)
    }

    private static func isTokenCharacter(_ character: Character) -> Bool {
        guard let ascii = character.asciiValue, ascii > 32, ascii < 127 else { return false }
        return !"\"(),/:;<=>?@[\\]{}".contains(character)
    }
}
