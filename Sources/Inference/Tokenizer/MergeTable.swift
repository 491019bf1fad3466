/// BPE merge ranks keyed by the pair of token ids they join: an open-addressing hash table with
/// a multiplicative hash, because the standard Dictionary's seeded SipHash dominated the cost of
/// encoding (one lookup per candidate pair).
struct MergeTable: Sendable {
    private static let empty = UInt64.max
    private var keys: [UInt64]
    private var values: [UInt64]
    private let shift: UInt64
    private let mask: Int

    init(capacity: Int) {
        var slots = 16
        while slots < capacity * 2 { slots <<= 1 }
        keys = [UInt64](repeating: Self.empty, count: slots)
        values = [UInt64](repeating: 0, count: slots)
        mask = slots - 1
        shift = UInt64(64 - slots.trailingZeroBitCount)
    }

    @inline(__always)
    private static func key(_ left: Int32, _ right: Int32) -> UInt64 {
        UInt64(UInt32(bitPattern: left)) << 32 | UInt64(UInt32(bitPattern: right))
    }

    /// Records that `left right` merges into `merged` with priority `rank` (lower first). The
    /// first entry for a pair wins, as in the merges list.
    mutating func insert(left: Int32, right: Int32, rank: Int32, merged: Int32) {
        let k = Self.key(left, right)
        var slot = Int(truncatingIfNeeded: (k &* 0x9E37_79B9_7F4A_7C15) >> shift)
        while keys[slot] != Self.empty {
            if keys[slot] == k { return }
            slot = (slot + 1) & mask
        }
        keys[slot] = k
        values[slot] = UInt64(UInt32(bitPattern: rank)) << 32 | UInt64(UInt32(bitPattern: merged))
    }

    /// The rank and result of merging `left right`, or nil when they do not merge.
    @inline(__always)
    func lookup(_ left: Int32, _ right: Int32) -> (rank: Int32, merged: Int32)? {
        let k = Self.key(left, right)
        return keys.withUnsafeBufferPointer { keys -> (rank: Int32, merged: Int32)? in
            var slot = Int(truncatingIfNeeded: (k &* 0x9E37_79B9_7F4A_7C15) >> shift)
            while true {
                let stored = keys[slot]
                if stored == k {
                    let v = values[slot]
                    return (Int32(truncatingIfNeeded: v >> 32), Int32(truncatingIfNeeded: v))
                }
                if stored == Self.empty { return nil }
                slot = (slot + 1) & mask
            }
        }
    }
}
