import Foundation

/// Which hosts a job's `callback_url` may name: callbacks make Levee send requests, so by default
/// it sends none (an empty list refuses every callback URL).
///
/// Entries: `host` (any port), `host:port`, or `*.example.com` (any subdomain). A wildcard never
/// matches a loopback name or address (`localhost`, `127.x.x.x`, `::1`, `0.0.0.0`) nor an IP
/// literal: those must be listed exactly (e.g. `127.0.0.1:8080` for a receiver on this host).
/// Names are matched as written; a listed name that resolves to an internal address is the
/// operator's choice.
public struct CallbackAllowList: Sendable, Equatable, CustomStringConvertible {
    public var entries: [String]

    public init(_ entries: [String] = []) {
        self.entries = entries.map { $0.trimmingCharacters(in: .whitespaces).lowercased() }.filter { !$0.isEmpty }
    }

    /// A comma-separated list, as in `--callback-hosts` / `LEVEE_CALLBACK_HOSTS`.
    public init(parsing text: String) {
        self.init(text.split(separator: ",").map(String.init))
    }

    public var isEmpty: Bool { entries.isEmpty }
    public var description: String { entries.isEmpty ? "(none: callbacks refused)" : entries.joined(separator: ",") }

    /// Why `url` may not be called, or nil when it may.
    public func refusal(_ url: String) -> String? {
        guard let parts = URLComponents(string: url), let scheme = parts.scheme?.lowercased(), ["http", "https"].contains(scheme),
              let rawHost = parts.host, !rawHost.isEmpty else {
            return "'\(url.prefix(100))' is not an http or https URL with a host"
        }
        if parts.user != nil || parts.password != nil { return "credentials in the URL are not accepted" }
        if entries.isEmpty { return "callbacks are not enabled (the operator lists allowed hosts with --callback-hosts)" }
        let host = rawHost.lowercased().trimmingCharacters(in: CharacterSet(charactersIn: "[]"))
        let port = parts.port ?? (scheme == "https" ? 443 : 80)
        for entry in entries {
            if entry.hasPrefix("*.") {
                let suffix = String(entry.dropFirst(1))  // ".example.com"
                if host.hasSuffix(suffix) && host.count > suffix.count && !Self.isLoopbackOrLiteral(host) { return nil }
            } else if let pair = Self.split(entry) {
                if pair.host == host && (pair.port == nil || pair.port == port) { return nil }
            }
        }
        return "host \(host):\(port) is not on the callback allow-list"
    }

    static func split(_ entry: String) -> (host: String, port: Int?)? {
        if entry.hasPrefix("[") {  // [::1]:8080
            guard let close = entry.firstIndex(of: "]") else { return nil }
            let host = String(entry[entry.index(after: entry.startIndex)..<close])
            let rest = entry[entry.index(after: close)...]
            return (host, rest.hasPrefix(":") ? Int(rest.dropFirst()) : nil)
        }
        let pieces = entry.split(separator: ":")
        if pieces.count == 2, let port = Int(pieces[1]) { return (String(pieces[0]), port) }
        return (entry, nil)
    }

    static func isLoopbackOrLiteral(_ host: String) -> Bool {
        if host == "localhost" || host.hasSuffix(".localhost") || host.contains(":") { return true }
        let octets = host.split(separator: ".")
        return octets.count == 4 && octets.allSatisfy { UInt8($0) != nil }
    }
}
