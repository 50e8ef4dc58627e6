"""Metric sinks: JSONL run files (always on), rich console, Weights & Biases."""
from .base import Sink, Sinks
from .console import ConsoleSink
from .jsonl import JsonlSink, read_jsonl, write_summary

__all__ = ["Sink", "Sinks", "ConsoleSink", "JsonlSink", "read_jsonl", "write_summary"]
