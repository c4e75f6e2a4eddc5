import ArgumentParser
import AsyncHTTPClient
import Foundation
import NIOCore
import NIOHTTP1

/// `wharf admin …`: the management API from the command line.
struct Admin: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Manage users, access tokens, access keys, robot accounts, namespaces, members, the audit log, signing keys and replication.",
        discussion: """
            Talks to a running Wharf's management API. Connection: --server (or WHARF_SERVER, default \
            http://127.0.0.1:5000); credentials: --username (or WHARF_USERNAME, default admin) and the password \
            from WHARF_PASSWORD, --password-file, or --password-stdin. An access token works as the password.
            """,
        subcommands: [
            Users.self, Tokens.self, AccessKeys.self, Robots.self, Namespaces.self, Members.self, Audit.self, Keys.self, EncryptionKeys.self, Storage.self,
            Replication.self,
        ]
    )
}

struct Connection: ParsableArguments {
    @Option(help: "The Wharf server (env WHARF_SERVER).")
    var server: String?

    @Option(help: "User to sign in as (env WHARF_USERNAME; default admin).")
    var username: String?

    @Option(name: .customLong("password-file"), help: "Read the password from this file (e.g. wharf-data/admin-password).")
    var passwordFile: String?

    @Flag(name: .customLong("password-stdin"), help: "Read the password from standard input.")
    var passwordStdin = false

    @Flag(help: "Print the raw JSON response.")
    var json = false

    func client() throws -> ManagementClient {
        let environment = ProcessInfo.processInfo.environment
        let base = (server ?? environment["WHARF_SERVER"] ?? "http://127.0.0.1:5000").trimmingSuffix("/")
        let user = username ?? environment["WHARF_USERNAME"] ?? "admin"
        let password: String
        if let passwordFile {
            guard let contents = FileManager.default.contents(atPath: passwordFile) else { throw ValidationError("cannot read \(passwordFile)") }
            password = String(decoding: contents, as: UTF8.self).trimmingCharacters(in: .whitespacesAndNewlines)
        } else if passwordStdin {
            password = (readLine(strippingNewline: true) ?? "")
        } else if let value = environment["WHARF_PASSWORD"] {
            password = value
        } else {
            throw ValidationError("no password: set WHARF_PASSWORD, or use --password-file or --password-stdin")
        }
        return ManagementClient(base: base + "/api/v1", username: user, password: password, printJSON: json)
    }
}

/// A small client for `/api/v1`: sends JSON, turns error bodies into readable failures.
struct ManagementClient {
    let base: String
    let username: String
    let password: String
    let printJSON: Bool

    struct Failure: Error, CustomStringConvertible {
        let description: String
    }

    @discardableResult
    func call(_ method: HTTPMethod, _ path: String, body: [String: Any]? = nil) async throws -> Any? {
        var request = HTTPClientRequest(url: base + path)
        request.method = method
        request.headers.add(name: "Authorization", value: "Basic " + Data("\(username):\(password)".utf8).base64EncodedString())
        if let body {
            request.headers.add(name: "Content-Type", value: "application/json")
            request.body = .bytes(ByteBuffer(bytes: try JSONSerialization.data(withJSONObject: body)))
        }
        let response = try await HTTPClient.shared.execute(request, timeout: .seconds(60))
        let data = Data(buffer: try await response.body.collect(upTo: 64 * 1024 * 1024))
        guard (200..<300).contains(response.status.code) else {
            let message =
                (try? JSONSerialization.jsonObject(with: data) as? [String: Any])
                .flatMap { ($0["error"] as? [String: Any])?["message"] as? String } ?? String(decoding: data, as: UTF8.self)
            throw Failure(description: "\(response.status.code) \(response.status.reasonPhrase): \(message)")
        }
        if data.isEmpty { return nil }
        let contentType = response.headers.first(name: "Content-Type") ?? ""
        if contentType == "application/x-ndjson" || contentType.hasPrefix("text/csv") { return String(decoding: data, as: UTF8.self) }
        let value = try JSONSerialization.jsonObject(with: data)
        if printJSON {
            let pretty = try JSONSerialization.data(withJSONObject: value, options: [.prettyPrinted, .sortedKeys, .withoutEscapingSlashes])
            print(String(decoding: pretty, as: UTF8.self))
        }
        return value
    }

