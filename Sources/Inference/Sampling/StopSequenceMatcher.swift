/// Finds stop strings in streamed text. Text is fed piece by piece (one decoded token at a time);
/// a stop string may span several pieces. Text that could still turn out to be the start of a
/// stop string is held back until the next piece settles it, so nothing of a stop string is ever
/// emitted. Matching is on UTF-8 bytes; since pieces and stop strings are whole UTF-8 text, a match
/// and a held-back tail always start on a character boundary.
public struct StopSequenceMatcher: Sendable {
    private let stops: [[UInt8]]
    private var pending: [UInt8] = []
    /// True once a stop string has been seen; further input is ignored.
    public private(set) var stopped = false
    /// The stop string that matched, if any.
    public private(set) var matchedStop: String?

    public init(stops: [String]) {
        self.stops = stops.filter { !$0.isEmpty }.map { Array($0.utf8) }
    }

    /// Adds a piece of generated text. Returns the text that is now safe to emit (possibly empty)
    /// and whether a stop string was found; after a stop the returned text is everything before it.
    public mutating func append(_ piece: String) -> (text: String, stopped: Bool) {
        guard !stopped else { return ("", true) }
        if stops.isEmpty { return (piece, false) }
        pending.append(contentsOf: piece.utf8)
        // Earliest stop string in the pending bytes (a new match must involve the new piece,
        // because pending never contains a complete stop string from before).
        var earliest: (start: Int, stop: Int)?
        for (s, stop) in stops.enumerated() where stop.count <= pending.count {
            if let start = Self.firstIndex(of: stop, in: pending), start < (earliest?.start ?? Int.max) {
                earliest = (start, s)
            }
        }
        if let earliest {
            stopped = true
            matchedStop = String(decoding: stops[earliest.stop], as: UTF8.self)
            let text = String(decoding: pending[..<earliest.start], as: UTF8.self)
            pending.removeAll()
            return (text, true)
        }
        let hold = longestHeldTail()
        let emitCount = pending.count - hold
        let text = String(decoding: pending[..<emitCount], as: UTF8.self)
        pending.removeFirst(emitCount)
        return (text, false)
    }

    /// Ends the stream: returns any held-back text (it was not a stop string after all).
    public mutating func finish() -> String {
        defer { pending.removeAll() }
        return stopped ? "" : String(decoding: pending, as: UTF8.self)
    }

    /// Length of the longest suffix of `pending` that is a proper prefix of some stop string.
    private func longestHeldTail() -> Int {
        var best = 0
        for stop in stops {
            var length = min(stop.count - 1, pending.count)
            while length > best {
                if pending.suffix(length).elementsEqual(stop.prefix(length)) { best = length; break }
                length -= 1
            }
        }
        return best
    }

    private static func firstIndex(of needle: [UInt8], in haystack: [UInt8]) -> Int? {
        guard needle.count <= haystack.count else { return nil }
        let first = needle[0]
        var i = 0
        let last = haystack.count - needle.count
        while i <= last {
            if haystack[i] == first {
                var j = 1
                while j < needle.count && haystack[i + j] == needle[j] { j += 1 }
                if j == needle.count { return i }
            }
            i += 1
        }
        return nil
    }
}
