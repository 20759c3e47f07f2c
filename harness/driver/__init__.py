"""The driver process: starts Ray, places engine actors, dispatches work units and writes
the report.

- :mod:`.runner`: config -> plan -> pending units -> actors -> Parquet and run.json;
- :mod:`.placement`: Ray start-up, actors on cores and GPUs, engines kept between runs;
- :mod:`.scheduler`: units to actors (model affinity, in-flight bound, retries);
- :mod:`.submit`: a run packaged as a Ray job for a cluster.
"""
