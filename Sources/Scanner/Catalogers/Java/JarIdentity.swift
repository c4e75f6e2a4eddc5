/// The main section of a jar's `META-INF/MANIFEST.MF` (JAR File Specification): `Name: value`
/// lines, a line starting with one space continuing the previous one, the main section ending at
/// the first blank line.
struct JarManifest: Equatable {
    var attributes: [String: String]

    init(_ text: String) {
        var attributes: [String: String] = [:]
        var last: String?
        // `\r\n` is one Character in Swift, and a newline like `\n` and `\r`.
        for line in text.split(omittingEmptySubsequences: false, whereSeparator: \.isNewline) {
            if line.isEmpty { if !attributes.isEmpty { break } else { continue } }
            if line.first == " " {
                if let last { attributes[last, default: ""] += line.dropFirst() }
                continue
            }
            guard let colon = line.firstIndex(of: ":") else { continue }
            let name = String(line[..<colon]).lowercased()
            // The first occurrence wins, as java.util.jar reads it.
            if attributes[name] == nil {
                attributes[name] = String(line[line.index(after: colon)...].trimmingASCIIWhitespace())
                last = name
            } else {
                last = nil
            }
        }
        self.attributes = attributes
    }

    subscript(_ name: String) -> String? {
        guard let value = attributes[name.lowercased()], !value.isEmpty else { return nil }
        return value
    }

    /// An OSGi header's first clause, without its parameters (`name;singleton:=true`).
    func clause(_ name: String) -> String? {
        self[name].map { String($0.prefix { $0 != ";" && $0 != "," }.trimmingASCIIWhitespace()) }.flatMap { $0.isEmpty ? nil : $0 }
    }
}

/// Names a jar that carries no `pom.properties` (everything Gradle builds: Spring Framework, Spring
/// Boot, Spring Security…) as Maven's `group:artifact`, from its manifest and its file name.
///
/// The rules, best evidence first:
/// - artifact: the file name's `artifact-version` form; else `Implementation-Title` when it is an
///   artifact id (no spaces); else a module name (`Automatic-Module-Name`, `Bundle-SymbolicName`)
///   known to map to one; else the bare file name.
/// - version: `Implementation-Version`, then `Bundle-Version`, then the file name's.
/// - group: the maintained table of well-known libraries; else `Implementation-Vendor-Id` when it is
///   a reverse domain name; else the module name less a last segment that is the artifact.
/// A jar named this way has confidence medium when its manifest states the version and the group is
/// known or stated, low otherwise. With no group at all the library is still listed (by artifact
/// alone), for the inventory and SBOM, but matched against no advisory: a guessed group would be a
/// guessed vulnerability.
enum JarIdentity {
    struct Identity: Equatable {
        var group: String?
        var artifact: String
        var version: String
        var identifiedBy: DetectedPackage.Identification
        var confidence: DetectedPackage.Confidence

        var name: String { group.map { "\($0):\(artifact)" } ?? artifact }
    }

    static func identify(manifest: JarManifest?, fileName: String) -> Identity? {
        let file = FileNameClue(fileName)
        let moduleName = manifest?["Automatic-Module-Name"] ?? manifest?.clause("Bundle-SymbolicName")
        var artifact: String?
        var artifactFromManifest = false
        if let named = file.artifact, file.version != nil {
            artifact = named
        } else if let title = manifest?["Implementation-Title"], isArtifactID(title) {
            artifact = title
            artifactFromManifest = true
        } else if let moduleName, let mapped = Self.artifact(ofModule: moduleName) {
            artifact = mapped
            artifactFromManifest = true
        } else if let moduleName, isArtifactID(moduleName) {
            // An OSGi bundle's symbolic name is its identity when nothing maps it to Maven.
            artifact = moduleName
            artifactFromManifest = true
        } else if let named = file.artifact, isArtifactID(named) {
            artifact = named
        }
        let manifestVersion = (manifest?["Implementation-Version"] ?? manifest?.clause("Bundle-Version")).flatMap { isVersion($0) ? $0 : nil }
        guard let artifact, let version = manifestVersion ?? file.version else { return nil }

        var group = WellKnownMavenGroups.group(of: artifact, version: version)
        var groupStated = group != nil
        if group == nil, let vendor = manifest?["Implementation-Vendor-Id"], isReverseDomain(vendor) {
            group = vendor
            groupStated = true
        }
        if group == nil, let moduleName, moduleName.hasSuffix("." + artifact) {
            let prefix = String(moduleName.dropLast(artifact.count + 1))
            if isReverseDomain(prefix) {
                group = prefix
                groupStated = true
            }
        }
        let usedManifest = artifactFromManifest || manifestVersion != nil
        return Identity(
            group: group, artifact: artifact, version: version,
            identifiedBy: usedManifest ? .manifest : .fileName,
            confidence: manifestVersion != nil && groupStated ? .medium : .low)
    }

