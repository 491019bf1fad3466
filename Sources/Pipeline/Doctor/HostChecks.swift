import Foundation
#if canImport(FoundationNetworking)
import FoundationNetworking
#endif
import Inference

/// The worker-host side of `levee doctor`: the model file, memory, the OpenAI-compatible backend.
struct HostChecks {
    let configuration: DoctorConfiguration

    func run() async -> [DoctorCheck] {
        switch configuration.engine {
        case .local(let path, let maxBatch):
            let (model, shape) = await Task.detached { modelCheck(path: path) }.value
            let memory: DoctorCheck
            if let shape {
                let estimate = MemoryEstimate(modelBytes: shape.fileBytes, kvBytesPerToken: shape.kvBytesPerToken,
                                              contextLength: shape.contextLength, sequences: min(configuration.concurrency, maxBatch))
                memory = estimate.check(available: MemoryEstimate.availableBytes(), concurrency: configuration.concurrency)
            } else {
                memory = DoctorCheck("memory", .skip, "no readable model file to size it by")
            }
            return [model, memory, DoctorCheck("openai backend", .skip, "the engine is local (--engine openai to use one)")]
        case .openAI(let url, let model, let key, let keySource):
            let skip = "the engine is openai: the model runs on the backend"
            return [DoctorCheck("model", .skip, skip), DoctorCheck("memory", .skip, skip),
                    await backendCheck(url: url, model: model, apiKey: key, keySource: keySource)]
        case .synthetic:
            let skip = "the engine is synthetic (benchmarks and chaos tests only)"
            return [DoctorCheck("model", .skip, skip), DoctorCheck("memory", .skip, skip), DoctorCheck("openai backend", .skip, skip)]
        }
    }

    // MARK: Model

    /// What the memory estimate needs to know about the model.
    struct ModelShape: Sendable {
        var fileBytes: Int
        var kvBytesPerToken: Int
        var contextLength: Int
    }

    /// The file exists, has the expected SHA-256, and is a GGUF Llama model Levee can run.
    func modelCheck(path: String) -> (DoctorCheck, ModelShape?) {
        let fetch = "run scripts/setup (fetches SmolLM2-135M-Instruct and checks its sha256), or point --model / LEVEE_MODEL at your GGUF file"
        var isDirectory: ObjCBool = false
        guard FileManager.default.fileExists(atPath: path, isDirectory: &isDirectory), !isDirectory.boolValue else {
            return (DoctorCheck("model", .fail, "no model file at \(path)", fix: fetch), nil)
        }
        let expected = (configuration.expectedModelSHA256
            ?? ((path as NSString).lastPathComponent == ModelLocation.defaultFileName ? Doctor.defaultModelSHA256 : nil))?.lowercased()
        let digest: String
        do {
            digest = try FileDigest.sha256(path: path)
        } catch {
            return (DoctorCheck("model", .fail, "cannot read \(path): \(error)", fix: "check the file's permissions (the worker's user must read it)"), nil)
        }
        if let expected, digest != expected {
            return (DoctorCheck("model", .fail, "\(path): sha256 \(digest), expected \(expected) (a truncated download or another file)",
                                fix: "delete it and \(fetch); or, if this file is the one you mean, pass --model-sha256 \(digest)"), nil)
        }
        let file: GGUFFile
        let llama: LlamaConfiguration
        do {
            file = try GGUFFile(path: path)
            llama = try LlamaConfiguration(file)
        } catch {
            return (DoctorCheck("model", .fail, "\(path) is not a model Levee can run: \(error)", fix: fetch), nil)
        }
        let shape = ModelShape(fileBytes: file.fileSize, kvBytesPerToken: llama.layers * llama.kvDimension * 2 * MemoryLayout<Float>.size,
                               contextLength: llama.contextLength)
        let name = file.string("general.name").map { "\($0), " } ?? ""
        var detail = "\(path): \(name)\(llama.architecture), \(llama.layers) layers, context \(llama.contextLength), \(MemoryEstimate.mebibytes(file.fileSize)) MiB"
        guard let expected else {
            detail += ", sha256 \(digest)"
            return (DoctorCheck("model", .warn, detail + " (no expected checksum to compare with)",
                                fix: "pin the file: --model-sha256 \(digest) (or the digest its publisher gives)"), shape)
        }
        detail += ", sha256 matches \(expected.prefix(12))…"
        return (DoctorCheck("model", .ok, detail), shape)
    }

    // MARK: OpenAI-compatible backend

