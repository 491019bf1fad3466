import Foundation

/// An error answer in RFC 9457 `application/problem+json`: `type`, `title`, `status`, `detail`,
/// plus `errors` (every validation problem, each naming its field) where there are several.
public struct Problem: Codable, Sendable, Equatable {
    public static let contentType = "application/problem+json"

    public var type: String
    public var title: String
    public var status: Int
    public var detail: String
    public var instance: String?
    public var errors: [String]?

    public init(status: Int, detail: String, type: String? = nil, instance: String? = nil, errors: [String]? = nil) {
        self.type = type ?? Self.type(for: status)
        self.title = HTTPResponse.reasonPhrase(status)
        self.status = status
        self.detail = detail
        self.instance = instance
        self.errors = errors
    }

    /// A stable URI per kind of problem, documented in schemas/openapi.yaml.
    static func type(for status: Int) -> String {
        let name: String = switch status {
        case 400: "invalid-request"
        case 401: "unauthorized"
        case 404: "not-found"
        case 405: "method-not-allowed"
        case 408: "request-timeout"
        case 411: "length-required"
        case 413: "content-too-large"
        case 415: "unsupported-media-type"
        case 503: "unavailable"
        case 504: "timeout"
        default: "error"
        }
        return "https://levee.dev/problems/" + name
    }

    public func response(headers: [(name: String, value: String)] = []) -> HTTPResponse {
        let body = (try? LeveeJSON.encode(self)) ?? Data("{}".utf8)
        return HTTPResponse(status: status, contentType: Self.contentType, body: Array(body), headers: headers)
    }
}
