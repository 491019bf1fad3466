import Foundation
import Testing

/// compose.yaml, the Dockerfile and the Kubernetes manifests validate offline
/// (scripts/validate-deploy: Compose and Kubernetes schemas plus Levee's own rules), and the
/// validator catches each of its known breakages (`--self-test`), so a pass means something.
@Suite struct OpsDeployTests {
    static let packageRoot = URL(fileURLWithPath: #filePath)
        .deletingLastPathComponent().deletingLastPathComponent().deletingLastPathComponent()

    @Test func deploymentFilesValidate() async throws {
        // The validator runs for seconds: wait for it on a thread of its own, not on the
        // cooperative pool every other test shares.
        let (status, text) = try await withCheckedThrowingContinuation { (continuation: CheckedContinuation<(Int32, String), Error>) in
            Thread.detachNewThread { continuation.resume(with: Result { try Self.validate() }) }
        }
        let last = text.split(separator: "\n").last.map(String.init) ?? ""
        #expect(status == 0, "scripts/validate-deploy --self-test failed:\n\(text)")
        #expect(last.hasPrefix("deploy: ") && last.hasSuffix(" passed, 0 failed"), "last line: \(last)")
        let passed = Int(last.split(separator: " ").dropFirst().first ?? "") ?? 0
        #expect(passed >= 40, "the checks and the self-test mutations all ran: \(last)")
    }

    static func validate() throws -> (Int32, String) {
        let process = Process()
        process.executableURL = packageRoot.appendingPathComponent("scripts/validate-deploy")
        process.arguments = ["--self-test"]
        process.currentDirectoryURL = packageRoot
        let output = Pipe()
        process.standardOutput = output
        process.standardError = output
        try process.run()
        let data = output.fileHandleForReading.readDataToEndOfFile()
        process.waitUntilExit()
        return (process.terminationStatus, String(decoding: data, as: UTF8.self))
    }
}
