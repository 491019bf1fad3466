import Foundation
import Synchronization

/// Every child process the chaos run started, so that a SIGINT/SIGTERM of the run itself (or an
/// error on the way) still stops them all. Only pids registered here are ever signalled.
final class ChaosChildren: Sendable {
    static let shared = ChaosChildren()
    private let pids = Mutex<[Int32: String]>([:])

    func register(_ pid: Int32, _ name: String) { pids.withLock { $0[pid] = name } }
    func forget(_ pid: Int32) { pids.withLock { _ = $0.removeValue(forKey: pid) } }

    /// SIGKILLs every registered child and its descendants (the emergency path: the run was
    /// interrupted).
    func killAll() {
        for pid in pids.withLock({ Array($0.keys) }) {
            let family = [pid] + chaosDescendants(of: pid)
            for member in family { kill(member, SIGKILL) }
        }
    }
}

/// Every process below `pid` (children, their children, …), from /proc. noida-db's launcher is a
/// Python script whose broker binary is its child: stopping the launcher alone left the broker
/// running.
func chaosDescendants(of pid: Int32) -> [Int32] {
    guard let entries = try? FileManager.default.contentsOfDirectory(atPath: "/proc") else { return [] }
    var parent: [Int32: Int32] = [:]
    for entry in entries {
        guard let child = Int32(entry),
              let stat = try? String(contentsOfFile: "/proc/\(entry)/stat", encoding: .utf8),
              let close = stat.lastIndex(of: ")") else { continue }
        let fields = stat[stat.index(after: close)...].split(separator: " ")
        if fields.count > 1, let ppid = Int32(fields[1]) { parent[child] = ppid }
    }
    var found: [Int32] = []
    var frontier = [pid]
    while let next = frontier.popLast() {
        let children = parent.filter { $0.value == next }.map(\.key)
        found += children
        frontier += children
    }
    return found
}

/// One child process of the chaos run: a worker, the embedded broker or noida-db.
/// stdout and stderr go to a log file (appended across restarts), except when the caller wants
/// stdout as a pipe (the broker prints its bootstrap address there).
final class ChaosProcess: @unchecked Sendable {
    // @unchecked: `process` is only started once, in init; afterwards it is read (pid, state)
    // from the chaos loop and the final stop, which never run at the same time.
    let name: String
    private let process = Process()
    private let stdoutPipe: Pipe?
    let startedAt = ContinuousClock.now

    init(name: String, executable: String, arguments: [String], log: URL, pipeStdout: Bool = false,
         environment: [String: String]? = nil) throws {
        self.name = name
        process.executableURL = URL(fileURLWithPath: executable)
        process.arguments = arguments
        if let environment { process.environment = ProcessInfo.processInfo.environment.merging(environment) { $1 } }
        if !FileManager.default.fileExists(atPath: log.path) { FileManager.default.createFile(atPath: log.path, contents: nil) }
        let logHandle = try FileHandle(forWritingTo: log)
        logHandle.seekToEndOfFile()
        process.standardError = logHandle
        if pipeStdout {
            let pipe = Pipe()
            stdoutPipe = pipe
            process.standardOutput = pipe
            process.standardInput = Pipe()  // kept open: the broker reads commands from stdin too
        } else {
            stdoutPipe = nil
            process.standardOutput = logHandle
            process.standardInput = FileHandle.nullDevice
        }
        try process.run()
        ChaosChildren.shared.register(process.processIdentifier, name)
        try? logHandle.close()
    }

    var pid: Int32 { process.processIdentifier }
    var isRunning: Bool { process.isRunning }
    var exitStatus: Int32? { process.isRunning ? nil : process.terminationStatus }

    /// The first line the process writes on stdout (the broker's bootstrap address), or nil if
    /// none comes within `timeout` or the process exits first.
    func firstLine(timeout: Duration) -> String? {
        guard let handle = stdoutPipe?.fileHandleForReading else { return nil }
        let line = Mutex<String?>(nil)
        let done = DispatchSemaphore(value: 0)
        Thread.detachNewThread {
            var bytes: [UInt8] = []
            while true {
                let data = handle.availableData
                if data.isEmpty { break }
                bytes += data
                if let newline = bytes.firstIndex(of: UInt8(ascii: "\n")) {
                    line.withLock { $0 = String(decoding: bytes[..<newline], as: UTF8.self) }
                    break
                }
            }
            done.signal()
            // Keep draining so the child never blocks on a full pipe.
            while !handle.availableData.isEmpty {}
        }
        _ = done.wait(timeout: .now() + .milliseconds(Int(timeout.milliseconds)))
        return line.withLock { $0 }
    }

    func signal(_ number: Int32) {
        if process.isRunning { kill(process.processIdentifier, number) }
    }

    /// Waits up to `timeout` for the process to exit; true if it did.
    @discardableResult
    func waitForExit(timeout: Duration) async -> Bool {
        let deadline = ContinuousClock.now + timeout
        while process.isRunning {
            if ContinuousClock.now >= deadline { return false }
            try? await Task.sleep(for: .milliseconds(20))
        }
        ChaosChildren.shared.forget(process.processIdentifier)
        return true
    }