    /// Prints rows of objects as aligned columns (unless --json already printed them).
    func table(_ value: Any?, columns: [String]) {
        guard !printJSON, let rows = value as? [[String: Any]] else { return }
        let cells = rows.map { row in columns.map { column in Self.text(row[column], key: column) } }
        let widths = columns.indices.map { i in max(columns[i].count, cells.map { $0[i].count }.max() ?? 0) }
        func line(_ values: [String]) -> String {
            zip(values, widths).map { $0.padding(toLength: $1, withPad: " ", startingAt: 0) }.joined(separator: "  ").trimmingCharacters(in: .whitespaces)
        }
        print(line(columns.map { $0.uppercased() }))
        for row in cells { print(line(row)) }
    }

    func show(_ value: Any?) {
        guard !printJSON, let object = value as? [String: Any] else { return }
        for key in object.keys.sorted() { print("\(key): \(Self.text(object[key], key: key))") }
    }

    /// Fields that are booleans. JSONSerialization hands numbers and booleans back as NSNumber on
    /// Linux, and a 1 would cast to `true`: the field name decides.
    static let booleanFields: Swift.Set<String> = ["admin", "disabled", "public"]

    /// A query parameter's value, percent-encoded.
    static func encoded(_ value: String) -> String {
        value.addingPercentEncoding(withAllowedCharacters: .alphanumerics.union(CharacterSet(charactersIn: "-._~"))) ?? value
    }

    /// `REPOSITORY:TAG` or `REPOSITORY@DIGEST` as the repository and the tag or digest.
    static func splitImage(_ image: String) throws -> (repository: String, reference: String) {
        if let at = image.firstIndex(of: "@") { return (String(image[..<at]), String(image[image.index(after: at)...])) }
        if let colon = image.lastIndex(of: ":"), !image[colon...].contains("/") {
            return (String(image[..<colon]), String(image[image.index(after: colon)...]))
        }
        throw ValidationError("name the image as REPOSITORY:TAG or REPOSITORY@DIGEST")
    }

    static func text(_ value: Any?, key: String = "") -> String {
        switch value {
        case nil, is NSNull: return "-"
        case let bool as Bool where booleanFields.contains(key): return bool ? "yes" : "no"
        case let number as NSNumber: return number.stringValue
        case let array as [Any]: return array.map { text($0) }.joined(separator: " ")
        case let object as [String: Any]:
            if let scope = object["scope"], let name = object["name"], let actions = object["actions"] {
                return "\(scope):\(name):\((actions as? [String] ?? []).joined(separator: ","))"
            }
            return object.keys.sorted().map { "\($0)=\(text(object[$0]))" }.joined(separator: ",")
        default: return "\(value!)"
        }
    }
}

extension String {
    func trimmingSuffix(_ suffix: String) -> String { hasSuffix(suffix) ? String(dropLast(suffix.count)) : self }

    /// Percent-encodes a path segment (robot names contain `$`).
    var pathSegment: String { addingPercentEncoding(withAllowedCharacters: .urlPathAllowed.subtracting(CharacterSet(charactersIn: "/$"))) ?? self }
}

/// Reads a new secret from stdin, or generates one.
func readNewPassword(fromStdin: Bool) -> (password: String, generated: Bool) {
    if fromStdin, let line = readLine(strippingNewline: true), !line.isEmpty { return (line, false) }
    let alphabet = Array("abcdefghijkmnopqrstuvwxyzABCDEFGHJKLMNPQRSTUVWXYZ23456789")
    var generator = SystemRandomNumberGenerator()
    return (String((0..<24).map { _ in alphabet[Int.random(in: 0..<alphabet.count, using: &generator)] }), true)
}

// MARK: Users

