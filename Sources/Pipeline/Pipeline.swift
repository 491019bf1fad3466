/// Levee's pipeline: jobs, the submit client, workers, the reconciler, trace and status.
public enum PipelineLibrary {}
