/// One parsed HTTP request: its head, and for prefix routes its body.
public struct HTTPRequest: Sendable {
    /// The method as sent (`GET`, `HEAD`, …).
    public var method: String
    /// The request target as sent, e.g. `/metrics?name=x`.
    public var target: String
    /// The target up to `?`.
    public var path: String
    /// The part after `?`, if any.
    public var query: String?
    /// Header fields with lower-cased names (the last one wins when a name repeats).
    public var headers: [String: String]
    /// The body (prefix routes only; empty otherwise).
    public var body: [UInt8] = []
    /// `HTTP/1.1` or `HTTP/1.0`, as sent.
    public var version: String = "HTTP/1.1"

    /// Whether the client asks to keep the connection open after the answer: HTTP/1.1 unless it
    /// sends `Connection: close`; HTTP/1.0 only with `Connection: keep-alive`.
    public var wantsKeepAlive: Bool {
        let tokens = (headers["connection"] ?? "").lowercased().split(separator: ",").map { $0.trimmingCharacters(in: .whitespaces) }
        if version == "HTTP/1.0" { return tokens.contains("keep-alive") }
        return !tokens.contains("close")
    }
}

/// What a route answers. The listener adds `Content-Length`, `Connection` (`close`, or
/// `keep-alive` where the listener keeps connections) and `Cache-Control: no-store`, and drops
/// the body for `HEAD`.
public struct HTTPResponse: Sendable {
    public var status: Int
    public var contentType: String
    public var body: [UInt8]
    /// Extra header fields, e.g. `Allow` or `Retry-After`.
    public var headers: [(name: String, value: String)]

    public init(status: Int, contentType: String = "text/plain; charset=utf-8", body: [UInt8],
                headers: [(name: String, value: String)] = []) {
        self.status = status
        self.contentType = contentType
        self.body = body
        self.headers = headers
    }

    public init(status: Int, contentType: String = "text/plain; charset=utf-8", text: String,
                headers: [(name: String, value: String)] = []) {
        self.init(status: status, contentType: contentType, body: Array(text.utf8), headers: headers)
    }

    /// The standard reason phrase for the status codes the listener and Levee's routes use.
    public static func reasonPhrase(_ status: Int) -> String {
        switch status {
        case 200: "OK"
        case 201: "Created"
        case 202: "Accepted"
        case 204: "No Content"
        case 400: "Bad Request"
        case 401: "Unauthorized"
        case 404: "Not Found"
        case 405: "Method Not Allowed"
        case 408: "Request Timeout"
        case 409: "Conflict"
        case 411: "Length Required"
        case 413: "Content Too Large"
        case 415: "Unsupported Media Type"
        case 429: "Too Many Requests"
        case 431: "Request Header Fields Too Large"
        case 500: "Internal Server Error"
        case 502: "Bad Gateway"
        case 503: "Service Unavailable"
        case 504: "Gateway Timeout"
        case 505: "HTTP Version Not Supported"
        default: "Status \(status)"
        }
    }

    /// The bytes on the wire: status line, header fields, blank line and (unless `head`) the body.
    func serialized(head: Bool, keepAlive: Bool = false) -> [UInt8] {
        var text = "HTTP/1.1 \(status) \(Self.reasonPhrase(status))\r\n"
        text += "Content-Type: \(contentType)\r\n"
        text += "Content-Length: \(body.count)\r\n"
        for header in headers { text += "\(header.name): \(header.value)\r\n" }
        text += keepAlive ? "Cache-Control: no-store\r\nConnection: keep-alive\r\n\r\n" : "Cache-Control: no-store\r\nConnection: close\r\n\r\n"
        var bytes = Array(text.utf8)
        if !head { bytes += body }
        return bytes
    }
}

/// Whether a process can take work now, and if not, why (shown on `/readyz`).
public struct Readiness: Sendable, Equatable {
    /// What is missing, e.g. "no partitions assigned"; empty when ready.
    public var reasons: [String]
    public var isReady: Bool { reasons.isEmpty }
    public init(reasons: [String] = []) { self.reasons = reasons }
    public static let ready = Readiness()
}

/// Where the listener binds: `ADDR:PORT`, `[IPv6]:PORT` or `:PORT` (all IPv4 interfaces).
public struct HTTPListenerAddress: Sendable, Equatable, CustomStringConvertible {
    public var host: String
    /// 0 asks the kernel for a free port (see `HTTPListener.boundAddress`).
    public var port: UInt16

    public init(host: String, port: UInt16) {
        self.host = host
        self.port = port
    }

    /// Parses `--http` values such as `0.0.0.0:9090`, `127.0.0.1:0`, `[::1]:9090`, `:9090`.
    public init(parsing text: String) throws(HTTPListenerError) {
        let bad = { (why: String) in HTTPListenerError(.badAddress, address: text, detail: why) }
        var host: Substring
        let portText: Substring
        if text.hasPrefix("[") {
            guard let close = text.firstIndex(of: "]"), text[text.index(after: close)...].hasPrefix(":") else {
                throw bad("expected [IPv6]:PORT")
            }
            host = text[text.index(after: text.startIndex)..<close]
            portText = text[text.index(close, offsetBy: 2)...]
        } else {
            guard let colon = text.lastIndex(of: ":") else { throw bad("expected ADDR:PORT, e.g. 0.0.0.0:9090") }
            host = text[..<colon]
            portText = text[text.index(after: colon)...]
            if host.contains(":") { throw bad("put an IPv6 address in brackets: [::]:9090") }
        }
        guard !portText.isEmpty, portText.allSatisfy(\.isASCII), let port = UInt16(portText) else {
            throw bad("the port must be a number from 0 to 65535")
        }
        if host.isEmpty { host = "0.0.0.0" }
        self.init(host: String(host), port: port)
    }

    public var description: String { host.contains(":") ? "[\(host)]:\(port)" : "\(host):\(port)" }
}

/// Why the listener could not start, with the address and what to do.
public struct HTTPListenerError: Error, Equatable, CustomStringConvertible {
    public enum Kind: Sendable, Equatable {
        /// The text is not an address, or not one of this host.
        case badAddress
        /// Another socket is bound to the address.
        case addressInUse
        /// Binding needs privileges (ports below 1024).
        case permissionDenied
        /// `start()` was called on a running listener.
        case alreadyRunning
        /// Any other system call failure.
        case system
    }

    public var kind: Kind
    public var address: String
    /// `errno` of the failed call, if a system call failed.
    public var errno: Int32?
    public var detail: String

    public init(_ kind: Kind, address: String, errno: Int32? = nil, detail: String) {
        self.kind = kind
        self.address = address
        self.errno = errno
        self.detail = detail
    }

    public var description: String {
        let advice: String
        switch kind {
        case .badAddress: advice = "use ADDR:PORT, e.g. --http 0.0.0.0:9090"
        case .addressInUse: advice = "another process listens there; stop it or choose another port with --http"
        case .permissionDenied: advice = "ports below 1024 need privileges; use a port such as 9090"
        case .alreadyRunning: advice = "stop() it first"
        case .system: advice = "check the address and the process's file-descriptor limit"
        }
        return "HTTP listener on \(address): \(detail) (\(advice))"
    }
}