struct Users: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "user", abstract: "Users.",
        subcommands: [List.self, Create.self, ImportHtpasswd.self, Show.self, Delete.self, Disable.self, Enable.self, Password.self, SetAdmin.self])

    struct List: AsyncParsableCommand {
        @OptionGroup var connection: Connection
        func run() async throws {
            let client = try connection.client()
            client.table(try await client.call(.GET, "/users"), columns: ["name", "admin", "disabled", "email", "lastLoginAt"])
        }
    }

    struct Create: AsyncParsableCommand {
        static let configuration = CommandConfiguration(
            abstract: "Create a user; the password comes from --new-password-stdin or is generated and printed once.")
        @OptionGroup var connection: Connection
        @Argument var name: String
        @Flag(help: "Make the user a system administrator.") var admin = false
        @Option var email: String?
        @Flag(name: .customLong("new-password-stdin"), help: "Read the new user's password from standard input.") var newPasswordStdin = false
        func run() async throws {
            let client = try connection.client()
            let (password, generated) = readNewPassword(fromStdin: newPasswordStdin)
            var body: [String: Any] = ["name": name, "password": password, "admin": admin]
            if let email { body["email"] = email }
            client.show(try await client.call(.POST, "/users", body: body))
            if generated { print("password: \(password)") }
        }
    }

    struct ImportHtpasswd: AsyncParsableCommand {
        static let configuration = CommandConfiguration(
            commandName: "import-htpasswd",
            abstract: "Create users from an htpasswd file (CNCF Distribution's auth); they keep their passwords.",
            discussion: "Only bcrypt entries (htpasswd -B) are imported, as Distribution accepts no others. Users that already exist are left as they are."
        )
        @OptionGroup var connection: Connection
        @Argument(help: "The htpasswd file: one name:hash per line.") var file: String
        @Flag(help: "Make every imported user a system administrator.") var admin = false
        func run() async throws {
            let client = try connection.client()
            let text = try String(contentsOfFile: file, encoding: .utf8)
            var imported = 0, skipped = 0
            for (number, rawLine) in text.split(separator: "\n", omittingEmptySubsequences: false).enumerated() {
                let line = rawLine.trimmingCharacters(in: .whitespacesAndNewlines)
                if line.isEmpty || line.hasPrefix("#") { continue }
                guard let colon = line.firstIndex(of: ":") else {
                    print("line \(number + 1): skipped, not name:hash")
                    skipped += 1
                    continue
                }
                let name = String(line[..<colon]), hash = String(line[line.index(after: colon)...])
                guard hash.hasPrefix("$2") else {
                    print("\(name): skipped, not a bcrypt hash (re-create it with htpasswd -B)")
                    skipped += 1
                    continue
                }
                do {
                    try await client.call(.POST, "/users", body: ["name": name, "passwordHash": hash, "admin": admin])
                    print("\(name): imported")
                    imported += 1
                } catch let failure as ManagementClient.Failure {
                    print("\(name): skipped, \(failure.description)")
                    skipped += 1
                }
            }
            print("\(imported) imported, \(skipped) skipped")
            if imported == 0 && skipped > 0 { throw ExitCode(1) }
        }
    }

    struct Show: AsyncParsableCommand {
        @OptionGroup var connection: Connection
        @Argument var name: String
        func run() async throws {
            let client = try connection.client()
            client.show(try await client.call(.GET, "/users/\(name.pathSegment)"))
        }
    }

    struct Delete: AsyncParsableCommand {
        @OptionGroup var connection: Connection
        @Argument var name: String
        func run() async throws {
            try await connection.client().call(.DELETE, "/users/\(name.pathSegment)")
            print("deleted user \(name)")
        }
    }

    struct Disable: AsyncParsableCommand {
        @OptionGroup var connection: Connection
        @Argument var name: String
        func run() async throws {
            let client = try connection.client()
            client.show(try await client.call(.PATCH, "/users/\(name.pathSegment)", body: ["disabled": true]))
        }
    }

    struct Enable: AsyncParsableCommand {
        @OptionGroup var connection: Connection
        @Argument var name: String
        func run() async throws {
            let client = try connection.client()
            client.show(try await client.call(.PATCH, "/users/\(name.pathSegment)", body: ["disabled": false]))
        }
    }

    struct SetAdmin: AsyncParsableCommand {
        static let configuration = CommandConfiguration(commandName: "set-admin", abstract: "Grant or revoke system administration.")
        @OptionGroup var connection: Connection
        @Argument var name: String
        @Argument(help: "true or false") var admin: Bool
        func run() async throws {
            let client = try connection.client()
            client.show(try await client.call(.PATCH, "/users/\(name.pathSegment)", body: ["admin": admin]))
        }
    }

    struct Password: AsyncParsableCommand {
        static let configuration = CommandConfiguration(abstract: "Set a user's password (new one from --new-password-stdin, or generated and printed).")
        @OptionGroup var connection: Connection
        @Argument var name: String
        @Flag(name: .customLong("new-password-stdin")) var newPasswordStdin = false
        @Option(name: .customLong("current-password"), help: "Needed when changing your own password as a non-administrator.") var currentPassword: String?
        func run() async throws {
            let (password, generated) = readNewPassword(fromStdin: newPasswordStdin)
            var body: [String: Any] = ["password": password]
            if let currentPassword { body["currentPassword"] = currentPassword }
            try await connection.client().call(.PUT, "/users/\(name.pathSegment)/password", body: body)
            print(generated ? "new password for \(name): \(password)" : "password changed for \(name)")
        }
    }
}

