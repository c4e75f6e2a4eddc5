// swift-tools-version:6.1
import PackageDescription

// Wharf: a self-hosted OCI registry. One module per concern; see docs/architecture.md.
let swiftSettings: [SwiftSetting] = [
    .enableUpcomingFeature("ExistentialAny")
]

let package = Package(
    name: "wharf",
    platforms: [.macOS(.v14)],
    products: [
        .executable(name: "wharf", targets: ["wharf"]),
        // For the libFuzzer binary in Fuzz/ (a package of its own, so no normal build links libFuzzer).
        .library(name: "WharfFuzzTargets", targets: ["FuzzTargets"]),
    ],
    dependencies: [
        .package(url: "https://github.com/hummingbird-project/hummingbird.git", from: "2.28.1"),
        .package(url: "https://github.com/apple/swift-crypto.git", from: "4.5.2"),
        .package(url: "https://github.com/apple/swift-nio.git", from: "2.101.2"),
        .package(url: "https://github.com/apple/swift-http-types.git", from: "1.8.0"),
        .package(url: "https://github.com/apple/swift-log.git", from: "1.16.2"),
        .package(url: "https://github.com/apple/swift-argument-parser.git", from: "1.8.2"),
        .package(url: "https://github.com/swift-server/swift-service-lifecycle.git", from: "2.13.0"),
        .package(url: "https://github.com/vapor/sql-kit.git", from: "3.36.0"),
        .package(url: "https://github.com/vapor/sqlite-kit.git", from: "4.5.2"),
        .package(url: "https://github.com/vapor/postgres-kit.git", from: "2.17.0"),
        .package(url: "https://github.com/vapor/postgres-nio.git", from: "1.33.2"),
        .package(url: "https://github.com/apple/swift-nio-ssl.git", from: "2.37.6"),
        .package(url: "https://github.com/jpsim/Yams.git", from: "6.2.2"),
        .package(url: "https://github.com/vapor/jwt-kit.git", from: "5.8.0"),
        .package(url: "https://github.com/hummingbird-project/hummingbird-auth.git", from: "2.5.0"),
        .package(url: "https://github.com/swift-server/async-http-client.git", from: "1.37.0"),
        .package(url: "https://github.com/apple/swift-nio-extras.git", from: "1.35.2"),
        .package(url: "https://github.com/google/swift-benchmark.git", from: "0.1.2"),
        .package(url: "https://github.com/adam-fowler/compress-nio.git", from: "1.5.0"),
        .package(url: "https://github.com/vapor/sqlite-nio.git", from: "1.13.2"),
        .package(url: "https://github.com/weichsel/ZIPFoundation.git", from: "0.9.20"),
        .package(url: "https://github.com/swift-server/swift-prometheus.git", from: "2.4.1"),
    ],
    targets: [
        // Digests, names, media types, manifest models and validation, OCI error codes. Imports nothing of ours.
        .target(
            name: "OCI",
            dependencies: [
                .product(name: "Crypto", package: "swift-crypto"),
                .product(name: "NIOCore", package: "swift-nio"),
            ],
            swiftSettings: swiftSettings
        ),
        // Every metric Wharf exports (one declaration each) and its Prometheus registry. Imports nothing of ours.
        .target(
            name: "Monitoring",
            dependencies: [.product(name: "Prometheus", package: "swift-prometheus")],
            swiftSettings: swiftSettings
        ),
        // Files and folders that survive a power cut: fsync of the folder that gains each new name.
        .target(name: "DurableFiles", swiftSettings: swiftSettings),
        // Content-addressed blob bytes and in-progress upload files.
        .target(
            name: "BlobStore",
            dependencies: [
                "OCI", "CLinux", "DurableFiles",
                .product(name: "NIOCore", package: "swift-nio"),
                .product(name: "NIOPosix", package: "swift-nio"),
                .product(name: "_NIOFileSystem", package: "swift-nio"),
                .product(name: "Logging", package: "swift-log"),
            ],
            swiftSettings: swiftSettings
        ),
        // AWS Signature Version 4: the canonical request and signing key both sides share, the
        // verifier's header parsing (ECR) and the signer (S3, KMS). Imports nothing of ours but OCI.
        .target(
            name: "AWSSigning",
            dependencies: ["OCI", .product(name: "Crypto", package: "swift-crypto")],
            swiftSettings: swiftSettings
        ),
        // Blobs in an S3 bucket (AWS or S3-compatible): uploads as part-sized objects, published by
        // server-side multipart copy; SigV4-signed calls over async-http-client with retries.
        .target(
            name: "S3BlobStore",
            dependencies: [
                "OCI", "BlobStore", "AWSSigning",
                .product(name: "AsyncHTTPClient", package: "async-http-client"),
                .product(name: "Crypto", package: "swift-crypto"),
                .product(name: "NIOCore", package: "swift-nio"),
                .product(name: "NIOPosix", package: "swift-nio"),
                .product(name: "Logging", package: "swift-log"),
            ],
            swiftSettings: swiftSettings
        ),
        // Encryption at rest: blobs sealed in AES-256-GCM records, data keys from AWS KMS or the
        // built-in local key service, wrapped keys rotated without rewriting blobs.
        .target(
            name: "Encryption",
            dependencies: [
                "OCI", "BlobStore", "AWSSigning",
                .product(name: "AsyncHTTPClient", package: "async-http-client"),
                .product(name: "Crypto", package: "swift-crypto"),
                .product(name: "NIOCore", package: "swift-nio"),
                .product(name: "NIOFoundationCompat", package: "swift-nio"),
                .product(name: "Logging", package: "swift-log"),
            ],
            swiftSettings: swiftSettings
        ),
        // The metadata database: schema, migrations and queries, on SQLite or PostgreSQL through SQLKit.
        .target(
            name: "Metadata",
            dependencies: [
                "OCI",
                .product(name: "SQLKit", package: "sql-kit"),
                .product(name: "SQLiteKit", package: "sqlite-kit"),
                .product(name: "PostgresKit", package: "postgres-kit"),
                .product(name: "PostgresNIO", package: "postgres-nio"),
                .product(name: "NIOSSL", package: "swift-nio-ssl"),
                .product(name: "NIOCore", package: "swift-nio"),
                .product(name: "NIOPosix", package: "swift-nio"),
                .product(name: "Logging", package: "swift-log"),
                .product(name: "ServiceLifecycle", package: "swift-service-lifecycle"),
            ],
            swiftSettings: swiftSettings
        ),
        // Identities, namespaces and roles, credentials, bearer tokens, login throttling, the audit log.
        .target(
            name: "Access",
            dependencies: [
                "OCI", "Metadata", "DurableFiles",
                .product(name: "JWTKit", package: "jwt-kit"),
                .product(name: "HummingbirdBcrypt", package: "hummingbird-auth"),
                .product(name: "Crypto", package: "swift-crypto"),
                .product(name: "SQLKit", package: "sql-kit"),
                .product(name: "NIOPosix", package: "swift-nio"),
                .product(name: "Logging", package: "swift-log"),
                .product(name: "ServiceLifecycle", package: "swift-service-lifecycle"),
            ],
            swiftSettings: swiftSettings
        ),
        // Lifecycle policies (ECR's language), tag immutability, garbage collection, quotas, fsck.
        .target(
            name: "Lifecycle",
            dependencies: [
                "OCI", "Metadata", "BlobStore", "Registry", "Monitoring", "Encryption",
                .product(name: "Logging", package: "swift-log"),
                .product(name: "ServiceLifecycle", package: "swift-service-lifecycle"),
            ],
            swiftSettings: swiftSettings
        ),
        // The ECR-compatible control plane: AWS JSON 1.1, SigV4, ECR's operations over the use-cases.
        .target(
            name: "ECR",
            dependencies: [
                "OCI", "Metadata", "BlobStore", "Registry", "Access", "Lifecycle", "Scanning", "Scanner", "UseCases", "Signatures", "Monitoring",
                "AWSSigning", "Encryption", "Replication",
                .product(name: "Crypto", package: "swift-crypto"),
                .product(name: "NIOCore", package: "swift-nio"),
                .product(name: "Logging", package: "swift-log"),
            ],
            swiftSettings: swiftSettings
        ),
        // Image signatures: cosign's key-based format verified against namespaces' signature
        // policies, the signed-only pull gate.
        .target(
            name: "Signatures",
            dependencies: [
                "OCI", "Metadata", "Registry",
                .product(name: "Crypto", package: "swift-crypto"),
                .product(name: "_CryptoExtras", package: "swift-crypto"),
                .product(name: "NIOCore", package: "swift-nio"),
            ],
            swiftSettings: swiftSettings
        ),
        // Events: webhooks fed from the outbox, their bodies (Distribution's envelope, CloudEvents),
        // signatures and deliveries with retries.
        .target(
            name: "Events",
            dependencies: [
                "OCI", "Metadata", "Access", "Monitoring",
                .product(name: "AsyncHTTPClient", package: "async-http-client"),
                .product(name: "Crypto", package: "swift-crypto"),
                .product(name: "NIOCore", package: "swift-nio"),
                .product(name: "Logging", package: "swift-log"),
                .product(name: "ServiceLifecycle", package: "swift-service-lifecycle"),
            ],
            swiftSettings: swiftSettings
        ),
        // Replication: pushed images copied to other registries (other Wharf regions, any
        // Distribution-API registry) from durable tasks, with a client for their API.
        .target(
            name: "Replication",
            dependencies: [
                "OCI", "Metadata", "Registry", "BlobStore",
                .product(name: "AsyncHTTPClient", package: "async-http-client"),
                .product(name: "NIOCore", package: "swift-nio"),
                .product(name: "Logging", package: "swift-log"),
                .product(name: "ServiceLifecycle", package: "swift-service-lifecycle"),
            ],
            swiftSettings: swiftSettings
        ),
        // Distribution API use-cases: uploads, mounts, manifests, tags, catalog, referrers.
        .target(
            name: "Registry",
            dependencies: [
                "OCI", "BlobStore", "Metadata", "Monitoring", "Encryption",
                .product(name: "Logging", package: "swift-log"),
                .product(name: "NIOCore", package: "swift-nio"),
                .product(name: "ServiceLifecycle", package: "swift-service-lifecycle"),
            ],
            swiftSettings: swiftSettings
        ),
        // The use-cases every front end calls (/v2, ECR, /api/v1): each operation once, with its
        // order of steps, audit event and side effects. Free of HTTP and of SQL.
        .target(
            name: "UseCases",
            dependencies: [
                "OCI", "BlobStore", "Metadata", "Registry", "Access", "Lifecycle", "Scanning", "Scanner", "Signatures", "Events", "Encryption", "Replication",
                .product(name: "Crypto", package: "swift-crypto"),
            ],
            swiftSettings: swiftSettings
        ),
        // The HTTP edge: Hummingbird application, routes, middleware, configuration and wiring.
        .target(
            name: "Server",
            dependencies: [
                "OCI", "BlobStore", "Metadata", "Registry", "Access", "Lifecycle", "ECR", "Scanning", "Scanner", "CLinux", "DurableFiles", "UseCases",
                "Signatures", "Monitoring", "Events", "S3BlobStore", "AWSSigning", "Encryption", "Replication",
                .product(name: "AsyncHTTPClient", package: "async-http-client"),
                .product(name: "Hummingbird", package: "hummingbird"),
                .product(name: "HummingbirdCore", package: "hummingbird"),
                .product(name: "HummingbirdTLS", package: "hummingbird"),
                .product(name: "NIOSSL", package: "swift-nio-ssl"),
                .product(name: "HTTPTypes", package: "swift-http-types"),
                .product(name: "NIOHTTPTypes", package: "swift-nio-extras"),
                .product(name: "NIOHTTP1", package: "swift-nio"),
                .product(name: "Logging", package: "swift-log"),
                .product(name: "ServiceLifecycle", package: "swift-service-lifecycle"),
                .product(name: "Yams", package: "Yams"),
            ],
            swiftSettings: swiftSettings
        ),
        .executableTarget(
            name: "wharf",
            dependencies: [
                "Server", "Metadata", "BlobStore", "Registry", "OCI", "Lifecycle", "Scanner",
                .product(name: "ArgumentParser", package: "swift-argument-parser"),
                .product(name: "AsyncHTTPClient", package: "async-http-client"),
                .product(name: "NIOHTTP1", package: "swift-nio"),
                .product(name: "Logging", package: "swift-log"),
            ],
            swiftSettings: swiftSettings,
            linkerSettings: [
                // Release binaries: lld packs the relative relocations (RELR, glibc 2.36+) instead of
                // 3.8 MB of RELA the loader reads at every start, and the executable stops exporting
                // its symbols (the static stdlib's link arguments ask for -export-dynamic; nothing
                // looks them up). Idle RSS drops by about 7 MiB and the binary starts faster.
                // The functions Wharf runs to start and to serve common requests go first, together
                // (generated/hot-functions.order, made by scripts/order-functions.sh; built with one section per
                // function by scripts/build-release.sh): the kernel maps code 64 KiB around each page
                // touched, so spread-out functions kept 20-24 MB of code resident, packed ones far less.
                .unsafeFlags(
                    [
                        "-use-ld=lld", "-Xlinker", "-z", "-Xlinker", "pack-relative-relocs", "-Xlinker", "--no-export-dynamic",
                        "-Xlinker", "--symbol-ordering-file=\(Context.packageDirectory)/generated/hot-functions.order",
                        "-Xlinker", "--no-warn-symbol-ordering",
                    ],
                    .when(platforms: [.linux], configuration: .release)
                )
            ]
        ),
        // Vulnerability scanning: layer reading, catalogers, version ordering, OSV matching, SBOMs.
        .target(
            name: "Scanner",
            dependencies: [
                "CZstd",
                .product(name: "CompressNIO", package: "compress-nio"),
                .product(name: "NIOCore", package: "swift-nio"),
                .product(name: "SQLiteNIO", package: "sqlite-nio"),
                .product(name: "ZIPFoundation", package: "ZIPFoundation"),
                .product(name: "Yams", package: "Yams"),
                .product(name: "Logging", package: "swift-log"),
                .product(name: "Crypto", package: "swift-crypto"),
            ],
            swiftSettings: swiftSettings
        ),
        // Background image scanning over stored blobs: the job queue, workers, stored results, the
        // pull gate, SBOM referrers, and keeping the vulnerability database current.
        .target(
            name: "Scanning",
            dependencies: [
                "Scanner", "OCI", "Metadata", "BlobStore", "Registry", "Monitoring",
                .product(name: "AsyncHTTPClient", package: "async-http-client"),
                .product(name: "NIOCore", package: "swift-nio"),
                .product(name: "NIOPosix", package: "swift-nio"),
                .product(name: "Logging", package: "swift-log"),
                .product(name: "ServiceLifecycle", package: "swift-service-lifecycle"),
            ],
            swiftSettings: swiftSettings
        ),
        // Every parser of outside input behind one entry point per target: for libFuzzer (Fuzz/,
        // scripts/fuzz.sh) and for the tests, which replay the corpora. Debug builds only
        // (@testable imports of internal parsers); release builds make the wharf product alone.
        .target(
            name: "FuzzTargets",
            dependencies: [
                "OCI", "Access", "Lifecycle", "ECR", "Scanner", "Server", "Signatures", "AWSSigning", "S3BlobStore", "Encryption", "Replication", "Metadata",
                .product(name: "Crypto", package: "swift-crypto"),
                .product(name: "NIOCore", package: "swift-nio"),
                .product(name: "HTTPTypes", package: "swift-http-types"),
                .product(name: "Hummingbird", package: "hummingbird"),
                .product(name: "JWTKit", package: "jwt-kit"),
            ],
            swiftSettings: swiftSettings
        ),
        // Linux calls Swift's Glibc module hides: sync_file_range(2), malloc_trim(3).
        .target(name: "CLinux"),
        // libzstd from the system (Debian's libzstd-dev), for zstd-compressed layers.
        .systemLibrary(name: "CZstd", pkgConfig: "libzstd", providers: [.apt(["libzstd-dev"])]),
        // Micro-benchmarks of hot paths (`swift run -c release wharf-microbench`).
        .executableTarget(
            name: "wharf-microbench",
            dependencies: [
                "OCI", "Access", "Metadata",
                .product(name: "Benchmark", package: "swift-benchmark"),
                .product(name: "Logging", package: "swift-log"),
                .product(name: "NIOCore", package: "swift-nio"),
            ],
            path: "bench/micro",
            swiftSettings: swiftSettings
        ),
        .testTarget(
            name: "ScannerTests",
            dependencies: ["Scanner", .product(name: "NIOCore", package: "swift-nio")],
            swiftSettings: swiftSettings
        ),
        .testTarget(
            name: "EncryptionTests",
            dependencies: [
                "Encryption", "BlobStore", "AWSSigning", "OCI",
                .product(name: "AsyncHTTPClient", package: "async-http-client"),
                .product(name: "Crypto", package: "swift-crypto"),
                .product(name: "NIOCore", package: "swift-nio"),
                .product(name: "Logging", package: "swift-log"),
            ],
            swiftSettings: swiftSettings
        ),
        .testTarget(name: "OCITests", dependencies: ["OCI"], swiftSettings: swiftSettings),
        .testTarget(name: "ReplicationTests", dependencies: ["Replication", "Metadata", "OCI"], swiftSettings: swiftSettings),
        .testTarget(name: "FuzzRegressionTests", dependencies: ["FuzzTargets"], swiftSettings: swiftSettings),
        .testTarget(name: "LifecycleTests", dependencies: ["Lifecycle", "OCI"], swiftSettings: swiftSettings),
        .testTarget(
            name: "UseCaseTests",
            dependencies: [
                "UseCases", "Registry", "Access", "Metadata", "BlobStore", "Scanning", "OCI", "Signatures", "Encryption",
                .product(name: "NIOCore", package: "swift-nio"),
                .product(name: "Logging", package: "swift-log"),
                .product(name: "Crypto", package: "swift-crypto"),
                .product(name: "_CryptoExtras", package: "swift-crypto"),
            ],
            swiftSettings: swiftSettings
        ),
        .testTarget(
            name: "ECRTests", dependencies: ["ECR", "Access", "OCI", "AWSSigning", .product(name: "Crypto", package: "swift-crypto")],
            swiftSettings: swiftSettings),
        .testTarget(
            name: "StorageTests",
            dependencies: [
                "OCI", "BlobStore", "Metadata", "S3BlobStore", "AWSSigning",
                .product(name: "AsyncHTTPClient", package: "async-http-client"),
                .product(name: "NIOCore", package: "swift-nio"),
                .product(name: "SQLKit", package: "sql-kit"),
            ],
            swiftSettings: swiftSettings
        ),
        .testTarget(
            name: "ServerTests",
            dependencies: [
                "Server", "OCI", "Registry", "Metadata", "BlobStore", "Access", "Lifecycle", "UseCases", "Monitoring", "Events", "Replication",
                .product(name: "SQLKit", package: "sql-kit"),
                .product(name: "JWTKit", package: "jwt-kit"),
                .product(name: "Hummingbird", package: "hummingbird"),
                .product(name: "HummingbirdTesting", package: "hummingbird"),
                .product(name: "AsyncHTTPClient", package: "async-http-client"),
            ],
            swiftSettings: swiftSettings
        ),
    ]
)
