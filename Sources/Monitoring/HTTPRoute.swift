/// The route label of request metrics: a fixed list, so no request can add a label value.
/// Repository names are deliberately absent (one series per repository would grow without bound).
public enum HTTPRoute: String, Sendable, CaseIterable {
    case v2Base = "v2_base"
    case catalog = "v2_catalog"
    case tags = "v2_tags"
    case manifest = "v2_manifest"
    case blob = "v2_blob"
    case blobUpload = "v2_blob_upload"
    case referrers = "v2_referrers"
    case v2Other = "v2_other"
    case token = "auth_token"
    case ecr = "ecr"
    case ecrLayerDownload = "ecr_layer_download"
    case management = "api"
    case metrics = "metrics"
    case health = "health"
    case other = "other"
}
