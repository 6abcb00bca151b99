"""The VectorEngine benchmark harness behind ``bench/run.py``.

- ``config``: ports, paths, targets, upstream shapes, run profiles, the gateway config file
- ``procs``: starting, pinning and stopping processes; /proc CPU, RSS and noise sampling
- ``load``: HTTP requests, ``wrk`` and ``loadgen.py`` runs
- ``session``: one benchmark run (``Bench``): lifecycle, sanity, noise control, usage checks
- ``scenarios``: throughput, latency, ttft, streamcpu, soak
- ``report``: the markdown summary and the JSON results files
"""
