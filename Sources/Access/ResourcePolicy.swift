import OCI

/// An IAM-style resource policy, as ECR's repository and registry policies are written:
///
///     {"Version": "2012-10-17", "Statement": [{"Sid": "ci-pull", "Effect": "Allow",
///       "Principal": {"AWS": "arn:aws:iam::123456789012:role/robot/ci"}, "Action": ["ecr:BatchGetImage"]}]}
///
/// Principals name Wharf identities by ARN: users are `arn:aws:iam::<registry id>:user/<name>`,
/// robots `arn:aws:iam::<registry id>:role/robot/<name>`; `"*"`, the registry id or
/// `arn:aws:iam::<registry id>:root` mean every signed-in identity (never anonymous callers).
/// Statements are evaluated together with the namespace roles: an explicit Deny wins over
/// everything, an Allow adds to what the roles give. `Condition`, `NotAction`, `NotPrincipal` and
/// `NotResource` are refused rather than ignored, so a policy never grants more than it says.
public struct ResourcePolicy: Sendable, Equatable {
    public enum Effect: String, Sendable { case allow = "Allow", deny = "Deny" }
    public enum Decision: Sendable, Equatable { case allow, deny, none }

    public struct Statement: Sendable, Equatable {
        public var sid: String?
        public var effect: Effect
        /// Nil means any signed-in principal.
        public var principals: [String]?
        /// Lowercased action patterns (`ecr:*`, `ecr:batch*`).
        public var actions: [String]
        /// Resource ARN patterns; nil means the resource the policy is attached to.
        public var resources: [String]?
    }

    public var statements: [Statement]

    /// Parses and checks a policy. `knownActions` are the `ecr:` action names (without prefix)
    /// that a pattern without wildcards must name, so typos fail loudly (nil skips that check, for
    /// policies that were checked when stored).
    public init(parsing text: String, registryID: String, knownActions: Set<String>?) throws(AccessError) {
        guard let json = JSONValue.parse(text), let root = json.object else { throw .invalid("the policy is not a JSON object") }
        for key in root.keys where !["Version", "Id", "Statement"].contains(key) { throw .invalid("unknown policy element '\(key)'") }
        if let version = root["Version"] {
            guard let value = version.string, ["2012-10-17", "2008-10-17"].contains(value) else {
                throw .invalid("Version must be \"2012-10-17\" or \"2008-10-17\"")
            }
        }
        let rawStatements: [JSONValue]
        switch root["Statement"] {
        case .array(let items)?: rawStatements = items
        case .object?: rawStatements = [root["Statement"]!]
        default: throw .invalid("the policy needs a Statement")
        }
        guard !rawStatements.isEmpty else { throw .invalid("the policy needs at least one statement") }
        let lowercasedKnown = knownActions.map { Set($0.map { $0.lowercased() }) }
        var sids = Set<String>()
        statements = []
        for (index, raw) in rawStatements.enumerated() {
            let at = "Statement[\(index)]"
            guard let object = raw.object else { throw .invalid("\(at) is not an object") }
            for key in object.keys {
                switch key {
                case "Sid", "Effect", "Principal", "Action", "Resource": continue
                case "Condition", "NotAction", "NotPrincipal", "NotResource":
                    throw .invalid("\(at): '\(key)' is not supported by Wharf; express the rule with Principal, Action and Resource")
                default: throw .invalid("\(at): unknown element '\(key)'")
                }
            }
            let sid = object["Sid"]?.string
            if let sid {
                guard sid.allSatisfy({ $0.isLetter || $0.isNumber }) || sid.isEmpty else { throw .invalid("\(at): Sid may contain only letters and digits") }
                guard sids.insert(sid).inserted || sid.isEmpty else { throw .invalid("\(at): Sid '\(sid)' is used twice") }
            }
            guard let effectText = object["Effect"]?.string, let effect = Effect(rawValue: effectText) else {
                throw .invalid("\(at): Effect must be \"Allow\" or \"Deny\"")
            }
            let principals = try Self.principals(object["Principal"], at: at, registryID: registryID)
            let written = try Self.strings(object["Action"], name: "Action", at: at)
            guard !written.isEmpty else { throw .invalid("\(at): Action must name at least one action") }
            for action in written where action != "*" {
                guard action.lowercased().hasPrefix("ecr:"), action.count > 4 else {
                    throw .invalid("\(at): '\(action)' is not an ECR action (ecr:<Operation>)")
                }
                let name = action.dropFirst(4).lowercased()
                guard name.contains("*") || name.contains("?") || lowercasedKnown?.contains(name) ?? true else {
                    throw .invalid("\(at): '\(action)' is not an ECR action")
                }
            }
            let actions = written.map { $0.lowercased() }
            var resources: [String]?
            if let resource = object["Resource"] { resources = try Self.strings(resource, name: "Resource", at: at) }
            for resource in resources ?? [] where resource != "*" && !resource.hasPrefix("arn:aws:ecr:") {
                throw .invalid("\(at): Resource '\(resource)' is not an ECR repository ARN")
            }
            statements.append(Statement(sid: sid, effect: effect, principals: principals, actions: actions, resources: resources))
        }
    }

