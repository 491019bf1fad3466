import Foundation
@testable import Inference

/// The real model's tokenizer, loaded once for all tests (needs the GGUF: LEVEE_MODEL or the
/// default path that scripts/setup fills; a missing file fails the test with the setup hint).
enum ModelTokenizer {
    static let shared: Result<Tokenizer, any Error> = Result { () throws -> Tokenizer in
        let path = try ModelLocation.resolve(explicit: nil)
        do { return try Tokenizer(gguf: GGUFFile(path: path)) }
        catch let error as InferenceError { throw error }
        catch { throw InferenceError.modelLoad("\(path): \(error)") }
    }

    static func load() throws -> Tokenizer { try shared.get() }
}
