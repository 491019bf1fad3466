#if canImport(Glibc)
import Glibc
#elseif canImport(Musl)
import Musl
#endif
import Synchronization

/// Random numbers from the kernel's generator (/dev/urandom), fetched 4 KiB at a time.
///
/// `SystemRandomNumberGenerator` makes one `getrandom(2)` system call per `next()`; a job id and
/// its trace context took five, and in a submit burst's profile the kernel's generator
/// (`crng_make_state`) was the largest single cost. The bytes are the same kernel CSPRNG output,
/// handed out in order and never reused; only the system calls are batched.
public struct PooledRandom: RandomNumberGenerator {
    public init() {}

    public mutating func next() -> UInt64 { Self.pool.withLock { $0.next() } }

    private static let pool = Mutex(Pool())

    private struct Pool: ~Copyable {
        static let size = 4096
        let buffer = UnsafeMutableRawBufferPointer.allocate(byteCount: Pool.size, alignment: 8)
        var used = Pool.size

        mutating func next() -> UInt64 {
            if used + 8 > Pool.size { refill() }
            defer { used += 8 }
            return buffer.load(fromByteOffset: used, as: UInt64.self)
        }

        mutating func refill() {
            // /dev/urandom is the same generator as getrandom(2) (which Swift's Glibc module does
            // not export); once seeded it never blocks.
            var filled = 0
            let fd = open("/dev/urandom", O_RDONLY | O_CLOEXEC)
            if fd >= 0 {
                while filled < Pool.size {
                    let n = read(fd, buffer.baseAddress! + filled, Pool.size - filled)
                    if n > 0 { filled += n } else if n == 0 || errno != EINTR { break }
                }
                close(fd)
            }
            // Should the device be unavailable (a chroot without /dev), the standard library's
            // generator fills the rest rather than stale bytes being handed out again.
            if filled < Pool.size {
                var system = SystemRandomNumberGenerator()
                filled -= filled % 8
                while filled + 8 <= Pool.size {
                    buffer.storeBytes(of: system.next() as UInt64, toByteOffset: filled, as: UInt64.self)
                    filled += 8
                }
            }
            used = 0
        }

        deinit { buffer.deallocate() }
    }
}
