import Access
import Hummingbird
import NIOCore
import OCI
import UseCases

extension ManagementAPI {
    /// The storage and cost report, for system administrators.
    func reportRoutes(_ storage: StorageManagement) -> [Route] {
        let access = self.access
        return [
            Route(
                .get, "/storage/report",
                "Storage and cost report: logical and physical bytes per registry, namespace and repository, deduplication, what GC and expiring untagged images would free, stale images, the largest images and layers, cost and recommendations",
                response: "StorageReport",
                query: [("staleDays", "images neither pushed nor pulled for this many days count as stale (default 90)"), ("format", "json (default) or csv")]
            ) { request, _, caller in
                try access.requireSystemAdministrator(caller.identity)
                let parameters = request.uri.queryParameters
                var staleDays = 90
                if let value = parameters.get("staleDays") {
                    guard let parsed = ClientNumber.parse(String(value), in: 1...36_500) else { throw AccessError.invalid("staleDays must be 1 to 36500") }
                    staleDays = parsed
                }
                let report = try await storage.reports.report(staleDays: staleDays)
                switch parameters.get("format") ?? "json" {
                case "json": return try Self.json(report)
                case "csv":
                    return Response(
                        status: .ok, headers: [.contentType: "text/csv; charset=utf-8"],
                        body: .init(byteBuffer: ByteBuffer(string: StorageReports.csv(report))))
                default: throw AccessError.invalid("format must be json or csv")
                }
            }
        ]
    }
}