    private static func strings(_ value: JSONValue?, name: String, at: String) throws(AccessError) -> [String] {
        switch value {
        case .string(let single)?: return [single]
        case .array(let items)?:
            var result: [String] = []
            for item in items {
                guard let string = item.string else { throw .invalid("\(at): \(name) must be a string or a list of strings") }
                result.append(string)
            }
            return result
        default: throw .invalid("\(at): \(name) must be a string or a list of strings")
        }
    }

    /// Nil for "everyone signed in"; otherwise principal ARNs.
    private static func principals(_ value: JSONValue?, at: String, registryID: String) throws(AccessError) -> [String]? {
        guard let value else { throw .invalid("\(at): a resource policy statement needs a Principal") }
        if value.string == "*" { return nil }
        guard let object = value.object, let aws = object["AWS"], object.count == 1 else {
            throw .invalid("\(at): Principal must be \"*\" or {\"AWS\": …} (Wharf has no service principals)")
        }
        var arns: [String] = []
        for principal in try strings(aws, name: "Principal.AWS", at: at) {
            if principal == "*" || principal == registryID || principal == "arn:aws:iam::\(registryID):root" { return nil }
            guard principal.hasPrefix("arn:aws:iam::"), principal.split(separator: ":", omittingEmptySubsequences: false).count == 6 else {
                throw .invalid("\(at): principal '\(principal)' is not an IAM ARN (arn:aws:iam::<account>:user/<name>)")
            }
            arns.append(principal)
        }
        return arns
    }

    /// This policy's verdict on one request: `deny` if a Deny statement matches, else `allow` if an
    /// Allow statement does, else `none`. `principal` is nil for anonymous callers, whom only Deny
    /// statements with a `*` principal can match.
    public func decision(principal: String?, action: String, resource: String) -> Decision {
        let action = action.lowercased()
        var allowed = false
        for statement in statements {
            guard statement.actions.contains(where: { WildcardPattern.matchesIAM($0, action) }) else { continue }
            if let resources = statement.resources, !resources.contains(where: { Self.resourceMatches($0, resource) }) { continue }
            switch statement.principals {
            case nil:
                if principal == nil && statement.effect == .allow { continue }
            case let arns?:
                guard let principal, arns.contains(principal) else { continue }
            }
            if statement.effect == .deny { return .deny }
            allowed = true
        }
        return allowed ? .allow : .none
    }

    /// Repositories are the same wherever the ARN says they live: the region part is not compared.
    static func resourceMatches(_ pattern: String, _ arn: String) -> Bool {
        if pattern == "*" { return true }
        let p = pattern.split(separator: ":", maxSplits: 5, omittingEmptySubsequences: false)
        let a = arn.split(separator: ":", maxSplits: 5, omittingEmptySubsequences: false)
        guard p.count == 6, a.count == 6 else { return false }
        return [0, 1, 2, 4, 5].allSatisfy { WildcardPattern.matchesIAM(String(p[$0]), String(a[$0])) }
    }

    /// Combines the registry's and the repository's policies: any Deny wins, then any Allow.
    public static func decision(of policies: [ResourcePolicy], principal: String?, action: String, resource: String) -> Decision {
        var result = Decision.none
        for policy in policies {
            switch policy.decision(principal: principal, action: action, resource: resource) {
            case .deny: return .deny
            case .allow: result = .allow
            case .none: continue
            }
        }
        return result
    }
}

extension Identity {
    /// The ARN resource policies name this identity by.
    public func principalARN(registryID: String) -> String? {
        switch kind {
        case .anonymous: nil
        case .user: "arn:aws:iam::\(registryID):user/\(name)"
        case .robot: "arn:aws:iam::\(registryID):role/robot/\(name.hasPrefix("robot$") ? String(name.dropFirst(6)) : name)"
        }
    }
}

extension Action {
    /// The ECR actions a `/v2` action amounts to: a policy must allow all of them to grant it, and
    /// denying any of them refuses it.
    public var ecrActions: [String] {
        switch self {
        case .pull: ["ecr:BatchGetImage", "ecr:GetDownloadUrlForLayer"]
        case .push: ["ecr:PutImage", "ecr:InitiateLayerUpload", "ecr:UploadLayerPart", "ecr:CompleteLayerUpload"]
        case .delete: ["ecr:BatchDeleteImage"]
        case .scan: ["ecr:StartImageScan"]
        case .replicate: ["ecr:ReplicateImage"]
        }
    }
}
