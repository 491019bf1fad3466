extension TraceEvent {
    /// A job's events as readers show them, with the submitting client's steps spelled out.
    ///
    /// The client writes one trace record per job: `accepted`, after the brokers acknowledged the
    /// job, with where it was written and `durationMs` from the submit time to the ack (one record
    /// instead of two halves the trace traffic of a submit burst). For an `accepted` event with a
    /// duration and no `submitted` event of the same attempt, this returns the `submitted` step it
    /// stands for (at `at − durationMs`, as earlier clients wrote it) and the `accepted` step
    /// without the duration — the same two events earlier clients wrote. Events in the older
    /// two-record form pass through unchanged.
    public static func expandingClientEvents(_ events: [TraceEvent]) -> [TraceEvent] {
        guard events.contains(where: { $0.stage == .accepted && $0.durationMs != nil }) else { return events }
        let submitted = Set(events.filter { $0.stage == .submitted }.map(\.attempt))
        var out: [TraceEvent] = []
        out.reserveCapacity(events.count + 1)
        for event in events {
            guard event.stage == .accepted, let duration = event.durationMs, !submitted.contains(event.attempt) else {
                out.append(event)
                continue
            }
            out.append(TraceEvent(jobID: event.jobID, stage: .submitted, at: event.at.adding(milliseconds: -duration),
                                  attempt: event.attempt, traceparent: event.traceparent, worker: event.worker, topic: event.topic))
            var accepted = event
            accepted.durationMs = nil
            out.append(accepted)
        }
        return out
    }
}
