"""Frontends: the DSL, ONNX import and PyTorch tracing, each producing a cnncc.Graph."""