    /// `GET /v1/models` on the backend: reachable, key accepted, the configured model served.
    func backendCheck(url base: URL, model: String, apiKey: String?, keySource: String) async -> DoctorCheck {
        let name = "openai backend"
        let shown = Self.printable(base)
        var text = base.absoluteString
        while text.hasSuffix("/") { text.removeLast() }
        if !text.hasSuffix("/v1") { text += "/v1" }
        guard let url = URL(string: text + "/models") else {
            return DoctorCheck(name, .fail, "\(shown) is not a usable URL", fix: "--openai-url http(s)://host:port")
        }
        var request = URLRequest(url: url)
        request.timeoutInterval = configuration.timeout.milliseconds / 1000
        if let apiKey, !apiKey.isEmpty { request.setValue("Bearer \(apiKey)", forHTTPHeaderField: "Authorization") }
        let session = URLSession(configuration: .ephemeral)
        defer { session.invalidateAndCancel() }
        let data: Data
        let response: URLResponse
        do {
            (data, response) = try await session.data(for: request)
        } catch {
            // Transport errors may quote the URL: never let user info from it through.
            var message = error.localizedDescription
            for secret in [base.password, base.user].compactMap({ $0 }) where !secret.isEmpty {
                message = message.replacingOccurrences(of: secret, with: "[redacted]")
            }
            return DoctorCheck(name, .fail, "GET \(Self.printable(url)) failed: \(message)",
                               fix: "check --openai-url and that the server (vLLM, llama.cpp server, TGI) is up and reachable from this host")
        }
        let status = (response as? HTTPURLResponse)?.statusCode ?? 0
        switch status {
        case 200:
            struct Models: Decodable { struct Model: Decodable { var id: String }; var data: [Model] }
            guard let models = try? JSONDecoder().decode(Models.self, from: data) else {
                return DoctorCheck(name, .warn, "GET \(Self.printable(url)) answered 200 but not with an OpenAI model list",
                                   fix: "check that --openai-url is the OpenAI-compatible base URL (the one ending in /v1)")
            }
            let ids = models.data.map(\.id)
            guard ids.contains(model) else {
                return DoctorCheck(name, .fail, "\(shown) serves \(ids.isEmpty ? "no models" : ids.joined(separator: ", ")); --openai-model \(model) is not among them",
                                   fix: ids.isEmpty ? "load a model on the backend" : "--openai-model \(ids[0])\(ids.count > 1 ? " (or another listed above)" : "")")
            }
            return DoctorCheck(name, .ok, "\(shown) serves \(model) (\(ids.count) model\(ids.count == 1 ? "" : "s") listed)")
        case 401, 403:
            let keyState = (apiKey?.isEmpty ?? true) ? "no API key was sent (\(keySource) is not set)" : "the API key from \(keySource) was refused"
            return DoctorCheck(name, .fail, "\(shown) answered \(status): \(keyState)",
                               fix: "set \(keySource) to a key the backend accepts (or --openai-key-env VAR)")
        case 404:
            return DoctorCheck(name, .fail, "GET \(Self.printable(url)) answered 404",
                               fix: "--openai-url must be the server's OpenAI-compatible base URL, e.g. http://gpu-1:8000 or http://gpu-1:8000/v1")
        default:
            return DoctorCheck(name, .fail, "GET \(Self.printable(url)) answered HTTP \(status)",
                               fix: "check the backend's logs; Levee retries 5xx and 429 but a backend that never answers 200 runs no jobs")
        }
    }

    /// A URL without user information (`http://user:secret@host` must not be printed).
    static func printable(_ url: URL) -> String {
        guard var components = URLComponents(url: url, resolvingAgainstBaseURL: false) else { return "the backend" }
        components.user = nil
        components.password = nil
        components.query = nil
        return components.string ?? "the backend"
    }
}

/// SHA-256 of a file, read in chunks (a model is too big to hash from one `Data`).
public enum FileDigest {
    /// Hex SHA-256 of the file at `path`, reading `chunkSize` bytes at a time.
    public static func sha256(path: String, chunkSize: Int = 1 << 20) throws -> String {
        guard let handle = FileHandle(forReadingAtPath: path) else {
            throw CocoaError(.fileReadNoPermission, userInfo: [NSFilePathErrorKey: path])
        }
        defer { try? handle.close() }
        var hash = SHA256()
        while true {
            let data = try handle.read(upToCount: max(1, chunkSize)) ?? Data()
            if data.isEmpty { break }
            data.withUnsafeBytes { hash.update($0) }
        }
        return hash.finalize().map { ($0 < 16 ? "0" : "") + String($0, radix: 16) }.joined()
    }
}

/// How much memory a local-engine worker needs, and whether this host has it.
///
/// Estimate: the model file (memory-mapped; its pages must stay resident or every token reads the
/// disk) + one key/value cache per sequence decoded at once (`layers × kv_dim × 2 × 4` bytes per
/// token, allocated in powers of two) + a fixed 256 MiB for the Swift runtime, librdkafka's fetch
/// queues and the decode scratch buffers. The worst case holds every sequence at the model's full
/// context; a "typical" case 1024 tokens (prompt + answer).
public struct MemoryEstimate: Sendable, Equatable {
    public var modelBytes: Int
    public var kvBytesPerToken: Int
    public var contextLength: Int
    /// Sequences decoded together: min(concurrency, the engine's batch size).
    public var sequences: Int

    public static let overheadBytes = 256 << 20
    public static let typicalTokens = 1024

