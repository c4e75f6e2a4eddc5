import Foundation
import Testing
import ZIPFoundation

@testable import Scanner

/// Java as it really ships (issue 22): archives nested to any depth, jars Gradle built (a manifest,
/// no pom.properties), shaded jars, OSGi bundles and jars whose file name is the only clue, matched
/// against OSV Maven records written here from the OSV schema.
@Suite("Java archives")
struct JavaCatalogerTests {
    static let jar = LanguageCatalogerTests.jar
    static let pom = LanguageCatalogerTests.pom

    static func manifest(_ lines: String...) -> (String, [UInt8]) {
        ("META-INF/MANIFEST.MF", Array(("Manifest-Version: 1.0\r\n" + lines.map { $0 + "\r\n" }.joined() + "\r\n").utf8))
    }

    /// A class file, so no archive is only metadata.
    static let classFile: (String, [UInt8]) = ("org/example/Main.class", [0xCA, 0xFE, 0xBA, 0xBE])

    /// What Gradle writes into Spring Framework's jars (no pom.properties).
    static func springJar(_ artifact: String, _ version: String) throws -> [UInt8] {
        try jar([
            manifest(
                "Created-By: 1.8.0_312 (Oracle Corporation)", "Implementation-Title: \(artifact)", "Implementation-Version: \(version)",
                "Automatic-Module-Name: \(artifact.replacingOccurrences(of: "-", with: "."))"),
            classFile,
        ])
    }

    /// A Spring Boot application built by Gradle: its own manifest names the app, its libraries sit
    /// stored in BOOT-INF/lib and carry only manifests; one has a bare manifest (file name only),
    /// one is an OSGi bundle under a file name that says nothing.
    static func springBootApplication() throws -> [UInt8] {
        try jar([
            manifest(
                "Main-Class: org.springframework.boot.loader.JarLauncher", "Start-Class: com.example.demo.DemoApplication",
                "Spring-Boot-Version: 2.6.5", "Implementation-Title: demo", "Implementation-Version: 0.0.1-SNAPSHOT"),
            ("BOOT-INF/classes/com/example/demo/DemoApplication.class", [0xCA, 0xFE]),
            ("BOOT-INF/lib/spring-beans-5.3.17.jar", try springJar("spring-beans", "5.3.17")),
            ("BOOT-INF/lib/spring-webmvc-5.3.17.jar", try springJar("spring-webmvc", "5.3.17")),
            (
                "BOOT-INF/lib/spring-boot-2.6.5.jar",
                try jar([
                    manifest("Implementation-Title: Spring Boot", "Implementation-Version: 2.6.5", "Automatic-Module-Name: spring.boot"),
                    classFile,
                ])
            ),
            ("BOOT-INF/lib/snakeyaml-1.29.jar", try jar([manifest(), classFile])),
            (
                "BOOT-INF/lib/databind.jar",
                try jar([
                    manifest(
                        "Bundle-ManifestVersion: 2", "Bundle-Name: Jackson-databind",
                        "Bundle-SymbolicName: com.fasterxml.jackson.core.jackson-databind;singleton:=true", "Bundle-Version: 2.13.2",
                        "Export-Package: com.fasterxml.jackson.databind;version=\"2.13.2\",com.fas",
                        " terxml.jackson.databind.annotation;version=\"2.13.2\""),
                    classFile,
                ])
            ),
        ])
    }

    /// An enterprise archive: a web module holding its libraries, and a shared library folder.
    static func enterpriseArchive() throws -> [UInt8] {
        let web = try jar([
            ("WEB-INF/web.xml", Array("<web-app/>".utf8)),
            ("WEB-INF/lib/log4j-core-2.14.1.jar", try jar([pom("org.apache.logging.log4j", "log4j-core", "2.14.1"), classFile])),
            ("WEB-INF/lib/commons-text-1.9.jar", try jar([pom("org.apache.commons", "commons-text", "1.9"), classFile])),
        ])
        return try jar([
            ("META-INF/application.xml", Array("<application/>".utf8)),
            ("web.war", web),
            ("lib/spring-core-5.3.17.jar", try springJar("spring-core", "5.3.17")),
        ])
    }

    /// A shaded jar: its own pom.properties and those of what it bundles, and a manifest naming itself again.
    static func shadedJar() throws -> [UInt8] {
        try jar([
            manifest("Implementation-Title: toolkit", "Implementation-Version: 3.2.0", "Implementation-Vendor-Id: com.example"),
            pom("com.example", "toolkit", "3.2.0"), pom("com.google.guava", "guava", "30.0-jre"), pom("org.yaml", "snakeyaml", "1.26"),
            pom("org.yaml", "snakeyaml", "1.26"), classFile,
        ])
    }