    /// Module names that do not end in the artifact id, for the libraries whose jars often lack a
    /// usable file name: `spring.beans` → `spring-beans`, `io.netty.codec.http` → `netty-codec-http`.
    static func artifact(ofModule module: String) -> String? {
        let lastSegment = String(module.split(separator: ".").last ?? "")
        if lastSegment.contains("-"), isArtifactID(lastSegment) { return lastSegment }
        for (prefix, artifactPrefix) in [
            ("spring.", "spring-"), ("org.springframework.", "spring-"), ("io.netty.", "netty-"),
            ("org.apache.tomcat.embed.", "tomcat-embed-"), ("org.apache.logging.log4j.", "log4j-"),
        ] where module.hasPrefix(prefix) {
            return artifactPrefix + module.dropFirst(prefix.count).replacingOccurrences(of: ".", with: "-")
        }
        if let known = WellKnownMavenGroups.artifactsByModule[module] { return known }
        // `org.yaml.snakeyaml`: the last segment is an artifact the table places under the rest.
        if let group = WellKnownMavenGroups.group(of: lastSegment, version: nil), module == group + "." + lastSegment { return lastSegment }
        return nil
    }

    static func isArtifactID(_ text: String) -> Bool {
        guard let first = text.unicodeScalars.first, first.properties.isAlphabetic || ("0"..."9").contains(first) else { return false }
        return text.count <= 128
            && text.unicodeScalars.allSatisfy { $0.isASCII && ($0.properties.isAlphabetic || ("0"..."9").contains($0) || "-_.".unicodeScalars.contains($0)) }
    }

    static func isReverseDomain(_ text: String) -> Bool {
        let segments = text.split(separator: ".", omittingEmptySubsequences: false)
        return segments.count >= 2 && segments.allSatisfy { isArtifactID(String($0)) }
    }

    static func isVersion(_ text: String) -> Bool {
        guard let first = text.unicodeScalars.first, ("0"..."9").contains(first), text.count <= 64 else { return false }
        return !text.contains(" ")
    }

    /// `artifact-version.jar` (Maven's naming) or `symbolic.name_version.jar` (Eclipse's): the
    /// artifact ends at a `-` or `_` followed by a digit. Where there are several (`log4j-1.2-api-2.17.1`),
    /// the last split whose artifact the well-known table knows wins, else the first.
    struct FileNameClue {
        var artifact: String?
        var version: String?

        init(_ fileName: String) {
            var stem = Substring(fileName)
            if let dot = stem.lastIndex(of: ".") { stem = stem[..<dot] }
            guard !stem.isEmpty else { return }
            var splits: [String.Index] = []
            var index = stem.startIndex
            while index < stem.endIndex {
                let next = stem.index(after: index)
                if stem[index] == "-" || stem[index] == "_", next < stem.endIndex, stem[next].isASCII, stem[next].isNumber, index > stem.startIndex {
                    splits.append(index)
                }
                index = next
            }
            guard let first = splits.first else {
                artifact = String(stem)
                return
            }
            let split = splits.last { WellKnownMavenGroups.group(of: String(stem[..<$0]), version: nil) != nil } ?? first
            artifact = String(stem[..<split])
            version = String(stem[stem.index(after: split)...])
        }
    }
}