    public init(modelBytes: Int, kvBytesPerToken: Int, contextLength: Int, sequences: Int) {
        self.modelBytes = modelBytes
        self.kvBytesPerToken = kvBytesPerToken
        self.contextLength = contextLength
        self.sequences = max(1, sequences)
    }

    /// Bytes of one sequence's cache holding `tokens` (capacity starts at 16 and doubles).
    public func cacheBytes(tokens: Int) -> Int {
        var capacity = 16
        while capacity < tokens { capacity *= 2 }
        return capacity * kvBytesPerToken
    }

    public func bytes(sequences: Int, tokens: Int) -> Int {
        modelBytes + sequences * cacheBytes(tokens: tokens) + Self.overheadBytes
    }

    public var worstCaseBytes: Int { bytes(sequences: sequences, tokens: contextLength) }
    public var typicalBytes: Int { bytes(sequences: sequences, tokens: min(contextLength, Self.typicalTokens)) }

    /// The most sequences that fit in `available` bytes at `tokens` each.
    public func sequencesThatFit(_ available: Int, tokens: Int) -> Int {
        max(0, (available - modelBytes - Self.overheadBytes) / max(1, cacheBytes(tokens: tokens)))
    }

    static func mebibytes(_ bytes: Int) -> Int { (bytes + (1 << 19)) >> 20 }

    /// ok when the worst case fits in 90% of what is available; warn when only typical jobs fit;
    /// fail when not even those do.
    public func check(available: (bytes: Int, source: String)?, concurrency: Int) -> DoctorCheck {
        guard let available else { return DoctorCheck("memory", .skip, "cannot read the available memory (no /proc/meminfo: not Linux)") }
        let mib = Self.mebibytes
        let detail = "\(mib(available.bytes)) MiB available (\(available.source)); need ~\(mib(typicalBytes)) MiB for \(sequences) sequence\(sequences == 1 ? "" : "s") of \(min(contextLength, Self.typicalTokens)) tokens, ~\(mib(worstCaseBytes)) MiB at the full \(contextLength)-token context (model \(mib(modelBytes)) MiB + KV cache \(kvBytesPerToken) B/token + \(mib(Self.overheadBytes)) MiB overhead)"
        if worstCaseBytes <= available.bytes * 9 / 10 { return DoctorCheck("memory", .ok, detail) }
        if typicalBytes <= available.bytes {
            let fit = sequencesThatFit(available.bytes * 9 / 10, tokens: contextLength)
            return DoctorCheck("memory", .warn, detail + ": typical jobs fit, \(sequences) full-context ones would not",
                               fix: fit >= 1 ? "--concurrency \(fit) (LEVEE_CONCURRENCY) is safe for full-context jobs; or give the worker more memory, or cap jobs' max_tokens"
                                   : "give the worker more memory, or cap jobs' max_tokens")
        }
        let fit = sequencesThatFit(available.bytes, tokens: min(contextLength, Self.typicalTokens))
        return DoctorCheck("memory", .fail, detail + ": not enough for --concurrency \(concurrency)",
                           fix: fit >= 1 ? "lower --concurrency to \(fit) (LEVEE_CONCURRENCY), or give the worker \(mib(typicalBytes - available.bytes)) MiB more"
                               : "give the worker at least \(mib(bytes(sequences: 1, tokens: min(contextLength, Self.typicalTokens)))) MiB (the container's memory limit included)")
    }

    /// MemAvailable from /proc/meminfo, lowered to the cgroup's limit minus its usage when the
    /// process runs in a container with a memory limit (cgroup v2, then v1).
    public static func availableBytes(procRoot: String = "/proc", cgroupRoot: String = "/sys/fs/cgroup") -> (bytes: Int, source: String)? {
        guard let meminfo = try? String(contentsOfFile: procRoot + "/meminfo", encoding: .utf8),
              let available = parseMemAvailable(meminfo) else { return nil }
        func number(_ path: String) -> Int? {
            (try? String(contentsOfFile: path, encoding: .utf8)).flatMap { Int($0.trimmingCharacters(in: .whitespacesAndNewlines)) }
        }
        for (limitFile, usageFile) in [("memory.max", "memory.current"), ("memory/memory.limit_in_bytes", "memory/memory.usage_in_bytes")] {
            if let limit = number(cgroupRoot + "/" + limitFile), limit < (1 << 60), let usage = number(cgroupRoot + "/" + usageFile) {
                let room = max(0, limit - usage)
                if room < available { return (room, "cgroup limit \(mebibytes(limit)) MiB, \(mebibytes(usage)) MiB used") }
            }
        }
        return (available, "MemAvailable")
    }

    /// The `MemAvailable:` line of /proc/meminfo, in bytes.
    public static func parseMemAvailable(_ meminfo: String) -> Int? {
        for line in meminfo.split(separator: "\n") where line.hasPrefix("MemAvailable:") {
            let fields = line.split(separator: " ")
            guard fields.count >= 2, let value = Int(fields[1]) else { return nil }
            let unit = fields.count >= 3 ? fields[2].lowercased() : ""
            return unit == "kb" ? value * 1024 : value
        }
        return nil
    }
}
