import Registry
import Testing

@Suite("Registry scanning configuration")
struct RegistryScanningConfigurationTests {
    @Test("without rules the repository's scanOnPush decides; with rules the matching rule does, continuous over on push over manual")
    func precedence() {
        let none = RegistryScanningConfiguration()
        #expect(none.scansOnPush("team/app", repositorySetting: true) && !none.scansOnPush("team/app", repositorySetting: false))
        let configuration = RegistryScanningConfiguration(
            scanType: "ENHANCED",
            rules: [
                .init(scanFrequency: "SCAN_ON_PUSH", repositoryFilters: [.init(filter: "team/*"), .init(filter: "prod-*")]),
                .init(scanFrequency: "CONTINUOUS_SCAN", repositoryFilters: [.init(filter: "team/critical*")]),
            ])
        #expect(configuration.rule(for: "team/app")?.frequency == "SCAN_ON_PUSH")
        #expect(configuration.rule(for: "team/app")?.filters == [.init(filter: "team/*")])
        #expect(configuration.rule(for: "team/critical-api")?.frequency == "CONTINUOUS_SCAN")
        #expect(configuration.rule(for: "other/app") == nil)
        #expect(configuration.scansOnPush("prod-web", repositorySetting: false))
        // With rules, a repository no rule matches is not scanned on push, whatever its own setting.
        #expect(!configuration.scansOnPush("other/app", repositorySetting: true))
        let manual = RegistryScanningConfiguration(rules: [.init(scanFrequency: "MANUAL", repositoryFilters: [.init(filter: "*")])])
        #expect(!manual.scansOnPush("team/app", repositorySetting: true))
        // Only WILDCARD filters count.
        let odd = RegistryScanningConfiguration(rules: [.init(scanFrequency: "SCAN_ON_PUSH", repositoryFilters: [.init(filter: "*", filterType: "PREFIX")])])
        #expect(!odd.scansOnPush("team/app", repositorySetting: false))
    }
}