// MARK: Access tokens

struct Tokens: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "token", abstract: "Personal access tokens (use them as passwords).",
        subcommands: [List.self, Create.self, Delete.self])

    struct List: AsyncParsableCommand {
        @OptionGroup var connection: Connection
        @Option(help: "Whose tokens (default: the signed-in user).") var user: String?
        func run() async throws {
            let client = try connection.client()
            client.table(
                try await client.call(.GET, "/users/\((user ?? client.username).pathSegment)/tokens"),
                columns: ["name", "createdAt", "expiresAt", "lastUsedAt"])
        }
    }

    struct Create: AsyncParsableCommand {
        @OptionGroup var connection: Connection
        @Argument var name: String
        @Option var user: String?
        @Option(help: "RFC 3339 expiry time.") var expires: String?
        func run() async throws {
            let client = try connection.client()
            var body: [String: Any] = ["name": name]
            if let expires { body["expiresAt"] = expires }
            let result = try await client.call(.POST, "/users/\((user ?? client.username).pathSegment)/tokens", body: body) as? [String: Any]
            if !connection.json { print("token (shown once): \(result?["token"] as? String ?? "?")") }
        }
    }

    struct Delete: AsyncParsableCommand {
        @OptionGroup var connection: Connection
        @Argument var name: String
        @Option var user: String?
        func run() async throws {
            let client = try connection.client()
            try await client.call(.DELETE, "/users/\((user ?? client.username).pathSegment)/tokens/\(name.pathSegment)")
            print("revoked token \(name)")
        }
    }
}

// MARK: Access keys

struct AccessKeys: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "access-key", abstract: "SigV4 access keys for the ECR API (aws ecr, boto3).",
        discussion: "eval \"$(wharf admin access-key create --user alice)\" sets AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY.",
        subcommands: [List.self, Create.self, Disable.self, Enable.self, Delete.self])

    struct Owner: ParsableArguments {
        @Option(help: "The user who owns the key (default: the signed-in user).") var user: String?
        @Option(help: "The robot account that owns the key (robot$name).") var robot: String?

        func path(_ client: ManagementClient) throws -> String {
            switch (user, robot) {
            case (let user?, nil): return "/users/\(user.pathSegment)/access-keys"
            case (nil, let robot?): return "/robots/\((robot.hasPrefix("robot$") ? robot : "robot$" + robot).pathSegment)/access-keys"
            case (nil, nil): return "/users/\(client.username.pathSegment)/access-keys"
            default: throw ValidationError("give --user or --robot, not both")
            }
        }
    }

    struct List: AsyncParsableCommand {
        @OptionGroup var connection: Connection
        @OptionGroup var owner: Owner
        func run() async throws {
            let client = try connection.client()
            client.table(
                try await client.call(.GET, try owner.path(client)), columns: ["accessKeyId", "owner", "description", "disabled", "createdAt", "lastUsedAt"])
        }
    }

    struct Create: AsyncParsableCommand {
        static let configuration = CommandConfiguration(abstract: "Create a key; prints export lines for eval (the secret is shown once).")
        @OptionGroup var connection: Connection
        @OptionGroup var owner: Owner
        @Option(help: "What the key is for.") var description: String?
        func run() async throws {
            let client = try connection.client()
            var body: [String: Any] = [:]
            if let description { body["description"] = description }
            let result = try await client.call(.POST, try owner.path(client), body: body) as? [String: Any]
            guard !connection.json else { return }
            // Only the export lines go to stdout, so `eval "$(…)"` works.
            print("export AWS_ACCESS_KEY_ID=\(result?["accessKeyId"] as? String ?? "?")")
            print("export AWS_SECRET_ACCESS_KEY=\(result?["secretAccessKey"] as? String ?? "?")")
            FileHandle.standardError.write(Data("# the secret access key is shown only once; keep it safe\n".utf8))
        }
    }

    struct Disable: AsyncParsableCommand {
        @OptionGroup var connection: Connection
        @OptionGroup var owner: Owner
        @Argument(help: "The access key id.") var key: String
        func run() async throws {
            let client = try connection.client()
            try await client.call(.PATCH, try owner.path(client) + "/" + key.pathSegment, body: ["disabled": true])
            print("disabled \(key)")
        }
    }

    struct Enable: AsyncParsableCommand {
        @OptionGroup var connection: Connection
        @OptionGroup var owner: Owner
        @Argument(help: "The access key id.") var key: String
        func run() async throws {
            let client = try connection.client()
            try await client.call(.PATCH, try owner.path(client) + "/" + key.pathSegment, body: ["disabled": false])
            print("enabled \(key)")
        }
    }

    struct Delete: AsyncParsableCommand {
        @OptionGroup var connection: Connection
        @OptionGroup var owner: Owner
        @Argument(help: "The access key id.") var key: String
        func run() async throws {
            let client = try connection.client()
            try await client.call(.DELETE, try owner.path(client) + "/" + key.pathSegment)
            print("deleted \(key)")
        }
    }
}

