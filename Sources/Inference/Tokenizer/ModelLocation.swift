import Foundation

/// Where the model file is: shared by `levee tokenize`, `levee generate` and the workers.
public enum ModelLocation {
    /// File name of the default model (SmolLM2-135M-Instruct, Q4_1).
    public static let defaultFileName = "SmolLM2-135M-Instruct.Q4_1.gguf"

    /// The default path: `$LEVEE_CACHE_DIR/models/<file>`, else `~/.cache/levee/models/<file>`
    /// (where scripts/setup puts it).
    public static func defaultPath(environment: [String: String] = ProcessInfo.processInfo.environment) -> String {
        let cache: String
        if let dir = environment["LEVEE_CACHE_DIR"], !dir.isEmpty {
            cache = dir
        } else {
            let home = environment["HOME"].flatMap { $0.isEmpty ? nil : $0 } ?? NSHomeDirectory()
            cache = home + "/.cache/levee"
        }
        return cache + "/models/" + defaultFileName
    }

    /// The model path to use: `explicit` (a `--model` option) if given, else the `LEVEE_MODEL`
    /// environment variable, else `defaultPath`. Throws `InferenceError` (`.modelLoad`) naming
    /// the path and where it came from when no file is there.
    public static func resolve(explicit: String?, environment: [String: String] = ProcessInfo.processInfo.environment) throws(InferenceError) -> String {
        let path: String
        let source: String
        if let explicit, !explicit.isEmpty {
            path = explicit; source = "--model"
        } else if let fromEnvironment = environment["LEVEE_MODEL"], !fromEnvironment.isEmpty {
            path = fromEnvironment; source = "LEVEE_MODEL"
        } else {
            path = defaultPath(environment: environment); source = "the default location"
        }
        let expanded = expandTilde(path, environment: environment)
        var isDirectory: ObjCBool = false
        guard FileManager.default.fileExists(atPath: expanded, isDirectory: &isDirectory) else {
            throw .modelLoad("no model file at \(expanded) (from \(source)); pass --model PATH or set LEVEE_MODEL")
        }
        guard !isDirectory.boolValue else {
            throw .modelLoad("\(expanded) (from \(source)) is a directory; give the path of the .gguf file")
        }
        return expanded
    }

    static func expandTilde(_ path: String, environment: [String: String]) -> String {
        guard path == "~" || path.hasPrefix("~/") else { return path }
        let home = environment["HOME"].flatMap { $0.isEmpty ? nil : $0 } ?? NSHomeDirectory()
        return home + path.dropFirst()
    }
}
