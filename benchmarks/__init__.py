"""Side-by-side measurements, one script per topic (`python -m benchmarks.<name>`)."""