// MARK: Robots

struct Robots: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "robot", abstract: "Robot accounts.",
        subcommands: [List.self, Create.self, Show.self, Delete.self, Rotate.self, Disable.self, Enable.self])

    static func permission(_ text: String) throws -> [String: Any] {
        let parts = text.split(separator: ":", maxSplits: 2).map(String.init)
        guard parts.count == 3, ["registry", "namespace", "repository"].contains(parts[0]) else {
            throw ValidationError("permissions look like namespace:team:pull,push or repository:team/app:pull or registry:*:pull")
        }
        return ["scope": parts[0], "name": parts[1], "actions": parts[2].split(separator: ",").map(String.init)]
    }

    struct List: AsyncParsableCommand {
        @OptionGroup var connection: Connection
        func run() async throws {
            let client = try connection.client()
            client.table(try await client.call(.GET, "/robots"), columns: ["name", "permissions", "expiresAt", "disabled", "lastUsedAt"])
        }
    }

    struct Create: AsyncParsableCommand {
        static let configuration = CommandConfiguration(abstract: "Create a robot; prints its secret once.")
        @OptionGroup var connection: Connection
        @Argument(help: "Name (robot$ is added).") var name: String
        @Option(name: .customLong("permission"), help: "SCOPE:NAME:ACTIONS, e.g. namespace:team:pull,push (repeatable).") var permissions: [String] = []
        @Option var description: String?
        @Option(help: "RFC 3339 expiry time.") var expires: String?
        func run() async throws {
            let client = try connection.client()
            var body: [String: Any] = ["name": name, "permissions": try permissions.map(Robots.permission)]
            if let description { body["description"] = description }
            if let expires { body["expiresAt"] = expires }
            let robot = try await client.call(.POST, "/robots", body: body) as? [String: Any]
            if !connection.json {
                print("robot: \(robot?["name"] as? String ?? "?")")
                print("secret (shown once): \(robot?["secret"] as? String ?? "?")")
            }
        }
    }

    struct Show: AsyncParsableCommand {
        @OptionGroup var connection: Connection
        @Argument var name: String
        func run() async throws {
            let client = try connection.client()
            client.show(try await client.call(.GET, "/robots/\(name.pathSegment)"))
        }
    }

    struct Delete: AsyncParsableCommand {
        @OptionGroup var connection: Connection
        @Argument var name: String
        func run() async throws {
            try await connection.client().call(.DELETE, "/robots/\(name.pathSegment)")
            print("deleted robot \(name)")
        }
    }

    struct Rotate: AsyncParsableCommand {
        static let configuration = CommandConfiguration(abstract: "Replace a robot's secret; prints the new one once.")
        @OptionGroup var connection: Connection
        @Argument var name: String
        func run() async throws {
            let robot = try await connection.client().call(.POST, "/robots/\(name.pathSegment)/secret") as? [String: Any]
            if !connection.json { print("secret (shown once): \(robot?["secret"] as? String ?? "?")") }
        }
    }

    struct Disable: AsyncParsableCommand {
        @OptionGroup var connection: Connection
        @Argument var name: String
        func run() async throws {
            let client = try connection.client()
            client.show(try await client.call(.PATCH, "/robots/\(name.pathSegment)", body: ["disabled": true]))
        }
    }

    struct Enable: AsyncParsableCommand {
        @OptionGroup var connection: Connection
        @Argument var name: String
        func run() async throws {
            let client = try connection.client()
            client.show(try await client.call(.PATCH, "/robots/\(name.pathSegment)", body: ["disabled": false]))
        }
    }
}

// MARK: Namespaces and members

