import Synchronization

/// A counting semaphore for async code: at most `limit` holders; further `acquire()` calls wait
/// (in FIFO order) until a holder releases. This is the producer's back-pressure: a full window
/// makes the caller wait instead of buffering without bound.
final class InFlightWindow: Sendable {
    private struct State {
        var inUse = 0
        var waiters: [(id: UInt64, continuation: CheckedContinuation<Void, any Error>)] = []
        var nextID: UInt64 = 0
        var closedError: KafkaError?
    }

    let limit: Int
    private let state = Mutex(State())

    init(limit: Int) {
        precondition(limit > 0, "the in-flight window needs room for at least one message")
        self.limit = limit
    }

    var inUse: Int { state.withLock { $0.inUse } }

    /// Takes one slot, waiting while the window is full. Throws if the task is cancelled while
    /// waiting or the window was closed.
    func acquire() async throws {
        let id: UInt64? = try state.withLock { s in
            if let error = s.closedError { throw error }
            if s.inUse < limit, s.waiters.isEmpty {
                s.inUse += 1
                return nil
            }
            s.nextID += 1
            return s.nextID
        }
        guard let id else { return }
        try await withTaskCancellationHandler {
            try await withCheckedThrowingContinuation { (continuation: CheckedContinuation<Void, any Error>) in
                let resumeNow: (any Error)?? = state.withLock { s in
                    if let error = s.closedError { return error }
                    if Task.isCancelled { return CancellationError() }
                    if s.inUse < limit, s.waiters.isEmpty {  // a slot freed up meanwhile
                        s.inUse += 1
                        return Optional<any Error>.none
                    }
                    s.waiters.append((id, continuation))
                    return nil
                }
                switch resumeNow {
                case .some(.some(let error)): continuation.resume(throwing: error)
                case .some(.none): continuation.resume()
                case .none: break
                }
            }
        } onCancel: {
            let waiter = state.withLock { s -> CheckedContinuation<Void, any Error>? in
                guard let index = s.waiters.firstIndex(where: { $0.id == id }) else { return nil }
                return s.waiters.remove(at: index).continuation
            }
            waiter?.resume(throwing: CancellationError())
        }
    }

    /// Returns one slot, handing it straight to the oldest waiter if there is one.
    func release() {
        let next = state.withLock { s -> CheckedContinuation<Void, any Error>? in
            if !s.waiters.isEmpty { return s.waiters.removeFirst().continuation }  // slot passes on
            s.inUse = max(0, s.inUse - 1)
            return nil
        }
        next?.resume()
    }

    /// Fails every waiter and every later `acquire()` with `error`.
    func close(_ error: KafkaError) {
        let waiters = state.withLock { s in
            s.closedError = s.closedError ?? error
            defer { s.waiters.removeAll() }
            return s.waiters
        }
        for waiter in waiters { waiter.continuation.resume(throwing: error) }
    }
}
