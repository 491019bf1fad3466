import Foundation

/// Where the model tests find the GGUF file: `LEVEE_MODEL`, else the default cache path.
/// Returns nil (and prints why) when the file is missing, so a test can skip.
enum ModelFile {
    static var path: String? {
        let env = ProcessInfo.processInfo.environment["LEVEE_MODEL"]
        let path = env ?? (NSHomeDirectory() + "/.cache/levee/models/SmolLM2-135M-Instruct.Q4_1.gguf")
        if FileManager.default.fileExists(atPath: path) { return path }
        print("skipping model test: no model at \(path) (set LEVEE_MODEL; scripts/setup downloads it)")
        return nil
    }
}