    static func inventory(_ files: [(String, [UInt8])]) async throws -> ImageInventory {
        var layer = TarBuilder()
        for (path, bytes) in files { layer.add(path, content: bytes) }
        var imageFiles = ImageFiles(wanted: Inventory.wants)
        try await imageFiles.apply(layer: ArrayByteSource(layer.archive))
        return await Inventory.of(imageFiles)
    }

    static func rows(_ inventory: ImageInventory) -> [String] {
        inventory.packages.map { "\($0.name) \($0.version) \($0.identifiedBy?.rawValue ?? "-") \($0.confidence?.rawValue ?? "-") \($0.location)" }.sorted()
    }

    @Test("libraries are found at every depth and named by the best evidence each archive carries")
    func inventoryOfRealLayouts() async throws {
        let inventory = try await Self.inventory([
            ("app/demo.jar", try Self.springBootApplication()),
            ("opt/jboss/standalone/deployments/shop.ear", try Self.enterpriseArchive()),
            ("opt/tools/toolkit-3.2.0.jar", try Self.shadedJar()),
            ("usr/local/tomcat/webapps/ROOT/META-INF/maven/com.example/exploded/pom.properties", Self.pom("com.example", "exploded", "2.0").1),
            ("usr/share/java/not-a-jar.txt", Array("hello".utf8)),
        ])
        let boot = "/app/demo.jar!/BOOT-INF/lib/"
        let ear = "/opt/jboss/standalone/deployments/shop.ear"
        #expect(
            Self.rows(inventory) == [
                "com.example:exploded 2.0 pom.properties high /usr/local/tomcat/webapps/ROOT/META-INF/maven/com.example/exploded/pom.properties",
                "com.example:toolkit 3.2.0 pom.properties high /opt/tools/toolkit-3.2.0.jar",
                "com.fasterxml.jackson.core:jackson-databind 2.13.2 MANIFEST.MF medium \(boot)databind.jar",
                "com.google.guava:guava 30.0-jre pom.properties high /opt/tools/toolkit-3.2.0.jar",
                "demo 0.0.1-SNAPSHOT MANIFEST.MF low /app/demo.jar",
                "org.apache.commons:commons-text 1.9 pom.properties high \(ear)!/web.war!/WEB-INF/lib/commons-text-1.9.jar",
                "org.apache.logging.log4j:log4j-core 2.14.1 pom.properties high \(ear)!/web.war!/WEB-INF/lib/log4j-core-2.14.1.jar",
                "org.springframework.boot:spring-boot 2.6.5 MANIFEST.MF medium \(boot)spring-boot-2.6.5.jar",
                "org.springframework:spring-beans 5.3.17 MANIFEST.MF medium \(boot)spring-beans-5.3.17.jar",
                "org.springframework:spring-core 5.3.17 MANIFEST.MF medium \(ear)!/lib/spring-core-5.3.17.jar",
                "org.springframework:spring-webmvc 5.3.17 MANIFEST.MF medium \(boot)spring-webmvc-5.3.17.jar",
                "org.yaml:snakeyaml 1.26 pom.properties high /opt/tools/toolkit-3.2.0.jar",
                "org.yaml:snakeyaml 1.29 file-name low \(boot)snakeyaml-1.29.jar",
            ])
    }

    /// OSV records as the schema (`../shared/testdata/osv-schema/schema.json`) defines them.
    static func osv(_ id: String, aliases: [String], _ affected: [(String, String, String)], severity: String? = nil) -> String {
        let entries = affected.map { name, introduced, fixed in
            """
            {"package": {"ecosystem": "Maven", "name": "\(name)", "purl": "pkg:maven/\(name.replacingOccurrences(of: ":", with: "/"))"},
             "ranges": [{"type": "ECOSYSTEM", "events": [{"introduced": "\(introduced)"}, {"fixed": "\(fixed)"}]}]}
            """
        }
        return """
            {"schema_version": "1.6.0", "id": "\(id)", "modified": "2024-01-01T00:00:00Z", "published": "2022-03-31T00:00:00Z",
             "aliases": [\(aliases.map { "\"\($0)\"" }.joined(separator: ", "))], "summary": "\(id)",
             "affected": [\(entries.joined(separator: ", "))]\(severity.map { #", "database_specific": {"severity": "\#($0)"}"# } ?? "")}
            """
    }

    @Test("Spring4Shell, Log4Shell and SnakeYAML are found exactly once each, wherever the jar hides")
    func findings() async throws {
        let directory = try TemporaryDirectory()
        let builder = try await AdvisoryDatabaseBuilder.create(at: directory.path + "/osv.sqlite")
        for record in [
            Self.osv(
                "GHSA-36p3-wjmg-h94x", aliases: ["CVE-2022-22965"],
                [
                    ("org.springframework:spring-beans", "5.3.0", "5.3.18"), ("org.springframework:spring-webmvc", "5.3.0", "5.3.18"),
                    ("org.springframework:spring-beans", "0", "5.2.20.RELEASE"),
                ], severity: "CRITICAL"),
            Self.osv("GHSA-jfh8-c2jp-5v3q", aliases: ["CVE-2021-44228"], [("org.apache.logging.log4j:log4j-core", "2.0-beta9", "2.15.0")]),
            Self.osv("GHSA-mjmj-j48q-9wg2", aliases: ["CVE-2022-1471"], [("org.yaml:snakeyaml", "0", "2.0")]),
            Self.osv("GHSA-599f-7c49-w659", aliases: ["CVE-2022-42889"], [("org.apache.commons:commons-text", "1.5", "1.10.0")]),
            // Names no library in the image: the group-less `demo`, and spring-core at an unaffected version.
            Self.osv("GHSA-demo-demo-demo", aliases: [], [("com.example:demo", "0", "9.9")]),
            Self.osv("GHSA-core-core-core", aliases: [], [("org.springframework:spring-core", "0", "5.3.0")]),
        ] {
            try await builder.add(json: Array(record.utf8), origin: "test")
        }
        try await builder.commit()
        let database = try await AdvisoryDatabase.open(directory.path + "/osv.sqlite")
        let inventory = try await Self.inventory([
            ("app/demo.jar", try Self.springBootApplication()), ("opt/shop.ear", try Self.enterpriseArchive()),
            ("opt/toolkit-3.2.0.jar", try Self.shadedJar()),
        ])
        let findings: [Finding]
        do { findings = try await VulnerabilityMatcher.match(inventory, database: database) } catch {
            try await database.close()
            throw error
        }
        try await database.close()
        let got = findings.map { "\($0.id) \($0.packageName) \($0.installedVersion) \($0.fixedVersion ?? "-") \($0.location)" }.sorted()
        #expect(
            got == [
                "CVE-2021-44228 org.apache.logging.log4j:log4j-core 2.14.1 2.15.0 /opt/shop.ear!/web.war!/WEB-INF/lib/log4j-core-2.14.1.jar",
                "CVE-2022-1471 org.yaml:snakeyaml 1.26 2.0 /opt/toolkit-3.2.0.jar",
                "CVE-2022-1471 org.yaml:snakeyaml 1.29 2.0 /app/demo.jar!/BOOT-INF/lib/snakeyaml-1.29.jar",
                "CVE-2022-22965 org.springframework:spring-beans 5.3.17 5.3.18 /app/demo.jar!/BOOT-INF/lib/spring-beans-5.3.17.jar",
                "CVE-2022-22965 org.springframework:spring-webmvc 5.3.17 5.3.18 /app/demo.jar!/BOOT-INF/lib/spring-webmvc-5.3.17.jar",
                "CVE-2022-42889 org.apache.commons:commons-text 1.9 1.10.0 /opt/shop.ear!/web.war!/WEB-INF/lib/commons-text-1.9.jar",
            ])
    }

    @Test("nesting stops at the depth limit and the extraction budget, and a lying entry is skipped")
    func limits() throws {
        // level-0 holds level-1 … holds level-11, each with its own pom.properties.
        var innermost = try Self.jar([Self.pom("com.example", "level-11", "1.0")])
        for level in stride(from: 10, through: 0, by: -1) {
            innermost = try Self.jar([Self.pom("com.example", "level-\(level)", "1.0"), ("lib/level-\(level + 1)-1.0.jar", innermost)])
        }
        let all = JavaArchiveCataloger.packages(archive: innermost, location: "/chain.jar")
        #expect(Set(all.map(\.name)) == Set((0...8).map { "com.example:level-\($0)" }))

        var noNesting = JavaArchiveCataloger.Limits()
        noNesting.maximumExtractedBytes = 100
        #expect(JavaArchiveCataloger.packages(archive: innermost, location: "/chain.jar", limits: noNesting).map(\.name) == ["com.example:level-0"])

        var fewArchives = JavaArchiveCataloger.Limits()
        fewArchives.maximumArchives = 2
        #expect(JavaArchiveCataloger.packages(archive: innermost, location: "/chain.jar", limits: fewArchives).count == 3)
    }

    @Test("archives larger than any kept file are cataloged as they stream; later layers delete, replace and link them")
    func streamedArchives() async throws {
        // 2 MiB of incompressible class data: far above the kept-file limit set below.
        var noise = [UInt8](repeating: 0, count: 2 << 20)
        for index in noise.indices { noise[index] = UInt8(truncatingIfNeeded: index &* 2_654_435_761 >> 13) }
        let big = try Self.jar([Self.pom("org.apache.logging.log4j", "log4j-core", "2.14.1"), ("org/x/Big.class", noise)])
        let small = try Self.jar([Self.pom("org.yaml", "snakeyaml", "2.0")])
        var base = TarBuilder()
        base.add("app/big.jar", content: big)
        base.add("app/gone.jar", content: small)
        base.add("app/replaced.jar", content: big)
        var upper = TarBuilder()
        upper.add("app/.wh.gone.jar")
        upper.add("app/replaced.jar", content: small)
        upper.add("app/linked.jar", type: "1", link: "app/big.jar")
        var limits = ImageFiles.Limits()
        limits.maximumFileSize = 64 << 10
        var files = ImageFiles(limits: limits, wanted: Inventory.wants)
        try await files.apply(layer: ArrayByteSource(base.archive))
        try await files.apply(layer: ArrayByteSource(upper.archive))
        let inventory = await Inventory.of(files)
        #expect(
            Set(inventory.packages.map { "\($0.name) \($0.version) \($0.location) layer \($0.layer ?? -1)" }) == [
                "org.apache.logging.log4j:log4j-core 2.14.1 /app/big.jar layer 0",
                "org.apache.logging.log4j:log4j-core 2.14.1 /app/linked.jar layer 1",
                "org.yaml:snakeyaml 2.0 /app/replaced.jar layer 1",
            ])
    }

    @Test("manifests: continuation lines, first value wins, the main section only")
    func manifestParsing() {
        let manifest = JarManifest(
            "Manifest-Version: 1.0\r\nImplementation-Title: spring-\r\n beans\r\nImplementation-Title: other\r\n\r\nName: org/x/\r\nImplementation-Version: 9\r\n"
        )
        #expect(manifest["implementation-title"] == "spring-beans")
        #expect(manifest["Implementation-Version"] == nil)
    }

    @Test("file names, module names and vendor ids name a jar as Maven does")
    func identities() {
        func name(_ manifest: String?, _ file: String) -> String? {
            JarIdentity.identify(manifest: manifest.map(JarManifest.init), fileName: file).map { "\($0.name) \($0.version)" }
        }
        #expect(name(nil, "netty-codec-http2-4.1.77.Final.jar") == "io.netty:netty-codec-http2 4.1.77.Final")
        #expect(name(nil, "guava-31.1-jre.jar") == "com.google.guava:guava 31.1-jre")
        #expect(name(nil, "hibernate-core-6.1.0.Final.jar") == "org.hibernate.orm:hibernate-core 6.1.0.Final")
        #expect(name(nil, "hibernate-core-5.6.9.Final.jar") == "org.hibernate:hibernate-core 5.6.9.Final")
        #expect(name(nil, "org.eclipse.osgi_3.18.0.v20220516.jar") == "org.eclipse.osgi 3.18.0.v20220516")
        #expect(name(nil, "app.jar") == nil)
        #expect(name("Implementation-Title: Acme Widgets\nImplementation-Version: 1.0\n", "app.jar") == "app 1.0")
        #expect(name(nil, "log4j-1.2-api-2.17.1.jar") == "org.apache.logging.log4j:log4j-1.2-api 2.17.1")
        #expect(
            name("Implementation-Title: widgets\nImplementation-Version: 1.2\nImplementation-Vendor-Id: com.acme\n", "widgets.jar")
                == "com.acme:widgets 1.2")
        #expect(
            name("Automatic-Module-Name: spring.security.core\nImplementation-Version: 5.6.2\n", "x.jar")
                == "org.springframework.security:spring-security-core 5.6.2")
        #expect(name("Bundle-SymbolicName: org.yaml.snakeyaml\nBundle-Version: 1.30.0\n", "bundle.jar") == "org.yaml:snakeyaml 1.30.0")
        #expect(name("Bundle-SymbolicName: org.acme.tool\nBundle-Version: 1.0\n", "bundle.jar") == "org.acme.tool 1.0")
        #expect(name("Implementation-Version: not a version\n", "jsoup-1.14.3.jar") == "org.jsoup:jsoup 1.14.3")
    }
}
