import OCI
import Testing

@testable import ECR

/// The server-side checks botocore leaves to the service: max, pattern and enum, from the model.
@Suite("ECR model validation")
struct ModelValidationTests {
    let model = ECRModel.shared

    func error(_ input: JSONValue, _ operation: String = "CreateRepository") -> ECRError? {
        do {
            try model.validate(input, operation: operation)
            return nil
        } catch {
            return error
        }
    }

    @Test("the generated model knows every operation Wharf serves")
    func coverage() {
        for operation in ECRService.operations.keys {
            #expect(model.inputShape(of: operation) != nil, "\(operation)")
        }
        #expect(model.operationNames.count >= 50)
    }

    @Test("every pattern in the model compiles as a Swift Regex")
    func patternsCompile() throws {
        try ECRModel(json: ECRModel.json).compileAllPatterns()
    }

    @Test("valid input passes")
    func valid() {
        #expect(
            error([
                "repositoryName": "team/app-1", "imageTagMutability": "IMMUTABLE",
                "imageScanningConfiguration": ["scanOnPush": true], "tags": [["Key": "a", "Value": "b"]],
            ]) == nil)
    }

    @Test("patterns match the whole value")
    func patterns() {
        #expect(error(["repositoryName": "Team/App"])?.type == "InvalidParameterException")
        #expect(error(["repositoryName": "team//app"])?.message.contains("regular expression") == true)
        #expect(error(["repositoryName": "ok", "registryId": "12345"])?.message.contains("registryId") == true)
        #expect(error(["repositoryName": "ok", "registryId": "123456789012"]) == nil)
    }

    @Test("lengths, ranges and list sizes, including nested ones")
    func limits() {
        #expect(error(["repositoryName": .string(String(repeating: "a", count: 257))])?.message.contains("less than or equal to 256") == true)
        #expect(error(["repositoryName": "a"])?.message.contains("greater than or equal to 2") == true)
        #expect(error(["repositoryName": "ok", "maxResults": 1001], "ListImages")?.type == "InvalidParameterException")
        #expect(error(["repositoryName": "ok", "maxResults": 0], "ListImages")?.type == "InvalidParameterException")
        let filters: [JSONValue] = (0..<6).map { ["filterType": "WILDCARD", "filter": .string("v\($0)*")] }
        let tooMany = error(["repositoryName": "ok", "imageTagMutability": "IMMUTABLE_WITH_EXCLUSION", "imageTagMutabilityExclusionFilters": .array(filters)])
        #expect(tooMany?.message.contains("imageTagMutabilityExclusionFilters") == true)
        let nested = error(["repositoryName": "ok", "imageTagMutabilityExclusionFilters": [["filterType": "WILDCARD", "filter": "bad value!"]]])
        #expect(nested?.message.contains("imageTagMutabilityExclusionFilters.1.filter") == true)
        #expect(error(["repositoryName": "ok", "lifecyclePolicyText": "{}"], "PutLifecyclePolicy")?.message.contains("lifecyclePolicyText") == true)
    }

    @Test("enums, required members and types")
    func enumsAndTypes() {
        #expect(error(["repositoryName": "ok", "imageTagMutability": "SOMETIMES"])?.message.contains("enum value set") == true)
        #expect(error(["repositoryName": "ok", "encryptionConfiguration": ["kmsKey": "k"]])?.message.contains("encryptionType") == true)
        #expect(error([:])?.message.contains("'repositoryName'") == true)
        #expect(error(["repositoryName": 5])?.type == "SerializationException")
        #expect(error(["repositoryName": "ok", "imageScanningConfiguration": ["scanOnPush": "yes"]])?.type == "SerializationException")
        #expect(error(["repositoryName": "ok", "maxResults": 2.5], "ListImages")?.type == "SerializationException")
    }

    @Test("integers past their AWS width are refused before any conversion could trap")
    func integerWidths() {
        let part: (JSONValue, JSONValue) -> ECRError? = { first, last in
            error(
                [
                    "repositoryName": "ok", "uploadId": "00000000-0000-4000-8000-000000000000", "partFirstByte": first, "partLastByte": last,
                    "layerPartBlob": "AA==",
                ], "UploadLayerPart")
        }
        #expect(part(0, 9)?.type == nil)
        #expect(part(0, .number(9_223_372_036_854_775_807.0))?.type == "SerializationException")
        #expect(part(.number(1e300), 5)?.type == "SerializationException")
        // maxResults is a 32-bit integer in the model.
        #expect(error(["repositoryName": "ok", "maxResults": .number(4_294_967_296)], "ListImages")?.type == "SerializationException")
    }
}
