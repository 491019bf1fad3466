/// Levee's Swift API over librdkafka. Only files in `RDKafka/` import the C module.
public enum KafkaLibrary {}