/// Maven groups of libraries that ship jars without `pom.properties` (or are often repackaged
/// without one), by artifact id: exact names first, then prefixes, longest first. Maintained by
/// hand; a library missing here is still named when its manifest states a vendor id or a module
/// name ending in its artifact id.
enum WellKnownMavenGroups {
    static let exact: [String: String] = [
        "spring-core": "org.springframework", "spring-beans": "org.springframework", "spring-context": "org.springframework",
        "spring-context-support": "org.springframework", "spring-context-indexer": "org.springframework",
        "spring-aop": "org.springframework", "spring-aspects": "org.springframework", "spring-expression": "org.springframework",
        "spring-jdbc": "org.springframework", "spring-tx": "org.springframework", "spring-orm": "org.springframework",
        "spring-oxm": "org.springframework", "spring-jms": "org.springframework", "spring-messaging": "org.springframework",
        "spring-web": "org.springframework", "spring-webmvc": "org.springframework", "spring-webflux": "org.springframework",
        "spring-websocket": "org.springframework", "spring-test": "org.springframework", "spring-jcl": "org.springframework",
        "spring-instrument": "org.springframework", "spring-r2dbc": "org.springframework", "spring-kafka": "org.springframework.kafka",
        "spring-amqp": "org.springframework.amqp", "spring-rabbit": "org.springframework.amqp", "spring-hateoas": "org.springframework.hateoas",
        "spring-graphql": "org.springframework.graphql", "spring-retry": "org.springframework.retry",
        "spring-plugin-core": "org.springframework.plugin",
        "log4j": "log4j", "snakeyaml": "org.yaml", "guava": "com.google.guava", "gson": "com.google.code.gson",
        "protobuf-java": "com.google.protobuf", "jackson-databind": "com.fasterxml.jackson.core",
        "jackson-core": "com.fasterxml.jackson.core", "jackson-annotations": "com.fasterxml.jackson.core",
        "commons-text": "org.apache.commons", "commons-lang3": "org.apache.commons", "commons-compress": "org.apache.commons",
        "commons-collections4": "org.apache.commons", "commons-configuration2": "org.apache.commons", "commons-io": "commons-io",
        "commons-collections": "commons-collections", "commons-fileupload": "commons-fileupload", "commons-codec": "commons-codec",
        "commons-beanutils": "commons-beanutils", "commons-lang": "commons-lang", "commons-logging": "commons-logging",
        "logback-core": "ch.qos.logback", "logback-classic": "ch.qos.logback", "h2": "com.h2database", "postgresql": "org.postgresql",
        "mysql-connector-java": "mysql", "mysql-connector-j": "com.mysql", "xstream": "com.thoughtworks.xstream",
        "okhttp": "com.squareup.okhttp3", "json-smart": "net.minidev", "httpclient": "org.apache.httpcomponents",
        "httpcore": "org.apache.httpcomponents", "httpclient5": "org.apache.httpcomponents.client5", "jsoup": "org.jsoup",
        "nimbus-jose-jwt": "com.nimbusds", "struts2-core": "org.apache.struts", "xalan": "xalan", "xercesImpl": "xerces",
        "dom4j": "org.dom4j", "hibernate-validator": "org.hibernate.validator", "reactor-core": "io.projectreactor",
        "HikariCP": "com.zaxxer", "byte-buddy": "net.bytebuddy", "jakarta.annotation-api": "jakarta.annotation",
        "tomcat-annotations-api": "org.apache.tomcat", "jboss-logging": "org.jboss.logging", "undertow-core": "io.undertow",
        "zookeeper": "org.apache.zookeeper", "kafka-clients": "org.apache.kafka", "velocity": "org.apache.velocity",
        "velocity-engine-core": "org.apache.velocity", "groovy": "org.codehaus.groovy", "ognl": "ognl",
    ]

    static let prefixes: [(String, String)] = [
        ("spring-boot", "org.springframework.boot"), ("spring-security-", "org.springframework.security"),
        ("spring-data-", "org.springframework.data"), ("spring-cloud-", "org.springframework.cloud"),
        ("spring-session-", "org.springframework.session"), ("spring-integration-", "org.springframework.integration"),
        ("spring-batch-", "org.springframework.batch"), ("spring-ws-", "org.springframework.ws"),
        ("spring-vault-", "org.springframework.vault"), ("log4j-", "org.apache.logging.log4j"),
        ("tomcat-embed-", "org.apache.tomcat.embed"), ("jackson-dataformat-", "com.fasterxml.jackson.dataformat"),
        ("jackson-datatype-", "com.fasterxml.jackson.datatype"), ("jackson-module-", "com.fasterxml.jackson.module"),
        ("netty-", "io.netty"), ("slf4j-", "org.slf4j"), ("jetty-", "org.eclipse.jetty"), ("undertow-", "io.undertow"),
        ("kotlin-", "org.jetbrains.kotlin"), ("reactor-netty", "io.projectreactor.netty"), ("micrometer-", "io.micrometer"),
        ("thymeleaf", "org.thymeleaf"), ("bcprov-", "org.bouncycastle"), ("bcpkix-", "org.bouncycastle"),
        ("activemq-", "org.apache.activemq"), ("shiro-", "org.apache.shiro"), ("jjwt", "io.jsonwebtoken"),
    ]

    /// Module names (Automatic-Module-Name, Bundle-SymbolicName) whose last segment is not the artifact id.
    static let artifactsByModule: [String: String] = [
        "com.fasterxml.jackson.databind": "jackson-databind", "com.fasterxml.jackson.core": "jackson-core",
        "com.fasterxml.jackson.annotation": "jackson-annotations", "org.apache.logging.log4j": "log4j-api",
        "org.apache.commons.text": "commons-text", "org.apache.commons.lang3": "commons-lang3",
        "org.apache.commons.io": "commons-io", "org.apache.commons.compress": "commons-compress",
        "com.google.common": "guava", "com.google.gson": "gson", "ch.qos.logback.core": "logback-core",
        "ch.qos.logback.classic": "logback-classic", "org.slf4j": "slf4j-api",
    ]

    /// Hibernate moved from `org.hibernate` to `org.hibernate.orm` with 6.0.
    static func group(of artifact: String, version: String?) -> String? {
        if artifact == "hibernate-core" {
            return version.map { ($0.split(separator: ".").first.flatMap { Int($0) } ?? 0) >= 6 } == true ? "org.hibernate.orm" : "org.hibernate"
        }
        if let group = exact[artifact] { return group }
        return prefixes.first { artifact.hasPrefix($0.0) }?.1
    }
}
