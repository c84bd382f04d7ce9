"""`tlkit tensorrt bench`: the core's benchmark (`tlkit.export.bench`, shared with `tlkit model bench`)."""

from tlkit.export.bench import bench, bench_runner, format_report, input_shape_of, latency_summary

__all__ = ["bench", "bench_runner", "format_report", "input_shape_of", "latency_summary"]
