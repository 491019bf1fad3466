/// Levee's inference core: GGUF loading, quantized kernels, the Llama model, tokenizer and engines.
public enum InferenceLibrary {}