    /// SIGTERM to the process and its descendants, then SIGKILL to whatever is left after `grace`.
    func stop(grace: Duration) async {
        let family = chaosDescendants(of: pid)
        guard process.isRunning || !family.isEmpty else { ChaosChildren.shared.forget(pid); return }
        signal(SIGTERM)
        for member in family { kill(member, SIGTERM) }
        let deadline = ContinuousClock.now + grace
        while ContinuousClock.now < deadline && (process.isRunning || family.contains(where: Self.alive)) {
            try? await Task.sleep(for: .milliseconds(50))
        }
        signal(SIGKILL)
        for member in family where Self.alive(member) { kill(member, SIGKILL) }
        await waitForExit(timeout: .seconds(10))
    }

    /// Whether `pid` still runs (a zombie has exited: only its entry waits to be reaped).
    static func alive(_ pid: Int32) -> Bool {
        guard kill(pid, 0) == 0 else { return false }
        let stat = (try? String(contentsOfFile: "/proc/\(pid)/stat", encoding: .utf8)) ?? ""
        guard let close = stat.lastIndex(of: ")") else { return false }
        return stat[stat.index(close, offsetBy: 2)...].first != "Z"
    }
}

/// A line-command client for `levee broker --control-socket PATH`: one command, one reply line.
struct BrokerControl: Sendable {
    let path: String

    struct Failure: Error, CustomStringConvertible { var description: String }

    /// Sends one command and returns the broker's reply line ("ok …" or "error: …").
    func request(_ command: String) throws -> String {
        let fd = socket(AF_UNIX, Self.streamType, 0)
        guard fd >= 0 else { throw Failure(description: "socket: " + String(cString: strerror(errno))) }
        defer { close(fd) }
        var address = sockaddr_un()
        address.sun_family = sa_family_t(AF_UNIX)
        let bytes = Array(path.utf8)
        guard bytes.count < MemoryLayout.size(ofValue: address.sun_path) else { throw Failure(description: "socket path too long: \(path)") }
        withUnsafeMutableBytes(of: &address.sun_path) { raw in
            raw.copyBytes(from: bytes)
            raw[bytes.count] = 0
        }
        let connected = withUnsafePointer(to: &address) {
            $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { connect(fd, $0, socklen_t(MemoryLayout<sockaddr_un>.size)) }
        }
        guard connected == 0 else { throw Failure(description: "connect \(path): " + String(cString: strerror(errno))) }
        var timeout = timeval(tv_sec: 10, tv_usec: 0)
        setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &timeout, socklen_t(MemoryLayout<timeval>.size))
        let line = Array((command + "\n").utf8)
        var offset = 0
        while offset < line.count {
            let n = line[offset...].withUnsafeBytes { Glibc.send(fd, $0.baseAddress, $0.count, Self.noSignal) }
            if n < 0, errno == EINTR { continue }
            guard n > 0 else { throw Failure(description: "write to \(path): " + String(cString: strerror(errno))) }
            offset += n
        }
        var reply: [UInt8] = []
        var buffer = [UInt8](repeating: 0, count: 512)
        while !reply.contains(UInt8(ascii: "\n")) {
            let n = buffer.withUnsafeMutableBytes { read(fd, $0.baseAddress, $0.count) }
            if n < 0, errno == EINTR { continue }
            guard n > 0 else { break }
            reply += buffer[0..<n]
        }
        let text = String(decoding: reply, as: UTF8.self).trimmingCharacters(in: .whitespacesAndNewlines)
        guard !text.isEmpty else { throw Failure(description: "no reply from the broker to '\(command)'") }
        return text
    }

    #if os(Linux)
    private static let noSignal = Int32(MSG_NOSIGNAL)
    private static let streamType = Int32(SOCK_STREAM.rawValue)
    #else
    private static let noSignal: Int32 = 0
    private static let streamType = SOCK_STREAM
    #endif
}

/// A free loopback TCP port (bound and released; good enough for a child started right after).
func chaosFreePort() throws -> Int {
    let fd = socket(AF_INET, ChaosSocket.streamType, 0)
    guard fd >= 0 else { throw BrokerControl.Failure(description: "socket: " + String(cString: strerror(errno))) }
    defer { close(fd) }
    var address = sockaddr_in()
    address.sin_family = sa_family_t(AF_INET)
    address.sin_addr.s_addr = inet_addr("127.0.0.1")
    address.sin_port = 0
    let bound = withUnsafePointer(to: &address) {
        $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { bind(fd, $0, socklen_t(MemoryLayout<sockaddr_in>.size)) }
    }
    guard bound == 0 else { throw BrokerControl.Failure(description: "bind: " + String(cString: strerror(errno))) }
    var length = socklen_t(MemoryLayout<sockaddr_in>.size)
    _ = withUnsafeMutablePointer(to: &address) {
        $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { getsockname(fd, $0, &length) }
    }
    return Int(UInt16(bigEndian: address.sin_port))
}

/// Whether something accepts TCP connections on 127.0.0.1:`port`.
func chaosPortOpen(_ port: Int) -> Bool {
    let fd = socket(AF_INET, ChaosSocket.streamType, 0)
    guard fd >= 0 else { return false }
    defer { close(fd) }
    var address = sockaddr_in()
    address.sin_family = sa_family_t(AF_INET)
    address.sin_addr.s_addr = inet_addr("127.0.0.1")
    address.sin_port = UInt16(port).bigEndian
    return withUnsafePointer(to: &address) {
        $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { connect(fd, $0, socklen_t(MemoryLayout<sockaddr_in>.size)) }
    } == 0
}

enum ChaosSocket {
    #if os(Linux)
    static let streamType = Int32(SOCK_STREAM.rawValue)
    #else
    static let streamType = SOCK_STREAM
    #endif
}
