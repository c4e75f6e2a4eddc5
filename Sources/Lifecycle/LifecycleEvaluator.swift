import OCI

/// An image as lifecycle rules see it: one manifest in a repository with its tags and times.
public struct LifecycleImage: Sendable, Equatable {
    public var digest: String
    public var tags: [String]
    /// Unix milliseconds.
    public var pushedAt: Int64
    public var lastPulledAt: Int64?

    public init(digest: String, tags: [String], pushedAt: Int64, lastPulledAt: Int64? = nil) {
        self.digest = digest
        self.tags = tags
        self.pushedAt = pushedAt
        self.lastPulledAt = lastPulledAt
    }
}

/// An image a policy expires, and the rule that expires it.
public struct Expiry: Sendable, Equatable {
    public var image: LifecycleImage
    public var rulePriority: Int
    public var ruleDescription: String?
}

/// ECR's lifecycle policy evaluation (User Guide, "Lifecycle policy evaluation rules"):
/// - every rule looks at the images (rules see images as if nothing had been expired);
/// - rules then apply in priority order, lowest number first;
/// - an image is expired by exactly one rule or by none;
/// - an image selected by the tag criteria of a rule cannot be expired by any lower-priority rule;
/// - expiry goes by push time, oldest first; `imageCountMoreThan` keeps the newest N.
public enum LifecycleEvaluator {
    public static func evaluate(_ policy: LifecyclePolicy, images: [LifecycleImage], now: Int64) -> [Expiry] {
        var claimed = Set<String>()  // selected by a higher-priority rule
        var expiries: [Expiry] = []
        for rule in policy.rules {
            let selected = images.filter { rule.selects(tags: $0.tags) }
            let newestFirst = selected.sorted { ($0.pushedAt, $0.digest) > ($1.pushedAt, $1.digest) }
            let marked: [LifecycleImage]
            switch rule.count {
            case .moreThan(let keep):
                marked = Array(newestFirst.dropFirst(keep))
            case .sincePushed(let days):
                let cutoff = ClientNumber.millis(now, minusSeconds: Int64(days).multipliedSaturating(by: 86_400))
                marked = newestFirst.filter { $0.pushedAt < cutoff }
            case .sincePulled(let days):
                let cutoff = ClientNumber.millis(now, minusSeconds: Int64(days).multipliedSaturating(by: 86_400))
                marked = newestFirst.filter { ($0.lastPulledAt ?? $0.pushedAt) < cutoff }
            }
            for image in marked.reversed() where !claimed.contains(image.digest) {
                expiries.append(Expiry(image: image, rulePriority: rule.priority, ruleDescription: rule.description))
            }
            claimed.formUnion(selected.map(\.digest))
        }
        return expiries.sorted { ($0.image.pushedAt, $0.image.digest) < ($1.image.pushedAt, $1.image.digest) }
    }
}

extension Int64 {
    /// The product, clamped to `Int64`'s range instead of trapping (stored policies may predate a bound).
    func multipliedSaturating(by factor: Int64) -> Int64 {
        let (product, overflow) = multipliedReportingOverflow(by: factor)
        guard overflow else { return product }
        return (self < 0) != (factor < 0) ? .min : .max
    }
}