struct Namespaces: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "namespace", abstract: "Namespaces.",
        subcommands: [List.self, Create.self, Show.self, Delete.self, SetPublic.self])

    struct List: AsyncParsableCommand {
        @OptionGroup var connection: Connection
        func run() async throws {
            let client = try connection.client()
            client.table(try await client.call(.GET, "/namespaces"), columns: ["name", "public", "createdBy", "createdAt"])
        }
    }

    struct Create: AsyncParsableCommand {
        @OptionGroup var connection: Connection
        @Argument var name: String
        @Flag(help: "Allow anonymous pulls.") var `public` = false
        func run() async throws {
            let client = try connection.client()
            client.show(try await client.call(.POST, "/namespaces", body: ["name": name, "public": `public`]))
        }
    }

    struct Show: AsyncParsableCommand {
        @OptionGroup var connection: Connection
        @Argument var name: String
        func run() async throws {
            let client = try connection.client()
            client.show(try await client.call(.GET, "/namespaces/\(name.pathSegment)"))
        }
    }

    struct Delete: AsyncParsableCommand {
        @OptionGroup var connection: Connection
        @Argument var name: String
        func run() async throws {
            try await connection.client().call(.DELETE, "/namespaces/\(name.pathSegment)")
            print("deleted namespace \(name)")
        }
    }

    struct SetPublic: AsyncParsableCommand {
        static let configuration = CommandConfiguration(commandName: "set-public", abstract: "Make a namespace public (anonymous pulls) or private.")
        @OptionGroup var connection: Connection
        @Argument var name: String
        @Argument(help: "true or false") var value: Bool
        func run() async throws {
            let client = try connection.client()
            client.show(try await client.call(.PATCH, "/namespaces/\(name.pathSegment)", body: ["public": value]))
        }
    }
}

struct Members: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "member", abstract: "Namespace members and their roles (reader, developer, maintainer, admin).",
        subcommands: [List.self, Set.self, Remove.self])

    struct List: AsyncParsableCommand {
        @OptionGroup var connection: Connection
        @Argument var namespace: String
        func run() async throws {
            let client = try connection.client()
            client.table(try await client.call(.GET, "/namespaces/\(namespace.pathSegment)/members"), columns: ["user", "role", "addedAt"])
        }
    }

    struct Set: AsyncParsableCommand {
        @OptionGroup var connection: Connection
        @Argument var namespace: String
        @Argument var user: String
        @Argument(help: "reader, developer, maintainer or admin") var role: String
        func run() async throws {
            try await connection.client().call(.PUT, "/namespaces/\(namespace.pathSegment)/members/\(user.pathSegment)", body: ["role": role])
            print("\(user) is \(role) of \(namespace)")
        }
    }

    struct Remove: AsyncParsableCommand {
        @OptionGroup var connection: Connection
        @Argument var namespace: String
        @Argument var user: String
        func run() async throws {
            try await connection.client().call(.DELETE, "/namespaces/\(namespace.pathSegment)/members/\(user.pathSegment)")
            print("removed \(user) from \(namespace)")
        }
    }
}

// MARK: Audit and keys

struct Audit: AsyncParsableCommand {
    static let configuration = CommandConfiguration(abstract: "Query the audit log (newest first), or export it as JSON lines.")
    @OptionGroup var connection: Connection
    @Option var namespace: String?
    @Option var actor: String?
    @Option var action: String?
    @Option var repository: String?
    @Option(help: "RFC 3339 time.") var since: String?
    @Option(help: "RFC 3339 time.") var until: String?
    @Option var limit: Int?
    @Flag(name: .customLong("json-lines"), help: "Export as JSON lines, oldest first.") var jsonLines = false

    func run() async throws {
        let client = try connection.client()
        var items = URLComponents()
        items.queryItems = [
            ("namespace", namespace), ("actor", actor), ("action", action), ("repository", repository),
            ("since", since), ("until", until), ("limit", limit.map(String.init)),
        ]
        .compactMap { name, value in value.map { URLQueryItem(name: name, value: $0) } }
        let query = items.percentEncodedQuery.map { "?" + $0 } ?? ""
        if jsonLines {
            print(try await client.call(.GET, "/audit/export" + query) as? String ?? "", terminator: "")
        } else {
            client.table(
                try await client.call(.GET, "/audit" + query),
                columns: ["at", "actor", "action", "namespace", "repository", "target", "result", "source", "count"])
        }
    }
}

struct Keys: AsyncParsableCommand {
    static let configuration = CommandConfiguration(commandName: "key", abstract: "Token signing keys.", subcommands: [Rotate.self])

