"""Evaluation and benchmark: keyword streams and the one scorer (streams.py), held-out evaluation (evaluate.py),
real recordings (realeval.py), the end-to-end benchmark (bench.py, bench_data.py) and the one DET plot (det.py)."""
