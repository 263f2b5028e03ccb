"""Inference from an exported folder without torch: ONNX graphs run by onnxruntime, numpy preprocessing, the
model's own tokenizer. Nothing in this package imports torch."""
