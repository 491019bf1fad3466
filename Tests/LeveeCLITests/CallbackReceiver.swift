import Foundation
import Synchronization
import Testing

/// A local HTTP receiver for completion callbacks (Python, standard library only), as a business
/// application would run one. It verifies `Levee-Signature` and logs every request as a JSON line.
/// What it answers depends on the last path component of the callback URL, counted per delivery
/// id: `ok` → 204; `fail-N` → 500 for the first N requests, then 204; `fail-always` → 500.
final class CallbackReceiver: @unchecked Sendable {
    // @unchecked: the Process is only started and killed from the test; the log is a file.

    /// Why a receiver did not start.
    struct Failure: Error, CustomStringConvertible {
        var description: String
    }

    static let script = #"""
    import hmac, hashlib, json, os, signal, sys, threading, time, http.server
    # A test process's threads may block SIGTERM, and children inherit the mask: unblock it, and
    # leave when the test process goes away (a receiver left behind would hold the test runner's
    # pipes open).
    signal.pthread_sigmask(signal.SIG_UNBLOCK, [signal.SIGTERM, signal.SIGINT])
    parent = os.getppid()
    def watch_parent():
        while os.getppid() == parent: time.sleep(0.5)
        os._exit(0)
    threading.Thread(target=watch_parent, daemon=True).start()
    log, secret = sys.argv[1], sys.argv[2].encode()
    seen, lock = {}, threading.Lock()
    class H(http.server.BaseHTTPRequestHandler):
        def do_POST(self):
            body = self.rfile.read(int(self.headers["Content-Length"]))
            t, v1 = [p.split("=", 1)[1] for p in self.headers["Levee-Signature"].split(",")]
            ok = hmac.compare_digest(v1, hmac.new(secret, t.encode() + b"." + body, hashlib.sha256).hexdigest())
            delivery = self.headers["Levee-Delivery-Id"]
            mode = self.path.rstrip("/").rsplit("/", 1)[-1]
            with lock:
                seen[(self.path, delivery)] = n = seen.get((self.path, delivery), 0) + 1
                if mode == "fail-always": status = 500
                elif mode.startswith("fail-"): status = 500 if n <= int(mode[5:]) else 204
                else: status = 204
                with open(log, "a") as f:
                    f.write(json.dumps({"id": delivery, "attempt": self.headers["Levee-Delivery-Attempt"], "path": self.path,
                                        "signature_ok": ok, "answered": status, "body": json.loads(body)}) + "\n")
            self.send_response(status)
            self.send_header("Content-Length", "0")
            self.end_headers()
        def log_message(self, *a): pass
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), H)
    print(server.server_address[1], flush=True)
    server.serve_forever()
    """#

    let port: Int
    let log: URL
    private let errors: URL
    private let process: Process

    private init(port: Int, log: URL, errors: URL, process: Process) {
        self.port = port
        self.log = log
        self.errors = errors
        self.process = process
    }

    /// Starts a receiver that verifies signatures with `secret`, once it listens.
    static func start(secret: String) async throws -> CallbackReceiver {
        let base = FileManager.default.temporaryDirectory.appendingPathComponent("levee-callbacks-\(UUID().uuidString)")
        let log = base.appendingPathExtension("jsonl"), errors = base.appendingPathExtension("err")
        FileManager.default.createFile(atPath: errors.path, contents: nil)
        let process = Process()
        process.executableURL = URL(fileURLWithPath: "/usr/bin/env")
        process.arguments = ["python3", "-c", script, log.path, secret]
        let out = Pipe()
        process.standardOutput = out
        // Never the test runner's own stdin/stderr: `swift test` waits for those to close.
        process.standardInput = FileHandle.nullDevice
        process.standardError = try FileHandle(forWritingTo: errors)
        try process.run()
        let line = await LeveeProcess.offPool { () -> String in
            var bytes = Data()
            while !bytes.contains(UInt8(ascii: "\n")) {
                let chunk = out.fileHandleForReading.availableData
                if chunk.isEmpty { break }
                bytes += chunk
            }
            return String(decoding: bytes, as: UTF8.self)
        }
        let receiver = CallbackReceiver(port: Int(line.trimmingCharacters(in: .whitespacesAndNewlines)) ?? 0, log: log, errors: errors,
                                        process: process)
        guard receiver.port > 0 else {
            let stderr = (try? String(contentsOf: errors, encoding: .utf8)) ?? ""
            receiver.stop()
            throw Failure(description: "the callback receiver did not start: stdout '\(line)', stderr \(stderr)")
        }
        return receiver
    }

    /// The callback URL that answers per `mode` (`ok`, `fail-N`, `fail-always`).
    func url(_ mode: String) -> String { "http://127.0.0.1:\(port)/hooks/\(mode)" }

    /// Every request received so far (optionally for one job), oldest first.
    func deliveries(_ id: String? = nil) -> [[String: Any]] {
        let text = (try? String(contentsOf: log, encoding: .utf8)) ?? ""
        let all = text.split(separator: "\n").compactMap { try? JSONSerialization.jsonObject(with: Data($0.utf8)) as? [String: Any] }
        return id.map { id in all.filter { $0["id"] as? String == id } } ?? all
    }

    /// Waits (up to `seconds`) until `done` holds for the deliveries so far; returns them.
    @discardableResult
    func wait(seconds: Double = 120, until done: ([[String: Any]]) -> Bool) async throws -> [[String: Any]] {
        let deadline = Date().addingTimeInterval(seconds)
        while !done(deliveries()) && Date() < deadline { try await Task.sleep(for: .milliseconds(100)) }
        return deliveries()
    }

    /// Kills the receiver (SIGKILL: nothing can block it) and removes its files.
    func stop() {
        if process.isRunning {
            kill(process.processIdentifier, SIGKILL)
            process.waitUntilExit()
        }
        try? FileManager.default.removeItem(at: log)
        try? FileManager.default.removeItem(at: errors)
    }

    deinit { stop() }
}

/// A cluster for a callback test: `levee broker` (embedded mock) or noida-db (LEVEE_NOIDA_BOOTSTRAP).
enum CallbackCluster: String, CaseIterable, CustomTestStringConvertible {
    case embedded, noida

    var testDescription: String { rawValue }

    /// Runs `body` with the cluster's bootstrap and a topic prefix whose topics (2 partitions)
    /// exist; returns false (having printed why) when noida-db is not configured.
    func with(_ body: (_ bootstrap: String, _ prefix: String) async throws -> Void) async throws -> Bool {
        let prefix = "cb\(UUID().uuidString.prefix(8).lowercased())."
        switch self {
        case .embedded:
            let broker = try LeveeProcess.start(["broker", "--partitions", "2", "--levee-topics", prefix])
            defer { broker.signal(SIGTERM); _ = broker.waitForExitBlocking(timeout: 10) }
            let bootstrap = try #require(await broker.readLine(timeout: 20)?.trimmingCharacters(in: .whitespaces))
            try await body(bootstrap, prefix)
        case .noida:
            guard let bootstrap = ProcessInfo.processInfo.environment["LEVEE_NOIDA_BOOTSTRAP"], !bootstrap.isEmpty else {
                print("skipped: LEVEE_NOIDA_BOOTSTRAP is not set (scripts/test starts noida-db and sets it)")
                return false
            }
            let topics = try await LeveeProcess.run(["topics", "create", "--json", "--brokers", bootstrap, "--prefix", prefix, "--partitions", "2"])
            #expect(topics.status == 0, "\(topics)")
            try await body(bootstrap, prefix)
        }
        return true
    }
}