    struct Rotate: AsyncParsableCommand {
        static let configuration = CommandConfiguration(abstract: "Sign new tokens with a new key; tokens signed before stay valid until they expire.")
        @OptionGroup var connection: Connection
        func run() async throws {
            let result = try await connection.client().call(.POST, "/keys/rotate") as? [String: Any]
            if !connection.json { print("signing key is now \(result?["kid"] as? String ?? "?")") }
        }
    }
}

struct EncryptionKeys: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "encryption-key", abstract: "Keys of encryption at rest (KMS key ARNs, and wharf/aes256 for AES256 repositories).",
        subcommands: [List.self, Rotate.self, Disable.self, Enable.self])

    struct List: AsyncParsableCommand {
        static let configuration = CommandConfiguration(abstract: "Keys in use, their service, state and the encrypted copies each wraps.")
        @OptionGroup var connection: Connection
        func run() async throws {
            let client = try connection.client()
            let keys = try await client.call(.GET, "/encryption/keys")
            if !connection.json { client.table(keys, columns: ["keyId", "service", "state", "versions", "encryptedCopies"]) }
        }
    }

    struct Rotate: AsyncParsableCommand {
        static let configuration = CommandConfiguration(
            abstract: "Rotate a key and re-wrap every data key it wraps under its current version (no blob is rewritten).")
        @OptionGroup var connection: Connection
        @Argument(help: "The key: a KMS key ARN, or wharf/aes256.") var keyID: String
        func run() async throws {
            let result = try await connection.client().call(.POST, "/encryption/keys/rotate", body: ["keyId": keyID]) as? [String: Any]
            guard !connection.json, let result else { return }
            print(
                "\(keyID): \(ManagementClient.text(result["rewrappedCopies"])) encrypted copies and \(ManagementClient.text(result["rewrappedUploads"])) uploads re-wrapped, "
                    + "\(ManagementClient.text(result["unchangedCopies"])) already current")
            for failure in result["failures"] as? [String] ?? [] { print("failed: \(failure)") }
        }
    }

    struct Disable: AsyncParsableCommand {
        static let configuration = CommandConfiguration(abstract: "Disable a key of the built-in key service: its repositories refuse pushes and pulls.")
        @OptionGroup var connection: Connection
        @Argument(help: "The key.") var keyID: String
        func run() async throws { _ = try await connection.client().call(.POST, "/encryption/keys/disable", body: ["keyId": keyID]) }
    }

    struct Enable: AsyncParsableCommand {
        static let configuration = CommandConfiguration(abstract: "Enable a key of the built-in key service.")
        @OptionGroup var connection: Connection
        @Argument(help: "The key.") var keyID: String
        func run() async throws { _ = try await connection.client().call(.POST, "/encryption/keys/enable", body: ["keyId": keyID]) }
    }
}

struct Storage: AsyncParsableCommand {
    static let configuration = CommandConfiguration(abstract: "Storage and cost.", subcommands: [Report.self])

    struct Report: AsyncParsableCommand {
        static let configuration = CommandConfiguration(
            abstract: "What is stored and what it costs: per namespace and repository, deduplication, what could be freed, recommendations.")
        @OptionGroup var connection: Connection
        @Option(name: .customLong("stale-days"), help: "Images neither pushed nor pulled for this many days count as stale (default 90).")
        var staleDays: Int?
        @Flag(help: "One CSV row per repository.") var csv = false

        func run() async throws {
            let client = try connection.client()
            let query = "?staleDays=\(staleDays ?? 90)" + (csv ? "&format=csv" : "")
            let report = try await client.call(.GET, "/storage/report" + query)
            if csv {
                print(report as? String ?? "", terminator: "")
                return
            }
            guard !connection.json, let object = report as? [String: Any] else { return }
            if let registry = object["registry"] as? [String: Any] {
                print(
                    "registry: \(ManagementClient.text(registry["physicalBytes"])) bytes stored, \(ManagementClient.text(registry["logicalBytes"])) as images add up, "
                        + "\(ManagementClient.text(registry["deduplicationSavedBytes"])) saved by sharing, \(ManagementClient.text(registry["unreferencedBytes"])) in no image; "
                        + "\(ManagementClient.text(registry["monthlyCost"])) \((object["prices"] as? [String: Any])?["currency"] as? String ?? "")/month")
            }
            client.table(
                object["repositories"], columns: ["repository", "images", "untaggedImages", "physicalBytes", "logicalBytes", "staleImages", "monthlyCost"])
            for recommendation in object["recommendations"] as? [[String: Any]] ?? [] {
                print("- " + (recommendation["message"] as? String ?? ""))
            }
        }
    }
}

