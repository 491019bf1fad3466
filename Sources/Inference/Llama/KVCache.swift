/// The keys and values one sequence has accumulated, per layer. Memory grows with the tokens
/// held (capacity doubles as needed), not with the model's maximum context.
public final class KVCache: @unchecked Sendable {
    // @unchecked Sendable: a cache belongs to one sequence; the forward pass writes a position's
    // entries before the parallel attention reads them, and the pool's join orders the two.

    public let layers: Int
    public let kvDimension: Int
    /// Tokens held.
    public internal(set) var count = 0
    /// Positions with room allocated.
    public private(set) var capacity = 0
    private(set) var keys: [UnsafeMutablePointer<Float>] = []
    private(set) var values: [UnsafeMutablePointer<Float>] = []

    public init(layers: Int, kvDimension: Int) {
        self.layers = layers
        self.kvDimension = kvDimension
    }

    deinit {
        for p in keys { p.deallocate() }
        for p in values { p.deallocate() }
    }

    /// Bytes of keys and values allocated.
    public var allocatedBytes: Int { capacity * kvDimension * layers * 2 * MemoryLayout<Float>.size }

    /// Makes room for `count + extra` positions.
    func reserve(_ extra: Int) {
        let needed = count + extra
        guard needed > capacity else { return }
        var newCapacity = max(16, capacity)
        while newCapacity < needed { newCapacity *= 2 }
        func grow(_ old: [UnsafeMutablePointer<Float>]) -> [UnsafeMutablePointer<Float>] {
            (0..<layers).map { l in
                let p = UnsafeMutablePointer<Float>.allocate(capacity: newCapacity * kvDimension)
                if l < old.count {
                    p.initialize(from: old[l], count: count * kvDimension)
                    old[l].deallocate()
                }
                return p
            }
        }
        keys = grow(keys)
        values = grow(values)
        capacity = newCapacity
    }

    /// Forgets the last tokens (or all), keeping the memory for reuse.
    public func truncate(to length: Int) {
        precondition(length >= 0 && length <= count)
        count = length
    }
}
