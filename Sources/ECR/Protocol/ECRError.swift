/// An error in the AWS JSON 1.1 wire format: `{"__type": "<Exception>", "message": "…"}` with HTTP 400,
/// or 500 for the server's own faults. The type names are those of botocore's ECR model, so boto3's
/// `ClientError.response["Error"]["Code"]` and the CLI show the exception ECR would send.
public struct ECRError: Error, Sendable, Equatable, CustomStringConvertible {
    public let type: String
    public let message: String
    public let status: Int
    /// Members the exception's shape adds (`kmsError` of `KmsException`).
    public let fields: [String: String]

    public init(_ type: String, _ message: String, status: Int = 400, fields: [String: String] = [:]) {
        self.type = type
        self.message = message
        self.status = status
        self.fields = fields
    }

    /// A key-service failure: `kmsError` names what KMS (or the built-in key service) said.
    static func kms(_ code: String, _ message: String) -> ECRError {
        ECRError("KmsException", message, fields: ["kmsError": code])
    }

    public var description: String { "\(type): \(message)" }

    static func invalidParameter(_ message: String) -> ECRError { ECRError("InvalidParameterException", message) }
    static func validation(_ message: String) -> ECRError { ECRError("ValidationException", message) }
    static func serialization(_ message: String) -> ECRError { ECRError("SerializationException", message) }
    static func accessDenied(_ message: String) -> ECRError { ECRError("AccessDeniedException", message) }
    static func server(_ message: String) -> ECRError { ECRError("ServerException", message, status: 500) }

    static func repositoryNotFound(_ name: String, registryID: String) -> ECRError {
        ECRError("RepositoryNotFoundException", "The repository with name '\(name)' does not exist in the registry with id '\(registryID)'")
    }

    static func unknownOperation(_ target: String) -> ECRError {
        ECRError(
            "UnknownOperationException", "'\(target)' is not an operation of Amazon ECR (X-Amz-Target must be AmazonEC2ContainerRegistry_V20150921.<Operation>)"
        )
    }

    static func notImplemented(_ operation: String, _ why: String = "") -> ECRError {
        ECRError("UnknownOperationException", "Wharf does not implement the ECR operation \(operation)\(why.isEmpty ? "" : ": \(why)")")
    }
}