struct Replication: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Where images are replicated: destinations and their lag, tasks, one image's status; copy, retry, reconcile.",
        subcommands: [Status.self, Tasks.self, Image.self, Copy.self, Retry.self, Reconcile.self])

    struct Status: AsyncParsableCommand {
        static let configuration = CommandConfiguration(abstract: "Every destination: images waiting, failed and copied, and the lag in seconds.")
        @OptionGroup var connection: Connection
        func run() async throws {
            let client = try connection.client()
            let destinations = try await client.call(.GET, "/replication/destinations")
            if !connection.json {
                client.table(destinations, columns: ["name", "region", "url", "pending", "failed", "complete", "lagSeconds", "lastCompletedAt"])
            }
        }
    }

    struct Tasks: AsyncParsableCommand {
        static let configuration = CommandConfiguration(abstract: "Recent copies, newest first, with their state and last error.")
        @OptionGroup var connection: Connection
        @Option(help: "Only this destination's.") var destination: String?
        @Option(help: "PENDING, COMPLETE or FAILED.") var status: String?
        @Option(help: "At most this many (1 to 1000).") var limit = 100
        func run() async throws {
            var query = ["limit=\(limit)"]
            if let destination { query.append("destination=\(ManagementClient.encoded(destination))") }
            if let status { query.append("status=\(ManagementClient.encoded(status))") }
            let client = try connection.client()
            let tasks = try await client.call(.GET, "/replication/tasks?" + query.joined(separator: "&"))
            if !connection.json {
                client.table(tasks, columns: ["destination", "repository", "tag", "digest", "status", "attempts", "lastError", "completedAt"])
            }
        }
    }

    struct Image: AsyncParsableCommand {
        static let configuration = CommandConfiguration(abstract: "One image's status at each destination.")
        @OptionGroup var connection: Connection
        @Argument(help: "REPOSITORY:TAG or REPOSITORY@DIGEST.") var image: String
        func run() async throws {
            let (repository, reference) = try ManagementClient.splitImage(image)
            let client = try connection.client()
            let status = try await client.call(
                .GET, "/replication/status?repository=\(ManagementClient.encoded(repository))&reference=\(ManagementClient.encoded(reference))")
            if !connection.json, let status = status as? [String: Any] {
                print("\(repository)@\(ManagementClient.text(status["digest"]))")
                client.table(status["destinations"], columns: ["destination", "status", "attempts", "lastError", "completedAt"])
            }
        }
    }

    struct Copy: AsyncParsableCommand {
        static let configuration = CommandConfiguration(abstract: "Copy one image (and its tag, when named by tag) to a destination now.")
        @OptionGroup var connection: Connection
        @Argument(help: "REPOSITORY:TAG or REPOSITORY@DIGEST.") var image: String
        @Argument(help: "The destination's name.") var destination: String
        func run() async throws {
            let (repository, reference) = try ManagementClient.splitImage(image)
            _ = try await connection.client().call(
                .POST, "/replication/images", body: ["repository": repository, "reference": reference, "destination": destination])
        }
    }

    struct Retry: AsyncParsableCommand {
        static let configuration = CommandConfiguration(abstract: "Send failed copies back to the queue.")
        @OptionGroup var connection: Connection
        @Option(help: "Only this destination's.") var destination: String?
        func run() async throws {
            let path = "/replication/retry" + (destination.map { "?destination=\(ManagementClient.encoded($0))" } ?? "")
            let result = try await connection.client().call(.POST, path) as? [String: Any]
            if !connection.json { print("\(ManagementClient.text(result?["requeued"])) copies queued again") }
        }
    }

    struct Reconcile: AsyncParsableCommand {
        static let configuration = CommandConfiguration(
            abstract: "Compare every replicated repository with its destinations now and queue copies of what differs.")
        @OptionGroup var connection: Connection
        func run() async throws {
            let result = try await connection.client().call(.POST, "/replication/reconcile") as? [String: Any]
            if !connection.json {
                print("\(ManagementClient.text(result?["checked"])) tags and referrers compared, \(ManagementClient.text(result?["queued"])) copies queued")
                for (destination, reason) in (result?["unreachable"] as? [String: Any] ?? [:]).sorted(by: { $0.key < $1.key }) {
                    print("unreachable: \(destination): \(ManagementClient.text(reason))")
                }
            }
        }
    }
}
