import Foundation
#if arch(x86_64)
import _Builtin_intrinsics.intel.cpuid
#endif

/// Which matrix-product kernels a `LlamaRunner` uses.
///
/// - `float`: weight blocks decoded to floats in registers and multiplied with float activations
///   (generic SIMD code; every architecture).
/// - `int8`: activations quantized per 32-value block to int8 (as llama.cpp does), dotted with
///   the weights' integers by `vpmaddubsw`/`vpmaddwd` through Clang's x86 intrinsics; block
///   scales applied with FMA. x86-64 with AVX2, FMA and F16C only, checked at run time.
///
/// Chosen per runner, so one process can run both side by side (`levee bench inference`).
public enum KernelSet: String, Sendable, CaseIterable, CustomStringConvertible {
    case float
    case int8

    public var description: String { rawValue }

    /// Whether this CPU can run the int8 kernels.
    public static let int8Supported: Bool = {
        #if arch(x86_64)
        var a: UInt32 = 0, b: UInt32 = 0, c: UInt32 = 0, d: UInt32 = 0
        guard __get_cpuid(1, &a, &b, &c, &d) != 0 else { return false }
        let fma = c & (1 << 12) != 0, osxsave = c & (1 << 27) != 0, avx = c & (1 << 28) != 0, f16c = c & (1 << 29) != 0
        guard fma && osxsave && avx && f16c else { return false }
        guard __get_cpuid_count(7, 0, &a, &b, &c, &d) != 0 else { return false }
        return b & (1 << 5) != 0 // AVX2
        #else
        return false
        #endif
    }()

    /// The kernels this machine can run, fastest first.
    public static var supported: [KernelSet] { int8Supported ? [.int8, .float] : [.float] }

    /// Reads a kernel set name (`float` or `int8`); nil for anything else.
    public init?(name: String) {
        self.init(rawValue: name.lowercased())
    }

    /// The default for new runners: `LEVEE_KERNELS` (`float` or `int8`) if set, else int8 where
    /// the CPU supports it, else float. An int8 request on a CPU without AVX2/FMA falls back to
    /// float; an unknown value is reported on standard error and ignored.
    public static let preferred: KernelSet = {
        let fallback: KernelSet = int8Supported ? .int8 : .float
        guard let text = ProcessInfo.processInfo.environment["LEVEE_KERNELS"], !text.isEmpty else { return fallback }
        guard let wanted = KernelSet(name: text) else {
            FileHandle.standardError.write(Data("levee: LEVEE_KERNELS='\(text)' is not one of float, int8; using \(fallback)\n".utf8))
            return fallback
        }
        return wanted.availableOrFloat
    }()

    /// This set if the CPU can run it, else float.
    public var availableOrFloat: KernelSet { self == .int8 && !Self.int8Supported ? .float : self }
}
